//! The use cases: create, vote, cancel, wait. Each loads a request, lets the domain decide,
//! and writes the outcome with its audit entries and side effects in one transaction. A
//! conflicting concurrent write makes the loser reload and decide again, so a request is
//! decided exactly once whatever the number of clicks.
//!
//! Here: the `Service` itself, wait, vote, cancel and the timers. Beside it: `create.rs`
//! (create and its rules), `effects.rs` (what a change sets off), `error.rs` (the error and its
//! codes), `limiter.rs` (per-key pace and long-poll cap), `workspaces.rs` (which Slack
//! workspaces may vote), and one file per other use case. The service imports the layers
//! below it (delivery, slack, config, store, rules, domain) and is imported by the adapters
//! above (http, mcp, app, cli).

pub mod alerts;
pub mod audit;
pub mod commands;
mod create;
mod effects;
mod error;
pub mod github;
pub mod home;
pub mod identity;
pub mod intake;
pub mod interactions;
mod limiter;
pub mod receipts;
pub mod scheduler;
pub mod signals;
pub mod stages;
mod standing_approvals;
pub mod waiters;
pub mod workspaces;

pub use create::CreateInput;
pub use effects::Event;
pub use error::{ServiceError, ServiceResult};
use limiter::Limits;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify as Wake;

use crate::config::Workflow;
use crate::domain::{
    Clock, DecisionKind, Millis, Policy, Request, RequestId, StageSet, Standing, TIMEOUT_ACTOR,
    Verdict, Vote, VoteOutcome, VoteRejected, WorkflowName, key_actor,
};
use crate::service::waiters::Waiters;
use crate::slack::SlackApi;
use crate::slack::directory::{self, Directory};
use crate::store::{ApiKey, Effect, NewAudit, Scope, Store};

/// A request as `key` may see it: the full `callback_url` only for the key that made it.
pub fn visible_to(request: &Request, key: &ApiKey) -> Request {
    if request.created_by.as_ref() == Some(&key.id) {
        request.clone()
    } else {
        crate::policy::webhook::redacted(request)
    }
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
    /// Which Slack workspaces' people may vote.
    workspaces: workspaces::Workspaces,
    /// Signs decision receipts and publishes their keys.
    receipts: receipts::Receipts,
    /// `[mcp]`: where a permission prompt lands and when it expires.
    permissions: PermissionDefaults,
    /// Workload tokens, verified against `[[trust]]` (none: bearer credentials are API keys).
    verifier: Option<Arc<identity::Verifier>>,
    /// `[github]`: which deployments become requests, in which workflow.
    github: Option<Arc<crate::config::GithubConfig>>,
}

/// `[mcp] permission_workflow` and `permission_timeout`, applied to every request that carries
/// a tool call and names no workflow (or no expiry), whichever transport brought it.
#[derive(Debug, Clone)]
pub struct PermissionDefaults {
    pub workflow: Option<WorkflowName>,
    pub timeout: crate::domain::DurationSpec,
    /// `[mcp] permission_editable`: a tool call's input may be edited before it is allowed.
    pub editable: bool,
}

