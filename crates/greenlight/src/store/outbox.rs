//! The outbox: side effects written in the transaction of the change that caused them, then
//! leased to workers by lane, delivered at least once and reported on; and its types.

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{NewAudit, StoreError, StoreResult, ts_from_millis};
use crate::domain::{Millis, RequestId, SlackRef};

/// Side effects to deliver after their change commits: queued, leased, finished, shown.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Records effects and audit entries that change no request (notices to one person).
    async fn record(&self, audit: &[NewAudit], effects: &[Effect], now: Millis) -> StoreResult<()>;

    /// Leases due jobs to `owner` for `lease_ms`, up to each lane's limit, in one go; a
    /// crashed worker's lease runs out and another worker delivers the job again (at least
    /// once).
    async fn claim_jobs(
        &self,
        owner: &str,
        lanes: &[(Lane, u32)],
        now: Millis,
        lease_ms: Millis,
    ) -> StoreResult<Vec<Job>>;

    /// Called when a worker starts. SQLite (one server per file) frees every lease, since any
    /// lease still held belongs to a process that died; PostgreSQL frees none, since other
    /// replicas hold theirs, and a dead replica's leases simply run out.
    async fn recover_leases(&self) -> StoreResult<u64>;

    /// Frees the leases `owner` holds (a clean shutdown), so others need not wait them out.
    async fn release_leases(&self, owner: &str) -> StoreResult<u64>;

    /// Records an attempt's outcome and what it sets off, atomically.
    async fn finish_job(&self, id: i64, now: Millis, report: &JobReport) -> StoreResult<()>;

    /// When the next job of `lanes` that nobody holds at `now` falls due, if any. A job
    /// under a live lease is left out: its holder reports its end, and a lease that runs out
    /// unreported (a dead replica's) is found by the worker's next look, at most a second
    /// away. So the look walks the due index past at most the jobs in flight, never the
    /// whole backlog.
    async fn next_job_due(&self, lanes: &[Lane], now: Millis) -> StoreResult<Option<Millis>>;

    async fn deliveries(&self, request_id: &RequestId) -> StoreResult<Vec<Delivery>>;

    /// What the request's action hooks did, oldest first.
    async fn action_results(&self, request_id: &RequestId) -> StoreResult<Vec<ActionResult>>;
}

/// Deliveries are claimed and run per lane, each with its own concurrency, so that one kind
/// of slow receiver (a requester's callback URL that never answers) cannot hold up another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Slack Web API calls.
    Slack,
    /// The operators' own: workflow webhooks and action hooks.
    Hooks,
    /// Callbacks to URLs requesters gave.
    Callbacks,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Slack, Lane::Hooks, Lane::Callbacks];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Slack => "slack",
            Lane::Hooks => "hooks",
            Lane::Callbacks => "callbacks",
        }
    }
}

/// A side effect to deliver after the change that caused it has been committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Effect {
    /// Post the request's message to its channel (rendered from the state at delivery time).
    SlackPost { request_id: RequestId },
    /// Rewrite the request's message to show its current state.
    SlackUpdate { request_id: RequestId },
    /// Rewrite the request's message at `at` (milliseconds since the epoch): a standing
    /// approval its approval granted runs out then, and its Revoke button goes.
    SlackUpdateAt { request_id: RequestId, at: Millis },
    /// A note only one person sees.
    SlackEphemeral {
        channel: String,
        user: String,
        text: String,
    },
    /// A reply in the thread of the request's message (reminders).
    SlackThreadReply { request_id: RequestId, text: String },
    /// Copies of the request's message, with its buttons, in the direct message of each of
    /// `approvers` (user ids, and user groups expanded when it is sent): a stage opened and its
    /// workflow has `notify_approvers = "dm"`. Each copy is kept on the request and rewritten
    /// with the message.
    SlackDmCopies {
        request_id: RequestId,
        approvers: Vec<String>,
    },
    /// A direct message from the app to a person (`to`: a Slack user id, or an email looked up
    /// when it is sent): the requester told how their request ended.
    SlackDirectMessage {
        request_id: RequestId,
        to: String,
        text: String,
    },
    /// A signed callback (Standard Webhooks) telling a machine about one event of a request.
    /// The body is fixed when the event happens, so every retry sends the same bytes.
    Webhook {
        request_id: RequestId,
        url: String,
        /// The URL came from the requester (`callback_url`): the SSRF guard applies.
        guarded: bool,
        event: String,
        /// `webhook-id`: the same on every retry of this event.
        webhook_id: String,
        body: String,
    },
    /// An operator's action hook. The template is stored and rendered at delivery, so no
    /// secret from the environment is ever written down.
    ActionHook {
        request_id: RequestId,
        hook: crate::policy::hooks::ActionHook,
    },
    /// A note to the operators' channel about a delivery that failed for good.
    SlackAlert {
        channel: String,
        text: String,
        request_id: Option<RequestId>,
    },
    /// Post or update the digest message `key` (many auto-decisions in one message),
    /// rendered from its requests at delivery time.
    SlackDigest { key: String, channel: String },
    /// Tell GitHub about the deployment the request holds (`[github]`): with `state`, the
    /// review that ends its wait; without, the one status report that links the Slack message.
    /// Where to post it is read from the request when it is sent.
    GithubReview {
        request_id: RequestId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<crate::domain::github::ReviewState>,
    },
    /// Publish a person's App Home tab (`views.publish`), rendered from the state at delivery
    /// time. Waiting refreshes of one person collapse into one. `notice` is shown at the top:
    /// why a click on the Home tab did not count (the tab has no channel for an ephemeral).
    SlackHomeRefresh {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notice: Option<String>,
    },
}

