//! The delivery worker: sends outbox jobs until each is done or dead. Jobs are leased, so a
//! crash mid-delivery means the job runs again after restart (at least once); messages are
//! rendered from the request's state at delivery time, so a late or repeated update still
//! shows the truth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::domain::{Clock, Millis, RequestId};
use crate::slack::{SlackApi, SlackCallError, render};
use crate::store::{Effect, Job, JobResult, JobState, Store};

/// How long a claimed job is ours before another worker may take it.
const LEASE_MS: Millis = 60_000;
const MAX_IN_FLIGHT: usize = 64;
/// After this many failed attempts, or this age, a job is dead.
const MAX_ATTEMPTS: u32 = 15;
const MAX_AGE_MS: Millis = 24 * 3600 * 1000;
const BACKOFF_BASE_MS: Millis = 500;
const BACKOFF_MAX_MS: Millis = 5 * 60 * 1000;
/// While a message is not posted yet, an update for it waits this long between looks.
const WAIT_FOR_POST_MS: Millis = 250;

pub struct Worker {
    store: Arc<dyn Store>,
    slack: SlackApi,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    /// Slack methods paused by a 429, until a time.
    paused: Mutex<HashMap<&'static str, Millis>>,
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        slack: SlackApi,
        clock: Arc<dyn Clock>,
        wake: Arc<Notify>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            slack,
            clock,
            wake,
            paused: Mutex::new(HashMap::new()),
        })
    }

    fn now(&self) -> Millis {
        self.clock.now().as_millisecond()
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        match self.store.release_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "resuming deliveries interrupted by a crash"),
            Err(e) => tracing::error!(error = %e, "cannot release stale outbox leases"),
        }
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            let free = slots.available_permits();
            let jobs = if free == 0 {
                Vec::new()
            } else {
                let limit = u32::try_from(free).unwrap_or(1);
                match self.store.claim_jobs(self.now(), LEASE_MS, limit).await {
                    Ok(jobs) => jobs,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot claim outbox jobs");
                        Vec::new()
                    }
                }
            };
            if !jobs.is_empty() {
                for job in jobs {
                    let Ok(permit) = slots.clone().acquire_owned().await else {
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
            let sleep = self.idle_sleep().await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        // Let deliveries in flight finish briefly; anything cut off is leased and runs again.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    }

    async fn idle_sleep(&self) -> Duration {
        let now = self.now();
        let next = self.store.next_job_due().await.ok().flatten();
        let ms = next.map_or(1000, |due| (due - now).clamp(5, 1000));
        Duration::from_millis(u64::try_from(ms).unwrap_or(1000))
    }

    async fn deliver(&self, job: Job) {
        let kind = job.effect.kind();
        let result = self.attempt(&job).await;
        let outcome = match &result {
            JobResult::Done => "done",
            JobResult::Retry { counts: false, .. } => "waiting",
            JobResult::Retry { .. } => "retry",
            JobResult::Dead { .. } => "dead",
        };
        metrics::counter!("greenlight_outbox_attempts_total", "kind" => kind, "outcome" => outcome)
            .increment(1);
        match &result {
            JobResult::Dead { error } => {
                tracing::error!(job = job.id, kind, error = %error, attempts = job.attempts + 1, "delivery failed for good")
            }
            JobResult::Retry {
                error,
                counts: true,
                ..
            } => {
                tracing::warn!(job = job.id, kind, error = %error, attempts = job.attempts + 1, "delivery failed; will retry")
            }
            _ => tracing::debug!(job = job.id, kind, outcome, "delivery attempt"),
        }
        if let Err(e) = self.store.finish_job(job.id, self.now(), &result).await {
            // The lease runs out and the job is tried again: at least once, never lost.
            tracing::error!(job = job.id, error = %e, "cannot record delivery result");
        }
    }

    fn method(effect: &Effect) -> &'static str {
        match effect {
            Effect::SlackPost { .. } => "chat.postMessage",
            Effect::SlackUpdate { .. } => "chat.update",
            Effect::SlackEphemeral { .. } => "chat.postEphemeral",
        }
    }

    async fn attempt(&self, job: &Job) -> JobResult {
        let method = Self::method(&job.effect);
        let now = self.now();
        let paused_until = self
            .paused
            .lock()
            .ok()
            .and_then(|p| p.get(method).copied())
            .filter(|until| *until > now);
        if let Some(until) = paused_until {
            return JobResult::Retry {
                at: until,
                error: format!("{method} rate limited"),
                counts: false,
            };
        }
        let res = match &job.effect {
            Effect::SlackPost { request_id } => self.post(request_id).await,
            Effect::SlackUpdate { request_id } => match self.update(request_id).await {
                Ok(Some(wait)) => return wait,
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
            Effect::SlackEphemeral {
                channel,
                user,
                text,
            } => self.slack.post_ephemeral(channel, user, text.clone()).await,
        };
        match res {
            Ok(()) => JobResult::Done,
            Err(SlackCallError::RateLimited { retry_after }) => {
                let until = now + i64::try_from(retry_after.as_millis()).unwrap_or(60_000);
                if let Ok(mut p) = self.paused.lock() {
                    p.insert(method, until);
                }
                JobResult::Retry {
                    at: until,
                    error: format!("{method} rate limited for {retry_after:?}"),
                    counts: false,
                }
            }
            Err(SlackCallError::Permanent(e)) => JobResult::Dead { error: e },
            Err(SlackCallError::Transient(e)) => self.retry_or_give_up(job, now, e),
        }
    }

    fn retry_or_give_up(&self, job: &Job, now: Millis, error: String) -> JobResult {
        let attempts = job.attempts + 1;
        if attempts >= MAX_ATTEMPTS || now - job.created_at > MAX_AGE_MS {
            return JobResult::Dead {
                error: format!("{error} (gave up after {attempts} attempts)"),
            };
        }
        let exp = BACKOFF_BASE_MS.saturating_mul(1 << attempts.min(20));
        let cap = exp.min(BACKOFF_MAX_MS);
        // Full jitter keeps many failing jobs from retrying in lock-step.
        let delay = rand::rng().random_range(cap / 2..=cap);
        JobResult::Retry {
            at: now + delay,
            error,
            counts: true,
        }
    }

    async fn post(&self, id: &RequestId) -> Result<(), SlackCallError> {
        let Some(request) = self.load(id).await? else {
            return Err(SlackCallError::Permanent(format!("request {id} not found")));
        };
        if request.slack.is_some() {
            return Ok(());
        }
        let (channel, ts) = self
            .slack
            .post_message(
                request.channel.as_str(),
                render::fallback_text(&request),
                render::blocks(&request),
            )
            .await?;
        self.store
            .set_slack_message(id, &channel, &ts)
            .await
            .map_err(|e| SlackCallError::Transient(e.to_string()))
    }

    /// Updates the message; `Ok(Some(wait))` when there is no message to update yet.
    async fn update(&self, id: &RequestId) -> Result<Option<JobResult>, SlackCallError> {
        let Some(request) = self.load(id).await? else {
            return Err(SlackCallError::Permanent(format!("request {id} not found")));
        };
        let Some(slack) = &request.slack else {
            let post = self
                .store
                .deliveries(id)
                .await
                .map_err(|e| SlackCallError::Transient(e.to_string()))?
                .into_iter()
                .find(|d| d.kind == "slack_post");
            return match post.map(|d| d.state) {
                Some(JobState::Pending) => Ok(Some(JobResult::Retry {
                    at: self.now() + WAIT_FOR_POST_MS,
                    error: "waiting for the message to be posted".into(),
                    counts: false,
                })),
                // The post rendered the state at its own time; a post that already
                // happened without recording its ts, or failed for good, leaves nothing to update.
                _ => Err(SlackCallError::Permanent(
                    "the message was never posted".into(),
                )),
            };
        };
        self.slack
            .update_message(
                &slack.channel,
                &slack.ts,
                render::fallback_text(&request),
                render::blocks(&request),
            )
            .await
            .map(|()| None)
    }

    async fn load(&self, id: &RequestId) -> Result<Option<crate::domain::Request>, SlackCallError> {
        self.store
            .get_request(id)
            .await
            .map_err(|e| SlackCallError::Transient(e.to_string()))
    }
}