impl Default for PermissionDefaults {
    fn default() -> Self {
        let mcp = crate::config::McpConfig::default();
        Self {
            workflow: mcp.permission_workflow,
            timeout: mcp.permission_timeout,
            editable: mcp.permission_editable,
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
        let receipts = receipts::Receipts::new(store.clone(), "greenlight".to_owned());
        Self {
            receipts,
            permissions: PermissionDefaults::default(),
            verifier: None,
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
            workspaces: Default::default(),
            github: None,
        }
    }

    /// `[mcp]`: where permission prompts land and when they expire.
    pub fn with_permissions(mut self, mcp: &crate::config::McpConfig) -> Self {
        self.permissions = PermissionDefaults {
            workflow: mcp.permission_workflow.clone(),
            timeout: mcp.permission_timeout,
            editable: mcp.permission_editable,
        };
        self
    }

    /// The `[[trust]]` policies whose workload tokens are accepted where an API key is.
    pub fn with_trust(mut self, verifier: identity::Verifier) -> Self {
        self.verifier = (!verifier.is_empty()).then(|| Arc::new(verifier));
        self
    }

    /// Verifies a workload token against `[[trust]]`; `None` when no policy is configured
    /// (bearer credentials are then API keys only).
    pub async fn verify_token(
        &self,
        token: &str,
    ) -> Option<Result<identity::Verified, identity::TokenError>> {
        let verifier = self.verifier.as_ref()?;
        Some(verifier.verify(token, self.now().as_second()).await)
    }

    /// Who signs receipts (`iss`): the server's `public_url`.
    pub fn with_issuer(mut self, public_url: Option<&str>) -> Self {
        if let Some(url) = public_url {
            self.receipts = receipts::Receipts::new(self.store.clone(), url.to_owned());
        }
        self
    }

    /// Makes the first receipt signing key if the database has none (the first start).
    pub async fn ensure_signing_key(&self) -> ServiceResult<()> {
        Ok(self.receipts.ensure_key(self.now_ms()).await?)
    }

    /// The signed receipt of a decided request (`None` while it is pending).
    pub async fn receipt(&self, request: &Request) -> ServiceResult<Option<String>> {
        Ok(self
            .receipts
            .sign(request, self.receipt_ttl_ms(request))
            .await?)
    }

    fn receipt_ttl_ms(&self, request: &Request) -> Millis {
        self.workflow_of(request)
            .map_or_else(crate::config::default_receipt_ttl, |w| w.receipt_ttl)
            .as_millis()
    }

    /// The public keys receipts are signed with (`/.well-known/jwks.json`): each old key stays
    /// until the longest `receipt_ttl` has passed since it was replaced.
    pub async fn jwks(&self) -> ServiceResult<serde_json::Value> {
        let keep = self
            .workflows
            .iter()
            .map(|w| w.receipt_ttl.as_millis())
            .max()
            .unwrap_or(0)
            .max(crate::config::default_receipt_ttl().as_millis());
        Ok(self.receipts.jwks(self.now_ms(), keep).await?)
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
        self.limits = Limits {
            max_signals: self.limits.max_signals,
            signal_retention: self.limits.signal_retention,
            ..Limits::new(per_minute.max(1), max_waiters.max(1) as usize)
        };
        self
    }

    /// How many signals may be stored, and how long one past its ttl is kept (`[limits]`).
    pub fn with_signal_limits(
        mut self,
        max_signals: u32,
        retention: crate::domain::DurationSpec,
    ) -> Self {
        self.limits.max_signals = max_signals.max(1);
        self.limits.signal_retention = retention;
        self
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
            w.all_approvers().filter_map(|a| match a {
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
        let stages = self.stages_of(workflow, &vote.by).await?;
        let asks_about_self = vote.verdict == Verdict::Approve && !workflow.allow_self_approval;
        let is_requester = asks_about_self && self.asked_by(request, &vote.by).await?;
        Ok(Standing {
            stages: StageSet::Named(stages),
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
        self.vote_on(self.get(id).await?, vote).await
    }

    /// `vote`, starting from `current` as the caller just read it: saved at once when nothing
    /// changed it since, decided again on what changed otherwise.
    pub async fn vote_on(&self, mut current: Request, mut vote: Vote) -> ServiceResult<VoteResult> {
        let id = &current.id.clone();
        vote.response = answers_of(&current, &vote)?;
        vote.edits = edits_of(&current, &vote)?;
        // Standing depends on who asked and which workflow, which no vote changes.
        let standing = self.standing(&current, &vote).await?;
        loop {
            let mut request = current.clone();
            let expected = request.version;
            let policy = self.policy(&request);
            let now = self.now();
            let outcome = request.cast_as(vote.clone(), standing.clone(), &policy, now)?;
            let event = match outcome {
                VoteOutcome::Decided(status) => Event::Decided(status),
                VoteOutcome::Counted { .. } => Event::VoteRecorded,
            };
            let mut effects = self.effects_of(&request, event).await;
            let counted_for = request.decisions.last().and_then(|d| d.stage.clone());
            let mut audit = vec![NewAudit {
                request_id: Some(request.id.clone()),
                event: event.as_str(),
                actor: vote.by.clone(),
                data: serde_json::json!({
                    "verdict": vote.verdict,
                    "kind": vote.kind,
                    "reason": vote.reason,
                    "stage": counted_for,
                    "response": vote.response,
                    "changes": vote.edits.as_ref().map(|e| crate::domain::changes(|k| current.edit_target(k), e)),
                }),
            }];
            let (stage_audit, stage_effects) =
                self.stage_changes(Some(&current), &request, Some(&vote.by));
            audit.extend(stage_audit);
            effects.extend(stage_effects);
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
        let by = key_actor(&key.name);
        let by = by.as_str();
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
            match self.settle_timers(id).await {
                Ok(()) => {}
                // The database cannot take writes: the rest would fail the same way; the
                // scheduler backs off and tries them all again.
                Err(ServiceError::Store(e)) if e.is_unavailable() => {
                    return Err(ServiceError::Store(e));
                }
                Err(e) => tracing::error!(request = %id, error = %e, "cannot expire or remind"),
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

/// The answers a vote carries, checked against the request's fields: an approval of a request
/// with fields must answer them (a person does in the modal its Approve button opens); a deny,
/// or a vote on a request without fields, carries none.
fn answers_of(
    request: &crate::domain::Request,
    vote: &Vote,
) -> ServiceResult<Option<crate::domain::Answers>> {
    match (&vote.response, vote.verdict) {
        (None, crate::domain::Verdict::Approve) if !request.fields.is_empty() => {
            Err(ServiceError::InvalidResponse(format!(
                "request {} asks for answers ({}): approve with a response",
                request.id,
                request
                    .fields
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
        (None, _) => Ok(None),
        (Some(_), crate::domain::Verdict::Deny) => Err(ServiceError::InvalidResponse(
            "a deny carries no response".into(),
        )),
        (Some(_), _) if request.fields.is_empty() => Err(ServiceError::InvalidResponse(format!(
            "request {} asks no fields, so a vote carries no response",
            request.id
        ))),
        (Some(given), _) => crate::domain::check_answers(&request.fields, given)
            .map(Some)
            .map_err(ServiceError::InvalidResponse),
    }
}

/// The edits a vote carries, checked: only an approval edits, only params the request lets
/// approvers edit, each keeping its type; values left as they were are dropped (none: no
/// change).
fn edits_of(
    request: &crate::domain::Request,
    vote: &Vote,
) -> ServiceResult<Option<crate::domain::Params>> {
    let Some(edits) = &vote.edits else {
        return Ok(None);
    };
    if vote.verdict != crate::domain::Verdict::Approve {
        return Err(ServiceError::InvalidResponse("a deny edits nothing".into()));
    }
    let mut changed = crate::domain::Params::new();
    for (name, value) in edits {
        let allowed = request
            .editable_values()
            .iter()
            .any(|(key, _)| *key == name.as_str());
        let old = request.edit_target(name);
        let same_type =
            old.is_some_and(|o| std::mem::discriminant(o) == std::mem::discriminant(value));
        if !allowed || !same_type {
            return Err(ServiceError::InvalidResponse(format!(
                "param {name:?} cannot be edited to {value}"
            )));
        }
        if old != Some(value) {
            changed.insert(name.clone(), value.clone());
        }
    }
    Ok((!changed.is_empty()).then_some(changed))
}
