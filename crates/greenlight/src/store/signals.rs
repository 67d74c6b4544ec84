//! Signals as stored: read, paged, set by compare-and-set under a cap on how many there are,
//! and deleted.

use async_trait::async_trait;

use super::{NewAudit, StoreResult};
use crate::domain::{Millis, Signal, SignalName};

/// What became of a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalWrite {
    Written,
    /// Someone set it (or created or deleted it) in between: nothing was written.
    Conflict,
    /// A new name, and `max` signals are stored already: nothing was written.
    Full,
}

/// Signals machines report, which rules read.
#[async_trait]
pub trait Signals: Send + Sync {
    /// The signal's current state, if it is stored.
    async fn signal(&self, name: &SignalName) -> StoreResult<Option<Signal>>;

    /// Up to `limit` signals by name, those after `after` (every name is after `None`).
    async fn list_signals(
        &self,
        after: Option<&SignalName>,
        limit: u32,
    ) -> StoreResult<Vec<Signal>>;

    /// The signals live at `now` (set and not past their ttl): among `names`, or every one
    /// when `names` is `None`.
    async fn live_signals(
        &self,
        names: Option<&[SignalName]>,
        now: Millis,
    ) -> StoreResult<Vec<Signal>>;

    /// Writes `signal` if the stored one was last set at `expected` (`None`: there is none,
    /// and fewer than `max` signals are stored), with its audit entries. Two inserts of new
    /// names never both take the last place.
    async fn put_signal(
        &self,
        signal: &Signal,
        expected: Option<Millis>,
        max: u32,
        audit: &[NewAudit],
        now: Millis,
    ) -> StoreResult<SignalWrite>;

    /// Deletes the signal if it was last set at `expected`, with its audit entries; false,
    /// deleting nothing, when it is gone or was set in between.
    async fn delete_signal(
        &self,
        name: &SignalName,
        expected: Millis,
        audit: &[NewAudit],
        now: Millis,
    ) -> StoreResult<bool>;

    /// Up to `limit` signals whose ttl ran out before `before`, the longest lapsed first.
    async fn lapsed_signals(&self, before: Millis, limit: u32) -> StoreResult<Vec<Signal>>;
}
