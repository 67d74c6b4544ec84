//! The use cases: create, vote, cancel, wait. Each loads a request, lets the domain decide,
//! and writes the outcome with its audit entries and side effects in one transaction. A
//! conflicting concurrent write makes the loser reload and decide again, so a request is
//! decided exactly once whatever the number of clicks.

pub mod alerts;
pub mod audit;
pub mod commands;
pub mod home;
pub mod intake;
pub mod interactions;
pub mod scheduler;
pub mod signals;
pub mod waiters;

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Notify as Wake;

use crate::config::Workflow;
use crate::domain::{
    ChannelRef, Clock, DecisionKind, DurationSpec, NewRequest, Notify, Params, Policy, Request,
    RequestId, Standing, Status, TIMEOUT_ACTOR, Verdict, Vote, VoteOutcome, VoteRejected,
    WorkflowName,
};
use crate::rules::{self, RuleInput};
use crate::service::waiters::Waiters;
use crate::slack::directory::{self, Directory, LookupError};
use crate::slack::{SlackApi, render};
use crate::store::{
    ApiKey, CreateOutcome, Delivery, DigestWindow, Effect, Idempotency, NewAudit, Scope, Store,
    StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no request {0}")]
    NotFound(String),
    #[error("no signal {0}: it was never set")]
    NoSuchSignal(String),
    #[error("unknown workflow {0:?}")]
    UnknownWorkflow(String),
    #[error("several workflows are configured ({0}): say which one with \"workflow\"")]
    WorkflowRequired(String),
    #[error("this Idempotency-Key was used before with a different request body")]
    IdempotencyKeyReused,
    #[error(transparent)]
    Rejected(#[from] VoteRejected),
    #[error("workflow {0:?} does not let a request choose its channel (allow_channel_override)")]
    ChannelOverrideNotAllowed(String),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(
        "request {0} was made with another API key: only that key (or an admin key) may cancel it"
    )]
    NotYourRequest(String),
    #[error(
        "this API key made more than {per_minute} requests a minute; try again in {retry_after_secs} s"
    )]
    RateLimited {
        per_minute: u32,
        retry_after_secs: u64,
    },
    #[error("{0} long-polls are waiting already; try again in a moment")]
    TooManyWaiters(usize),
}

impl ServiceError {
    /// The stable, machine-readable code every adapter shows (HTTP, MCP).
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Store(_) => "internal",
            ServiceError::NotFound(_) | ServiceError::NoSuchSignal(_) => "not_found",
            ServiceError::UnknownWorkflow(_) => "unknown_workflow",
            ServiceError::WorkflowRequired(_) => "workflow_required",
            ServiceError::IdempotencyKeyReused => "idempotency_key_reused",
            ServiceError::Rejected(VoteRejected::NotPending { .. }) => "not_pending",
            ServiceError::Rejected(VoteRejected::AlreadyVoted { .. }) => "already_voted",
            ServiceError::Rejected(VoteRejected::NotAnApprover { .. }) => "not_an_approver",
            ServiceError::Rejected(VoteRejected::SelfApproval) => "self_approval",
            ServiceError::ChannelOverrideNotAllowed(_) => "channel_override_not_allowed",
            ServiceError::Lookup(_) => "slack_unavailable",
            ServiceError::NotYourRequest(_) => "not_request_owner",
            ServiceError::RateLimited { .. } => "rate_limited",
            ServiceError::TooManyWaiters(_) => "too_many_waiters",
        }
    }
}

/// A request as `key` may see it: the full `callback_url` only for the key that made it.
pub fn visible_to(request: &Request, key: &ApiKey) -> Request {
    if request.created_by.as_ref() == Some(&key.id) {
        request.clone()
    } else {
        crate::policy::webhook::redacted(request)
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// A change to a request: its audit event name and what it sets off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Created,
    /// A vote was counted but did not decide (N of M).
    VoteRecorded,
    Decided(Status),
    Cancelled,
    /// A reminder (its number) was posted in the thread.
    Reminded(u32),
    /// The workflow no longer sends reminders.
    RemindersStopped,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Created => "request.created",
            Event::VoteRecorded => "vote.recorded",
            Event::Decided(status) => status_event(status),
            Event::Cancelled => "request.cancelled",
            Event::Reminded(_) => "request.reminded",
            Event::RemindersStopped => "request.reminders_stopped",
        }
    }
}

