//! Numbers in rules follow what people expect rather than CEL's strict typing, which has no implicit
//! conversions (`120u + 1` is an error there):
//! - In params, a JSON whole number is an `int` (i64), any other number a `double`. A whole
//!   number beyond i64 (up to u64::MAX) becomes a `double`, so it compares and computes but
//!   with double precision (about 15 significant digits). A `uint` exists only as a `1u`
//!   literal.
//! - Comparisons (`<`, `<=`, `>`, `>=`, `==`, `!=`) work across int, uint and double: that is
//!   CEL's own behaviour (`params.amount < 500.5`).
//! - `+`, `-`, `*`, `/` with an int (or uint) and a double compute in double
//!   (`params.amount * 1.1 > 100`); with two ints they stay int, so `/` divides whole numbers
//!   (`7 / 2 == 3`, write `7 / 2.0` for 3.5) and an overflow is an error (no match, reported).
//!   `%` works on ints only. An int with a `1u` literal computes as int when the uint fits.
//! - Every other operand keeps CEL's meaning (strings, lists and bytes concatenate, timestamps
//!   and durations add up); anything else mixed is an error, so the rule does not match.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr, operators};
use cel::objects::{Key, ResolveResult};
use cel::{Context, ExecutionError, IdedExpr, Program, Value};

use super::env;

/// A JSON value as a rule sees it: whole numbers `int`, other numbers `double`.
pub(super) fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            // Beyond i64: a double (approximate), so that it still compares and computes.
            (None, Some(u)) => Value::Float(u as f64),
            (None, None) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(a) => Value::List(Arc::new(a.iter().map(from_json).collect())),
        serde_json::Value::Object(o) => {
            let map: HashMap<Key, Value> = o
                .iter()
                .map(|(k, v)| (Key::from(k.clone()), from_json(v)))
                .collect();
            Value::from(map)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// The functions arithmetic is routed to. Their names cannot be written in a rule (`@` is not
/// an identifier character), like the `@it` variables CEL's own macros introduce.
pub(super) const ARITH: [(&str, Op); 5] = [
    ("@greenlight.add", Op::Add),
    ("@greenlight.sub", Op::Sub),
    ("@greenlight.mul", Op::Mul),
    ("@greenlight.div", Op::Div),
    ("@greenlight.rem", Op::Rem),
];

fn arith_function(operator: &str) -> Option<&'static str> {
    let op = match operator {
        operators::ADD => Op::Add,
        operators::SUBSTRACT => Op::Sub,
        operators::MULTIPLY => Op::Mul,
        operators::DIVIDE => Op::Div,
        operators::MODULO => Op::Rem,
        _ => return None,
    };
    ARITH.iter().find(|(_, o)| *o == op).map(|(name, _)| *name)
}

/// Points every binary `+ - * / %` in `e` at the `ARITH` functions.
pub(super) fn route_arithmetic(e: &mut IdedExpr) {
    match &mut e.expr {
        Expr::Call(call) => {
            if call.target.is_none()
                && call.args.len() == 2
                && let Some(name) = arith_function(&call.func_name)
            {
                call.func_name = name.to_owned();
            }
            if let Some(target) = &mut call.target {
                route_arithmetic(target);
            }
            call.args.iter_mut().for_each(route_arithmetic);
        }
        Expr::Select(sel) => route_arithmetic(&mut sel.operand),
        Expr::List(list) => list.elements.iter_mut().for_each(route_arithmetic),
        Expr::Map(map) => map
            .entries
            .iter_mut()
            .for_each(|e| route_entry(&mut e.expr)),
        Expr::Struct(st) => st.entries.iter_mut().for_each(|e| route_entry(&mut e.expr)),
        Expr::Comprehension(c) => {
            for part in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                route_arithmetic(part);
            }
        }
        Expr::Unspecified | Expr::Literal(_) | Expr::Ident(_) => {}
    }
}

fn route_entry(e: &mut EntryExpr) {
    match e {
        EntryExpr::StructField(f) => route_arithmetic(&mut f.value),
        EntryExpr::MapEntry(m) => {
            route_arithmetic(&mut m.key);
            route_arithmetic(&mut m.value);
        }
    }
}

/// One arithmetic operation: mixed int/double in double, int with a fitting uint in int,
/// everything else as CEL does it.
pub(super) fn arith(op: Op, a: Value, b: Value) -> ResolveResult {
    let double = |v: &Value| match v {
        Value::Int(i) => Some(*i as f64),
        Value::UInt(u) => Some(*u as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    };
    match (&a, &b) {
        (Value::Float(_), Value::Int(_) | Value::UInt(_))
        | (Value::Int(_) | Value::UInt(_), Value::Float(_))
            if op != Op::Rem =>
        {
            let (x, y) = (
                double(&a).unwrap_or(f64::NAN),
                double(&b).unwrap_or(f64::NAN),
            );
            return Ok(Value::Float(match op {
                Op::Add => x + y,
                Op::Sub => x - y,
                Op::Mul => x * y,
                _ => x / y,
            }));
        }
        (Value::Int(_), Value::UInt(u)) | (Value::UInt(u), Value::Int(_)) => {
            if let Ok(u) = i64::try_from(*u) {
                let as_int = |v: &Value| match v {
                    Value::UInt(_) => Value::Int(u),
                    other => other.clone(),
                };
                return native(op, as_int(&a), as_int(&b));
            }
        }
        _ => {}
    }
    native(op, a, b)
}

/// CEL's own operator on two values (concatenation, timestamps, int overflow checks, ...).
fn native(op: Op, a: Value, b: Value) -> ResolveResult {
    static PROGRAMS: OnceLock<Vec<(Op, Program)>> = OnceLock::new();
    let programs = PROGRAMS.get_or_init(|| {
        [
            (Op::Add, "a + b"),
            (Op::Sub, "a - b"),
            (Op::Mul, "a * b"),
            (Op::Div, "a / b"),
            (Op::Rem, "a % b"),
        ]
        .into_iter()
        .map(|(op, src)| (op, env().compile(src).expect("a valid expression")))
        .collect()
    });
    let program = programs
        .iter()
        .find(|(o, _)| *o == op)
        .map(|(_, p)| p)
        .ok_or_else(|| ExecutionError::function_error("arith", "unknown operator"))?;
    let mut ctx = Context::with_env(env());
    ctx.add_variable_from_value("a", a);
    ctx.add_variable_from_value("b", b);
    program.execute(&ctx)
}
