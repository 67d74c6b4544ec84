//! A request and the state machine that decides it exactly once.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::answers::{Answers, Buttons, Field, TOOL_INPUT_PREFIX};
use super::ids::{ApiKeyId, ChannelRef, KEY_ACTOR_PREFIX, RequestId, SlackUserId, WorkflowName};
use super::stages::{Policy, StageStatus};

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
    /// A standing approval a person granted earlier decided it in their name.
    Standing,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::User => "user",
            DecisionKind::Machine => "machine",
            DecisionKind::Policy => "policy",
            DecisionKind::Timeout => "timeout",
            DecisionKind::Standing => "standing",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(DecisionKind::User),
            "machine" => Some(DecisionKind::Machine),
            "policy" => Some(DecisionKind::Policy),
            "timeout" => Some(DecisionKind::Timeout),
            "standing" => Some(DecisionKind::Standing),
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
    /// The stage the vote counted for (none on votes recorded before stages, which count for
    /// the first stage, and on decisions no person made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// What this voter answered to the request's fields (none when it asks none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub response: Option<Answers>,
    /// The params this voter edited, with their new values (none when they edited nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub edits: Option<Params>,
}

/// Where the request's Slack message lives, once it has been posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// Copies of the message in people's direct messages, rewritten with it.
    #[serde(skip)]
    pub slack_copies: Vec<SlackRef>,
    pub callback_url: Option<String>,
    /// The caller's own JSON object (an agent's run id, a pipeline's build), kept with the
    /// request and handed back; never shown in Slack.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The agent's tool call this request asks about, if it is one (MCP's permission prompt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<ToolCall>,
    /// Who asked, as proven by a workload token a `[[trust]]` policy accepted (none for an API
    /// key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<super::Identity>,
    /// What approvers fill in when they approve (or answer).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
    /// `answer`: one Answer button instead of Approve and Deny.
    #[serde(skip_serializing_if = "Buttons::is_default")]
    pub buttons: Buttons,
    /// The answers of the vote that approved the request, by field name (see `settle_response`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub response: Option<Answers>,
    /// Params approvers may edit before approving (`"params.NAME"`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub editable: Vec<String>,
    /// Once approved, for a request with `editable`: `params` with the approving vote's edits
    /// applied (equal to `params` when nothing was edited). What hooks and receipts use.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub approved_params: Option<Params>,
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
    /// Once approved, when its input was editable (`[mcp] permission_editable`): the input
    /// with the approving vote's edits applied. What `permission_prompt` answers as
    /// `updatedInput`.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub approved_input: Option<serde_json::Value>,
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
    /// The open stage a machine's vote is for; none: the first open stage it may vote in.
    pub stage: Option<String>,
    /// The voter's answers to the request's fields, already checked against them.
    pub response: Option<Answers>,
    /// The editable params the voter changed, with their new values (checked).
    pub edits: Option<Params>,
}

/// What adapters found out about a voter before the vote (group membership, who asked): the
/// domain decides with these facts and never looks anything up itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The stages the voter is one of the approvers of.
    pub stages: StageSet,
    pub is_requester: bool,
}

/// Stages a voter may vote in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageSet {
    /// Every stage (machines with the decide scope).
    All,
    /// These, by name (none: not an approver at all).
    Named(Vec<String>),
}

impl StageSet {
    pub fn contains(&self, stage: &str) -> bool {
        match self {
            StageSet::All => true,
            StageSet::Named(names) => names.iter().any(|n| n == stage),
        }
    }
}

impl Standing {
    /// An allowed voter who did not ask (machines with the decide scope).
    pub const APPROVER: Standing = Standing {
        stages: StageSet::All,
        is_requester: false,
    };
}

/// One stage of a request: its quorum, where it stands and who approved in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageProgress {
    pub name: String,
    pub approvals_required: u32,
    pub status: StageStatus,
    pub approvals: Vec<StageApproval>,
}

impl StageProgress {
    pub fn is_open(&self) -> bool {
        self.status == StageStatus::Open
    }
}