/// How long a digest's pending update waits before it is sent, so that a burst of
/// auto-decisions becomes one update (Slack allows about one a second per message).
pub const DIGEST_UPDATE_DELAY_MS: Millis = 2_000;

impl Effect {
    /// Which share of the worker delivers it (see `Lane`).
    pub fn lane(&self) -> Lane {
        match self {
            Effect::Webhook { guarded: true, .. } => Lane::Callbacks,
            Effect::Webhook { .. } | Effect::ActionHook { .. } | Effect::GithubReview { .. } => {
                Lane::Hooks
            }
            _ => Lane::Slack,
        }
    }

    /// Jobs with the same key collapse: while one waits, a new one is not queued, since the
    /// waiting one renders the latest state when it is delivered.
    pub fn collapse_key(&self) -> Option<String> {
        match self {
            Effect::SlackUpdate { request_id } => Some(format!("update:{request_id}")),
            // Apart from the immediate updates: a waiting one must not hold those back.
            Effect::SlackUpdateAt { request_id, at } => Some(format!("update:{request_id}@{at}")),
            Effect::SlackDigest { key, .. } => Some(format!("digest:{key}")),
            // One waiting refresh per person's Home tab (and per notice to show on it).
            Effect::SlackHomeRefresh { user, notice } => Some(match notice {
                None => format!("home:{user}"),
                Some(n) => format!("home:{user}:{n}"),
            }),
            _ => None,
        }
    }

    /// When the job written at `now` is first tried.
    pub fn due(&self, now: Millis) -> Millis {
        match self {
            Effect::SlackDigest { .. } => now + DIGEST_UPDATE_DELAY_MS,
            Effect::SlackUpdateAt { at, .. } => now.max(*at),
            _ => now,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Effect::SlackPost { .. } => "slack_post",
            Effect::SlackUpdate { .. } => "slack_update",
            Effect::SlackUpdateAt { .. } => "slack_update_at",
            Effect::SlackEphemeral { .. } => "slack_ephemeral",
            Effect::SlackThreadReply { .. } => "slack_thread_reply",
            Effect::SlackDirectMessage { .. } => "slack_direct_message",
            Effect::SlackDmCopies { .. } => "slack_dm_copies",
            Effect::Webhook { .. } => "webhook",
            Effect::ActionHook { .. } => "action_hook",
            Effect::SlackAlert { .. } => "slack_alert",
            Effect::SlackDigest { .. } => "slack_digest",
            Effect::SlackHomeRefresh { .. } => "slack_home_refresh",
            Effect::GithubReview { .. } => "github_review",
        }
    }

