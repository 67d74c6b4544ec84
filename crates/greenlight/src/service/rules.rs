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
//!
//! Rules also read what other machines reported and what happened before:
//! - `signals["staging/api"]` has `value`, `since` (a timestamp) and `unchanged_for` (a
//!   duration). Only live signals are there: one never set, or past its ttl, is missing, so a
//!   rule reading it does not match, and the audit says which signal was unknown.
//! - `approved_in(workflow, param, value)`, `count_requests(workflow, within)` and
//!   `count_denials(workflow, within)` ask the store. Evaluation is pure, so a rule that calls
//!   them runs in passes: the first records the calls it could not answer, the service asks
//!   the store, and the next pass has the answers (`Evaluation::wanted`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr, operators};
use cel::objects::{Key, ResolveResult};
use cel::{Context, Env, ExecutionError, IdedExpr, Program, Value};
use jiff::Timestamp;

use crate::domain::{DurationSpec, Notify, Params, Signal, Verdict};

/// The names a rule's expression can use.
pub const NAMES: [&str; 6] = ["params", "requester", "workflow", "title", "now", "signals"];

/// The functions over history a rule can call, with their arity and signature.
pub const HISTORY_FUNCTIONS: [(&str, usize, &str); 3] = [
    (
        "approved_in",
        3,
        "approved_in(workflow, param, value) -> bool",
    ),
    (
        "count_requests",
        2,
        "count_requests(workflow, within) -> int",
    ),
    ("count_denials", 2, "count_denials(workflow, within) -> int"),
];

/// A question a rule asked of history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HistoryCall {
    /// Was a request of `workflow` with `params[param]` equal to `value` (JSON) approved?
    ApprovedIn {
        workflow: String,
        param: String,
        value: serde_json::Value,
    },
    /// Requests of `workflow` created in the last `within_ms` (this one not counted).
    CountRequests { workflow: String, within_ms: i64 },
    /// Requests of `workflow` denied in the last `within_ms`.
    CountDenials { workflow: String, within_ms: i64 },
}

/// The answers the store gave, by question.
#[derive(Debug, Clone, Default)]
pub struct History {
    answers: HashMap<HistoryCall, HistoryAnswer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryAnswer {
    Bool(bool),
    Count(i64),
}

impl History {
    pub fn insert(&mut self, call: HistoryCall, answer: HistoryAnswer) {
        self.answers.insert(call, answer);
    }

    fn get(&self, call: &HistoryCall) -> Option<HistoryAnswer> {
        self.answers.get(call).copied()
    }
}

/// How many passes a create may take to answer its rules' history calls.
pub const MAX_HISTORY_PASSES: usize = 4;

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
    /// How Slack hears of its decisions (`None`: the workflow's default).
    pub notify: Option<Notify>,
    /// It reads `signals`: the service loads them before running it.
    pub reads_signals: bool,
    /// The signal names it reads literally (`signals["staging/api"]`), to say which one was
    /// unknown when it fails.
    signal_names: Vec<String>,
    /// The workflows its history functions name literally, for the loader to check.
    pub history_workflows: Vec<String>,
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
    /// The live signals (set, and within their ttl).
    pub signals: &'a [Signal],
    /// What the store answered to earlier passes' history calls.
    pub history: &'a History,
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
    /// History calls a rule made that `RuleInput::history` could not answer: answer them and
    /// evaluate again (the decision is not final while this is not empty).
    pub wanted: Vec<HistoryCall>,
}