/// An approval counted for a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageApproval {
    pub by: String,
    /// The person's handle, when known.
    pub name: Option<String>,
    pub at: Timestamp,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteOutcome {
    /// The vote decided the request: it left `pending` for good.
    Decided(Status),
    /// The vote was counted for `stage`; more votes are needed.
    Counted {
        stage: String,
        approvals: u32,
        required: u32,
    },
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
    /// The voter is an approver of stages, but none of them is open now.
    #[error("{by} is not an approver of an open stage (open: {})", open.join(", "))]
    NotYourStage { by: String, open: Vec<String> },
    /// A machine named a stage that is not open (or does not exist).
    #[error("stage {stage:?} is not open (open: {})", open.join(", "))]
    StageNotOpen { stage: String, open: Vec<String> },
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
            slack_copies: Vec::new(),
            callback_url: new.callback_url,
            metadata: None,
            tool_call: None,
            identity: None,
            fields: Vec::new(),
            buttons: Buttons::default(),
            response: None,
            editable: Vec::new(),
            approved_params: None,
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

    /// Which of the policy's stages are met: enough distinct approvals counted for each.
    fn stages_met(&self, policy: &Policy) -> Vec<bool> {
        (0..policy.stages.len())
            .map(|i| self.stage_approvals(policy, i) >= policy.stages[i].approvals_required.max(1))
            .collect()
    }

    /// Approvals counted for the stage at `index`; a vote recorded before stages (no stage)
    /// counts for the first.
    fn stage_approvals(&self, policy: &Policy, index: usize) -> u32 {
        let n = self
            .decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Approve && counts_for(d, policy, index))
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn denials(&self) -> u32 {
        let n = self
            .decisions
            .iter()
            .filter(|d| {
                d.verdict == Verdict::Deny
                    && matches!(d.kind, DecisionKind::User | DecisionKind::Machine)
            })
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Every stage of the policy: its quorum, status and the approvals counted for it.
    pub fn stages(&self, policy: &Policy) -> Vec<StageProgress> {
        let met = self.stages_met(policy);
        let open = policy.open(&met);
        policy
            .stages
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let status = match (met[i], open[i], self.status) {
                    (true, _, _) => StageStatus::Approved,
                    (false, true, Status::Pending) => StageStatus::Open,
                    (false, true, Status::Denied) => StageStatus::Denied,
                    _ => StageStatus::Waiting,
                };
                StageProgress {
                    name: rule.name.clone(),
                    approvals_required: rule.approvals_required.max(1),
                    status,
                    approvals: self
                        .decisions
                        .iter()
                        .filter(|d| d.verdict == Verdict::Approve && counts_for(d, policy, i))
                        .map(|d| StageApproval {
                            by: d.by.clone(),
                            name: d.name.clone(),
                            at: d.at,
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// The names of the stages open now (none once the request is decided).
    pub fn open_stages(&self, policy: &Policy) -> Vec<String> {
        if self.status != Status::Pending {
            return Vec::new();
        }
        let met = self.stages_met(policy);
        policy
            .open(&met)
            .into_iter()
            .zip(&policy.stages)
            .filter(|(open, _)| *open)
            .map(|(_, s)| s.name.clone())
            .collect()
    }

    /// Applies one vote. Each person (and each key) votes once per request, and that vote
    /// counts for one open stage: the one a machine names, or the first open stage, in the
    /// policy's order, whose approvers include the voter. Nobody else votes, and the requester
    /// may not approve their own request unless the policy allows it. The request is approved
    /// when every stage has its quorum of distinct approvals, denied when the policy's number
    /// of denials is reached. A rejected vote leaves the request untouched.
    pub fn cast_as(
        &mut self,
        vote: Vote,
        standing: Standing,
        policy: &Policy,
        now: Timestamp,
    ) -> Result<VoteOutcome, VoteRejected> {
        self.ensure_pending()?;
        let voter = Voter::of(&vote.by, vote.kind);
        if self
            .decisions
            .iter()
            .any(|d| Voter::of(&d.by, d.kind) == voter)
        {
            return Err(VoteRejected::AlreadyVoted { by: vote.by });
        }
        let stage = self.stage_of(&vote, &standing, policy)?;
        if standing.is_requester && vote.verdict == Verdict::Approve && !policy.allow_self_approval
        {
            return Err(VoteRejected::SelfApproval);
        }
        let verdict = vote.verdict;
        let by = vote.by.clone();
        let reason = vote.reason.clone();
        let stage_name = policy.stages[stage].name.clone();
        self.decisions.push(Decision {
            by: vote.by,
            name: vote.name,
            kind: vote.kind,
            verdict,
            reason: vote.reason,
            at: now,
            stage: Some(stage_name.clone()),
            response: vote.response,
            edits: vote.edits,
        });
        let decided = match verdict {
            Verdict::Deny if self.denials() >= policy.denials_required.max(1) => {
                Some(Status::Denied)
            }
            Verdict::Approve if self.stages_met(policy).iter().all(|m| *m) => {
                Some(Status::Approved)
            }
            _ => None,
        };
        match decided {
            Some(status) => {
                self.finish(status, Some(by), reason, now);
                Ok(VoteOutcome::Decided(status))
            }
            None => {
                self.version += 1;
                Ok(VoteOutcome::Counted {
                    approvals: match verdict {
                        Verdict::Approve => self.stage_approvals(policy, stage),
                        Verdict::Deny => self.denials(),
                    },
                    required: match verdict {
                        Verdict::Approve => policy.stages[stage].approvals_required.max(1),
                        Verdict::Deny => policy.denials_required.max(1),
                    },
                    stage: stage_name,
                })
            }
        }
    }

    /// Sets `response` from the decisions: the answers of the vote that approved the request
    /// (the last approval, which completed it), if it gave any. Stores call it on every read.
    pub fn settle_response(&mut self) {
        let approving = match self.status {
            Status::Approved => self
                .decisions
                .last()
                .filter(|d| d.verdict == Verdict::Approve),
            _ => None,
        };
        self.response = approving.and_then(|d| d.response.clone());
        let edits = approving.and_then(|d| d.edits.clone()).unwrap_or_default();
        let approved = self.status == Status::Approved;
        let edits_params = self
            .editable
            .iter()
            .any(|e| super::answers::editable_param(e).is_some());
        self.approved_params = (approved && edits_params).then(|| {
            let mut params = self.params.clone();
            for (k, v) in edits
                .iter()
                .filter(|(k, _)| !k.starts_with(TOOL_INPUT_PREFIX))
            {
                params.insert(k.clone(), v.clone());
            }
            params
        });
        let edits_input = self
            .editable
            .iter()
            .any(|e| e.starts_with(TOOL_INPUT_PREFIX));
        if let Some(call) = &mut self.tool_call {
            call.approved_input = (approved && edits_input).then(|| {
                let mut input = call.input.clone();
                if let Some(obj) = input.as_object_mut() {
                    for (k, v) in &edits {
                        if let Some(key) = k.strip_prefix(TOOL_INPUT_PREFIX) {
                            obj.insert(key.to_owned(), v.clone());
                        }
                    }
                }
                input
            });
        }
    }

    /// The value an edit key names: a param (`replicas`), or a key of the tool call's input
    /// (`tool_call.input.command`).
    pub fn edit_target(&self, key: &str) -> Option<&serde_json::Value> {
        match key.strip_prefix(TOOL_INPUT_PREFIX) {
            Some(input_key) => self.tool_call.as_ref()?.input.get(input_key),
            None => self.params.get(key),
        }
    }

    /// The edit keys approvers may change, with their values: params named `params.NAME` (key
    /// `NAME`) and tool input keys named `tool_call.input.KEY` (key: the whole entry).
    pub fn editable_values(&self) -> Vec<(&str, &serde_json::Value)> {
        self.editable
            .iter()
            .filter_map(|e| {
                let key = super::answers::editable_param(e)
                    .or_else(|| e.starts_with(TOOL_INPUT_PREFIX).then_some(e.as_str()))?;
                Some((key, self.edit_target(key)?))
            })
            .collect()
    }

    /// The params an approved request runs with: `approved_params` when approvers could edit
    /// them, else `params`.
    pub fn effective_params(&self) -> &Params {
        self.approved_params.as_ref().unwrap_or(&self.params)
    }

    /// The index of the stage `vote` counts for, or why it counts for none.
    fn stage_of(
        &self,
        vote: &Vote,
        standing: &Standing,
        policy: &Policy,
    ) -> Result<usize, VoteRejected> {
        let met = self.stages_met(policy);
        let eligible = |i: usize| standing.stages.contains(&policy.stages[i].name);
        let open_names = || self.open_stages(policy);
        if let Some(wanted) = &vote.stage {
            let open = policy.open(&met);
            return match policy.index_of(wanted) {
                Some(i) if open[i] && eligible(i) => Ok(i),
                _ => Err(VoteRejected::StageNotOpen {
                    stage: wanted.clone(),
                    open: open_names(),
                }),
            };
        }
        if let Some(i) = policy.stage_for(&met, eligible) {
            return Ok(i);
        }
        if (0..policy.stages.len()).any(eligible) {
            Err(VoteRejected::NotYourStage {
                by: vote.by.clone(),
                open: open_names(),
            })
        } else {
            Err(VoteRejected::NotAnApprover {
                by: vote.by.clone(),
                workflow: self.workflow.to_string(),
            })
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
            stage: None,
            response: None,
            edits: None,
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
                    stage: None,
                    response: None,
                    edits: None,
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
        self.settle_response();
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

/// Whether `decision` counts for the policy's stage at `index`: only votes do (a rule's or the
/// clock's decision is no approval of a stage).
fn counts_for(decision: &Decision, policy: &Policy, index: usize) -> bool {
    // A standing approval is its granter's approval given in advance.
    if !matches!(
        decision.kind,
        DecisionKind::User | DecisionKind::Machine | DecisionKind::Standing
    ) {
        return false;
    }
    match &decision.stage {
        Some(stage) => policy.stages[index].name == *stage,
        None => index == 0,
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
            stage: None,
            response: None,
            edits: None,
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
        let policy = Policy::single(2);
        let mut r = pending();
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(
            r.cast(vote("U1", Verdict::Approve), &policy, now),
            Ok(VoteOutcome::Counted {
                stage: "approvers".into(),
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
        let policy = Policy::single(3);
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
            stages: StageSet::Named(Vec::new()),
            is_requester: false,
        };
        assert!(matches!(
            r.cast_as(
                vote("U9", Verdict::Deny),
                outsider.clone(),
                &Policy::default(),
                now
            ),
            Err(VoteRejected::NotAnApprover { .. })
        ));
        let requester = Standing {
            stages: StageSet::All,
            is_requester: true,
        };
        assert_eq!(
            r.cast_as(
                vote("U1", Verdict::Approve),
                requester.clone(),
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

    fn staged(order: crate::domain::StagesOrder, quorums: &[u32]) -> Policy {
        Policy {
            stages: quorums
                .iter()
                .enumerate()
                .map(|(i, q)| crate::domain::StageRule {
                    name: format!("s{i}"),
                    approvals_required: *q,
                })
                .collect(),
            stages_order: order,
            ..Policy::default()
        }
    }

    fn listed_in(stages: &[&str]) -> Standing {
        Standing {
            stages: StageSet::Named(stages.iter().map(|s| (*s).to_owned()).collect()),
            is_requester: false,
        }
    }

    #[test]
    fn sequential_stages_open_in_order_and_an_early_click_counts_for_nothing() {
        use crate::domain::StagesOrder;
        let policy = staged(StagesOrder::Sequential, &[1, 2]);
        let now = Timestamp::UNIX_EPOCH;
        let mut r = pending();
        assert_eq!(r.open_stages(&policy), ["s0"]);
        let early = r.cast_as(
            vote("U0SEC", Verdict::Approve),
            listed_in(&["s1"]),
            &policy,
            now,
        );
        assert_eq!(
            early,
            Err(VoteRejected::NotYourStage {
                by: "U0SEC".into(),
                open: vec!["s0".into()]
            })
        );
        assert_eq!(r.version, 0);
        r.cast_as(
            vote("U0OWN", Verdict::Approve),
            listed_in(&["s0"]),
            &policy,
            now,
        )
        .unwrap();
        assert_eq!(r.open_stages(&policy), ["s1"]);
        let stages = r.stages(&policy);
        assert_eq!(stages[0].status, StageStatus::Approved);
        assert_eq!(stages[1].status, StageStatus::Open);
        r.cast_as(
            vote("U0SEC", Verdict::Approve),
            listed_in(&["s1"]),
            &policy,
            now,
        )
        .unwrap();
        assert_eq!(r.status, Status::Pending);
        assert_eq!(
            r.cast_as(
                vote("U0CISO", Verdict::Approve),
                listed_in(&["s1"]),
                &policy,
                now
            ),
            Ok(VoteOutcome::Decided(Status::Approved))
        );
        assert!(
            r.stages(&policy)
                .iter()
                .all(|s| s.status == StageStatus::Approved)
        );
    }

    #[test]
    fn a_person_in_both_parallel_stages_satisfies_only_one() {
        use crate::domain::StagesOrder;
        let policy = staged(StagesOrder::Parallel, &[1, 1]);
        let now = Timestamp::UNIX_EPOCH;
        let mut r = pending();
        let both = listed_in(&["s0", "s1"]);
        assert!(matches!(
            r.cast_as(vote("U0BOTH", Verdict::Approve), both.clone(), &policy, now),
            Ok(VoteOutcome::Counted { ref stage, .. }) if stage == "s0"
        ));
        assert!(matches!(
            r.cast_as(vote("U0BOTH", Verdict::Approve), both.clone(), &policy, now),
            Err(VoteRejected::AlreadyVoted { .. })
        ));
        assert_eq!(r.open_stages(&policy), ["s1"]);
        // Another person of both groups counts for the stage that still needs them.
        assert_eq!(
            r.cast_as(vote("U0TWO", Verdict::Approve), both, &policy, now),
            Ok(VoteOutcome::Decided(Status::Approved))
        );
        assert_eq!(r.decisions[1].stage.as_deref(), Some("s1"));
    }

    #[test]
    fn denials_required_waits_for_that_many_denials() {
        let policy = Policy {
            denials_required: 2,
            ..Policy::single(3)
        };
        let now = Timestamp::UNIX_EPOCH;
        let mut r = pending();
        assert!(matches!(
            r.cast(vote("U1", Verdict::Deny), &policy, now),
            Ok(VoteOutcome::Counted {
                approvals: 1,
                required: 2,
                ..
            })
        ));
        r.cast(vote("U2", Verdict::Approve), &policy, now).unwrap();
        assert_eq!(
            r.cast(vote("U3", Verdict::Deny), &policy, now),
            Ok(VoteOutcome::Decided(Status::Denied))
        );
        assert_eq!(r.stages(&policy)[0].status, StageStatus::Denied);
    }

    #[test]
    fn a_rule_or_the_clock_approves_no_stage() {
        let policy = Policy::single(2);
        let mut r = pending();
        r.cast(vote("U1", Verdict::Approve), &policy, at(1))
            .unwrap();
        r.expire(OnExpiry::Approve, at(3600)).unwrap();
        let stage = &r.stages(&policy)[0];
        assert_eq!(stage.approvals.len(), 1);
        assert_eq!(stage.status, StageStatus::Waiting);
        assert!(r.open_stages(&policy).is_empty());
    }

    #[test]
    fn a_machine_names_an_open_stage_or_is_refused() {
        use crate::domain::StagesOrder;
        let policy = staged(StagesOrder::Sequential, &[1, 1]);
        let now = Timestamp::UNIX_EPOCH;
        let machine = |stage: Option<&str>| Vote {
            kind: DecisionKind::Machine,
            stage: stage.map(str::to_owned),
            ..vote("key:ci", Verdict::Approve)
        };
        let mut r = pending();
        for wrong in ["s1", "nope"] {
            assert_eq!(
                r.cast(machine(Some(wrong)), &policy, now),
                Err(VoteRejected::StageNotOpen {
                    stage: wrong.into(),
                    open: vec!["s0".into()]
                })
            );
        }
        r.cast(machine(Some("s0")), &policy, now).unwrap();
        assert_eq!(r.decisions[0].stage.as_deref(), Some("s0"));
        // Votes recorded before stages count for the first one.
        let mut old = pending();
        old.cast(vote("U1", Verdict::Approve), &Policy::single(2), now)
            .unwrap();
        old.decisions[0].stage = None;
        assert_eq!(old.stages(&Policy::single(2))[0].approvals.len(), 1);
    }

    mod properties {
        use super::*;
        use crate::domain::StagesOrder;
        use proptest::prelude::*;

        const PEOPLE: usize = 6;

        #[derive(Debug, Clone)]
        struct Case {
            quorums: Vec<u32>,
            parallel: bool,
            denials_required: u32,
            /// For each person, a bit per stage they are listed in.
            listed: Vec<u8>,
            /// (person, approves?)
            clicks: Vec<(usize, bool)>,
        }

        fn case() -> impl Strategy<Value = Case> {
            (1usize..=4).prop_flat_map(|n| {
                (
                    prop::collection::vec(1u32..=3, n),
                    any::<bool>(),
                    1u32..=3,
                    prop::collection::vec(0u8..(1 << n), PEOPLE),
                    prop::collection::vec((0..PEOPLE, prop::bool::weighted(0.8)), 0..24),
                )
                    .prop_map(
                        |(quorums, parallel, denials_required, listed, clicks)| Case {
                            quorums,
                            parallel,
                            denials_required,
                            listed,
                            clicks,
                        },
                    )
            })
        }

        fn person(i: usize) -> String {
            format!("U0P{i}")
        }

        proptest! {
            #[test]
            fn nobody_counts_twice_and_stages_are_met_by_distinct_people_in_order(c in case()) {
                let order = if c.parallel { StagesOrder::Parallel } else { StagesOrder::Sequential };
                let policy = Policy {
                    denials_required: c.denials_required,
                    ..staged(order, &c.quorums)
                };
                let stage_index = |name: &str| policy.index_of(name).unwrap();
                let is_listed = |p: usize, stage: usize| c.listed[p] & (1 << stage) != 0;
                let mut r = pending();
                for (p, approves) in &c.clicks {
                    let names: Vec<String> = (0..c.quorums.len())
                        .filter(|s| is_listed(*p, *s))
                        .map(|s| format!("s{s}"))
                        .collect();
                    let standing = Standing { stages: StageSet::Named(names), is_requester: false };
                    let verdict = if *approves { Verdict::Approve } else { Verdict::Deny };
                    let before = r.clone();
                    let open_before = r.open_stages(&policy);
                    match r.cast_as(vote(&person(*p), verdict), standing, &policy, Timestamp::UNIX_EPOCH) {
                        Err(_) => prop_assert_eq!(&r, &before),
                        Ok(_) => {
                            let d = r.decisions.last().unwrap();
                            let stage = d.stage.as_deref().unwrap();
                            // It counted for a stage that was open and lists the voter.
                            prop_assert!(open_before.iter().any(|s| s == stage));
                            prop_assert!(is_listed(*p, stage_index(stage)));
                        }
                    }
                }
                // One vote per person.
                let mut voters: Vec<&str> = r.decisions.iter().map(|d| d.by.as_str()).collect();
                let all = voters.len();
                voters.sort_unstable();
                voters.dedup();
                prop_assert_eq!(voters.len(), all);
                // Sequential: a vote for stage k came after every earlier stage was met.
                if !c.parallel {
                    for (j, d) in r.decisions.iter().enumerate() {
                        let k = stage_index(d.stage.as_deref().unwrap());
                        for earlier in 0..k {
                            let n = r.decisions[..j]
                                .iter()
                                .filter(|e| e.verdict == Verdict::Approve && e.stage.as_deref() == Some(&format!("s{earlier}")))
                                .count();
                            prop_assert!(n >= c.quorums[earlier] as usize);
                        }
                    }
                }
                let denials = r.decisions.iter().filter(|d| d.verdict == Verdict::Deny).count();
                let all_met = c.quorums.iter().enumerate().all(|(s, q)| {
                    r.decisions
                        .iter()
                        .filter(|d| d.verdict == Verdict::Approve && d.stage.as_deref() == Some(&format!("s{s}")))
                        .count() >= *q as usize
                });
                match r.status {
                    Status::Approved => {
                        prop_assert!(all_met);
                        prop_assert!(denials < c.denials_required as usize);
                    }
                    Status::Denied => prop_assert_eq!(denials, c.denials_required as usize),
                    Status::Pending => {
                        prop_assert!(!all_met);
                        prop_assert!(denials < c.denials_required as usize);
                    }
                    other => prop_assert!(false, "unexpected status {other:?}"),
                }
            }
        }
    }
}
