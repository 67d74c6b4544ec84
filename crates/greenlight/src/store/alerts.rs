//! Alerts on counts: each fires at most once per window, across replicas.

use async_trait::async_trait;

use super::{Effect, NewAudit, StoreResult};
use crate::domain::Millis;

/// When alerts last fired.
#[async_trait]
pub trait Alerts: Send + Sync {
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
}
