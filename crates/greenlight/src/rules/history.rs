//! The functions over history a rule can call (`approved_in`, `count_requests`,
//! `count_denials`). Evaluation is pure: a call the store has not answered yet is recorded and
//! fails this pass; the service asks the store and runs the rules again with the answers.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::ResolveResult;
use cel::{Context, ExecutionError, Value};
use jiff::Timestamp;

use crate::domain::DurationSpec;

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
pub(super) fn add_history_functions(
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
