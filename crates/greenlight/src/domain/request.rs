//! A request and the state machine that decides it exactly once.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ids::{ApiKeyId, ChannelRef, KEY_ACTOR_PREFIX, RequestId, SlackUserId, WorkflowName};

/// Free-form key/value parameters a machine attaches (version, amount, ...).
pub type Params = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decision {
    pub by: String,
    /// The person's Slack handle when the vote came from a click ("alice"), for messages
    /// that name them without a lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub kind: DecisionKind,
    pub verdict: Verdict,
    pub reason: Option<String>,
    pub at: Timestamp,
}

/// Where the request's Slack message lives, once it has been posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SlackRef {
    pub channel: String,
    pub ts: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Request {
    pub id: RequestId,
    pub workflow: WorkflowName,
    pub title: String,
    pub details: Option<String>,
    #[schema(value_type = Object)]
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
    /// The caller's own JSON object (an agent's run id, a pipeline's build), kept with the
    /// request and handed back; never shown in Slack.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The agent's tool call this request asks about, if it is one (MCP's permission prompt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<ToolCall>,
    /// The API key that asked: only it (or an admin key) may cancel, and only it sees the
    /// full `callback_url`.
    #[serde(skip)]
    pub created_by: Option<ApiKeyId>,
    /// The digest message that tells of this auto-decision, instead of a message of its own.
    #[serde(skip)]
    pub digest_key: Option<String>,
    /// Reminders posted so far, and when the next one is due (none when the workflow sends none).
    #[serde(skip)]
    pub reminders: u32,
    #[serde(skip)]
    pub remind_at: Option<Timestamp>,
    /// Bumped on every state change; stores use it for compare-and-set.
    #[serde(skip)]
    pub version: i64,
}

/// A tool an AI agent wants to run, and with what input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolCall {
    pub name: String,
    pub input: serde_json::Value,
}

/// A requester as a request keeps it: a Slack user id or mention (`<@U0ALICE>`, ` u0alice `)
/// as the id (`U0ALICE`), anything else (an email, a pipeline's name) as given.
pub fn requester_as_stored(requester: &str) -> String {
    SlackUserId::named_by(requester).map_or_else(|| requester.to_owned(), |u| u.to_string())
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
    /// When the first reminder is due, if the workflow sends reminders.
    pub remind_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    pub by: String,
    /// The voter's handle, when known (a Slack click carries it).
    pub name: Option<String>,
    pub kind: DecisionKind,
    pub verdict: Verdict,
    pub reason: Option<String>,
}

/// The part of a workflow's configuration that decides how votes become a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub approvals_required: u32,
    pub allow_self_approval: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            approvals_required: 1,
            allow_self_approval: false,
        }
    }
}

/// What adapters found out about a voter before the vote (group membership, who asked): the
/// domain decides with these facts and never looks anything up itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub is_approver: bool,
    pub is_requester: bool,
}

impl Standing {
    /// An allowed voter who did not ask (machines with the decide scope).
    pub const APPROVER: Standing = Standing {
        is_approver: true,
        is_requester: false,
    };
}

/// What happens to a request nobody decided before it expired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExpiry {
    #[default]
    Expire,
    Approve,
    Deny,
}

/// How Slack hears of an auto-decision (a rule's, or its workflow's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Notify {
    /// A message of its own, as for a request people decide.
    #[default]
    Message,
    /// A line in the channel's digest: one message per `digest_interval`, updated in place.
    Digest,
    /// No Slack message; still audited, in the API and in callbacks.
    Silent,
}

impl Notify {
    pub fn as_str(self) -> &'static str {
        match self {
            Notify::Message => "message",
            Notify::Digest => "digest",
            Notify::Silent => "silent",
        }
    }
}

