//! Rules: CEL expressions that decide easy requests machine-to-machine ("approve a payment
//! under $500"). Compiled once when the config is loaded; run when a request is created. A
//! matching `deny` wins over a matching `approve`; no match leaves the request to people; a
//! rule that fails at run time counts as no match and is reported.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr};
use cel::{Context, Env, IdedExpr, Program, Value};
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
    program: Arc<Program>,
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
        Ok(Self {
            name: name.to_owned(),
            when: when.to_owned(),
            verdict,
            program: Arc::new(program),
            params_read: params_read.into_iter().collect(),
        })
    }

    /// Runs the rule: `Ok(true)` when it matches.
    fn matches(&self, input: &RuleInput<'_>) -> Result<bool, String> {
        let mut ctx = Context::with_env(env());
        let params = cel::to_value(input.params).map_err(|e| format!("params: {e}"))?;
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
        match self.program.execute(&ctx) {
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
