//! The delivery worker: sends outbox jobs until each is done or dead. Jobs are leased, so a
//! crash mid-delivery means the job runs again after restart (at least once); messages are
//! rendered from the request's state at delivery time, so a late or repeated update still
//! shows the truth.

pub mod outbound;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::delivery::outbound::{Outbound, OutgoingRequest};
use crate::domain::{Clock, Millis, Pace, RequestId, SlackRef};
use crate::policy::hooks::ActionHook;
use crate::policy::webhook::{self, WebhookSecret};
use crate::slack::{SlackApi, SlackCallError, Tag, render};
use crate::store::{
    ActionResult, Coordination, DigestWindow, Effect, Job, JobReport, JobResult, JobState, Lane,
    NewAudit, Store, StoreError,
};

const SLACK_IN_FLIGHT: usize = 48;
const HOOKS_IN_FLIGHT: usize = 16;
/// While a message is not posted yet (or another task is updating it), an update for it
/// waits this long between looks.
const WAIT_FOR_POST_MS: Millis = 250;
/// Bounds on a 429's `Retry-After`: never a hot loop, never a day.
const MIN_PAUSE_MS: Millis = 1_000;
const MAX_PAUSE_MS: Millis = 15 * 60 * 1000;
/// One person's Home tab is published at most about once a second...
const HOME_PACE: Pace = Pace {
    per_second: 1.0,
    burst: 1,
};
/// ...and all of them within views.publish's tier (Tier 4: 100 a minute per workspace).
const HOME_PACE_ALL: Pace = Pace {
    per_second: 100.0 / 60.0,
    burst: 20,
};

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
                .map(|w| {
                    let look = render::Look {
                        approvals_required: w.approvals_required,
                        confirm: w.confirm,
                    };
                    (w.name.to_string(), look)
                })
                .collect(),
        })
    }
}

/// The configured webhook secret, or the one generated on first start and kept in the store.
pub async fn webhook_secret(
    config: &Config,
    store: &dyn Store,
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
}

impl Outcome {
    fn done(detail: impl Into<String>) -> Self {
        Self {
            result: JobResult::Done,
            attempted: true,
            alert: false,
            detail: detail.into(),
            posted: None,
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

pub struct Worker {
    store: Arc<dyn Store>,
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
    /// Requester callbacks in flight per host.
    callback_hosts: std::sync::Mutex<HashMap<String, usize>>,
    /// Per digest: when it was last rendered and what summing it up cost, so that a huge
    /// digest is updated less often rather than eating the store (see `digest`).
    digest_costs: std::sync::Mutex<HashMap<String, (Millis, Millis)>>,
}

/// A digest's summary may take at most this share of the time between its updates.
const DIGEST_COST_SHARE: i64 = 20;

/// A place among a host's callbacks in flight, given back when dropped.
struct HostSlot<'a> {
    hosts: &'a std::sync::Mutex<HashMap<String, usize>>,
    host: String,
}

impl Drop for HostSlot<'_> {
    fn drop(&mut self) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = hosts.get_mut(&self.host) {
            *n -= 1;
            if *n == 0 {
                hosts.remove(&self.host);
            }
        }
    }
}