/// Who is named as the decider when the clock decides.
pub const TIMEOUT_ACTOR: &str = "timeout";

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
    #[error("{by} is not an approver for {workflow}")]
    NotAnApprover { by: String, workflow: String },
    #[error("the requester may not approve their own request")]
    SelfApproval,
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
            metadata: None,
            tool_call: None,
            created_by: None,
            digest_key: None,
            reminders: 0,
            remind_at: new.remind_at,
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

    /// Applies one vote from an allowed voter who did not ask (see `cast_as`).
    pub fn cast(
        &mut self,
        vote: Vote,
        policy: &Policy,
        now: Timestamp,
    ) -> Result<VoteOutcome, VoteRejected> {
        self.cast_as(vote, Standing::APPROVER, policy, now)
    }

    /// Applies one vote. Only approvers vote, the requester may not approve their own request
    /// unless the policy allows it, and each person votes once. Any deny denies; approvals
    /// from distinct voters accumulate until the policy's quorum is met. A rejected vote leaves
    /// the request untouched.
    pub fn cast_as(
        &mut self,
        vote: Vote,
        standing: Standing,
        policy: &Policy,
        now: Timestamp,
    ) -> Result<VoteOutcome, VoteRejected> {
        self.ensure_pending()?;
        if !standing.is_approver {
            return Err(VoteRejected::NotAnApprover {
                by: vote.by,
                workflow: self.workflow.to_string(),
            });
        }
        if standing.is_requester && vote.verdict == Verdict::Approve && !policy.allow_self_approval
        {
            return Err(VoteRejected::SelfApproval);
        }
        let voter = Voter::of(&vote.by, vote.kind);
        if self
            .decisions
            .iter()
            .any(|d| Voter::of(&d.by, d.kind) == voter)
        {
            return Err(VoteRejected::AlreadyVoted { by: vote.by });
        }
        let required = policy.approvals_required.max(1);
        let verdict = vote.verdict;
        let by = vote.by.clone();
        let reason = vote.reason.clone();
        self.decisions.push(Decision {
            by: vote.by,
            name: vote.name,
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
        match decided {
            Some(status) => {
                self.finish(status, Some(by), reason, now);
                Ok(VoteOutcome::Decided(status))
            }
            None => {
                self.version += 1;
                Ok(VoteOutcome::Counted {
                    approvals,
                    required,
                })
            }
        }
    }

    /// Decides at creation by a rule (machine-to-machine): no person is asked.
    pub fn decide_by_rule(
        &mut self,
        rule: &str,
        verdict: Verdict,
        summary: String,
        now: Timestamp,
    ) -> Result<Status, VoteRejected> {
        self.ensure_pending()?;
        self.decisions.push(Decision {
            by: rule.to_owned(),
            name: None,
            kind: DecisionKind::Policy,
            verdict,
            reason: Some(summary.clone()),
            at: now,
        });
        self.finish(
            verdict_status(verdict),
            Some(rule.to_owned()),
            Some(summary),
            now,
        );
        Ok(self.status)
    }

    /// Lets the clock decide a request nobody decided in time. Returns `Ok(None)`, changing
    /// nothing, when it has no expiry or it is not due yet.
    pub fn expire(
        &mut self,
        on_expiry: OnExpiry,
        now: Timestamp,
    ) -> Result<Option<Status>, VoteRejected> {
        self.ensure_pending()?;
        if self.expires_at.is_none_or(|at| at > now) {
            return Ok(None);
        }
        let verdict = match on_expiry {
            OnExpiry::Expire => None,
            OnExpiry::Approve => Some(Verdict::Approve),
            OnExpiry::Deny => Some(Verdict::Deny),
        };
        let status = match verdict {
            None => Status::Expired,
            Some(verdict) => {
                self.decisions.push(Decision {
                    by: TIMEOUT_ACTOR.to_owned(),
                    name: None,
                    kind: DecisionKind::Timeout,
                    verdict,
                    reason: None,
                    at: now,
                });
                verdict_status(verdict)
            }
        };
        self.finish(status, Some(TIMEOUT_ACTOR.to_owned()), None, now);
        Ok(Some(status))
    }

    /// Counts a reminder if one is due, and schedules the next `every` later. Returns the
    /// reminder's number (1 for the first), or `Ok(None)` when none is due.
    pub fn remind(
        &mut self,
        every: std::time::Duration,
        now: Timestamp,
    ) -> Result<Option<u32>, VoteRejected> {
        self.ensure_pending()?;
        let Some(due) = self.remind_at.filter(|at| *at <= now) else {
            return Ok(None);
        };
        self.reminders += 1;
        // Catch up from `now`, not `due`: after a long downtime one reminder is enough.
        let next = due.max(now).checked_add(every).ok();
        self.remind_at = next;
        self.version += 1;
        Ok(Some(self.reminders))
    }

    /// Cancels the reminders still scheduled (the workflow stopped sending them).
    pub fn stop_reminders(&mut self) {
        if self.remind_at.take().is_some() {
            self.version += 1;
        }
    }

    fn finish(
        &mut self,
        status: Status,
        by: Option<String>,
        reason: Option<String>,
        now: Timestamp,
    ) {
        self.status = status;
        self.decided_by = by;
        self.reason = reason;
        self.decided_at = Some(now);
        self.remind_at = None;
        self.version += 1;
    }

    /// Withdraws a pending request. Cancelling is not a verdict, so no decision is recorded.
    pub fn cancel(
        &mut self,
        by: &str,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<(), VoteRejected> {
        self.ensure_pending()?;
        self.finish(Status::Cancelled, Some(by.to_owned()), reason, now);
        Ok(())
    }
}

/// Who a vote is from, for "one vote each": a person and an API key never share a voter,
/// whatever the key is named. A key's votes are recorded as `key:NAME`; ones recorded before
/// that carry the bare name, and count as the same key.
#[derive(Debug, PartialEq, Eq)]
enum Voter<'a> {
    Person(&'a str),
    Key(&'a str),
    Other(DecisionKind, &'a str),
}

impl<'a> Voter<'a> {
    fn of(by: &'a str, kind: DecisionKind) -> Self {
        match kind {
            DecisionKind::User => Voter::Person(by),
            DecisionKind::Machine => Voter::Key(by.strip_prefix(KEY_ACTOR_PREFIX).unwrap_or(by)),
            other => Voter::Other(other, by),
        }
    }
}

fn verdict_status(verdict: Verdict) -> Status {
    match verdict {
        Verdict::Approve => Status::Approved,
        Verdict::Deny => Status::Denied,
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
                expires_at: Some(at(3600)),
                callback_url: None,
                remind_at: Some(at(900)),
            },
            Timestamp::UNIX_EPOCH,
        )
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn vote(by: &str, verdict: Verdict) -> Vote {
        Vote {
            by: by.into(),
            name: None,
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
            ..Policy::default()
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
    fn a_key_and_a_person_never_share_a_vote_whatever_the_key_is_named() {
        let policy = Policy {
            approvals_required: 3,
            ..Policy::default()
        };
        let now = Timestamp::UNIX_EPOCH;
        let machine = |by: &str, verdict| Vote {
            kind: DecisionKind::Machine,
            ..vote(by, verdict)
        };
        let mut r = pending();
        // A key named like Bob, as recorded before keys had their own namespace.
        r.cast(machine("U0BOB", Verdict::Approve), &policy, now)
            .unwrap();
        r.cast(machine("key:ci", Verdict::Approve), &policy, now)
            .unwrap();
        // Bob himself still votes, and his deny decides.
        assert_eq!(
            r.cast(vote("U0BOB", Verdict::Deny), &policy, now),
            Ok(VoteOutcome::Decided(Status::Denied))
        );

        // The same key votes once, under its old bare name or its new one.
        let mut r = pending();
        r.cast(machine("ci", Verdict::Approve), &policy, now)
            .unwrap();
        assert_eq!(
            r.cast(machine("key:ci", Verdict::Approve), &policy, now),
            Err(VoteRejected::AlreadyVoted {
                by: "key:ci".into()
            })
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

    #[test]
    fn only_approvers_vote_and_the_requester_needs_the_opt_in() {
        let mut r = pending();
        let now = Timestamp::UNIX_EPOCH;
        let outsider = Standing {
            is_approver: false,
            is_requester: false,
        };
        assert!(matches!(
            r.cast_as(vote("U9", Verdict::Deny), outsider, &Policy::default(), now),
            Err(VoteRejected::NotAnApprover { .. })
        ));
        let requester = Standing {
            is_approver: true,
            is_requester: true,
        };
        assert_eq!(
            r.cast_as(
                vote("U1", Verdict::Approve),
                requester,
                &Policy::default(),
                now
            ),
            Err(VoteRejected::SelfApproval)
        );
        assert_eq!(r.version, 0);
        assert!(r.decisions.is_empty());
        let lenient = Policy {
            allow_self_approval: true,
            ..Policy::default()
        };
        assert_eq!(
            r.cast_as(vote("U1", Verdict::Approve), requester, &lenient, now),
            Ok(VoteOutcome::Decided(Status::Approved))
        );
    }

    #[test]
    fn expiry_waits_for_its_time_then_decides_once() {
        for (on_expiry, status, decisions) in [
            (OnExpiry::Expire, Status::Expired, 0),
            (OnExpiry::Approve, Status::Approved, 1),
            (OnExpiry::Deny, Status::Denied, 1),
        ] {
            let mut r = pending();
            assert_eq!(r.expire(on_expiry, at(3599)), Ok(None));
            assert_eq!(r.version, 0);
            assert_eq!(r.expire(on_expiry, at(3600)), Ok(Some(status)));
            assert_eq!(r.status, status);
            assert_eq!(r.decided_by.as_deref(), Some(TIMEOUT_ACTOR));
            assert_eq!(r.decisions.len(), decisions);
            assert!(r.decisions.iter().all(|d| d.kind == DecisionKind::Timeout));
            assert_eq!(r.remind_at, None);
            assert!(matches!(
                r.expire(on_expiry, at(7200)),
                Err(VoteRejected::NotPending { .. })
            ));
            assert!(
                r.cast(vote("U1", Verdict::Approve), &Policy::default(), at(7200))
                    .is_err()
            );
        }
        let mut r = pending();
        r.expires_at = None;
        assert_eq!(r.expire(OnExpiry::Deny, at(99_999)), Ok(None));
    }

    #[test]
    fn a_vote_first_means_expiry_finds_nothing_to_do() {
        let mut r = pending();
        r.cast(vote("U1", Verdict::Approve), &Policy::default(), at(10))
            .unwrap();
        assert!(matches!(
            r.expire(OnExpiry::Deny, at(3600)),
            Err(VoteRejected::NotPending {
                status: Status::Approved,
                ..
            })
        ));
    }

    #[test]
    fn reminders_count_up_and_stop_with_the_decision() {
        let every = std::time::Duration::from_secs(900);
        let mut r = pending();
        assert_eq!(r.remind(every, at(899)), Ok(None));
        assert_eq!(r.remind(every, at(900)), Ok(Some(1)));
        assert_eq!(r.remind_at, Some(at(1800)));
        assert_eq!(r.remind(every, at(1000)), Ok(None));
        // Late (a downtime): one reminder, the next one a full interval later.
        assert_eq!(r.remind(every, at(5000)), Ok(Some(2)));
        assert_eq!(r.remind_at, Some(at(5900)));
        r.cancel("ci", None, at(5001)).unwrap();
        assert_eq!(r.remind_at, None);
        assert!(r.remind(every, at(9999)).is_err());
    }

    #[test]
    fn a_rule_decides_with_its_name_and_summary() {
        let mut r = pending();
        let status = r
            .decide_by_rule(
                "small-payment",
                Verdict::Approve,
                "amount 120".into(),
                at(1),
            )
            .unwrap();
        assert_eq!(status, Status::Approved);
        assert_eq!(r.decided_by.as_deref(), Some("small-payment"));
        assert_eq!(r.decisions[0].kind, DecisionKind::Policy);
        assert_eq!(r.reason.as_deref(), Some("amount 120"));
    }
}
