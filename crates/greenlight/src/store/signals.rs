//! Signals as stored: read, listed, and set by compare-and-set.

use async_trait::async_trait;

use super::{NewAudit, StoreResult};
use crate::domain::{Millis, Signal, SignalName};

/// Signals machines report, which rules read.
#[async_trait]
pub trait Signals: Send + Sync {
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
}