    /// Where it goes, in words safe to show (hosts, not full URLs that may carry tokens).
    pub fn target(&self) -> Option<String> {
        match self {
            Effect::Webhook {
                url,
                guarded,
                event,
                ..
            } => {
                let host = reqwest::Url::parse(url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_default();
                let whose = if *guarded { "callback_url" } else { "webhook" };
                Some(format!("{event} to {whose} {host}"))
            }
            Effect::ActionHook { hook, .. } => Some(format!("{} ({})", hook.name, hook.method)),
            Effect::SlackAlert { channel, .. } | Effect::SlackDigest { channel, .. } => {
                Some(channel.clone())
            }
            Effect::SlackHomeRefresh { user, .. } => Some(format!("Home tab of {user}")),
            Effect::GithubReview { state, .. } => Some(match state {
                Some(state) => format!("GitHub deployment review: {}", state.as_str()),
                None => "GitHub deployment status report".to_owned(),
            }),
            Effect::SlackDirectMessage { to, .. } => Some(format!("direct message to {to}")),
            Effect::SlackDmCopies { approvers, .. } => {
                Some(format!("direct messages to {}", approvers.join(", ")))
            }
            _ => None,
        }
    }

    pub fn request_id(&self) -> Option<&RequestId> {
        match self {
            Effect::SlackPost { request_id }
            | Effect::SlackUpdate { request_id }
            | Effect::SlackUpdateAt { request_id, .. } => Some(request_id),
            Effect::SlackThreadReply { request_id, .. }
            | Effect::SlackDirectMessage { request_id, .. }
            | Effect::SlackDmCopies { request_id, .. } => Some(request_id),
            Effect::Webhook { request_id, .. }
            | Effect::ActionHook { request_id, .. }
            | Effect::GithubReview { request_id, .. } => Some(request_id),
            Effect::SlackAlert { request_id, .. } => request_id.as_ref(),
            Effect::SlackEphemeral { .. }
            | Effect::SlackDigest { .. }
            | Effect::SlackHomeRefresh { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Done,
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Done => "done",
            JobState::Dead => "dead",
        }
    }

    pub(super) fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "pending" => Ok(JobState::Pending),
            "done" => Ok(JobState::Done),
            "dead" => Ok(JobState::Dead),
            other => Err(StoreError::Corrupt(format!("outbox state {other:?}"))),
        }
    }
}

/// An outbox job leased to a worker.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub effect: Effect,
    pub attempts: u32,
    /// How many times it was claimed, this time included: more than once means an earlier
    /// worker may have made the call before it died or failed.
    pub claims: u32,
    pub created_at: Millis,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobResult {
    Done,
    /// Try again at `at`; `counts` is false for waits that are not failures (rate limits,
    /// waiting for the message to be posted first).
    Retry {
        at: Millis,
        error: String,
        counts: bool,
    },
    Dead {
        error: String,
    },
}

/// What a worker reports after an attempt, written in one transaction: the job's new state,
/// the attempt (when a call went out), and anything the outcome sets off.
#[derive(Debug, Clone)]
pub struct JobReport {
    pub result: JobResult,
    /// False for waits that made no call (a paused method, a message not posted yet).
    pub attempted: bool,
    pub audit: Vec<NewAudit>,
    pub effects: Vec<Effect>,
    pub action: Option<ActionResult>,
    /// The message the attempt posted for the job's request, recorded on the request in the
    /// same write as the job's result (one write less per post than saving it apart).
    pub posted: Option<SlackRef>,
}

impl JobReport {
    pub fn new(result: JobResult, attempted: bool) -> Self {
        Self {
            result,
            attempted,
            audit: Vec::new(),
            effects: Vec::new(),
            action: None,
            posted: None,
        }
    }
}

/// What an action hook did, for the Slack message and the API.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ActionResult {
    pub name: String,
    pub ok: bool,
    /// "HTTP 201", "HTTP 502", "timed out", ...
    pub summary: String,
    pub attempts: u32,
    pub at: Timestamp,
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub at: Timestamp,
    /// `done`, `failed`, `rate_limited` or `dead`.
    pub outcome: String,
    pub error: Option<String>,
}

/// What the API shows about a request's deliveries.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub kind: String,
    /// Where it goes (callbacks and hooks), without secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub state: JobState,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the next try is due, while the job is pending.
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The latest attempts, newest first.
    pub recent_attempts: Vec<Attempt>,
}

impl Delivery {
    /// The delivery of `effect`, written just now as job `id`: pending and never tried.
    pub fn written(id: i64, effect: &Effect, now: Millis) -> StoreResult<Self> {
        let now_ts = ts_from_millis(now)?;
        Ok(Delivery {
            id,
            kind: effect.kind().to_owned(),
            target: effect.target(),
            state: JobState::Pending,
            attempts: 0,
            last_error: None,
            next_attempt_at: Some(ts_from_millis(effect.due(now))?),
            created_at: now_ts,
            updated_at: now_ts,
            recent_attempts: Vec::new(),
        })
    }

    /// The deliveries of `request` among `effects` written at `now`, given each effect's job
    /// id (`None`: it collapsed into a job already waiting, which shows under its own request).
    pub fn written_for(
        request: &RequestId,
        effects: &[Effect],
        ids: &[Option<i64>],
        now: Millis,
    ) -> StoreResult<Vec<Self>> {
        effects
            .iter()
            .zip(ids)
            .filter(|(e, _)| e.request_id() == Some(request))
            .filter_map(|(e, id)| id.map(|id| Self::written(id, e, now)))
            .collect()
    }
}
