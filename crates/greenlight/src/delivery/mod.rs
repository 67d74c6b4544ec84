//! The delivery worker: sends outbox jobs until each is done or dead. Jobs are leased, so a
//! crash mid-delivery means the job runs again after restart (at least once); messages are
//! rendered from the request's state at delivery time, so a late or repeated update still
//! shows the truth.
//!
//! Here: the scheduling loop (claims per lane, leases, backoff, the attempt's report). The
//! senders live beside it: `slack_jobs.rs` (Slack's Web API) and `http_jobs.rs` (callbacks and
//! action hooks), through `outbound.rs` (the SSRF-guarded HTTP client).
//! Imports the Slack adapter, the config, the store, the pure policy and the domain; the
//! service and the app use it.

mod github_jobs;
mod http_jobs;
pub mod outbound;
pub use github_jobs::{GithubSettings, REVIEW_NAME};
mod slack_jobs;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::delivery::outbound::Outbound;
use crate::domain::{Clock, Millis, SlackRef};
use crate::policy::webhook::{self, WebhookSecret};
use crate::slack::{SlackApi, mrkdwn, render};
use crate::store::{
    ActionResult, Admin, Coordination, Digests, Effect, Job, JobReport, JobResult, Lane, NewAudit,
    Outbox, Requests, StandingApprovals, Store, StoreError,
};

const SLACK_IN_FLIGHT: usize = 48;
const HOOKS_IN_FLIGHT: usize = 16;
/// Shortest time between two claims while deliveries are in flight (see `run`).
const CLAIM_GAP: Duration = Duration::from_millis(10);
/// While a message is not posted yet (or another task is updating it), an update for it
/// waits this long between looks.
const WAIT_FOR_POST_MS: Millis = 250;

/// A person's Home tab, rendered from the current state. The service renders it (who may vote
/// on what is a use case); the worker only decides when to publish.
#[async_trait::async_trait]
pub trait HomeTabs: Send + Sync {
    async fn home_view(
        &self,
        user: &str,
        notice: Option<&str>,
    ) -> Result<slack_morphism::prelude::SlackView, String>;
}

/// The worker's knobs, from `[delivery]` and `[alerts]`.
pub struct Settings {
    pub max_attempts: u32,
    pub max_age_ms: Millis,
    /// How long a claimed job (and a message being posted or updated) is a worker's alone.
    pub lease_ms: Millis,
    /// `[github]`: reviews of deployments.
    pub github: Option<GithubSettings>,
    /// Where people reach the API (`public_url`), for links from digests to requests.
    pub public_url: Option<String>,
    /// Requester callbacks in flight at once, in all and to one host.
    pub callback_concurrency: usize,
    pub callback_host_concurrency: usize,
    pub backoff_base_ms: Millis,
    pub backoff_max_ms: Millis,
    pub posts_per_second: f64,
    pub post_burst: u32,
    pub alerts_channel: Option<String>,
    pub webhook_secret: WebhookSecret,
    pub outbound: Outbound,
    /// How each workflow's messages look (quorum progress, confirmation dialogs).
    pub looks: HashMap<String, render::Look>,
}

impl Settings {
    pub fn from_config(config: &Config, webhook_secret: WebhookSecret) -> reqwest::Result<Self> {
        let d = &config.delivery;
        Ok(Self {
            max_attempts: d.max_attempts,
            max_age_ms: d.max_age.as_millis(),
            lease_ms: d.lease.as_millis(),
            public_url: config.public_url.clone(),
            github: config
                .github
                .as_ref()
                .map(|g| GithubSettings::new(g, d.timeout.as_duration()))
                .transpose()?,
            callback_concurrency: d.callback_concurrency as usize,
            callback_host_concurrency: d.callback_host_concurrency as usize,
            backoff_base_ms: d.backoff_base.as_millis(),
            backoff_max_ms: d.backoff_max.as_millis(),
            posts_per_second: d.slack_posts_per_second,
            post_burst: d.slack_post_burst,
            alerts_channel: config
                .alerts
                .channel
                .as_ref()
                .map(|c| c.as_str().to_owned()),
            webhook_secret,
            outbound: Outbound::new(d.timeout.as_duration(), d.allow_private_targets)?,
            looks: config
                .workflows
                .iter()
                .map(|w| (w.name.to_string(), render::Look::of(w)))
                .collect(),
        })
    }
}