/// The metadata every approval message carries, so that it can be found again.
fn post_tag(id: &RequestId) -> Tag {
    Tag {
        event_type: "greenlight_request",
        key: "request_id",
        value: id.to_string(),
    }
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
            store,
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
        match self.store.recover_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "resuming deliveries interrupted by a crash"),
            Err(e) => tracing::error!(error = %e, "cannot release stale outbox leases"),
        }
        let lanes: Vec<(Lane, Arc<Semaphore>)> = Lane::ALL
            .iter()
            .map(|lane| (*lane, Arc::new(Semaphore::new(self.lane_size(*lane)))))
            .collect();
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            let free: Vec<(Lane, u32)> = lanes
                .iter()
                .map(|(lane, slots)| (*lane, u32::try_from(slots.available_permits()).unwrap_or(0)))
                .collect();
            if free.iter().all(|(_, n)| *n == 0) {
                // Every lane is busy: only a delivery ending frees a slot, so wait for one
                // (a new job's wake-up would only find the lanes still full).
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(_) = tasks.join_next() => {}
                }
                continue;
            }
            let jobs = match self
                .store
                .claim_jobs(&self.owner, &free, self.now(), self.settings.lease_ms)
                .await
            {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim outbox jobs");
                    Vec::new()
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
        match self.store.release_leases(&self.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "released outbox leases for other replicas"),
            Err(e) => tracing::warn!(error = %e, "cannot release outbox leases; they will run out"),
        }
    }

    /// How long to sleep when nothing is due: until the next job of a lane with room (a busy
    /// lane's jobs wait for its deliveries to end), at most a second.
    async fn idle_sleep(&self, lanes: &[Lane]) -> Duration {
        let now = self.now();
        let next = self.store.next_job_due(lanes, now).await.ok().flatten();
        let ms = next.map_or(1000, |due| (due - now).clamp(5, 1000));
        Duration::from_millis(u64::try_from(ms).unwrap_or(1000))
    }

    async fn deliver(&self, job: Job) {
        let kind = job.effect.kind();
        let out = match &job.effect {
            Effect::Webhook { .. } => self.webhook(&job).await,
            Effect::ActionHook { request_id, hook } => self.action(&job, request_id, hook).await,
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
        if let Err(e) = self.store.finish_job(job.id, self.now(), &report).await {
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
                    .map(|t| format!(" ({})", render::escape(&t)))
                    .unwrap_or_default();
                report.effects.push(Effect::SlackAlert {
                    channel: channel.clone(),
                    text: format!(
                        ":rotating_light: greenlight gave up delivering *{kind}*{target}{about} after {attempts} attempt(s): {}",
                        render::escape(error)
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
        report
    }

    fn method(effect: &Effect) -> &'static str {
        match effect {
            Effect::SlackUpdate { .. } | Effect::SlackDigest { .. } => "chat.update",
            Effect::SlackEphemeral { .. } => "chat.postEphemeral",
            Effect::SlackHomeRefresh { .. } => "views.publish",
            _ => "chat.postMessage",
        }
    }

    /// Takes a chat.postMessage slot for `channel`, or says when this post's own slot is.
    async fn take_token(
        &self,
        channel: &str,
        now: Millis,
    ) -> Result<Result<(), Millis>, SlackCallError> {
        let pace = Pace {
            per_second: self.settings.posts_per_second,
            burst: self.settings.post_burst,
        };
        self.take_slot(channel, now, pace).await
    }

    /// Takes a slot of the bucket `key` (a channel, a person's Home tab, a method).
    async fn take_slot(
        &self,
        key: &str,
        now: Millis,
        pace: Pace,
    ) -> Result<Result<(), Millis>, SlackCallError> {
        self.shared
            .take_post_slot(key, now, pace)
            .await
            .map_err(|e| SlackCallError::Transient(e.to_string()))
    }

    async fn slack_job(&self, job: &Job) -> Outcome {
        let method = Self::method(&job.effect);
        let now = self.now();
        match self.shared.paused_until(method, now).await {
            Ok(Some(until)) => return Outcome::wait(until, format!("{method} rate limited")),
            Ok(None) => {}
            Err(e) => return self.retry_or_give_up(job, now, e.to_string()),
        }
        let message = match &job.effect {
            Effect::SlackPost { request_id } | Effect::SlackUpdate { request_id } => {
                Some(request_id.to_string())
            }
            Effect::SlackDigest { key, .. } => Some(format!("digest:{key}")),
            Effect::SlackHomeRefresh { user, .. } => Some(format!("home:{user}")),
            _ => None,
        };
        // One task at a time posts or updates a message (or publishes a Home tab), across
        // replicas: so an older rendering can never land after a newer one.
        let lease_owner = format!("{}:{}", self.owner, job.id);
        if let Some(message) = &message {
            let until = now + self.settings.lease_ms;
            match self
                .shared
                .lease_message(message, &lease_owner, until, now)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    return Outcome::wait(
                        now + WAIT_FOR_POST_MS,
                        "another delivery for this message is in flight",
                    );
                }
                Err(e) => return self.retry_or_give_up(job, now, e.to_string()),
            }
        }
        let outcome = self.slack_call(job, method, now).await;
        if let Some(message) = &message
            && let Err(e) = self.shared.release_message(message, &lease_owner).await
        {
            tracing::warn!(error = %e, message, "cannot release a message lease; it will run out");
        }
        outcome
    }

    async fn slack_call(&self, job: &Job, method: &'static str, now: Millis) -> Outcome {
        let res = match &job.effect {
            Effect::SlackPost { request_id } => self.post(job, request_id, now).await,
            Effect::SlackUpdate { request_id } => self.update(request_id).await,
            Effect::SlackThreadReply { request_id, text } => {
                self.thread_reply(request_id, text, now).await
            }
            Effect::SlackEphemeral {
                channel,
                user,
                text,
            } => self
                .slack
                .post_ephemeral(channel, user, text.clone())
                .await
                .map(|()| Step::Sent),
            Effect::SlackAlert { channel, text, .. } => match self.take_token(channel, now).await {
                Err(e) => Err(e),
                Ok(Err(at)) => Ok(Step::Wait(
                    at,
                    "paced: one message a second per channel".into(),
                )),
                Ok(Ok(())) => self
                    .slack
                    .post_message(channel, text.clone(), render::notice(text))
                    .await
                    .map(|_| Step::Sent),
            },
            Effect::SlackDigest { key, channel } => self.digest(job, key, channel, now).await,
            Effect::SlackHomeRefresh { user, notice } => {
                self.publish_home(user, notice.as_deref(), now).await
            }
            Effect::Webhook { .. } | Effect::ActionHook { .. } => {
                return Outcome::dead("not a Slack job");
            }
        };
        match res {
            Ok(Step::Sent) => Outcome::done("ok"),
            Ok(Step::Posted(message)) => Outcome {
                posted: Some(message),
                ..Outcome::done("ok")
            },
            Ok(Step::Wait(at, why)) => Outcome::wait(at, why),
            Ok(Step::Pointless(why)) => Outcome {
                alert: false,
                attempted: false,
                ..Outcome::dead(why)
            },
            Err(SlackCallError::RateLimited { retry_after }) => {
                let pause = i64::try_from(retry_after.as_millis())
                    .unwrap_or(MAX_PAUSE_MS)
                    .clamp(MIN_PAUSE_MS, MAX_PAUSE_MS);
                let until = self.now() + pause;
                if let Err(e) = self.shared.pause(method, until).await {
                    tracing::warn!(error = %e, method, "cannot share a 429 pause with other replicas");
                }
                if now - job.created_at > self.settings.max_age_ms {
                    return Outcome::dead(format!("{method} still rate limited after max_age"));
                }
                Outcome {
                    attempted: true,
                    ..Outcome::wait(until, format!("{method} rate limited for {retry_after:?}"))
                }
            }
            Err(SlackCallError::Permanent(e)) => Outcome {
                // A notice to one person that cannot be shown is not worth waking anyone.
                alert: !matches!(job.effect, Effect::SlackEphemeral { .. }),
                ..Outcome::dead(e)
            },
            Err(SlackCallError::Transient(e)) => self.retry_or_give_up(job, now, e),
        }
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
        }
    }

    async fn post(&self, job: &Job, id: &RequestId, now: Millis) -> Result<Step, SlackCallError> {
        let Some(request) = self.load(id).await? else {
            return Err(SlackCallError::Permanent(format!("request {id} not found")));
        };
        if request.slack.is_some() {
            return Ok(Step::Sent);
        }
        let tag = post_tag(id);
        // Claimed before: that worker may have posted and died before saving the ts.
        if job.claims > 1
            && let Some((channel, ts)) = self
                .earlier_copy(request.channel.as_str(), &tag, job.created_at)
                .await?
        {
            tracing::info!(request = %id, ts, "adopted the message an interrupted attempt posted");
            return Ok(Step::Posted(SlackRef { channel, ts }));
        }
        if let Err(at) = self.take_token(request.channel.as_str(), now).await? {
            return Ok(Step::Wait(
                at,
                "paced: one message a second per channel".into(),
            ));
        }
        let blocks = self.blocks(&request).await?;
        let (channel, ts) = self
            .slack
            .post_tagged(
                request.channel.as_str(),
                render::fallback_text(&request),
                blocks,
                Some(&tag),
            )
            .await?;
        if request.channel.as_str().starts_with('#')
            && let Ok(mut ids) = self.channel_ids.lock()
        {
            ids.insert(request.channel.as_str().to_owned(), channel.clone());
        }
        Ok(Step::Posted(SlackRef { channel, ts }))
    }

    /// Posts the digest `key`, or updates it in place, rendered from its requests now. Like a
    /// request's message, an interrupted post is found again by its metadata.
    async fn digest(
        &self,
        job: &Job,
        key: &str,
        target: &str,
        now: Millis,
    ) -> Result<Step, SlackCallError> {
        let transient = |e: StoreError| SlackCallError::Transient(e.to_string());
        let Some(window) = DigestWindow::parse(key) else {
            return Err(SlackCallError::Permanent(format!(
                "{key:?} is not a digest key"
            )));
        };
        // Summing up a digest reads all its requests: one of a million rows must not be read
        // every two seconds. Each update waits at least twenty times what the last summary cost.
        let next = self
            .digest_costs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|(at, cost)| at + cost * DIGEST_COST_SHARE);
        if let Some(next) = next
            && next > now
        {
            return Ok(Step::Wait(
                next,
                "a large digest: updated less often".into(),
            ));
        }
        let started = self.now();
        let summary = self.store.digest_summary(key).await.map_err(transient)?;
        let cost = self.now() - started;
        {
            let mut costs = self.digest_costs.lock().unwrap_or_else(|e| e.into_inner());
            if costs.len() > 1000 {
                // Windows long closed are done with.
                costs
                    .retain(|k, _| DigestWindow::parse(k).is_some_and(|w| w.end > now - 3_600_000));
            }
            costs.insert(key.to_owned(), (started, cost));
        }
        let (text, blocks) = render::digest(&window, &summary, self.settings.public_url.as_deref());
        let posted = self.store.digest_message(key).await.map_err(transient)?;
        match posted {
            Some(at) => {
                self.slack
                    .update_message(&at.channel, &at.ts, text, blocks)
                    .await?;
            }
            None => {
                let tag = Tag {
                    event_type: "greenlight_digest",
                    key: "digest_key",
                    value: key.to_owned(),
                };
                let earlier = if job.claims > 1 {
                    self.earlier_copy(target, &tag, job.created_at).await?
                } else {
                    None
                };
                if let Some((channel, ts)) = earlier {
                    tracing::info!(
                        digest = key,
                        ts,
                        "adopted the digest an interrupted attempt posted"
                    );
                    self.store
                        .set_digest_message(&window, &channel, &ts)
                        .await
                        .map_err(transient)?;
                    self.slack
                        .update_message(&channel, &ts, text, blocks)
                        .await?;
                } else {
                    if let Err(at) = self.take_token(target, now).await? {
                        return Ok(Step::Wait(
                            at,
                            "paced: one message a second per channel".into(),
                        ));
                    }
                    let (channel, ts) = self
                        .slack
                        .post_tagged(target, text, blocks, Some(&tag))
                        .await?;
                    self.store
                        .set_digest_message(&window, &channel, &ts)
                        .await
                        .map_err(transient)?;
                }
            }
        }
        // A decision that committed while this rendering was under way may have collapsed
        // into this job: render again rather than leave the message behind.
        let after = self.store.digest_summary(key).await.map_err(transient)?;
        if after.total != summary.total {
            return Ok(Step::Wait(
                self.now() + crate::store::DIGEST_UPDATE_DELAY_MS,
                "more auto-decisions arrived while the digest was sent".into(),
            ));
        }
        Ok(Step::Sent)
    }

    /// The message an earlier attempt posted for this request, found by its metadata in the
    /// channel's recent history. Without the scopes for that (channels:history and
    /// channels:read, or groups:* for private channels) it says so once and lets the post go
    /// ahead, as before: maybe a second copy, never a lost message.
    async fn earlier_copy(
        &self,
        target: &str,
        tag: &Tag,
        since: Millis,
    ) -> Result<Option<(String, String)>, SlackCallError> {
        let cached = self
            .channel_ids
            .lock()
            .ok()
            .and_then(|ids| ids.get(target).cloned());
        let channel = match (target.starts_with('#'), cached) {
            (false, _) => Some(target.to_owned()),
            (true, Some(id)) => Some(id),
            (true, None) => match self.slack.channel_id(target).await {
                Ok(found) => found,
                Err(SlackCallError::Permanent(e)) => return Ok(self.cannot_look(&e)),
                Err(e) => return Err(e),
            },
        };
        let Some(channel) = channel else {
            return Ok(None);
        };
        // A minute of slack for clocks; the job was written before any attempt to post it.
        let oldest = since / 1000 - 60;
        match self.slack.find_tagged(&channel, tag, oldest).await {
            Ok(found) => Ok(found.map(|ts| (channel, ts))),
            Err(SlackCallError::Permanent(e)) => Ok(self.cannot_look(&e)),
            Err(e) => Err(e),
        }
    }

    fn cannot_look(&self, error: &str) -> Option<(String, String)> {
        if !self
            .warned_no_history
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                error,
                "cannot look for a message an interrupted attempt may have posted (give the bot channels:history and channels:read, or groups:history and groups:read for private channels); posting again, which may show it twice"
            );
        }
        None
    }

    /// The message for a request: its state, plus what its action hooks did.
    async fn blocks(
        &self,
        request: &crate::domain::Request,
    ) -> Result<Vec<slack_morphism::prelude::SlackBlock>, SlackCallError> {
        let results = self
            .store
            .action_results(&request.id)
            .await
            .map_err(|e| SlackCallError::Transient(e.to_string()))?;
        let look = self
            .settings
            .looks
            .get(request.workflow.as_str())
            .copied()
            .unwrap_or_default();
        let mut blocks = render::blocks_with(request, &look);
        blocks.extend(render::action_results(&results));
        Ok(blocks)
    }

    /// A reply in the request's thread; waits for the message to be posted first.
    async fn thread_reply(
        &self,
        id: &RequestId,
        text: &str,
        now: Millis,
    ) -> Result<Step, SlackCallError> {
        let Some(request) = self.load(id).await? else {
            return Err(SlackCallError::Permanent(format!("request {id} not found")));
        };
        let Some(slack) = &request.slack else {
            return Ok(Step::Wait(
                now + WAIT_FOR_POST_MS,
                "waiting for the message to be posted".into(),
            ));
        };
        if let Err(at) = self.take_token(&slack.channel, now).await? {
            return Ok(Step::Wait(
                at,
                "paced: one message a second per channel".into(),
            ));
        }
        self.slack
            .post_thread_reply(&slack.channel, &slack.ts, text.to_owned())
            .await
            .map(|()| Step::Sent)
    }

    /// Publishes `user`'s Home tab as it is now, paced per person and for the whole app.
    async fn publish_home(
        &self,
        user: &str,
        notice: Option<&str>,
        now: Millis,
    ) -> Result<Step, SlackCallError> {
        let paced = |at| {
            Ok(Step::Wait(
                at,
                "paced: Home tabs are published about once a second per person".into(),
            ))
        };
        if let Err(at) = self
            .take_slot(&format!("home:{user}"), now, HOME_PACE)
            .await?
        {
            return paced(at);
        }
        if let Err(at) = self.take_slot("views.publish", now, HOME_PACE_ALL).await? {
            return paced(at);
        }
        let view = self
            .home
            .home_view(user, notice)
            .await
            .map_err(SlackCallError::Transient)?;
        let published = self.slack.publish_home(user, view).await;
        let outcome = if published.is_ok() { "ok" } else { "failed" };
        metrics::counter!("greenlight_home_publishes_total", "outcome" => outcome).increment(1);
        published.map(|()| Step::Sent)
    }

    async fn update(&self, id: &RequestId) -> Result<Step, SlackCallError> {
        let Some(mut request) = self.load(id).await? else {
            return Err(SlackCallError::Permanent(format!("request {id} not found")));
        };
        if request.slack.is_none() {
            let post = self
                .store
                .deliveries(id)
                .await
                .map_err(|e| SlackCallError::Transient(e.to_string()))?
                .into_iter()
                .find(|d| d.kind == "slack_post");
            match post.map(|d| d.state) {
                Some(JobState::Pending) => {
                    return Ok(Step::Wait(
                        self.now() + WAIT_FOR_POST_MS,
                        "waiting for the message to be posted".into(),
                    ));
                }
                // The post's result and its message are written together: a post that
                // finished between the two reads above left its message on the request.
                Some(JobState::Done) => {
                    request = self.load(id).await?.ok_or_else(|| {
                        SlackCallError::Permanent(format!("request {id} not found"))
                    })?;
                }
                _ => {}
            }
        }
        let Some(slack) = &request.slack else {
            // The post failed for good (and raised its own alert): nothing to update.
            return Ok(Step::Pointless("the message was never posted".into()));
        };
        let blocks = self.blocks(&request).await?;
        self.slack
            .update_message(
                &slack.channel,
                &slack.ts,
                render::fallback_text(&request),
                blocks,
            )
            .await
            .map(|()| Step::Sent)
    }

    async fn load(&self, id: &RequestId) -> Result<Option<crate::domain::Request>, SlackCallError> {
        self.store
            .get_request(id)
            .await
            .map_err(|e| SlackCallError::Transient(e.to_string()))
    }

    fn host_slot(&self, host: &str) -> Option<HostSlot<'_>> {
        let mut hosts = self
            .callback_hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = hosts.entry(host.to_owned()).or_default();
        if *n >= self.settings.callback_host_concurrency {
            return None;
        }
        *n += 1;
        Some(HostSlot {
            hosts: &self.callback_hosts,
            host: host.to_owned(),
        })
    }

    /// A signed callback. The body and `webhook-id` were fixed with the event; the timestamp
    /// and signature are the attempt's own.
    async fn webhook(&self, job: &Job) -> Outcome {
        let Effect::Webhook {
            url,
            guarded,
            webhook_id,
            body,
            ..
        } = &job.effect
        else {
            return Outcome::dead("not a webhook");
        };
        let now = self.now();
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return Outcome::dead("the URL does not parse");
        };
        // A requester's slow host holds only a few of the callback lane's places.
        let _slot = match (*guarded, parsed.host_str()) {
            (true, Some(host)) => match self.host_slot(host) {
                Some(slot) => Some(slot),
                None => {
                    return Outcome::wait(
                        now + WAIT_FOR_POST_MS,
                        format!(
                            "{} callbacks to {host} in flight",
                            self.settings.callback_host_concurrency
                        ),
                    );
                }
            },
            _ => None,
        };
        let timestamp = self.clock.now().as_second();
        let signature = self
            .settings
            .webhook_secret
            .sign(webhook_id, timestamp, body);
        let req = OutgoingRequest {
            method: reqwest::Method::POST,
            url: parsed,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("webhook-id".into(), webhook_id.clone()),
                ("webhook-timestamp".into(), timestamp.to_string()),
                ("webhook-signature".into(), signature),
            ],
            body: Some(body.clone()),
            guarded: *guarded,
        };
        match self.settings.outbound.send(req).await {
            Ok(status) => Outcome::done(format!("HTTP {status}")),
            Err(e) if e.is_permanent() => Outcome::dead(e.to_string()),
            Err(e) => self.retry_or_give_up(job, now, e.to_string()),
        }
    }

    /// An action hook, rendered now with `${VAR}` from the environment. Only the status (or
    /// the kind of failure) is kept: never the URL, headers or response body.
    async fn action(&self, job: &Job, id: &RequestId, hook: &ActionHook) -> Outcome {
        let now = self.now();
        let request = match self.load(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Outcome::dead(format!("request {id} not found")),
            Err(e) => return self.retry_or_give_up(job, now, e.to_string()),
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let rendered = match hook.render(&request, &env) {
            Ok(r) => r,
            Err(e) => return Outcome::dead(e.to_string()),
        };
        let secrets: Vec<String> = hook.env_vars().iter().filter_map(|k| env(k)).collect();
        let req = OutgoingRequest {
            method: rendered.method,
            url: rendered.url,
            headers: rendered.headers,
            body: rendered.body,
            guarded: false,
        };
        match self.settings.outbound.send(req).await {
            Ok(status) => Outcome::done(format!("HTTP {status}")),
            Err(e) => {
                let mut text = e.to_string();
                for s in secrets.iter().filter(|s| s.len() >= 4) {
                    text = text.replace(s.as_str(), "***");
                }
                if e.is_permanent() {
                    Outcome::dead(text)
                } else {
                    self.retry_or_give_up(job, now, text)
                }
            }
        }
    }
}