/// A validated request to create an approval.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CreateInput {
    pub workflow: Option<WorkflowName>,
    pub title: String,
    pub details: Option<String>,
    pub params: Params,
    pub requester: Option<String>,
    pub callback_url: Option<String>,
    pub expires_in: Option<DurationSpec>,
    /// Another channel than the workflow's, where the workflow allows it.
    pub channel: Option<ChannelRef>,
    /// The caller's own JSON object, kept and handed back, never shown in Slack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The agent tool call the request asks about (MCP's permission prompt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<crate::domain::ToolCall>,
    #[serde(skip)]
    pub idempotency_key: Option<String>,
}

pub struct Service {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    workflows: Vec<Workflow>,
    waiters: Waiters,
    outbox: Arc<Wake>,
    allow_private_targets: bool,
    /// Slack, for what cannot wait for the outbox (opening a modal) and for lookups.
    slack: Option<SlackApi>,
    directory: Option<Directory>,
    /// Cancelled when the server stops: long-polls answer at once with what they have.
    stopping: tokio_util::sync::CancellationToken,
    limits: Limits,
    /// `[[alert]]`, and `[alerts] channel` where they are posted.
    alert_rules: Vec<crate::config::Alert>,
    alerts_channel: Option<String>,
    /// Who has the Home tab open, for deciding whose tab a change refreshes.
    viewers: home::Viewers,
}

/// Per-key pace of creates, and the long-polls allowed at once.
struct Limits {
    per_minute: u32,
    buckets:
        std::sync::Mutex<std::collections::HashMap<crate::domain::ApiKeyId, crate::domain::Bucket>>,
    waiters: Arc<tokio::sync::Semaphore>,
    max_waiters: usize,
}

impl Limits {
    fn new(per_minute: u32, max_waiters: usize) -> Self {
        Self {
            per_minute,
            buckets: Default::default(),
            waiters: Arc::new(tokio::sync::Semaphore::new(max_waiters)),
            max_waiters,
        }
    }

    fn pace(&self) -> crate::domain::Pace {
        crate::domain::Pace {
            per_second: f64::from(self.per_minute) / 60.0,
            burst: self.per_minute,
        }
    }
}

/// How often a long-poll looks at its request even without a wake-up: wake-ups from other
/// replicas can be lost while their listener reconnects.
const WAIT_RECHECK: Duration = Duration::from_secs(5);

/// What became of a click or a machine's vote.
#[derive(Debug, Clone)]
pub enum VoteResult {
    Decided(Request),
    Counted(Request),
}

