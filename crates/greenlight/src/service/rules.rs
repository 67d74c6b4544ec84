//! Rules: CEL expressions that decide easy requests machine-to-machine ("approve a payment
//! under $500"). Compiled once when the config is loaded; run when a request is created. A
//! matching `deny` wins over a matching `approve`; no match leaves the request to people; a
//! rule that fails at run time counts as no match and is reported.
//!
//! Numbers follow what people expect rather than CEL's strict typing, which has no implicit
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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr, operators};
use cel::objects::{Key, ResolveResult};
use cel::{Context, Env, ExecutionError, IdedExpr, Program, Value};
use jiff::Timestamp;

use crate::domain::{Params, Verdict};

/// The names a rule's expression can use.
pub const NAMES: [&str; 5] = ["params", "requester", "workflow", "title", "now"];

/// Identifiers CEL itself gives meaning to (type names used as values, `type(x) == int`).
const CEL_NAMES: [&str; 11] = [
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "google",
];

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub when: String,
    pub verdict: Verdict,
    /// The compiled expression, its arithmetic routed through `arith` (see the module doc).
    expr: Arc<IdedExpr>,
    /// The `params.x` fields the expression reads, named in the summary of a decision.
    params_read: Vec<String>,
}

/// Something wrong with an expression, at a byte offset into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileProblem {
    pub offset: usize,
    pub message: String,
}