/// The configured webhook secret, or the one generated on first start and kept in the store.
pub async fn webhook_secret(
    config: &Config,
    store: &dyn Admin,
) -> Result<WebhookSecret, StoreError> {
    if let Some(configured) = &config.delivery.webhook_secret {
        // The loader checked the format already.
        return WebhookSecret::parse(configured.expose())
            .map_err(|e| StoreError::Corrupt(e.to_string()));
    }
    let fresh = WebhookSecret::generate();
    let stored = store
        .meta_get_or_insert(webhook::SECRET_META_KEY, fresh.expose())
        .await?;
    if stored == fresh.expose() {
        tracing::info!(
            "generated a webhook signing secret; print it with `greenlight webhook-secret`"
        );
    }
    WebhookSecret::parse(&stored).map_err(|e| StoreError::Corrupt(format!("stored {e}")))
}

/// How one attempt went, before it is written down.
struct Outcome {
    result: JobResult,
    /// A call went out (or was tried).
    attempted: bool,
    /// Announce it in the alerts channel if it is dead.
    alert: bool,
    /// The bare result ("HTTP 201", "HTTP 502"), for action hook summaries.
    detail: String,
    /// The message a post made (or found again), to record with the job's result.
    posted: Option<SlackRef>,
    /// Done, but the call failed in a way no retry can help (GitHub's 422): the error is kept.
    kept_error: Option<String>,
}

impl Outcome {
    fn done(detail: impl Into<String>) -> Self {
        Self {
            result: JobResult::Done,
            attempted: true,
            alert: false,
            detail: detail.into(),
            posted: None,
            kept_error: None,
        }
    }

    /// Not a failure: try again at `at` without counting an attempt.
    fn wait(at: Millis, why: impl Into<String>) -> Self {
        Self {
            result: JobResult::Retry {
                at,
                error: why.into(),
                counts: false,
            },
            attempted: false,
            alert: false,
            detail: String::new(),
            posted: None,
            kept_error: None,
        }
    }

    fn dead(error: impl Into<String>) -> Self {
        let error = error.into();
        Self {
            result: JobResult::Dead {
                error: error.clone(),
            },
            attempted: true,
            alert: true,
            detail: error,
            posted: None,
            kept_error: None,
        }
    }
}

/// What a Slack step did.
enum Step {
    Sent,
    /// Sent, and the request's message is this one (posted now, or found again): recorded on
    /// the request with the job's result.
    Posted(SlackRef),
    Wait(Millis, String),
    /// Nothing to do, for a reason that is not worth an alert of its own.
    Pointless(String),
}