/// How one rule ran.
#[derive(Debug)]
enum Run {
    Done(bool),
    Failed(String),
    /// It needs these answers from history first.
    Needs(Vec<HistoryCall>),
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
        let mut calls = Vec::new();
        let mut signal_names = BTreeSet::new();
        collect_calls(program.expression(), &mut calls, &mut signal_names);
        let reads_signals = free.iter().any(|(name, _)| name == "signals");
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
        let mut problems = problems;
        let offset = |id: u64| {
            program
                .source_info()
                .offset_for(id)
                .map_or(0, |(start, _)| start as usize)
        };
        let mut history_workflows = BTreeSet::new();
        for (name, args, id) in calls {
            if let Some((_, arity, signature)) =
                HISTORY_FUNCTIONS.iter().find(|(n, _, _)| *n == name)
            {
                if args.len() != *arity {
                    problems.push(CompileProblem {
                        offset: offset(id),
                        message: format!("{name} takes {arity} arguments: {signature}"),
                    });
                    continue;
                }
                for (i, arg) in args.iter().enumerate() {
                    let Expr::Literal(lit) = &arg.expr else {
                        continue;
                    };
                    let text = match lit {
                        cel::common::ast::LiteralValue::String(t) => Some(t.inner().to_owned()),
                        _ => None,
                    };
                    let what = match (name.as_str(), i) {
                        (_, 0) => "workflow",
                        ("approved_in", 1) => "param",
                        ("approved_in", _) => continue,
                        _ => "within",
                    };
                    let problem = match (what, text) {
                        (_, None) => Some(format!("{name}: {what} must be a string; {signature}")),
                        ("workflow", Some(w)) => {
                            history_workflows.insert(w);
                            None
                        }
                        ("within", Some(t)) => t
                            .parse::<DurationSpec>()
                            .err()
                            .map(|e| format!("{name}: within {t:?} is not a duration: {e}")),
                        _ => None,
                    };
                    if let Some(message) = problem {
                        problems.push(CompileProblem {
                            offset: offset(arg.id),
                            message,
                        });
                    }
                }
            } else if !is_cel_function(&name) {
                let ours: Vec<&str> = HISTORY_FUNCTIONS.iter().map(|(_, _, s)| *s).collect();
                problems.push(CompileProblem {
                    offset: offset(id),
                    message: format!(
                        "unknown function `{name}`: besides CEL's own, a rule can call {}",
                        ours.join(", ")
                    ),
                });
            }
        }
        for name in &signal_names {
            if name.parse::<crate::domain::SignalName>().is_err() {
                problems.push(CompileProblem {
                    offset: 0,
                    message: format!(
                        "signals[{name:?}] can never be set: a signal name is 1-100 of lowercase letters, digits and _ - . / :"
                    ),
                });
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let reads_signals = reads_signals || !signal_names.is_empty();
        let mut expr = program.expression().clone();
        route_arithmetic(&mut expr);
        Ok(Self {
            name: name.to_owned(),
            when: when.to_owned(),
            verdict,
            expr: Arc::new(expr),
            params_read: params_read.into_iter().collect(),
            notify: None,
            reads_signals,
            signal_names: signal_names.into_iter().collect(),
            history_workflows: history_workflows.into_iter().collect(),
        })
    }

    /// Sets how Slack hears of its decisions.
    pub fn with_notify(mut self, notify: Option<Notify>) -> Self {
        self.notify = notify;
        self
    }

    /// Runs the rule; a failure naming an unknown signal says so.
    fn run(&self, input: &RuleInput<'_>, history: &Arc<History>) -> Run {
        let missing = Arc::new(std::sync::Mutex::new(Vec::new()));
        match self.matches(input, history, &missing) {
            Ok(b) => Run::Done(b),
            Err(error) => {
                let wanted =
                    std::mem::take(&mut *missing.lock().unwrap_or_else(|e| e.into_inner()));
                if !wanted.is_empty() {
                    return Run::Needs(wanted);
                }
                let unknown = self
                    .signal_names
                    .iter()
                    .find(|n| !input.signals.iter().any(|s| s.name.as_str() == n.as_str()));
                match unknown {
                    Some(name) => Run::Failed(format!(
                        "signal {name:?} is unknown: never set, or not refreshed within its ttl"
                    )),
                    None => Run::Failed(error),
                }
            }
        }
    }

    /// Runs the rule: `Ok(true)` when it matches. History calls it cannot answer from
    /// `history` are pushed onto `missing` (and fail this run).
    fn matches(
        &self,
        input: &RuleInput<'_>,
        history: &Arc<History>,
        missing: &Arc<std::sync::Mutex<Vec<HistoryCall>>>,
    ) -> Result<bool, String> {
        let mut ctx = Context::with_env(env());
        for (name, op) in ARITH {
            ctx.add_function(name, move |a: Value, b: Value| arith(op, a, b))
                .map_err(|e| e.to_string())?;
        }
        add_history_functions(&mut ctx, history, missing, input.now)?;
        if self.reads_signals {
            ctx.add_variable_from_value("signals", signals_value(input.signals, input.now));
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
/// While a rule waits for history (`wanted`), nothing is decided: answer and run again.
pub fn evaluate(rules: &[Rule], input: &RuleInput<'_>) -> Evaluation {
    let mut out = Evaluation::default();
    let history = Arc::new(input.history.clone());
    let mut approve = None;
    for rule in rules {
        match rule.run(input, &history) {
            Run::Done(false) => {}
            Run::Done(true) if rule.verdict == Verdict::Deny => {
                out.decision = Some(Matched {
                    rule: rule.name.clone(),
                    verdict: Verdict::Deny,
                    summary: rule.summary(input),
                });
            }
            Run::Done(true) => {
                approve.get_or_insert(rule);
            }
            Run::Failed(error) => out.failures.push(RuleFailure {
                rule: rule.name.clone(),
                error,
            }),
            Run::Needs(calls) => {
                for call in calls {
                    if !out.wanted.contains(&call) {
                        out.wanted.push(call);
                    }
                }
            }
        }
        if out.decision.is_some() {
            break;
        }
    }
    if !out.wanted.is_empty() {
        // An undecided rule before it could be a deny: no decision until it is answered.
        out.decision = None;
        return out;
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

/// The error a history function gives while its answer is not known yet.
const AWAITING_HISTORY: &str = "awaiting an answer from history";

/// A CEL value as JSON, for `approved_in`'s value.
fn to_json(v: &Value) -> Option<serde_json::Value> {
    Some(match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::UInt(u) => serde_json::Value::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f).map(serde_json::Value::Number)?,
        Value::String(s) => serde_json::Value::String(s.to_string()),
        _ => return None,
    })
}

/// A window given as a duration string ("24h") or a CEL duration.
fn window_ms(function: &str, v: &Value) -> Result<i64, ExecutionError> {
    let ms = match v {
        Value::String(s) => s
            .parse::<DurationSpec>()
            .map(|d| d.as_millis())
            .map_err(|e| ExecutionError::function_error(function, e.to_string()))?,
        Value::Duration(d) => d.num_milliseconds(),
        other => {
            return Err(ExecutionError::function_error(
                function,
                format!(
                    "within must be a duration such as \"24h\", not {:?}",
                    other.type_of()
                ),
            ));
        }
    };
    if ms <= 0 {
        return Err(ExecutionError::function_error(
            function,
            "within must be longer than 0",
        ));
    }
    Ok(ms)
}

fn text_arg(function: &str, what: &str, v: &Value) -> Result<String, ExecutionError> {
    match v {
        Value::String(s) => Ok(s.to_string()),
        other => Err(ExecutionError::function_error(
            function,
            format!("{what} must be a string, not {:?}", other.type_of()),
        )),
    }
}

/// `approved_in`, `count_requests`, `count_denials`: answered from `history`, or recorded in
/// `missing` for the next pass.
fn add_history_functions(
    ctx: &mut Context<'_, '_>,
    history: &Arc<History>,
    missing: &Arc<std::sync::Mutex<Vec<HistoryCall>>>,
    _now: Timestamp,
) -> Result<(), String> {
    fn answer(
        function: &'static str,
        call: HistoryCall,
        history: &History,
        missing: &std::sync::Mutex<Vec<HistoryCall>>,
    ) -> ResolveResult {
        match history.get(&call) {
            Some(HistoryAnswer::Bool(b)) => Ok(Value::Bool(b)),
            Some(HistoryAnswer::Count(n)) => Ok(Value::Int(n)),
            None => {
                missing.lock().unwrap_or_else(|e| e.into_inner()).push(call);
                Err(ExecutionError::function_error(function, AWAITING_HISTORY))
            }
        }
    }
    let (h, m) = (history.clone(), missing.clone());
    ctx.add_function(
        "approved_in",
        move |workflow: Value, param: Value, value: Value| {
            let f = "approved_in";
            let call = HistoryCall::ApprovedIn {
                workflow: text_arg(f, "workflow", &workflow)?,
                param: text_arg(f, "param", &param)?,
                value: to_json(&value).ok_or_else(|| {
                    ExecutionError::function_error(
                        f,
                        format!(
                            "value must be a string, number, bool or null, not {:?}",
                            value.type_of()
                        ),
                    )
                })?,
            };
            answer(f, call, &h, &m)
        },
    )
    .map_err(|e| e.to_string())?;
    for (name, denials) in [("count_requests", false), ("count_denials", true)] {
        let (h, m) = (history.clone(), missing.clone());
        ctx.add_function(name, move |workflow: Value, within: Value| {
            let workflow = text_arg(name, "workflow", &workflow)?;
            let within_ms = window_ms(name, &within)?;
            let call = if denials {
                HistoryCall::CountDenials {
                    workflow,
                    within_ms,
                }
            } else {
                HistoryCall::CountRequests {
                    workflow,
                    within_ms,
                }
            };
            answer(name, call, &h, &m)
        })
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The `signals` map: name to `{value, since, unchanged_for}`.
fn signals_value(signals: &[Signal], now: Timestamp) -> Value {
    let at = |t: Timestamp| {
        chrono::DateTime::from_timestamp_millis(t.as_millisecond())
            .map(|d| Value::Timestamp(d.fixed_offset()))
            .unwrap_or(Value::Null)
    };
    let map: HashMap<Key, Value> = signals
        .iter()
        .map(|s| {
            let held = (now.as_millisecond() - s.since.as_millisecond()).max(0);
            let entry: HashMap<Key, Value> = [
                ("value", from_json(&s.value)),
                ("since", at(s.since)),
                (
                    "unchanged_for",
                    Value::Duration(chrono::Duration::milliseconds(held)),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (Key::from(k.to_owned()), v))
            .collect();
            (Key::from(s.name.as_str().to_owned()), Value::from(entry))
        })
        .collect();
    Value::from(map)
}

/// Whether CEL's standard library has a function called `name`.
fn is_cel_function(name: &str) -> bool {
    if name.starts_with(['_', '@', '!', '-']) {
        return true;
    }
    // Declaring a function CEL already has is refused: that is the question asked.
    let mut ctx = Context::with_env(env());
    ctx.add_function(name, |v: Value| v).is_err()
}

/// A global function call: its name, its arguments, its node id.
type Call<'e> = (String, Vec<&'e IdedExpr>, u64);

/// Global function calls and literal `signals["name"]` reads.
fn collect_calls<'e>(e: &'e IdedExpr, calls: &mut Vec<Call<'e>>, signals: &mut BTreeSet<String>) {
    match &e.expr {
        Expr::Call(call) => {
            if call.target.is_none() {
                if call.func_name == operators::INDEX
                    && let [first, second] = call.args.as_slice()
                    && matches!(&first.expr, Expr::Ident(n) if n == "signals")
                    && let Expr::Literal(cel::common::ast::LiteralValue::String(name)) =
                        &second.expr
                {
                    signals.insert(name.inner().to_owned());
                }
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
                signals.insert(sel.field.clone());
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
            signals: &[],
            history: &NO_HISTORY,
        }
    }

    static NO_HISTORY: std::sync::LazyLock<History> = std::sync::LazyLock::new(History::default);

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
        match rule("r", when, Verdict::Approve).run(&input(&p), &Arc::new(History::default())) {
            Run::Done(b) => Ok(b),
            Run::Failed(e) => Err(e),
            Run::Needs(calls) => Err(format!("needs {calls:?}")),
        }
    }

    fn signal(name: &str, value: serde_json::Value, held_secs: i64) -> Signal {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let since = Timestamp::from_second(1_800_000_000 - held_secs).unwrap();
        Signal {
            name: name.parse().unwrap(),
            value,
            since,
            updated_at: now,
            set_by: "ci".into(),
            expires_at: None,
        }
    }

    /// The seed's example, written as is: green in staging for 24 hours.
    #[test]
    fn signals_have_a_value_and_how_long_it_held() {
        let when = r#"signals["staging/api"].value == "green" && signals["staging/api"].unchanged_for > duration("24h")"#;
        let r = rule("staging-green", when, Verdict::Approve);
        assert!(r.reads_signals);
        let p = Params::new();
        let run = |signals: &[Signal]| {
            let input = RuleInput {
                signals,
                ..input(&p)
            };
            evaluate(std::slice::from_ref(&r), &input)
        };
        let day = 24 * 3600;
        assert!(
            run(&[signal("staging/api", json!("green"), day + 1)])
                .decision
                .is_some()
        );
        assert!(
            run(&[signal("staging/api", json!("green"), day - 60)])
                .decision
                .is_none()
        );
        let red = run(&[signal("staging/api", json!("red"), 2 * day)]);
        assert_eq!(
            (red.decision.clone(), red.failures.len()),
            (None, 0),
            "{red:?}"
        );
        // Unknown (never set, or past its ttl, so not among the live ones): no match, and why.
        let unknown = run(&[signal("prod/api", json!("green"), 2 * day)]);
        assert_eq!(unknown.decision, None);
        assert!(
            unknown.failures[0]
                .error
                .contains("signal \"staging/api\" is unknown"),
            "{unknown:?}"
        );
        let since = rule(
            "s",
            r#"signals["error_rate/api"].value < 0.01 && signals["error_rate/api"].since < now"#,
            Verdict::Approve,
        );
        let input = RuleInput {
            signals: &[signal("error_rate/api", json!(0.002), 60)],
            ..input(&p)
        };
        assert!(evaluate(&[since], &input).decision.is_some());
    }

    /// History calls run in passes: the first asks, the second has the answer.
    #[test]
    fn history_functions_ask_then_decide() {
        let r = rule(
            "promoted",
            r#"approved_in("staging", "version", params.version) && count_denials("prod", "1h") < 3 && count_requests("prod", duration("10m")) < 100"#,
            Verdict::Approve,
        );
        let p = params(json!({"version": "1.4.2"}));
        let first = evaluate(std::slice::from_ref(&r), &input(&p));
        assert_eq!(first.decision, None);
        // CEL looks at both sides of && when one fails: every call is asked in one pass.
        assert_eq!(
            first.wanted,
            vec![
                HistoryCall::ApprovedIn {
                    workflow: "staging".into(),
                    param: "version".into(),
                    value: json!("1.4.2"),
                },
                HistoryCall::CountDenials {
                    workflow: "prod".into(),
                    within_ms: 3_600_000
                },
                HistoryCall::CountRequests {
                    workflow: "prod".into(),
                    within_ms: 600_000,
                },
            ]
        );
        let mut history = History::default();
        for (call, answer) in first.wanted.iter().zip([
            HistoryAnswer::Bool(true),
            HistoryAnswer::Count(0),
            HistoryAnswer::Count(5),
        ]) {
            history.insert(call.clone(), answer);
        }
        let second = evaluate(
            std::slice::from_ref(&r),
            &RuleInput {
                history: &history,
                ..input(&p)
            },
        );
        assert!(
            second.wanted.is_empty() && second.decision.is_some(),
            "{second:?}"
        );
        history.insert(
            HistoryCall::ApprovedIn {
                workflow: "staging".into(),
                param: "version".into(),
                value: json!("1.4.2"),
            },
            HistoryAnswer::Bool(false),
        );
        let never = evaluate(
            &[r],
            &RuleInput {
                history: &history,
                ..input(&p)
            },
        );
        assert_eq!((never.decision, never.wanted.len()), (None, 0));
    }

    #[test]
    fn functions_and_signal_names_are_checked_when_compiled() {
        let err = Rule::compile("r", "aproved_in('a', 'b', 1)", Verdict::Approve).unwrap_err();
        assert!(
            err[0].message.contains("unknown function `aproved_in`"),
            "{err:?}"
        );
        let err = Rule::compile("r", "count_requests('a')", Verdict::Approve).unwrap_err();
        assert!(err[0].message.contains("takes 2 arguments"), "{err:?}");
        let err = Rule::compile("r", "count_denials(1, 'soon') < 3", Verdict::Approve).unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(
            err[0].message.contains("workflow must be a string"),
            "{err:?}"
        );
        assert!(
            err[1].message.contains("\"soon\" is not a duration"),
            "{err:?}"
        );
        let ok = Rule::compile(
            "r",
            "approved_in('staging', 'version', params.v)",
            Verdict::Approve,
        )
        .unwrap();
        assert_eq!(ok.history_workflows, ["staging"]);
        let err =
            Rule::compile("r", "signals['Staging API'].value == 1", Verdict::Approve).unwrap_err();
        assert!(err[0].message.contains("can never be set"), "{err:?}");
        for fine in [
            "size(title) > 2 && title.startsWith('P') && int('3') == 3",
            "timestamp('2020-01-01T00:00:00Z') < now && duration('1h') > duration('1m')",
            "string(1) == '1' && double(1) == 1.0 && type(1) == int && has(params.x) == false",
        ] {
            assert!(Rule::compile("r", fine, Verdict::Approve).is_ok(), "{fine}");
        }
        let err =
            matches("count_requests('prod', params.w) > 1", json!({"w": "soon"})).unwrap_err();
        assert!(
            err.contains("count_requests") && err.contains("soon"),
            "{err}"
        );
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
