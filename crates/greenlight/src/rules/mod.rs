//! Rules: CEL expressions that decide easy requests machine-to-machine ("approve a payment
//! under $500"). Compiled once when the config is loaded; run when a request is created. A
//! matching `deny` wins over a matching `approve`; no match leaves the request to people; a
//! rule that fails at run time counts as no match and is reported.
//!
//! Rules also read what other machines reported and what happened before:
//! - `signals["staging/api"]` has `value`, `since` (a timestamp) and `unchanged_for` (a
//!   duration). Only live signals are there: one never set, or past its ttl, is missing, so a
//!   rule reading it does not match, and the audit says which signal was unknown. A rule that
//!   names every signal it reads literally needs only those loaded (`SignalsRead::Named`); one
//!   that uses `signals` otherwise (iterates it, takes its size, computes a name) needs every
//!   live one (`SignalsRead::All`).
//! - `approved_in(workflow, param, value)`, `count_requests(workflow, within)` and
//!   `count_denials(workflow, within)` ask the store. Evaluation is pure, so a rule that calls
//!   them runs in passes: the first records the calls it could not answer, the service asks
//!   the store, and the next pass has the answers (`Evaluation::wanted`).
//!
//! Files: `number.rs` (how numbers compute, see there), `history.rs` (the history functions),
//! `check.rs` (what compiling checks in an expression's tree). Pure: it imports only the domain
//! and `cel`, so the config loader below the service can compile rules.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use cel::common::ast::Expr;
use cel::objects::Key;
use cel::{Context, Env, IdedExpr, Value};
use jiff::Timestamp;

use crate::domain::{DurationSpec, Notify, Params, Signal, SignalName, Verdict};

mod check;
mod history;
mod number;
mod predicate;
#[cfg(test)]
mod tests;

use check::{collect_calls, is_cel_function, offset_of, walk};
use history::add_history_functions;
pub use history::{HISTORY_FUNCTIONS, History, HistoryAnswer, HistoryCall, MAX_HISTORY_PASSES};
use number::{ARITH, arith, from_json, route_arithmetic};
pub use predicate::Predicate;

/// The names a rule's expression can use.
pub const NAMES: [&str; 7] = [
    "params",
    "requester",
    "workflow",
    "title",
    "now",
    "signals",
    "identity",
];

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
    /// Which signals it reads: the service loads those before running it.
    signals_read: SignalsRead,
    /// The signal names it reads literally (`signals["staging/api"]`), to say which one was
    /// unknown when it fails.
    signal_names: Vec<String>,
    /// The workflows its history functions name literally, for the loader to check.
    pub history_workflows: Vec<String>,
}

/// Which signals rules read, so that only those are loaded for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SignalsRead {
    /// None: `signals` is not used.
    #[default]
    Nothing,
    /// Only these (sorted, each once): every use of `signals` names its signal literally
    /// (`signals["staging/api"]`, `signals.flag`, `has(signals.flag)`, `"staging/api" in signals`).
    Named(Vec<SignalName>),
    /// Any live signal: `signals` is used otherwise (`signals.exists(...)`, `size(signals)`,
    /// `signals[params.name]`).
    All,
}

impl SignalsRead {
    /// What all of `rules` read together.
    pub fn of<'r>(rules: impl IntoIterator<Item = &'r Rule>) -> Self {
        rules.into_iter().fold(Self::Nothing, |read, rule| {
            match (read, &rule.signals_read) {
                (Self::All, _) | (_, Self::All) => Self::All,
                (read, Self::Nothing) => read,
                (Self::Nothing, named) => named.clone(),
                (Self::Named(mut names), Self::Named(more)) => {
                    names.extend(more.iter().cloned());
                    names.sort_unstable();
                    names.dedup();
                    Self::Named(names)
                }
            }
        })
    }
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
    /// Who asked, as a verified workload token proved it (`{trust, issuer, subject, claims}`);
    /// `null` in CEL for API-key callers.
    pub identity: Option<&'a serde_json::Value>,
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

/// A context with greenlight's arithmetic (see `number.rs`), for an expression compiled here.
fn context<'v>() -> Result<Context<'static, 'v>, String> {
    let mut ctx = Context::with_env(env());
    for (name, op) in ARITH {
        ctx.add_function(name, move |a: Value, b: Value| arith(op, a, b))
            .map_err(|e| e.to_string())?;
    }
    Ok(ctx)
}

