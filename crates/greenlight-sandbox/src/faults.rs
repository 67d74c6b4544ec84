//! Injected failures for Web API methods.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What an injected failure does to a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 200 with `{"ok":false,"error":<error>}`.
    Error { error: String },
    /// HTTP 429, `Retry-After`, `{"ok":false,"error":"ratelimited"}`.
    RateLimit { retry_after_secs: u64 },
    /// Any HTTP status (e.g. 500, 503) with a small error body.
    Http { status: u16 },
    /// The call takes effect (the message is posted), then the answer is lost: HTTP `status`
    /// with an error body, as when a proxy fails after Slack did the work.
    AnswerLost { status: u16 },
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Fault {
    /// Method name, or `*` for every method.
    pub method: String,
    pub kind: FaultKind,
    /// Remaining calls it applies to; `None` until cleared.
    pub remaining: Option<u32>,
}

/// Latency and failure rules; `*` matches every method.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct Faults {
    pub latency: HashMap<String, Duration>,
    pub failures: Vec<Fault>,
}

impl Faults {
    pub fn latency_for(&self, method: &str) -> Option<Duration> {
        self.latency
            .get(method)
            .or_else(|| self.latency.get("*"))
            .copied()
    }

    /// Takes one use of the first failure that matches, oldest rule first.
    pub fn take_failure(&mut self, method: &str) -> Option<FaultKind> {
        let idx = self
            .failures
            .iter()
            .position(|f| (f.method == method || f.method == "*") && f.remaining != Some(0))?;
        let fault = &mut self.failures[idx];
        let kind = fault.kind.clone();
        if let Some(n) = fault.remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.failures.remove(idx);
            }
        }
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_failure_runs_out_then_falls_through_to_the_next_rule() {
        let mut faults = Faults::default();
        faults.failures.push(Fault {
            method: "chat.update".into(),
            kind: FaultKind::Http { status: 500 },
            remaining: Some(2),
        });
        faults.failures.push(Fault {
            method: "*".into(),
            kind: FaultKind::Error {
                error: "fatal_error".into(),
            },
            remaining: None,
        });
        assert_eq!(
            faults.take_failure("chat.update"),
            Some(FaultKind::Http { status: 500 })
        );
        assert_eq!(
            faults.take_failure("chat.update"),
            Some(FaultKind::Http { status: 500 })
        );
        assert!(matches!(
            faults.take_failure("chat.update"),
            Some(FaultKind::Error { .. })
        ));
        assert!(matches!(
            faults.take_failure("auth.test"),
            Some(FaultKind::Error { .. })
        ));
    }
}