/// The facts a rule sees.
#[derive(Debug, Clone, Copy)]
pub struct RuleInput<'a> {
    pub params: &'a Params,
    pub requester: Option<&'a str>,
    pub workflow: &'a str,
    pub title: &'a str,
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub rule: String,
    pub verdict: Verdict,
    /// What the message and the API show: the expression and the values it read.
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFailure {
    pub rule: String,
    pub error: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluation {
    pub decision: Option<Matched>,
    pub failures: Vec<RuleFailure>,
}

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

impl Rule {
    /// Parses `when` and checks that it only uses the names a rule has.
    pub fn compile(name: &str, when: &str, verdict: Verdict) -> Result<Self, Vec<CompileProblem>> {
        let program = env().compile(when).map_err(|errors| {
            errors
                .errors
                .iter()
                .map(|e| CompileProblem {
                    offset: offset_of(when, e.pos.0, e.pos.1),
                    message: e.msg.clone(),
                })
                .collect::<Vec<_>>()
        })?;
        let mut free = Vec::new();
        let mut params_read = BTreeSet::new();
        walk(
            program.expression(),
            &mut Vec::new(),
            &mut free,
            &mut params_read,
        );
        let mut seen = HashSet::new();
        let problems: Vec<CompileProblem> = free
            .into_iter()
            .filter(|(ident, _)| {
                !NAMES.contains(&ident.as_str()) && !CEL_NAMES.contains(&ident.as_str())
            })
            .filter(|(ident, _)| seen.insert(ident.clone()))
            .map(|(ident, id)| CompileProblem {
                offset: program
                    .source_info()
                    .offset_for(id)
                    .map_or(0, |(start, _)| start as usize),
                message: format!(
                    "unknown name `{ident}`: a rule can use {}",
                    NAMES.join(", ")
                ),
            })
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut expr = program.expression().clone();
        route_arithmetic(&mut expr);
        Ok(Self {
            name: name.to_owned(),
            when: when.to_owned(),
            verdict,
            expr: Arc::new(expr),
            params_read: params_read.into_iter().collect(),
        })
    }

    /// Runs the rule: `Ok(true)` when it matches.
    fn matches(&self, input: &RuleInput<'_>) -> Result<bool, String> {
        let mut ctx = Context::with_env(env());
        for (name, op) in ARITH {
            ctx.add_function(name, move |a: Value, b: Value| arith(op, a, b))
                .map_err(|e| e.to_string())?;
        }
        let params: HashMap<String, Value> = input
            .params
            .iter()
            .map(|(k, v)| (k.clone(), from_json(v)))
            .collect();
        ctx.add_variable_from_value("params", params);
        ctx.add_variable_from_value(
            "requester",
            input.requester.map_or(Value::Null, Value::from),
        );
        ctx.add_variable_from_value("workflow", input.workflow);
        ctx.add_variable_from_value("title", input.title);
        let now = chrono::DateTime::from_timestamp_millis(input.now.as_millisecond())
            .ok_or("now is out of range")?;
        ctx.add_variable_from_value("now", Value::Timestamp(now.fixed_offset()));
        match Value::resolve(&self.expr, &ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "the expression gave {:?}, not true or false",
                other.type_of()
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    fn summary(&self, input: &RuleInput<'_>) -> String {
        let read: Vec<String> = self
            .params_read
            .iter()
            .filter_map(|k| input.params.get(k).map(|v| format!("{k} = {v}")))
            .collect();
        if read.is_empty() {
            self.when.clone()
        } else {
            format!("{} ({})", self.when, read.join(", "))
        }
    }
}

/// A JSON value as a rule sees it: whole numbers `int`, other numbers `double`.
fn from_json(v: &serde_json::Value) -> Value {
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
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// The functions arithmetic is routed to. Their names cannot be written in a rule (`@` is not
/// an identifier character), like the `@it` variables CEL's own macros introduce.
const ARITH: [(&str, Op); 5] = [
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
fn route_arithmetic(e: &mut IdedExpr) {
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
fn arith(op: Op, a: Value, b: Value) -> ResolveResult {
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

/// Runs every rule: a matching deny wins over a matching approve; failures count as no match.
pub fn evaluate(rules: &[Rule], input: &RuleInput<'_>) -> Evaluation {
    let mut out = Evaluation::default();
    let mut approve = None;
    for rule in rules {
        match rule.matches(input) {
            Ok(false) => {}
            Ok(true) if rule.verdict == Verdict::Deny => {
                out.decision = Some(Matched {
                    rule: rule.name.clone(),
                    verdict: Verdict::Deny,
                    summary: rule.summary(input),
                });
            }
            Ok(true) => {
                approve.get_or_insert(rule);
            }
            Err(error) => out.failures.push(RuleFailure {
                rule: rule.name.clone(),
                error,
            }),
        }
        if out.decision.is_some() {
            break;
        }
    }
    if out.decision.is_none() {
        out.decision = approve.map(|rule| Matched {
            rule: rule.name.clone(),
            verdict: Verdict::Approve,
            summary: rule.summary(input),
        });
    }
    out
}

/// cel reports a 1-based line and a 0-based column; turn them into a byte offset.
fn offset_of(source: &str, line: isize, col: isize) -> usize {
    let line = usize::try_from(line.max(1) - 1).unwrap_or(0);
    let col = usize::try_from(col.max(0)).unwrap_or(0);
    let start: usize = source.split_inclusive('\n').take(line).map(str::len).sum();
    let rest = &source[start.min(source.len())..];
    let in_line: usize = rest.chars().take(col).map(char::len_utf8).sum();
    (start + in_line).min(source.len())
}

/// Collects free identifiers (with their node ids) and the `params.x` fields read.
fn walk(
    e: &IdedExpr,
    bound: &mut Vec<String>,
    free: &mut Vec<(String, u64)>,
    params_read: &mut BTreeSet<String>,
) {
    match &e.expr {
        Expr::Unspecified | Expr::Literal(_) => {}
        Expr::Ident(name) => {
            if !name.starts_with('@') && !bound.contains(name) {
                free.push((name.clone(), e.id));
            }
        }
        Expr::Select(sel) => {
            if matches!(&sel.operand.expr, Expr::Ident(n) if n == "params" && !bound.contains(n)) {
                params_read.insert(sel.field.clone());
            }
            walk(&sel.operand, bound, free, params_read);
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                walk(target, bound, free, params_read);
            }
            for arg in &call.args {
                walk(arg, bound, free, params_read);
            }
        }
        Expr::List(list) => {
            for el in &list.elements {
                walk(el, bound, free, params_read);
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                walk_entry(&entry.expr, bound, free, params_read);
            }
        }
        Expr::Struct(st) => {
            for entry in &st.entries {
                walk_entry(&entry.expr, bound, free, params_read);
            }
        }
        Expr::Comprehension(c) => {
            walk(&c.iter_range, bound, free, params_read);
            walk(&c.accu_init, bound, free, params_read);
            let before = bound.len();
            bound.push(c.iter_var.clone());
            bound.extend(c.iter_var2.clone());
            bound.push(c.accu_var.clone());
            for part in [&c.loop_cond, &c.loop_step, &c.result] {
                walk(part, bound, free, params_read);
            }
            bound.truncate(before);
        }
    }
}

fn walk_entry(
    e: &EntryExpr,
    bound: &mut Vec<String>,
    free: &mut Vec<(String, u64)>,
    params_read: &mut BTreeSet<String>,
) {
    match e {
        EntryExpr::StructField(f) => walk(&f.value, bound, free, params_read),
        EntryExpr::MapEntry(m) => {
            walk(&m.key, bound, free, params_read);
            walk(&m.value, bound, free, params_read);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(json: serde_json::Value) -> Params {
        json.as_object().cloned().unwrap_or_default()
    }

    fn input(p: &Params) -> RuleInput<'_> {
        RuleInput {
            params: p,
            requester: Some("U0FRANK"),
            workflow: "payments",
            title: "Pay invoice 7",
            now: Timestamp::from_second(1_800_000_000).unwrap(),
        }
    }

    fn rule(name: &str, when: &str, verdict: Verdict) -> Rule {
        Rule::compile(name, when, verdict).unwrap()
    }

    #[test]
    fn approves_small_payments_and_says_why() {
        let rules = [rule(
            "small-payment",
            "params.amount < 500 && params.currency == 'USD'",
            Verdict::Approve,
        )];
        let p = params(serde_json::json!({"amount": 120, "currency": "USD"}));
        let out = evaluate(&rules, &input(&p));
        let m = out.decision.unwrap();
        assert_eq!(m.rule, "small-payment");
        assert_eq!(m.verdict, Verdict::Approve);
        assert!(m.summary.contains("amount = 120"), "{}", m.summary);
        let p = params(serde_json::json!({"amount": 900, "currency": "USD"}));
        assert_eq!(evaluate(&rules, &input(&p)), Evaluation::default());
    }

    #[test]
    fn deny_beats_approve_whatever_the_order() {
        let rules = [
            rule("any", "true", Verdict::Approve),
            rule("weekend-freeze", "title.startsWith('Pay')", Verdict::Deny),
        ];
        let p = Params::new();
        let m = evaluate(&rules, &input(&p)).decision.unwrap();
        assert_eq!(
            (m.rule.as_str(), m.verdict),
            ("weekend-freeze", Verdict::Deny)
        );
    }

    #[test]
    fn a_failing_rule_is_no_match_and_is_reported() {
        let rules = [
            rule("missing", "params.nope > 1", Verdict::Deny),
            rule("not-bool", "params.amount", Verdict::Approve),
        ];
        let p = params(serde_json::json!({"amount": 1}));
        let out = evaluate(&rules, &input(&p));
        assert_eq!(out.decision, None);
        assert_eq!(out.failures.len(), 2, "{out:?}");
        assert_eq!(out.failures[0].rule, "missing");
    }

    #[test]
    fn names_and_time_are_there() {
        let p = Params::new();
        for when in [
            "requester == 'U0FRANK' && workflow == 'payments'",
            "now > timestamp('2020-01-01T00:00:00Z')",
            "[1, 2].all(x, x > 0) && [3].exists(y, y == 3)",
        ] {
            let out = evaluate(&[rule("r", when, Verdict::Approve)], &input(&p));
            assert!(out.decision.is_some(), "{when}: {out:?}");
        }
    }

    fn matches(when: &str, params_json: serde_json::Value) -> Result<bool, String> {
        let p = params(params_json);
        rule("r", when, Verdict::Approve).matches(&input(&p))
    }

    /// Arithmetic and comparisons on params as people write them: whole numbers are `int`,
    /// others `double`, and the two mix.
    #[test]
    fn numbers_in_params_do_ordinary_arithmetic() {
        for (amount, when, want) in [
            (json!(120), "params.amount + 1 > 100", true),
            (json!(120), "params.amount + 1 == 121", true),
            (json!(120), "params.amount - 200 == -80", true),
            (json!(120), "params.amount * 2 < 1000", true),
            (json!(120), "params.amount * 2 == 240", true),
            (json!(120), "params.amount < 500", true),
            (json!(120), "params.amount < 500.5", true),
            (json!(120), "params.amount * 1.1 > 100", true),
            (json!(120), "params.amount * 1.1 > 132.5", false),
            (json!(120), "params.amount / 7 == 17", true), // int / int stays int
            (json!(120), "params.amount / 7.0 > 17.1", true),
            (json!(120), "params.amount % 7 == 1", true),
            (json!(120), "params.amount == 120.0", true),
            (json!(120), "1.5 + params.amount == 121.5", true),
            (json!(120.5), "params.amount < 500", true),
            (json!(120.5), "params.amount + 1 > 100", true),
            (json!(120.5), "params.amount + 1 == 121.5", true),
            (json!(120.5), "params.amount * 2 == 241", true),
            (json!(120.5), "params.amount - 0.5 == 120", true),
            (json!(900), "params.amount < 500", false),
            (json!(-5), "params.amount < 0", true),
            (json!(-5), "params.amount + 10 == 5", true),
            (json!(-5), "params.amount * -2 == 10", true),
            (json!(-5.5), "params.amount * 2 == -11", true),
            (json!(-5), "-params.amount == 5", true),
            (json!(0), "params.amount + 0.0 == 0", true),
            (json!(120), "params.amount + 1u == 121", true),
            (json!(120), "type(params.amount) == int", true),
            (json!(120.5), "type(params.amount) == double", true),
        ] {
            let got = matches(when, json!({"amount": amount}));
            assert_eq!(got, Ok(want), "{when} with amount {amount}");
        }
    }

    /// Above i64::MAX a JSON integer becomes a `double`: it compares and computes, with
    /// double precision (about 15 significant digits).
    #[test]
    fn integers_beyond_i64_are_doubles_and_int_overflow_is_no_match() {
        let huge = json!({"amount": u64::MAX});
        assert_eq!(
            matches("params.amount > 9223372036854775807", huge.clone()),
            Ok(true)
        );
        assert_eq!(matches("params.amount + 1 > 0", huge.clone()), Ok(true));
        assert_eq!(matches("params.amount < 500", huge.clone()), Ok(false));
        assert_eq!(matches("type(params.amount) == double", huge), Ok(true));
        let max = json!({"amount": i64::MAX});
        assert_eq!(matches("type(params.amount) == int", max.clone()), Ok(true));
        // Overflowing int arithmetic is an error: the rule does not match, and says why.
        let err = matches("params.amount + 1 > 0", max).unwrap_err();
        assert!(err.to_lowercase().contains("overflow"), "{err}");
    }

    /// What is not numeric keeps CEL's own meaning.
    #[test]
    fn other_operands_keep_their_meaning() {
        let p = json!({"tags": ["a"], "name": "api", "n": 2});
        for when in [
            "params.name + '-v2' == 'api-v2'",
            "params.tags + ['b'] == ['a', 'b']",
            "b'x' + b'y' == b'xy'",
            "[1, 2, 3].map(x, x * 1.5)[1] == 3.0",
            "[1, 2, 3].exists_one(x, x + params.n == 4)",
            "now - duration('1h') < now",
        ] {
            assert_eq!(matches(when, p.clone()), Ok(true), "{when}");
        }
        let err = matches("params.name + 1 > 0", p.clone()).unwrap_err();
        assert!(!err.is_empty());
        assert!(matches("params.name * 2.0 > 0", p).is_err());
    }

    #[test]
    fn compile_errors_point_into_the_expression() {
        let err = Rule::compile("r", "params.amount < ", Verdict::Approve).unwrap_err();
        assert!(!err.is_empty());
        assert!(err[0].offset <= 16, "{err:?}");
        let err =
            Rule::compile("r", "param.amount < 5 || amount > 2", Verdict::Approve).unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
        assert_eq!(err[0].offset, 0);
        assert!(err[0].message.contains("`param`"));
        assert_eq!(err[1].offset, 20, "{err:?}");
    }
}
