//! What compiling a rule reads from its expression's tree: the free names and `params.x`
//! fields, the global function calls and literal signal names, and where an error is.

use std::collections::BTreeSet;

use cel::common::ast::{EntryExpr, Expr, operators};
use cel::{Context, IdedExpr, Value};

use super::env;

/// Whether CEL's standard library has a function called `name`.
pub(super) fn is_cel_function(name: &str) -> bool {
    if name.starts_with(['_', '@', '!', '-']) {
        return true;
    }
    // Declaring a function CEL already has is refused: that is the question asked.
    let mut ctx = Context::with_env(env());
    ctx.add_function(name, |v: Value| v).is_err()
}

/// A global function call: its name, its arguments, its node id.
type Call<'e> = (String, Vec<&'e IdedExpr>, u64);

/// A read of one signal named literally.
#[derive(Debug)]
pub(super) struct SignalRead {
    pub(super) name: String,
    /// The node id of the `signals` it reads from.
    pub(super) node: u64,
    /// `"name" in signals`: whether it is there, not its value.
    pub(super) membership: bool,
}

/// `signals["name"]` (`index` holds `signals` and the key) or `"name" in signals` (`in` holds
/// the key and `signals`).
fn literal_read(func: &str, args: &[IdedExpr]) -> Option<SignalRead> {
    let (map, key) = match (func, args) {
        (operators::INDEX, [map, key]) | (operators::IN, [key, map]) => (map, key),
        _ => return None,
    };
    let Expr::Ident(n) = &map.expr else {
        return None;
    };
    match &key.expr {
        Expr::Literal(cel::common::ast::LiteralValue::String(name)) if n == "signals" => {
            Some(SignalRead {
                name: name.inner().to_owned(),
                node: map.id,
                membership: func == operators::IN,
            })
        }
        _ => None,
    }
}

/// Global function calls and literal signal reads (`signals["name"]`, `signals.name`,
/// `"name" in signals`).
pub(super) fn collect_calls<'e>(
    e: &'e IdedExpr,
    calls: &mut Vec<Call<'e>>,
    signals: &mut Vec<SignalRead>,
) {
    match &e.expr {
        Expr::Call(call) => {
            if call.target.is_none() {
                signals.extend(literal_read(&call.func_name, &call.args));
                calls.push((call.func_name.clone(), call.args.iter().collect(), e.id));
            }
            if let Some(target) = &call.target {
                collect_calls(target, calls, signals);
            }
            for arg in &call.args {
                collect_calls(arg, calls, signals);
            }
        }
        Expr::Select(sel) => {
            if matches!(&sel.operand.expr, Expr::Ident(n) if n == "signals") {
                signals.push(SignalRead {
                    name: sel.field.clone(),
                    node: sel.operand.id,
                    membership: false,
                });
            }
            collect_calls(&sel.operand, calls, signals);
        }
        Expr::List(list) => list
            .elements
            .iter()
            .for_each(|el| collect_calls(el, calls, signals)),
        Expr::Map(map) => map.entries.iter().for_each(|en| match &en.expr {
            EntryExpr::StructField(f) => collect_calls(&f.value, calls, signals),
            EntryExpr::MapEntry(m) => {
                collect_calls(&m.key, calls, signals);
                collect_calls(&m.value, calls, signals);
            }
        }),
        Expr::Struct(st) => st.entries.iter().for_each(|en| match &en.expr {
            EntryExpr::StructField(f) => collect_calls(&f.value, calls, signals),
            EntryExpr::MapEntry(m) => {
                collect_calls(&m.key, calls, signals);
                collect_calls(&m.value, calls, signals);
            }
        }),
        Expr::Comprehension(c) => {
            for part in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                collect_calls(part, calls, signals);
            }
        }
        Expr::Unspecified | Expr::Literal(_) | Expr::Ident(_) => {}
    }
}

/// cel reports a 1-based line and a 0-based column; turn them into a byte offset.
pub(super) fn offset_of(source: &str, line: isize, col: isize) -> usize {
    let line = usize::try_from(line.max(1) - 1).unwrap_or(0);
    let col = usize::try_from(col.max(0)).unwrap_or(0);
    let start: usize = source.split_inclusive('\n').take(line).map(str::len).sum();
    let rest = &source[start.min(source.len())..];
    let in_line: usize = rest.chars().take(col).map(char::len_utf8).sum();
    (start + in_line).min(source.len())
}

/// Collects free identifiers (with their node ids) and the `params.x` fields read.
pub(super) fn walk(
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
