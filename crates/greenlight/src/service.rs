//! The use cases: create, vote, cancel, wait. Each loads a request, lets the domain decide,
//! and writes the outcome with its audit entries and side effects in one transaction. A
//! conflicting concurrent write makes the loser reload and decide again, so a request is
//! decided exactly once whatever the number of clicks.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::config::Workflow;
use crate::domain::{
    Clock, DurationSpec, NewRequest, Params, Policy, Request, RequestId, Status, Verdict, Vote,
    VoteOutcome, VoteRejected, WorkflowName,
};
use crate::store::{ApiKey, CreateOutcome, Effect, Idempotency, NewAudit, Store, StoreError};
use crate::waiters::Waiters;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no request {0}")]
    NotFound(String),
    #[error("unknown workflow {0:?}")]
    UnknownWorkflow(String),
    #[error("several workflows are configured ({0}): say which one with \"workflow\"")]
    WorkflowRequired(String),
    #[error("this Idempotency-Key was used before with a different request body")]
    IdempotencyKeyReused,
    #[error(transparent)]
    Rejected(#[from] VoteRejected),
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
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Created => "request.created",
            Event::VoteRecorded => "vote.recorded",
            Event::Decided(status) => status_event(status),
            Event::Cancelled => "request.cancelled",
        }
    }
}

/// A validated request to create an approval.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreateInput {
    pub workflow: Option<WorkflowName>,
    pub title: String,
    pub details: Option<String>,
    pub params: Params,
    pub requester: Option<String>,
    pub callback_url: Option<String>,
    pub expires_in: Option<DurationSpec>,
    #[serde(skip)]
    pub idempotency_key: Option<String>,
}

pub struct Service {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    workflows: Vec<Workflow>,
    waiters: Waiters,
    outbox: Arc<Notify>,
}

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
        outbox: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            clock,
            workflows,
            waiters: Waiters::default(),
            outbox,
        }
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

    fn policy(&self, _request: &Request) -> Policy {
        Policy::default()
    }

    /// Creates a request (or finds the one an earlier try with the same idempotency key made).
    /// Returns the request and whether it is new.
    pub async fn create(&self, input: CreateInput, key: &ApiKey) -> ServiceResult<(Request, bool)> {
        let workflow = self.workflow(input.workflow.as_ref())?;
        let now = self.clock.now();
        let idempotency = input.idempotency_key.as_ref().map(|k| Idempotency {
            api_key: key.id.clone(),
            key: k.clone(),
            fingerprint: fingerprint(&input),
        });
        // DurationSpec is bounded to a year, so this cannot leave jiff's range.
        let expires_at = input.expires_in.and_then(|d| {
            jiff::Timestamp::from_millisecond(now.as_millisecond() + d.as_millis()).ok()
        });
        let request = Request::new(
            RequestId::generate(),
            NewRequest {
                workflow: workflow.name.clone(),
                title: input.title,
                details: input.details,
                params: input.params,
                requester: input.requester,
                channel: workflow.channel.clone(),
                expires_at,
                callback_url: input.callback_url,
            },
            now,
        );
        let audit = [NewAudit {
            request_id: Some(request.id.clone()),
            event: Event::Created.as_str(),
            actor: key.name.clone(),
            data: serde_json::json!({
                "workflow": request.workflow,
                "title": request.title,
                "api_key": key.id,
            }),
        }];
        let effects = self.effects_for(&request, Event::Created);
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
            Ok(CreateOutcome::Created) => {
                metrics::counter!("greenlight_requests_created_total").increment(1);
                self.outbox.notify_one();
                Ok((request, true))
            }
            Ok(CreateOutcome::Existing(existing)) => Ok((*existing, false)),
            Ok(CreateOutcome::KeyReused) => Err(ServiceError::IdempotencyKeyReused),
            // Two tries with the same key raced; the loser finds the winner's request.
            Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
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
                    CreateOutcome::Existing(existing) => Ok((*existing, false)),
                    CreateOutcome::KeyReused => Err(ServiceError::IdempotencyKeyReused),
                    CreateOutcome::Created => Ok((request, true)),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get(&self, id: &RequestId) -> ServiceResult<Request> {
        self.store
            .get_request(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(id.to_string()))
    }

    /// Returns the request once it is no longer pending, or as it is when `wait` runs out.
    pub async fn wait(&self, id: &RequestId, wait: Duration) -> ServiceResult<Request> {
        let deadline = tokio::time::Instant::now() + wait;
        let notify = self.waiters.watch(id);
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            // Register before reading, so a decision between the read and the await still wakes us.
            notified.as_mut().enable();
            let request = self.get(id).await?;
            if request.status.is_final() {
                return Ok(request);
            }
            tokio::select! {
                _ = notified => continue,
                _ = tokio::time::sleep_until(deadline) => return self.get(id).await,
            }
        }
    }

    /// Applies a vote, retrying on a concurrent change; exactly one vote decides.
    pub async fn vote(&self, id: &RequestId, vote: Vote) -> ServiceResult<VoteResult> {
        loop {
            let mut request = self.get(id).await?;
            let expected = request.version;
            let policy = self.policy(&request);
            let now = self.clock.now();
            let outcome = request.cast(vote.clone(), &policy, now)?;
            let event = match outcome {
                VoteOutcome::Decided(status) => Event::Decided(status),
                VoteOutcome::Counted { .. } => Event::VoteRecorded,
            };
            let effects = self.effects_for(&request, event);
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
                        metrics::counter!("greenlight_decisions_total", "status" => status.as_str(), "kind" => vote.kind.as_str()).increment(1);
                        self.waiters.wake(id);
                        VoteResult::Decided(request)
                    }
                    VoteOutcome::Counted { .. } => VoteResult::Counted(request),
                });
            }
        }
    }

    pub async fn cancel(
        &self,
        id: &RequestId,
        by: &str,
        reason: Option<String>,
    ) -> ServiceResult<Request> {
        loop {
            let mut request = self.get(id).await?;
            let expected = request.version;
            let now = self.clock.now();
            request.cancel(by, reason.clone(), now)?;
            let audit = [NewAudit {
                request_id: Some(request.id.clone()),
                event: Event::Cancelled.as_str(),
                actor: by.to_owned(),
                data: serde_json::json!({ "reason": reason }),
            }];
            let effects = self.effects_for(&request, Event::Cancelled);
            if self
                .store
                .save_transition(&request, expected, &audit, &effects, now.as_millisecond())
                .await?
            {
                self.outbox.notify_one();
                self.waiters.wake(id);
                return Ok(request);
            }
        }
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
        }
        effects
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

    pub fn verdict_word(verdict: Verdict) -> &'static str {
        match verdict {
            Verdict::Approve => "approved",
            Verdict::Deny => "denied",
        }
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
