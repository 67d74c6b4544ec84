//! The database as a whole and what processes share through it: first-start values, Slack
//! pacing and message leases, decisions made elsewhere, backup and shutdown.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::StoreResult;
use crate::domain::{Millis, Pace, RequestId};

/// The database itself and what the process around it shares through it.
#[async_trait]
pub trait Admin: Send + Sync {
    /// The value stored under `key`, storing `value` first if there is none (first start).
    async fn meta_get_or_insert(&self, key: &str, value: &str) -> StoreResult<String>;

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

    /// A consistent copy of the whole database at `path`, taken while writes go on.
    async fn backup(&self, path: &std::path::Path) -> StoreResult<()>;

    /// Whether writes fail for want of storage (a full disk, I/O errors) and none has landed
    /// since, as this process saw (SQLite's writer sees every write; on PostgreSQL, whose
    /// server owns its disk, an unreachable database shows in any query instead).
    fn writes_failing(&self) -> bool {
        false
    }

    /// One small write (the time of the last readiness probe, in `meta`): while writes fail,
    /// `/readyz` turns green again only when this lands.
    async fn probe_write(&self, now: Millis) -> StoreResult<()>;
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

/// Called with a request another process decided (`None`: some notices may have been missed,
/// so every waiter should look again).
pub type DecisionFeed = Arc<dyn Fn(Option<RequestId>) + Send + Sync>;