/// What `expr` gives in `ctx`, which must be true or false.
fn truth(expr: &IdedExpr, ctx: &Context<'_, '_>) -> Result<bool, String> {
    match Value::resolve(expr, ctx) {
        Ok(Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!(
            "the expression gave {:?}, not true or false",
            other.type_of()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// `when` parsed, or where and why it does not parse.
fn parse(when: &str) -> Result<cel::Program, Vec<CompileProblem>> {
    env().compile(when).map_err(|errors| {
        errors
            .errors
            .iter()
            .map(|e| CompileProblem {
                offset: offset_of(when, e.pos.0, e.pos.1),
                message: e.msg.clone(),
            })
            .collect()
    })
}

/// A problem for each free identifier (`free`, from `walk`) that is neither one of `names` nor
/// CEL's own, each once, at its place; `who` says whose names they are ("a rule").
fn unknown_names(
    program: &cel::Program,
    free: Vec<(String, u64)>,
    names: &[&str],
    who: &str,
) -> Vec<CompileProblem> {
    let mut seen = HashSet::new();
    free.into_iter()
        .filter(|(ident, _)| {
            !names.contains(&ident.as_str()) && !CEL_NAMES.contains(&ident.as_str())
        })
        .filter(|(ident, _)| seen.insert(ident.clone()))
        .map(|(ident, id)| CompileProblem {
            offset: program
                .source_info()
                .offset_for(id)
                .map_or(0, |(start, _)| start as usize),
            message: format!("unknown name `{ident}`: {who} can use {}", names.join(", ")),
        })
        .collect()
}

impl Rule {
    /// Parses `when` and checks that it only uses the names a rule has.
    pub fn compile(name: &str, when: &str, verdict: Verdict) -> Result<Self, Vec<CompileProblem>> {
        let program = parse(when)?;
        let mut free = Vec::new();
        let mut params_read = BTreeSet::new();
        walk(
            program.expression(),
            &mut Vec::new(),
            &mut free,
            &mut params_read,
        );
        let mut calls = Vec::new();
        let mut literal_reads = Vec::new();
        collect_calls(program.expression(), &mut calls, &mut literal_reads);
        // Reads of the rule's `signals` (not of a comprehension's variable of that name).
        let free_signals: Vec<u64> = free
            .iter()
            .filter(|(name, _)| name == "signals")
            .map(|(_, id)| *id)
            .collect();
        literal_reads.retain(|read| free_signals.contains(&read.node));
        let every_use_named = free_signals
            .iter()
            .all(|id| literal_reads.iter().any(|read| read.node == *id));
        // The values it reads, checked here and named when one is unknown.
        let signal_names: BTreeSet<String> = literal_reads
            .iter()
            .filter(|read| !read.membership)
            .map(|read| read.name.clone())
            .collect();
        let problems = unknown_names(&program, free, &NAMES, "a rule");
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
        let signals_read = if free_signals.is_empty() {
            SignalsRead::Nothing
        } else if every_use_named {
            // A name that can never be set is never there: nothing to load for it.
            let names: BTreeSet<SignalName> = literal_reads
                .iter()
                .filter_map(|read| read.name.parse().ok())
                .collect();
            SignalsRead::Named(names.into_iter().collect())
        } else {
            SignalsRead::All
        };
        let mut expr = program.expression().clone();
        route_arithmetic(&mut expr);
        Ok(Self {
            name: name.to_owned(),
            when: when.to_owned(),
            verdict,
            expr: Arc::new(expr),
            params_read: params_read.into_iter().collect(),
            notify: None,
            signals_read,
            signal_names: signal_names.into_iter().collect(),
            history_workflows: history_workflows.into_iter().collect(),
        })
    }

    /// Which signals it reads.
    pub fn signals_read(&self) -> &SignalsRead {
        &self.signals_read
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
        let mut ctx = context()?;
        add_history_functions(&mut ctx, history, missing, input.now)?;
        if self.signals_read != SignalsRead::Nothing {
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
        ctx.add_variable_from_value("identity", input.identity.map_or(Value::Null, from_json));
        ctx.add_variable_from_value("workflow", input.workflow);
        ctx.add_variable_from_value("title", input.title);
        let now = chrono::DateTime::from_timestamp_millis(input.now.as_millisecond())
            .ok_or("now is out of range")?;
        ctx.add_variable_from_value("now", Value::Timestamp(now.fixed_offset()));
        truth(&self.expr, &ctx)
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
