//! A request and the state machine that decides it exactly once.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ids::{ChannelRef, RequestId, WorkflowName};

/// Free-form key/value parameters a machine attaches (version, amount, ...).
pub type Params = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Approved,
        Status::Denied,
        Status::Expired,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        self != Status::Pending
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "approve" => Some(Verdict::Approve),
            "deny" => Some(Verdict::Deny),
            _ => None,
        }
    }
}

/// Who made a decision: a person in Slack, a machine with an API key, a rule, or the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionKind {
    User,
    Machine,
    Policy,
    Timeout,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::User => "user",
            DecisionKind::Machine => "machine",
            DecisionKind::Policy => "policy",
            DecisionKind::Timeout => "timeout",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(DecisionKind::User),
            "machine" => Some(DecisionKind::Machine),
            "policy" => Some(DecisionKind::Policy),
            "timeout" => Some(DecisionKind::Timeout),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub by: String,
    pub kind: DecisionKind,
    pub verdict: Verdict,
    pub reason: Option<String>,
    pub at: Timestamp,
}

/// Where the request's Slack message lives, once it has been posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlackRef {
    pub channel: String,
    pub ts: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Request {
    pub id: RequestId,
    pub workflow: WorkflowName,
    pub title: String,
    pub details: Option<String>,
    pub params: Params,
    pub requester: Option<String>,
    pub status: Status,
    pub decisions: Vec<Decision>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub created_at: Timestamp,
    pub decided_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    /// The channel the workflow posts to (an id or `#name`).
    pub channel: ChannelRef,
    pub slack: Option<SlackRef>,
    pub callback_url: Option<String>,
    /// Bumped on every state change; stores use it for compare-and-set.
    #[serde(skip)]
    pub version: i64,
}

/// What a machine asked for, already validated and resolved against its workflow.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub workflow: WorkflowName,
    pub title: String,
    pub details: Option<String>,
    pub params: Params,
    pub requester: Option<String>,
    pub channel: ChannelRef,
    pub expires_at: Option<Timestamp>,
    pub callback_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    pub by: String,
    pub kind: DecisionKind,
    pub verdict: Verdict,
    pub reason: Option<String>,
}

