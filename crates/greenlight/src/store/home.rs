//! The App Home tab: who opened it lately, so their tabs can be kept current.

use async_trait::async_trait;

use super::{Effect, StoreResult};
use crate::domain::Millis;

/// Who looks at their App Home tab.
#[async_trait]
pub trait Home: Send + Sync {
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
}