/// The store as the worker uses it, one role each: it claims and finishes outbox jobs, reads
/// the request a message shows, and sums up digests.
pub struct Worker {
    outbox: Arc<dyn Outbox>,
    requests: Arc<dyn Requests>,
    digests: Arc<dyn Digests>,
    /// Standing approvals, shown under the message whose approval granted them.
    standing: Arc<dyn StandingApprovals>,
    home: Arc<dyn HomeTabs>,
    /// Pacing, 429 pauses and message leases, shared by every process that delivers.
    shared: Arc<dyn Coordination>,
    slack: SlackApi,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    settings: Settings,
    /// This replica's name on the leases it takes.
    owner: String,
    /// Channel ids of `#name` channels, learnt from posts (for looking in their history).
    channel_ids: std::sync::Mutex<HashMap<String, String>>,
    /// Whether the missing history scopes were reported already.
    warned_no_history: std::sync::atomic::AtomicBool,
    /// GitHub installation tokens, kept until shortly before they expire.
    github_tokens: github_jobs::Tokens,
    /// Requester callbacks in flight per host.
    callback_hosts: std::sync::Mutex<HashMap<String, usize>>,
    /// Per digest: when it was last rendered and what summing it up cost, so that a huge
    /// digest is updated less often rather than eating the store (see `digest`).
    digest_costs: std::sync::Mutex<HashMap<String, (Millis, Millis)>>,
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        home: Arc<dyn HomeTabs>,
        slack: SlackApi,
        clock: Arc<dyn Clock>,
        wake: Arc<Notify>,
        settings: Settings,
        owner: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            shared: store.coordination(),
            outbox: store.clone(),
            requests: store.clone(),
            standing: store.clone(),
            digests: store,
            home,
            slack,
            clock,
            wake,
            settings,
            owner,
            channel_ids: Default::default(),
            warned_no_history: Default::default(),
            digest_costs: Default::default(),
            callback_hosts: Default::default(),
            github_tokens: Default::default(),
        })
    }

    fn now(&self) -> Millis {
        self.clock.now().as_millisecond()
    }

    /// Deliveries in flight at once per lane: Slack's calls and the operators' hooks apart from
    /// the requesters' callbacks, which get `[delivery] callback_concurrency`.
    fn lane_size(&self, lane: Lane) -> usize {
        match lane {
            Lane::Slack => SLACK_IN_FLIGHT,
            Lane::Hooks => HOOKS_IN_FLIGHT,
            Lane::Callbacks => self.settings.callback_concurrency,
        }
    }

    /// Delivers until `shutdown`; then lets the deliveries in flight finish for up to `grace`
    /// and frees the leases it still holds, so other replicas take those jobs at once.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        match self.outbox.recover_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "resuming deliveries interrupted by a crash"),
            Err(e) => tracing::error!(error = %e, "cannot release stale outbox leases"),
        }
        let lanes: Vec<(Lane, Arc<Semaphore>)> = Lane::ALL
            .iter()
            .map(|lane| (*lane, Arc::new(Semaphore::new(self.lane_size(*lane)))))
            .collect();
        let mut tasks = tokio::task::JoinSet::new();
        let mut claims = crate::store::Retrying::new("claim outbox jobs");
        let mut last_claim = tokio::time::Instant::now() - CLAIM_GAP;
        loop {
            while tasks.try_join_next().is_some() {}
            let free: Vec<(Lane, u32)> = lanes
                .iter()
                .map(|(lane, slots)| (*lane, u32::try_from(slots.available_permits()).unwrap_or(0)))
                .collect();
            // While deliveries run, claims come at most every CLAIM_GAP unless half the Slack
            // slots are free: a claim walks the queue's index, and one claim per delivery that
            // ends would cost the database more than the deliveries themselves.
            let slack_free = free
                .iter()
                .find(|(lane, _)| *lane == Lane::Slack)
                .map_or(0, |(_, n)| *n as usize);
            let next_claim = last_claim + CLAIM_GAP;
            if !tasks.is_empty()
                && slack_free < SLACK_IN_FLIGHT / 2
                && tokio::time::Instant::now() < next_claim
            {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep_until(next_claim) => {}
                    Some(_) = tasks.join_next() => {}
                }
                continue;
            }
            if free.iter().all(|(_, n)| *n == 0) {
                // Every lane is busy: only a delivery ending frees a slot, so wait for one
                // (a new job's wake-up would only find the lanes still full).
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(_) = tasks.join_next() => {}
                }
                continue;
            }
            last_claim = tokio::time::Instant::now();
            let jobs = match self
                .outbox
                .claim_jobs(&self.owner, &free, self.now(), self.settings.lease_ms)
                .await
            {
                Ok(jobs) => {
                    claims.succeeded();
                    jobs
                }
                Err(e) => {
                    // The database failing (a full disk): wait longer each time, capped, and
                    // log once in a while; a new job (a write that landed) tries at once.
                    let wait = claims.failed(&e);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
            };
            if !jobs.is_empty() {
                for job in jobs {
                    let lane = job.effect.lane();
                    let slots = lanes
                        .iter()
                        .find(|(l, _)| *l == lane)
                        .map(|(_, s)| s.clone())
                        .unwrap_or_else(|| lanes[0].1.clone());
                    let Ok(permit) = slots.acquire_owned().await else {
                        return;
                    };
                    let me = self.clone();
                    tasks.spawn(async move {
                        me.deliver(job).await;
                        drop(permit);
                    });
                }
                continue;
            }
            let open: Vec<Lane> = free
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(lane, _)| *lane)
                .collect();
            let sleep = self.idle_sleep(&open).await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        // Let deliveries in flight finish; anything cut off runs again (at least once).
        let finished =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "deliveries still in flight at shutdown; they will be tried again"
            );
            tasks.abort_all();
        }
        match self.outbox.release_leases(&self.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "released outbox leases for other replicas"),
            Err(e) => tracing::warn!(error = %e, "cannot release outbox leases; they will run out"),
        }
    }

    /// How long to sleep when nothing is due: until the next job of a lane with room (a busy
    /// lane's jobs wait for its deliveries to end), at most a second.
    async fn idle_sleep(&self, lanes: &[Lane]) -> Duration {
        let now = self.now();
        let next = self.outbox.next_job_due(lanes, now).await.ok().flatten();
        let ms = next.map_or(1000, |due| (due - now).clamp(5, 1000));
        Duration::from_millis(u64::try_from(ms).unwrap_or(1000))
    }

    async fn deliver(&self, job: Job) {
        let kind = job.effect.kind();
        let out = match &job.effect {
            Effect::Webhook { .. } => self.webhook(&job).await,
            Effect::ActionHook { request_id, hook } => self.action(&job, request_id, hook).await,
            Effect::GithubReview { request_id, state } => {
                self.github_review(&job, request_id, *state).await
            }
            _ => self.slack_job(&job).await,
        };
        let outcome = match &out.result {
            JobResult::Done => "done",
            JobResult::Retry { counts: false, .. } => "waiting",
            JobResult::Retry { .. } => "retry",
            JobResult::Dead { .. } => "dead",
        };
        metrics::counter!("greenlight_outbox_attempts_total", "kind" => kind, "outcome" => outcome)
            .increment(1);
        let attempts = job.attempts + 1;
        match &out.result {
            JobResult::Dead { error } => {
                metrics::counter!("greenlight_outbox_dead_total", "kind" => kind).increment(1);
                tracing::error!(job = job.id, kind, error = %error, attempts, "delivery failed for good")
            }
            JobResult::Retry {
                error,
                counts: true,
                ..
            } => {
                tracing::warn!(job = job.id, kind, error = %error, attempts, "delivery failed; will retry")
            }
            _ => tracing::debug!(job = job.id, kind, outcome, "delivery attempt"),
        }
        let report = self.report(&job, out);
        if let Err(e) = self.outbox.finish_job(job.id, self.now(), &report).await {
            // The lease runs out and the job is tried again: at least once, never lost.
            tracing::error!(job = job.id, error = %e, "cannot record delivery result");
        }
        if !report.effects.is_empty() {
            self.wake.notify_one();
        }
    }

    /// The outcome written down, with what it sets off: an alert for a dead job, and for an
    /// action hook its result on the message and in the audit log.
    fn report(&self, job: &Job, out: Outcome) -> JobReport {
        let kind = job.effect.kind();
        let attempts = job.attempts + u32::from(out.attempted);
        let mut report = JobReport::new(out.result.clone(), out.attempted);
        report.posted = out.posted.clone();
        let request_id = job.effect.request_id().cloned();
        if let JobResult::Dead { error } = &out.result {
            report.audit.push(NewAudit {
                request_id: request_id.clone(),
                event: "delivery.failed",
                actor: "greenlight".into(),
                data: serde_json::json!({
                    "kind": kind, "target": job.effect.target(), "error": error, "attempts": attempts,
                }),
            });
            // An alert about a dead alert would loop; a Home tab that could not be published
            // is out of date at worst, and the person's next visit publishes it again.
            let quiet = matches!(
                job.effect,
                Effect::SlackAlert { .. } | Effect::SlackHomeRefresh { .. }
            );
            if let (true, false, Some(channel)) = (out.alert, quiet, &self.settings.alerts_channel)
            {
                let about = request_id
                    .as_ref()
                    .map(|id| format!(" for request `{id}`"))
                    .unwrap_or_default();
                let target = job
                    .effect
                    .target()
                    .map(|t| format!(" ({})", mrkdwn::escape(&t)))
                    .unwrap_or_default();
                report.effects.push(Effect::SlackAlert {
                    channel: channel.clone(),
                    text: format!(
                        ":rotating_light: greenlight gave up delivering *{kind}*{target}{about} after {attempts} attempt(s): {}",
                        mrkdwn::escape(error)
                    ),
                    request_id: request_id.clone(),
                });
            }
        }
        if let (Effect::ActionHook { request_id, hook }, false) =
            (&job.effect, matches!(out.result, JobResult::Retry { .. }))
        {
            let ok = out.result == JobResult::Done;
            report.audit.push(NewAudit {
                request_id: Some(request_id.clone()),
                event: if ok { "action.succeeded" } else { "action.failed" },
                actor: "greenlight".into(),
                data: serde_json::json!({
                    "name": hook.name, "method": hook.method, "result": out.detail, "attempts": attempts,
                }),
            });
            report.action = Some(ActionResult {
                name: hook.name.clone(),
                ok,
                summary: out.detail.clone(),
                attempts,
                at: self.clock.now(),
            });
            report.effects.push(Effect::SlackUpdate {
                request_id: request_id.clone(),
            });
        }
        if let (
            Effect::GithubReview {
                request_id,
                state: Some(state),
            },
            false,
        ) = (&job.effect, matches!(out.result, JobResult::Retry { .. }))
        {
            let ok = out.result == JobResult::Done && out.kept_error.is_none();
            report.audit.push(NewAudit {
                request_id: Some(request_id.clone()),
                event: if ok {
                    "github.reviewed"
                } else {
                    "github.review_failed"
                },
                actor: "greenlight".into(),
                data: serde_json::json!({
                    "state": state.as_str(), "result": out.detail, "attempts": attempts,
                }),
            });
            report.action = Some(ActionResult {
                name: REVIEW_NAME.to_owned(),
                ok,
                summary: out.detail.clone(),
                attempts,
                at: self.clock.now(),
            });
            report.effects.push(Effect::SlackUpdate {
                request_id: request_id.clone(),
            });
        }
        report
    }

    fn retry_or_give_up(&self, job: &Job, now: Millis, error: String) -> Outcome {
        let attempts = job.attempts + 1;
        if attempts >= self.settings.max_attempts || now - job.created_at > self.settings.max_age_ms
        {
            return Outcome {
                detail: error.clone(),
                ..Outcome::dead(format!("{error} (gave up after {attempts} attempts)"))
            };
        }
        let exp = self
            .settings
            .backoff_base_ms
            .saturating_mul(1 << (attempts - 1).min(30));
        let cap = exp.min(self.settings.backoff_max_ms).max(1);
        // Jitter keeps many failing jobs from retrying in lock-step.
        let delay = rand::rng().random_range(cap / 2..=cap);
        Outcome {
            result: JobResult::Retry {
                at: now + delay,
                error: error.clone(),
                counts: true,
            },
            attempted: true,
            alert: false,
            detail: error,
            posted: None,
            kept_error: None,
        }
    }
}