/// The part of a workflow's configuration that decides how votes become a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub approvals_required: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            approvals_required: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteOutcome {
    /// The vote decided the request: it left `pending` for good.
    Decided(Status),
    /// The vote was counted; more approvals are needed.
    Counted { approvals: u32, required: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteRejected {
    #[error("request is already {}", status.as_str())]
    NotPending {
        status: Status,
        decided_by: Option<String>,
    },
    #[error("{by} has already voted on this request")]
    AlreadyVoted { by: String },
}

impl Request {
    pub fn new(id: RequestId, new: NewRequest, now: Timestamp) -> Self {
        Self {
            id,
            workflow: new.workflow,
            title: new.title,
            details: new.details,
            params: new.params,
            requester: new.requester,
            status: Status::Pending,
            decisions: Vec::new(),
            decided_by: None,
            reason: None,
            created_at: now,
            decided_at: None,
            expires_at: new.expires_at,
            channel: new.channel,
            slack: None,
            callback_url: new.callback_url,
            version: 0,
        }
    }

    fn ensure_pending(&self) -> Result<(), VoteRejected> {
        if self.status == Status::Pending {
            Ok(())
        } else {
            Err(VoteRejected::NotPending {
                status: self.status,
                decided_by: self.decided_by.clone(),
            })
        }
    }

    pub fn approvals(&self) -> u32 {
        let n = self
            .decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Approve)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Applies one vote. Any deny denies; approvals from distinct voters accumulate until the
    /// policy's quorum is met. A rejected vote leaves the request untouched.
    pub fn cast(
        &mut self,
        vote: Vote,
        policy: &Policy,
        now: Timestamp,
    ) -> Result<VoteOutcome, VoteRejected> {
        self.ensure_pending()?;
        if self.decisions.iter().any(|d| d.by == vote.by) {
            return Err(VoteRejected::AlreadyVoted { by: vote.by });
        }
        let required = policy.approvals_required.max(1);
        let verdict = vote.verdict;
        let by = vote.by.clone();
        let reason = vote.reason.clone();
        self.decisions.push(Decision {
            by: vote.by,
            kind: vote.kind,
            verdict,
            reason: vote.reason,
            at: now,
        });
        let approvals = self.approvals();
        let decided = match verdict {
            Verdict::Deny => Some(Status::Denied),
            Verdict::Approve if approvals >= required => Some(Status::Approved),
            Verdict::Approve => None,
        };
        self.version += 1;
        match decided {
            Some(status) => {
                self.status = status;
                self.decided_by = Some(by);
                self.reason = reason;
                self.decided_at = Some(now);
                Ok(VoteOutcome::Decided(status))
            }
            None => Ok(VoteOutcome::Counted {
                approvals,
                required,
            }),
        }
    }

    /// Withdraws a pending request. Cancelling is not a verdict, so no decision is recorded.
    pub fn cancel(
        &mut self,
        by: &str,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<(), VoteRejected> {
        self.ensure_pending()?;
        self.status = Status::Cancelled;
        self.decided_by = Some(by.to_owned());
        self.reason = reason;
        self.decided_at = Some(now);
        self.version += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Request {
        Request::new(
            RequestId::generate(),
            NewRequest {
                workflow: "deploy".parse().unwrap(),
                title: "Deploy v1.2".into(),
                details: None,
                params: Params::new(),
                requester: None,
                channel: "#deploys".parse().unwrap(),
                expires_at: None,
                callback_url: None,
            },
            Timestamp::UNIX_EPOCH,
        )
    }

    fn vote(by: &str, verdict: Verdict) -> Vote {
        Vote {
            by: by.into(),
            kind: DecisionKind::User,
            verdict,
            reason: None,
        }
    }

    #[test]
    fn one_approval_decides_by_default() {
        let mut r = pending();
        let out = r.cast(
            vote("U1", Verdict::Approve),
            &Policy::default(),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(out, Ok(VoteOutcome::Decided(Status::Approved)));
        assert_eq!(r.decided_by.as_deref(), Some("U1"));
        assert_eq!(r.version, 1);
    }

    #[test]
    fn a_decided_request_never_changes_again() {
        let mut r = pending();
        r.cast(
            vote("U1", Verdict::Deny),
            &Policy::default(),
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
        let before = r.clone();
        let again = r.cast(
            vote("U2", Verdict::Approve),
            &Policy::default(),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            again,
            Err(VoteRejected::NotPending {
                status: Status::Denied,
                decided_by: Some("U1".into())
            })
        );
        assert!(r.cancel("key", None, Timestamp::UNIX_EPOCH).is_err());
        assert_eq!(r, before);
    }

    #[test]
    fn quorum_counts_distinct_voters_and_any_deny_denies() {
        let policy = Policy {
            approvals_required: 2,
        };
        let mut r = pending();
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(
            r.cast(vote("U1", Verdict::Approve), &policy, now),
            Ok(VoteOutcome::Counted {
                approvals: 1,
                required: 2
            })
        );
        assert!(matches!(
            r.cast(vote("U1", Verdict::Approve), &policy, now),
            Err(VoteRejected::AlreadyVoted { .. })
        ));
        assert_eq!(
            r.cast(vote("U2", Verdict::Approve), &policy, now),
            Ok(VoteOutcome::Decided(Status::Approved))
        );

        let mut r = pending();
        r.cast(vote("U1", Verdict::Approve), &policy, now).unwrap();
        assert_eq!(
            r.cast(vote("U2", Verdict::Deny), &policy, now),
            Ok(VoteOutcome::Decided(Status::Denied))
        );
    }

    #[test]
    fn cancel_leaves_pending_once() {
        let mut r = pending();
        r.cancel("ci", Some("superseded".into()), Timestamp::UNIX_EPOCH)
            .unwrap();
        assert_eq!(r.status, Status::Cancelled);
        assert!(r.decisions.is_empty());
        assert!(r.cancel("ci", None, Timestamp::UNIX_EPOCH).is_err());
    }
}
