//! Persistence behind one trait. The domain decides; the store only writes what was decided,
//! atomically with its audit entries and outbox jobs, and refuses a write whose request changed
//! in between (compare-and-set on the request's version).

pub mod copy;
mod local;
mod postgres;
mod rows;
mod sqlite;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::domain::{
    ApiKeyId, Millis, Pace, Request, RequestId, Signal, SignalName, SlackRef, Status, WorkflowName,
};

pub use local::LocalCoordination;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("migration failed: {0}")]
    MigrationSql(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: use sqlite:PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    #[error("{0}")]
    Unsupported(&'static str),
}

impl StoreError {
    /// A unique constraint refused the write (two creates with one idempotency key raced).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => e.is_unique_violation(),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// How a database is opened: pool size and statement timeout (PostgreSQL; SQLite has one
/// writer and a few readers of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseOptions {
    pub max_connections: u32,
    pub statement_timeout: std::time::Duration,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            statement_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Which backend a URL names.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens the store named by a database URL and brings its schema up to date.
pub async fn connect(url: &str) -> StoreResult<Arc<dyn Store>> {
    connect_with(url, DatabaseOptions::default()).await
}

pub async fn connect_with(url: &str, options: DatabaseOptions) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if is_postgres(url) {
        Ok(Arc::new(PostgresStore::open(url, options).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

/// What every process that delivers to Slack must agree on: Slack's limits are per app, not
/// per process. One process keeps these in memory; several replicas keep them in the database.
#[async_trait]
pub trait Coordination: Send + Sync {
    /// Takes a chat.postMessage slot for `channel`, or says when this caller's own slot is.
    async fn take_post_slot(
        &self,
        channel: &str,
        now: Millis,
        pace: Pace,
    ) -> StoreResult<Result<(), Millis>>;

    /// Pauses a Slack method until `until` (after a 429).
    async fn pause(&self, method: &str, until: Millis) -> StoreResult<()>;

    async fn paused_until(&self, method: &str, now: Millis) -> StoreResult<Option<Millis>>;

    /// Makes `owner` the only one posting or updating what `key` names until `until`: a
    /// request's id for its message, `digest:<key>` for a digest, `home:<user>` for a person's
    /// Home tab. False when someone else holds it. So one message is never updated by two
    /// workers at once, and an older rendering never lands after a newer one.
    async fn lease_message(
        &self,
        key: &str,
        owner: &str,
        until: Millis,
        now: Millis,
    ) -> StoreResult<bool>;

    async fn release_message(&self, key: &str, owner: &str) -> StoreResult<()>;
}

/// A digest: one message per channel and window standing for the auto-decisions in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestWindow {
    pub key: String,
    pub channel: String,
    pub start: Millis,
    pub end: Millis,
}

impl DigestWindow {
    /// The window of `interval_ms` that `now` falls in, for `channel`: windows are aligned to
    /// the interval, so every replica puts an auto-decision in the same one.
    pub fn at(channel: &str, now: Millis, interval_ms: Millis) -> Self {
        let interval = interval_ms.max(1);
        let start = now - now.rem_euclid(interval);
        Self {
            key: format!("{channel}@{start}+{interval}"),
            channel: channel.to_owned(),
            start,
            end: start + interval,
        }
    }

    /// The window a key names (`channel@start+interval`).
    pub fn parse(key: &str) -> Option<Self> {
        let (channel, when) = key.rsplit_once('@')?;
        let (start, interval) = when.split_once('+')?;
        let (start, interval): (Millis, Millis) = (start.parse().ok()?, interval.parse().ok()?);
        Some(Self {
            key: key.to_owned(),
            channel: channel.to_owned(),
            start,
            end: start + interval.max(1),
        })
    }
}

/// Where a posted message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackMessageRef {
    pub channel: String,
    pub ts: String,
}

/// A digest's content: how many auto-decisions, by rule and outcome, for whom, the latest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DigestSummary {
    pub total: i64,
    /// (rule, status, count), most first.
    pub by_rule: Vec<(String, String, i64)>,
    /// (requester, count), most first, at most a few.
    pub by_requester: Vec<(Option<String>, i64)>,
    /// The latest few: (id, title, status, rule, requester).
    pub recent: Vec<DigestEntry>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DigestEntry {
    pub id: String,
    pub title: String,
    pub status: String,
    pub decided_by: Option<String>,
    pub requester: Option<String>,
}

/// Called with a request another process decided (`None`: some notices may have been missed,
/// so every waiter should look again).
pub type DecisionFeed = Arc<dyn Fn(Option<RequestId>) + Send + Sync>;

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
    /// A note only one person sees.
    SlackEphemeral {
        channel: String,
        user: String,
        text: String,
    },
    /// A reply in the thread of the request's message (reminders).
    SlackThreadReply { request_id: RequestId, text: String },
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
            Effect::Webhook { .. } | Effect::ActionHook { .. } => Lane::Hooks,
            _ => Lane::Slack,
        }
    }

    /// Jobs with the same key collapse: while one waits, a new one is not queued, since the
    /// waiting one renders the latest state when it is delivered.
    pub fn collapse_key(&self) -> Option<String> {
        match self {
            Effect::SlackUpdate { request_id } => Some(format!("update:{request_id}")),
            Effect::SlackDigest { key, .. } => Some(format!("digest:{key}")),
            // One waiting refresh per person's Home tab (and per notice to show on it).
            Effect::SlackHomeRefresh { user, notice } => Some(match notice {
                None => format!("home:{user}"),
                Some(n) => format!("home:{user}:{n}"),
            }),
            _ => None,
        }
    }

    /// How long after the change the job is first tried.
    pub fn delay_ms(&self) -> Millis {
        match self {
            Effect::SlackDigest { .. } => DIGEST_UPDATE_DELAY_MS,
            _ => 0,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Effect::SlackPost { .. } => "slack_post",
            Effect::SlackUpdate { .. } => "slack_update",
            Effect::SlackEphemeral { .. } => "slack_ephemeral",
            Effect::SlackThreadReply { .. } => "slack_thread_reply",
            Effect::Webhook { .. } => "webhook",
            Effect::ActionHook { .. } => "action_hook",
            Effect::SlackAlert { .. } => "slack_alert",
            Effect::SlackDigest { .. } => "slack_digest",
            Effect::SlackHomeRefresh { .. } => "slack_home_refresh",
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
            _ => None,
        }
    }

    pub fn request_id(&self) -> Option<&RequestId> {
        match self {
            Effect::SlackPost { request_id } | Effect::SlackUpdate { request_id } => {
                Some(request_id)
            }
            Effect::SlackThreadReply { request_id, .. } => Some(request_id),
            Effect::Webhook { request_id, .. } | Effect::ActionHook { request_id, .. } => {
                Some(request_id)
            }
            Effect::SlackAlert { request_id, .. } => request_id.as_ref(),
            Effect::SlackEphemeral { .. }
            | Effect::SlackDigest { .. }
            | Effect::SlackHomeRefresh { .. } => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewAudit {
    pub request_id: Option<RequestId>,
    pub event: &'static str,
    pub actor: String,
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub id: i64,
    pub at: Timestamp,
    pub request_id: Option<String>,
    pub event: String,
    pub actor: String,
    pub data: serde_json::Value,
    /// The entry's place in the hash chain, and the hashes (absent until chained, which the
    /// server does within a second of the write).
    pub seq: Option<i64>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
    /// `data` exactly as stored: what the hash covers.
    #[serde(skip)]
    pub data_json: String,
}

impl AuditEvent {
    pub fn content(&self) -> crate::domain::AuditContent<'_> {
        crate::domain::AuditContent {
            id: self.id,
            at_ms: self.at.as_millisecond(),
            request_id: self.request_id.as_deref(),
            event: &self.event,
            actor: &self.actor,
            data_json: &self.data_json,
        }
    }
}

/// One position of the audit chain, with the entry it names (`None`: that entry is gone).
#[derive(Debug, Clone)]
pub struct ChainLink {
    pub seq: i64,
    pub audit_id: i64,
    pub prev_hash: String,
    pub hash: String,
    pub entry: Option<AuditEvent>,
}

/// Who created a request, and what they called it, so that a retry finds the same request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub api_key: ApiKeyId,
    pub key: String,
    /// A digest of the creating body: the same key with a different body is a client bug.
    pub fingerprint: String,
}

#[derive(Debug)]
pub enum CreateOutcome {
    /// Written, with the jobs it wrote for the request: its deliveries as they stand at the
    /// commit (pending, never tried), so the caller can show them without reading them back.
    Created(Vec<Delivery>),
    /// The idempotency key was seen before with the same body: here is that request.
    Existing(Box<Request>),
    /// The idempotency key was seen before with a different body.
    KeyReused,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub workflow: Option<WorkflowName>,
    /// Return requests older than this id (ids sort by creation time).
    pub before: Option<RequestId>,
    pub limit: u32,
}

/// Which pending requests someone may still vote on (see `Store::votable_requests`).
#[derive(Debug, Clone, Default)]
pub struct VotableFilter {
    /// The workflows whose requests they may vote on.
    pub workflows: Vec<WorkflowName>,
    /// Who: requests with a decision by them are left out (one vote per person).
    pub voter: String,
    /// Workflows where they may not approve what they asked for: their own requests (requester
    /// equal to `voter`) are left out there.
    pub not_own_in: Vec<WorkflowName>,
    pub limit: u32,
}

/// Requests counted beyond this are shown as "and 999+ more": counting stops there, so a
/// backlog of thousands does not make every Home tab read all of them.
pub const VOTABLE_COUNT_CAP: u32 = 1000;

/// Some of the requests that matched, and how many matched in all (up to `VOTABLE_COUNT_CAP`).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub requests: Vec<Request>,
    pub total: u32,
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

    fn parse(s: &str) -> StoreResult<Self> {
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
            next_attempt_at: Some(ts_from_millis(now + effect.delay_ms())?),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Request,
    Read,
    Decide,
    /// Report signals (`POST /v1/signals`).
    Signal,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Request,
        Scope::Read,
        Scope::Decide,
        Scope::Signal,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Request => "request",
            Scope::Read => "read",
            Scope::Decide => "decide",
            Scope::Signal => "signal",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl ApiKey {
    pub fn allows(&self, scope: Scope) -> bool {
        self.revoked_at.is_none()
            && (self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin))
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a new request with its audit entries and effects, or finds the one created
    /// earlier under the same idempotency key.
    async fn create_request(
        &self,
        request: &Request,
        idempotency: Option<&Idempotency>,
        audit: &[NewAudit],
        effects: &[Effect],
        now: Millis,
    ) -> StoreResult<CreateOutcome>;

    async fn get_request(&self, id: &RequestId) -> StoreResult<Option<Request>>;

    async fn list_requests(&self, filter: &ListFilter) -> StoreResult<Vec<Request>>;

    /// Writes `request` (already changed by the domain) if its stored version is still
    /// `expected_version`, together with audit entries and effects. Returns false, writing
    /// nothing, when someone else changed the request first.
    async fn save_transition(
        &self,
        request: &Request,
        expected_version: i64,
        audit: &[NewAudit],
        effects: &[Effect],
        now: Millis,
    ) -> StoreResult<bool>;

    /// Records effects and audit entries that change no request (notices to one person).
    async fn record(&self, audit: &[NewAudit], effects: &[Effect], now: Millis) -> StoreResult<()>;

    /// Pending requests whose expiry or next reminder is due at `now`, oldest first. With
    /// several replicas each due request is handed to one of them for a while (a claim), so
    /// they do not all work on the same ones; the compare-and-set still decides.
    async fn due_requests(&self, now: Millis, limit: u32) -> StoreResult<Vec<RequestId>>;

    /// Pending requests `filter.voter` may still vote on, newest first (at most
    /// `filter.limit`), and how many match in all.
    async fn votable_requests(&self, filter: &VotableFilter) -> StoreResult<Page>;

    /// The newest requests whose requester is `requester`, any status.
    async fn requests_by(&self, requester: &str, limit: u32) -> StoreResult<Vec<Request>>;

    /// Requests decided since `since`, most recently decided first, that belong to one of
    /// `workflows` or were asked for by `requester`.
    async fn recently_decided(
        &self,
        workflows: &[WorkflowName],
        requester: &str,
        since: Millis,
        limit: u32,
    ) -> StoreResult<Vec<Request>>;

    /// Remembers that `user` opened the Home tab at `now`, forgets openings before
    /// `forget_before`, and queues `effects` (the tab's first rendering), in one transaction.
    async fn record_home_opened(
        &self,
        user: &str,
        now: Millis,
        forget_before: Millis,
        effects: &[Effect],
    ) -> StoreResult<()>;

    /// Who opened the Home tab since `since`, most recent first.
    async fn home_viewers(&self, since: Millis, limit: u32) -> StoreResult<Vec<String>>;

    /// Remembers where the request's message was posted.
    async fn set_slack_message(&self, id: &RequestId, channel: &str, ts: &str) -> StoreResult<()>;

    async fn list_audit(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEvent>>;

    /// Adds up to `limit` entries not yet in the hash chain to its end, oldest first; returns
    /// how many. With several replicas one of them chains at a time (the others get 0).
    async fn chain_audit(&self, limit: u32) -> StoreResult<u32>;

    /// Chain positions after `after_seq`, in order, with their entries.
    async fn audit_chain(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<ChainLink>>;

    /// Entries that are in no chain position, oldest first.
    async fn unchained_audit(&self, limit: u32) -> StoreResult<Vec<AuditEvent>>;

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

    /// The value stored under `key`, storing `value` first if there is none (first start).
    async fn meta_get_or_insert(&self, key: &str, value: &str) -> StoreResult<String>;

    async fn insert_api_key(&self, key: &ApiKey, hash: &str) -> StoreResult<()>;

    async fn find_api_key(&self, hash: &str) -> StoreResult<Option<ApiKey>>;

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>>;

    async fn revoke_api_key(&self, id: &ApiKeyId, now: Timestamp) -> StoreResult<bool>;

    /// Closes every connection after the writes in flight, on a clean shutdown (SQLite then
    /// folds its write-ahead log back into the file and removes it).
    async fn close(&self);

    /// Pacing, pauses and message leases, as shared as this backend's processes need.
    fn coordination(&self) -> Arc<dyn Coordination>;

    /// Tells `feed` about decisions made by other processes until `stop`. One process on
    /// SQLite has none to hear of (its own are woken in process).
    async fn follow_decisions(&self, feed: DecisionFeed, stop: CancellationToken) {
        let _ = feed;
        stop.cancelled().await;
    }

    /// `sqlite` or `postgres`, for logs.
    fn backend(&self) -> &'static str;

    /// The signal's current state, if it was ever set.
    async fn signal(&self, name: &SignalName) -> StoreResult<Option<Signal>>;

    /// Every signal, by name.
    async fn signals(&self) -> StoreResult<Vec<Signal>>;

    /// Writes `signal` if the stored one was last set at `expected` (`None`: there is none),
    /// with its audit entries; false, writing nothing, when someone set it in between.
    async fn put_signal(
        &self,
        signal: &Signal,
        expected: Option<Millis>,
        audit: &[NewAudit],
        now: Millis,
    ) -> StoreResult<bool>;

    /// Whether a request of `workflow` whose `params[param]` is the JSON value `value` was
    /// approved.
    async fn approved_with(
        &self,
        workflow: &str,
        param: &str,
        value: &serde_json::Value,
    ) -> StoreResult<bool>;

    /// Requests of `workflow` created since `since`.
    async fn count_created(&self, workflow: &str, since: Millis) -> StoreResult<i64>;

    /// The same, per requester (those without one counted under `None`).
    async fn count_created_by_requester(
        &self,
        workflow: &str,
        since: Millis,
    ) -> StoreResult<Vec<(Option<String>, i64)>>;

    /// Requests of `workflow` denied since `since`.
    async fn count_denied(&self, workflow: &str, since: Millis) -> StoreResult<i64>;

    /// Requests the rule `rule` decided since `since`.
    async fn count_decided_by(&self, rule: &str, since: Millis) -> StoreResult<i64>;

    /// What the digest `key` stands for, from its requests.
    async fn digest_summary(&self, key: &str) -> StoreResult<DigestSummary>;

    /// Where the digest's message is, once posted.
    async fn digest_message(&self, key: &str) -> StoreResult<Option<SlackMessageRef>>;

    async fn set_digest_message(
        &self,
        digest: &DigestWindow,
        channel: &str,
        ts: &str,
    ) -> StoreResult<()>;

    /// Marks the alert `key` fired at `now`, with its audit entries and effects, if it has not
    /// fired since `now - window_ms`; false, writing nothing, when it has (or another replica
    /// just did).
    async fn claim_alert(
        &self,
        key: &str,
        now: Millis,
        window_ms: Millis,
        audit: &[NewAudit],
        effects: &[Effect],
    ) -> StoreResult<bool>;

    /// A consistent copy of the whole database at `path`, taken while writes go on.
    async fn backup(&self, path: &std::path::Path) -> StoreResult<()>;
}

pub(crate) fn ts_from_millis(ms: Millis) -> StoreResult<Timestamp> {
    Timestamp::from_millisecond(ms).map_err(|e| StoreError::Corrupt(format!("timestamp {ms}: {e}")))
}

pub(crate) fn millis(ts: Timestamp) -> Millis {
    ts.as_millisecond()
}