impl Service {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        workflows: Vec<Workflow>,
        outbox: Arc<Wake>,
    ) -> Self {
        Self {
            store,
            clock,
            workflows,
            waiters: Waiters::default(),
            outbox,
            allow_private_targets: false,
            slack: None,
            directory: None,
            stopping: Default::default(),
            limits: Limits::new(600, 1000),
            alert_rules: Vec::new(),
            alerts_channel: None,
            viewers: Default::default(),
        }
    }

    /// The anomaly alerts to check, and the channel they fire into.
    pub fn with_alerts(
        mut self,
        alerts: Vec<crate::config::Alert>,
        channel: Option<String>,
    ) -> Self {
        self.alert_rules = alerts;
        self.alerts_channel = channel;
        self
    }

    /// Creates per API key per minute, and long-polls at once (`[limits]`).
    pub fn with_limits(mut self, per_minute: u32, max_waiters: u32) -> Self {
        self.limits = Limits::new(per_minute.max(1), max_waiters.max(1) as usize);
        self
    }

    /// Takes one create from the key's allowance, or says how long until there is one.
    fn take_create(&self, key: &ApiKey) -> ServiceResult<()> {
        let pace = self.limits.pace();
        let now = self.now_ms();
        let mut buckets = self
            .limits
            .buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let bucket = buckets
            .entry(key.id.clone())
            .or_insert_with(|| crate::domain::Bucket::full(pace, now));
        // The waiting slot a refused call would get is not kept: it did not wait.
        let next_slot = bucket.next_slot;
        match bucket.take(now, pace) {
            Ok(()) => Ok(()),
            Err(at) => {
                bucket.next_slot = next_slot;
                metrics::counter!("greenlight_rate_limited_total").increment(1);
                let wait_ms = (at - now).max(1);
                Err(ServiceError::RateLimited {
                    per_minute: self.limits.per_minute,
                    retry_after_secs: u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1),
                })
            }
        }
    }

    /// Ends every long-poll now and any later one at once (the server is shutting down; the
    /// client asks again, of another replica).
    pub fn stop_waiting(&self) {
        self.stopping.cancel();
    }

    /// Wakes the long-polls of a request decided elsewhere (`None`: all of them look again).
    pub fn decided_elsewhere(&self, id: Option<&RequestId>) {
        match id {
            Some(id) => self.waiters.wake(id),
            None => self.waiters.wake_all(),
        }
    }

    /// Gives the service Slack: group and email lookups (cached), and modals.
    pub fn with_slack(mut self, slack: SlackApi) -> Self {
        let directory = Directory::new(slack.clone(), directory::DEFAULT_TTL);
        directory.warm(self.workflows.iter().flat_map(|w| {
            w.approvers.iter().filter_map(|a| match a {
                crate::domain::Approver::Group(g) => Some(g.to_string()),
                crate::domain::Approver::User(_) => None,
            })
        }));
        self.directory = Some(directory);
        self.slack = Some(slack);
        self
    }

    pub fn slack(&self) -> Option<&SlackApi> {
        self.slack.as_ref()
    }

    /// The workflow a request belongs to (none if it was removed from the config since).
    pub fn workflow_of(&self, request: &Request) -> Option<&Workflow> {
        self.workflows.iter().find(|w| w.name == request.workflow)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().as_millisecond()
    }

    /// Now, to the millisecond: what the store keeps, so that a request read back is the one
    /// that was answered.
    fn now(&self) -> jiff::Timestamp {
        let now = self.clock.now();
        jiff::Timestamp::from_millisecond(now.as_millisecond()).unwrap_or(now)
    }

    fn workflow(&self, name: Option<&WorkflowName>) -> ServiceResult<&Workflow> {
        match name {
            Some(name) => self
                .workflows
                .iter()
                .find(|w| &w.name == name)
                .ok_or_else(|| ServiceError::UnknownWorkflow(name.to_string())),
            None => match self.workflows.as_slice() {
                [only] => Ok(only),
                all => all
                    .iter()
                    .find(|w| w.name.as_str() == "default")
                    .ok_or_else(|| {
                        let names: Vec<&str> = all.iter().map(|w| w.name.as_str()).collect();
                        ServiceError::WorkflowRequired(names.join(", "))
                    }),
            },
        }
    }

    fn policy(&self, request: &Request) -> Policy {
        self.workflow_of(request)
            .map(Workflow::policy)
            .unwrap_or_default()
    }

    /// Resolves who a voter is to this request: may they vote, did they ask. Machines hold the
    /// decide scope, which is their approval. Lookups that fail refuse the vote (fail closed).
    async fn standing(&self, request: &Request, vote: &Vote) -> ServiceResult<Standing> {
        let Some(workflow) = self.workflow_of(request) else {
            return Ok(Standing::APPROVER);
        };
        if vote.kind != DecisionKind::User {
            return Ok(Standing::APPROVER);
        }
        let is_approver = self.may_vote_in(workflow, &vote.by).await?;
        let asks_about_self = vote.verdict == Verdict::Approve && !workflow.allow_self_approval;
        let is_requester = asks_about_self && self.asked_by(request, &vote.by).await?;
        Ok(Standing {
            is_approver,
            is_requester,
        })
    }

    /// Whether `vote` would be accepted now, without recording it (the deny-reason modal opens
    /// only for someone whose deny would count).
    pub async fn check_vote(&self, id: &RequestId, vote: &Vote) -> ServiceResult<Request> {
        let request = self.get(id).await?;
        let standing = self.standing(&request, vote).await?;
        let mut trial = request.clone();
        trial.cast_as(vote.clone(), standing, &self.policy(&request), self.now())?;
        Ok(request)
    }

    /// Creates a request (or finds the one an earlier try with the same idempotency key made).
    /// Returns the request and whether it is new.
    /// Creates a request; with it come its deliveries as written (`None`: an earlier create
    /// with the same idempotency key made it, and this one wrote nothing).
    pub async fn create(
        &self,
        input: CreateInput,
        key: &ApiKey,
    ) -> ServiceResult<(Request, Option<Vec<Delivery>>)> {
        self.take_create(key)?;
        let workflow = self.workflow(input.workflow.as_ref())?;
        if input.channel.is_some() && !workflow.allow_channel_override {
            return Err(ServiceError::ChannelOverrideNotAllowed(
                workflow.name.to_string(),
            ));
        }
        let now = self.now();
        let idempotency = input.idempotency_key.as_ref().map(|k| Idempotency {
            api_key: key.id.clone(),
            key: k.clone(),
            fingerprint: fingerprint(&input),
        });
        // DurationSpec is bounded to a year, so this cannot leave jiff's range.
        let after = |d: DurationSpec| {
            jiff::Timestamp::from_millisecond(now.as_millisecond() + d.as_millis()).ok()
        };
        let expires_at = input.expires_in.or(workflow.expires_in).and_then(after);
        let remind_at = workflow.remind_after.and_then(after);
        let evaluation = self
            .evaluate_rules(
                workflow,
                &input.params,
                input.requester.as_deref(),
                &input.title,
                now,
            )
            .await?;
        let mut request = Request::new(
            RequestId::generate_at(now.as_millisecond()),
            NewRequest {
                workflow: workflow.name.clone(),
                title: input.title,
                details: input.details,
                params: input.params,
                requester: input.requester,
                channel: input.channel.unwrap_or_else(|| workflow.channel.clone()),
                expires_at,
                callback_url: input.callback_url,
                remind_at,
            },
            now,
        );
        request.metadata = input.metadata;
        request.tool_call = input.tool_call;
        request.created_by = Some(key.id.clone());
        let mut audit = vec![NewAudit {
            request_id: Some(request.id.clone()),
            event: Event::Created.as_str(),
            actor: key.name.clone(),
            data: serde_json::json!({
                "workflow": request.workflow,
                "title": request.title,
                "api_key": key.id,
            }),
        }];
        for failure in &evaluation.failures {
            tracing::warn!(workflow = %workflow.name, rule = %failure.rule, error = %failure.error, "rule failed; counted as no match");
            audit.push(NewAudit {
                request_id: Some(request.id.clone()),
                event: "rule.failed",
                actor: failure.rule.clone(),
                data: serde_json::json!({ "error": failure.error }),
            });
        }
        let mut decided = None;
        let mut notify = Notify::Message;
        if let Some(m) = &evaluation.decision {
            notify = workflow.notify_for(&m.rule);
            let status = request.decide_by_rule(&m.rule, m.verdict, m.summary.clone(), now)?;
            audit.push(NewAudit {
                request_id: Some(request.id.clone()),
                event: Event::Decided(status).as_str(),
                actor: m.rule.clone(),
                data: serde_json::json!({
                    "rule": m.rule,
                    "kind": DecisionKind::Policy,
                    "verdict": m.verdict,
                    "reason": m.summary,
                    "notify": notify,
                }),
            });
            decided = Some(status);
        }
        let mut effects = self.effects_for(&request, Event::Created);
        if notify != Notify::Message {
            effects.retain(|e| !matches!(e, Effect::SlackPost { .. }));
        }
        if notify == Notify::Digest {
            let window = DigestWindow::at(
                request.channel.as_str(),
                now.as_millisecond(),
                workflow.digest_interval.as_millis(),
            );
            effects.push(Effect::SlackDigest {
                key: window.key.clone(),
                channel: window.channel,
            });
            request.digest_key = Some(window.key);
        }
        effects.extend(self.home_refreshes(&request).await);
        if let Some(status) = decided {
            // Callbacks and hooks hear of the decision too; the post already shows it.
            effects.extend(
                self.effects_for(&request, Event::Decided(status))
                    .into_iter()
                    .filter(|e| !matches!(e, Effect::SlackUpdate { .. })),
            );
        }
        let outcome = self
            .store
            .create_request(
                &request,
                idempotency.as_ref(),
                &audit,
                &effects,
                now.as_millisecond(),
            )
            .await;
        match outcome {
            Ok(CreateOutcome::Created(deliveries)) => {
                metrics::counter!("greenlight_requests_created_total").increment(1);
                match &evaluation.decision {
                    Some(m) => {
                        tracing::info!(request = %request.id, workflow = %request.workflow, status = request.status.as_str(), rule = %m.rule, "request created and decided by a rule")
                    }
                    None => {
                        tracing::info!(request = %request.id, workflow = %request.workflow, title = %request.title, "request created")
                    }
                }
                if let Some(status) = decided {
                    metrics::counter!("greenlight_decisions_total", "status" => status.as_str(), "kind" => DecisionKind::Policy.as_str()).increment(1);
                }
                self.outbox.notify_one();
                Ok((request, Some(deliveries)))
            }
            Ok(CreateOutcome::Existing(existing)) => Ok((*existing, None)),
            Ok(CreateOutcome::KeyReused) => Err(ServiceError::IdempotencyKeyReused),
            // Two tries with the same key raced; the loser finds the winner's request.
            Err(e) if e.is_unique_violation() => {
                match self
                    .store
                    .create_request(
                        &request,
                        idempotency.as_ref(),
                        &[],
                        &[],
                        now.as_millisecond(),
                    )
                    .await?
                {
                    CreateOutcome::Existing(existing) => Ok((*existing, None)),
                    CreateOutcome::KeyReused => Err(ServiceError::IdempotencyKeyReused),
                    CreateOutcome::Created(deliveries) => Ok((request, Some(deliveries))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs the workflow's rules over what a create asks, with the live signals (when a rule
    /// reads them) and the history the rules ask about, in as many passes as that takes.
    async fn evaluate_rules(
        &self,
        workflow: &Workflow,
        params: &Params,
        requester: Option<&str>,
        title: &str,
        now: jiff::Timestamp,
    ) -> ServiceResult<rules::Evaluation> {
        if workflow.rules.is_empty() {
            return Ok(rules::Evaluation::default());
        }
        let signals: Vec<crate::domain::Signal> = if workflow.rules.iter().any(|r| r.reads_signals)
        {
            let mut all = self.store.signals().await?;
            all.retain(|s| s.is_live(now));
            all
        } else {
            Vec::new()
        };
        let mut history = rules::History::default();
        let mut pass = 0;
        loop {
            pass += 1;
            let mut evaluation = rules::evaluate(
                &workflow.rules,
                &RuleInput {
                    params,
                    requester,
                    workflow: workflow.name.as_str(),
                    title,
                    now,
                    signals: &signals,
                    history: &history,
                },
            );
            if evaluation.wanted.is_empty() {
                return Ok(evaluation);
            }
            if pass >= rules::MAX_HISTORY_PASSES {
                evaluation.failures.push(rules::RuleFailure {
                    rule: "(history)".into(),
                    error: format!(
                        "the rules asked history {} rounds of questions without deciding; counted as no match",
                        rules::MAX_HISTORY_PASSES
                    ),
                });
                evaluation.wanted.clear();
                return Ok(evaluation);
            }
            for call in std::mem::take(&mut evaluation.wanted) {
                let answer = self.ask_history(&call, now).await?;
                history.insert(call, answer);
            }
        }
    }

    /// One history question of a rule, answered by the store.
    async fn ask_history(
        &self,
        call: &rules::HistoryCall,
        now: jiff::Timestamp,
    ) -> ServiceResult<rules::HistoryAnswer> {
        use rules::{HistoryAnswer, HistoryCall};
        let now = now.as_millisecond();
        Ok(match call {
            HistoryCall::ApprovedIn {
                workflow,
                param,
                value,
            } => HistoryAnswer::Bool(self.store.approved_with(workflow, param, value).await?),
            HistoryCall::CountRequests {
                workflow,
                within_ms,
            } => HistoryAnswer::Count(
                self.store
                    .count_created(workflow, now.saturating_sub(*within_ms))
                    .await?,
            ),
            HistoryCall::CountDenials {
                workflow,
                within_ms,
            } => HistoryAnswer::Count(
                self.store
                    .count_denied(workflow, now.saturating_sub(*within_ms))
                    .await?,
            ),
        })
    }

    pub async fn get(&self, id: &RequestId) -> ServiceResult<Request> {
        self.store
            .get_request(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(id.to_string()))
    }

    /// Returns the request once it is no longer pending, or as it is when `wait` runs out.
    pub async fn wait(&self, id: &RequestId, wait: Duration) -> ServiceResult<Request> {
        let _place = self
            .limits
            .waiters
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                metrics::counter!("greenlight_waiters_refused_total").increment(1);
                ServiceError::TooManyWaiters(self.limits.max_waiters)
            })?;
        let deadline = tokio::time::Instant::now() + wait;
        let notify = self.waiters.watch(id);
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            // Register before reading, so a decision between the read and the await still wakes us.
            notified.as_mut().enable();
            let request = self.get(id).await?;
            if request.status.is_final() || self.stopping.is_cancelled() {
                return Ok(request);
            }
            let recheck = tokio::time::Instant::now() + WAIT_RECHECK;
            tokio::select! {
                _ = notified => continue,
                _ = self.stopping.cancelled() => return Ok(request),
                _ = tokio::time::sleep_until(recheck), if recheck < deadline => continue,
                _ = tokio::time::sleep_until(deadline) => return self.get(id).await,
            }
        }
    }

    /// Applies a vote, retrying on a concurrent change; exactly one vote decides.
    pub async fn vote(&self, id: &RequestId, vote: Vote) -> ServiceResult<VoteResult> {
        let mut current = self.get(id).await?;
        // Standing depends on who asked and which workflow, which no vote changes.
        let standing = self.standing(&current, &vote).await?;
        loop {
            let mut request = current.clone();
            let expected = request.version;
            let policy = self.policy(&request);
            let now = self.now();
            let outcome = request.cast_as(vote.clone(), standing, &policy, now)?;
            let event = match outcome {
                VoteOutcome::Decided(status) => Event::Decided(status),
                VoteOutcome::Counted { .. } => Event::VoteRecorded,
            };
            let effects = self.effects_of(&request, event).await;
            let audit = [NewAudit {
                request_id: Some(request.id.clone()),
                event: event.as_str(),
                actor: vote.by.clone(),
                data: serde_json::json!({
                    "verdict": vote.verdict,
                    "kind": vote.kind,
                    "reason": vote.reason,
                }),
            }];
            if self
                .store
                .save_transition(&request, expected, &audit, &effects, now.as_millisecond())
                .await?
            {
                self.outbox.notify_one();
                return Ok(match outcome {
                    VoteOutcome::Decided(status) => {
                        tracing::info!(request = %id, by = %vote.by, verdict = vote.verdict.as_str(), status = status.as_str(), "request decided");
                        metrics::counter!("greenlight_decisions_total", "status" => status.as_str(), "kind" => vote.kind.as_str()).increment(1);
                        self.waiters.wake(id);
                        VoteResult::Decided(request)
                    }
                    VoteOutcome::Counted { .. } => {
                        tracing::info!(request = %id, by = %vote.by, verdict = vote.verdict.as_str(), "vote recorded");
                        VoteResult::Counted(request)
                    }
                });
            }
            // Someone changed it first: decide again on what they left.
            current = self.get(id).await?;
        }
    }

    /// Cancels a request for the API key that created it, or for an admin key.
    pub async fn cancel(
        &self,
        id: &RequestId,
        key: &ApiKey,
        reason: Option<String>,
    ) -> ServiceResult<Request> {
        let by = key.name.as_str();
        loop {
            let mut request = self.get(id).await?;
            if request.created_by.as_ref() != Some(&key.id) && !key.allows(Scope::Admin) {
                return Err(ServiceError::NotYourRequest(id.to_string()));
            }
            let expected = request.version;
            let now = self.now();
            request.cancel(by, reason.clone(), now)?;
            let audit = [NewAudit {
                request_id: Some(request.id.clone()),
                event: Event::Cancelled.as_str(),
                actor: by.to_owned(),
                data: serde_json::json!({ "reason": reason }),
            }];
            let effects = self.effects_of(&request, Event::Cancelled).await;
            if self
                .store
                .save_transition(&request, expected, &audit, &effects, now.as_millisecond())
                .await?
            {
                self.outbox.notify_one();
                self.waiters.wake(id);
                tracing::info!(request = %id, by, "request cancelled");
                return Ok(request);
            }
        }
    }

    /// Expires and reminds every request that is due; returns how many it looked at. The
    /// scheduler calls this; the clock is the injected one.
    pub async fn run_timers(&self) -> ServiceResult<usize> {
        let due = self.store.due_requests(self.now_ms(), 100).await?;
        for id in &due {
            if let Err(e) = self.settle_timers(id).await {
                tracing::error!(request = %id, error = %e, "cannot expire or remind");
            }
        }
        Ok(due.len())
    }

    /// Expires one request, or posts its reminder, through the same compare-and-set as votes:
    /// a click and the clock racing still make one decision.
    async fn settle_timers(&self, id: &RequestId) -> ServiceResult<()> {
        loop {
            let mut request = self.get(id).await?;
            let expected = request.version;
            let now = self.now();
            let workflow = self.workflow_of(&request);
            let on_expiry = workflow.map(|w| w.on_expiry).unwrap_or_default();
            let (event, audit_data) = match request.expire(on_expiry, now) {
                Err(VoteRejected::NotPending { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
                Ok(Some(status)) => (
                    Event::Decided(status),
                    serde_json::json!({
                        "kind": DecisionKind::Timeout,
                        "on_expiry": on_expiry,
                        "expires_at": request.expires_at,
                    }),
                ),
                Ok(None) => match workflow.and_then(|w| w.remind_after) {
                    Some(every) => match request.remind(every.as_duration(), now)? {
                        Some(n) => (Event::Reminded(n), serde_json::json!({ "reminder": n })),
                        None => return Ok(()),
                    },
                    // The workflow stopped reminding since the request was made.
                    None => {
                        request.stop_reminders();
                        (Event::RemindersStopped, serde_json::json!({}))
                    }
                },
            };
            let audit = [NewAudit {
                request_id: Some(request.id.clone()),
                event: event.as_str(),
                actor: TIMEOUT_ACTOR.to_owned(),
                data: audit_data,
            }];
            let effects = self.effects_of(&request, event).await;
            if self
                .store
                .save_transition(&request, expected, &audit, &effects, now.as_millisecond())
                .await?
            {
                self.outbox.notify_one();
                if let Event::Decided(status) = event {
                    tracing::info!(request = %id, status = status.as_str(), "request decided by its expiry");
                    metrics::counter!("greenlight_decisions_total", "status" => status.as_str(), "kind" => DecisionKind::Timeout.as_str()).increment(1);
                    self.waiters.wake(id);
                }
                return Ok(());
            }
        }
    }

    /// `effects_for`, plus refreshes of the open Home tabs the change shows on.
    async fn effects_of(&self, request: &Request, event: Event) -> Vec<Effect> {
        let mut effects = self.effects_for(request, event);
        if matches!(
            event,
            Event::VoteRecorded | Event::Decided(_) | Event::Cancelled
        ) {
            effects.extend(self.home_refreshes(request).await);
        }
        effects
    }

    /// Everything a change sets off, in one place. Written in the same transaction as the
    /// change, delivered by the outbox worker.
    fn effects_for(&self, request: &Request, event: Event) -> Vec<Effect> {
        let request_id = request.id.clone();
        let mut effects = Vec::new();
        match event {
            Event::Created => effects.push(Effect::SlackPost { request_id }),
            Event::VoteRecorded | Event::Decided(_) | Event::Cancelled => {
                effects.push(Effect::SlackUpdate { request_id })
            }
            Event::RemindersStopped => return effects,
            Event::Reminded(n) => {
                let workflow = self.workflow_of(request);
                effects.push(Effect::SlackThreadReply {
                    request_id,
                    text: render::reminder_text(
                        request,
                        workflow.map_or(&[][..], |w| w.approvers.as_slice()),
                        workflow.and_then(|w| w.escalate_to.as_ref()),
                        n,
                        self.now(),
                    ),
                });
                return effects;
            }
        }
        effects.extend(self.callbacks_for(request, event));
        effects
    }

    /// The signed callbacks (`callback_url`, the workflow's `webhooks`) and, on a decision,
    /// the workflow's action hooks.
    fn callbacks_for(&self, request: &Request, event: Event) -> Vec<Effect> {
        let workflow = self.workflows.iter().find(|w| w.name == request.workflow);
        let callback = request.callback_url.iter().map(|u| (u, true));
        let configured = workflow
            .into_iter()
            .flat_map(|w| w.webhooks.iter().map(|u| (u, false)));
        let targets: Vec<(&String, bool)> = callback.chain(configured).collect();
        // The body (the whole request as JSON) only when someone is to receive it: most
        // changes have no callback, and this runs on every vote.
        let (body, webhook_id) = if targets.is_empty() {
            Default::default()
        } else {
            (
                crate::policy::webhook::payload(event.as_str(), request, self.now()),
                crate::policy::webhook::new_message_id(),
            )
        };
        let mut effects: Vec<Effect> = targets
            .into_iter()
            .map(|(url, guarded)| Effect::Webhook {
                request_id: request.id.clone(),
                url: url.clone(),
                guarded,
                event: event.as_str().to_owned(),
                webhook_id: webhook_id.clone(),
                body: body.clone(),
            })
            .collect();
        let hooks = match (event, workflow) {
            (Event::Decided(Status::Approved), Some(w)) => w.on_approve.as_slice(),
            (Event::Decided(Status::Denied), Some(w)) => w.on_deny.as_slice(),
            _ => &[],
        };
        effects.extend(hooks.iter().map(|hook| Effect::ActionHook {
            request_id: request.id.clone(),
            hook: hook.clone(),
        }));
        effects
    }

    /// Whether `callback_url` may point at private addresses (`[delivery] allow_private_targets`).
    pub fn allow_private_targets(&self) -> bool {
        self.allow_private_targets
    }

    pub fn with_allow_private_targets(mut self, allow: bool) -> Self {
        self.allow_private_targets = allow;
        self
    }

    /// Tells one Slack user something, through the outbox.
    pub async fn notify_user(&self, channel: &str, user: &str, text: String) -> ServiceResult<()> {
        let effect = Effect::SlackEphemeral {
            channel: channel.to_owned(),
            user: user.to_owned(),
            text,
        };
        self.store.record(&[], &[effect], self.now_ms()).await?;
        self.outbox.notify_one();
        Ok(())
    }
}

fn status_event(status: Status) -> &'static str {
    match status {
        Status::Pending => "vote.recorded",
        Status::Approved => "request.approved",
        Status::Denied => "request.denied",
        Status::Expired => "request.expired",
        Status::Cancelled => "request.cancelled",
    }
}

/// A digest of what a create call asked for, to catch an idempotency key reused for another body.
fn fingerprint(input: &CreateInput) -> String {
    let canonical = serde_json::to_vec(input).unwrap_or_default();
    hex::encode(Sha256::digest(&canonical))
}
