//! What rules and alerts ask of past requests: whether a parameter value was approved, and
//! how many were created, denied or decided by a rule in a window.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::Millis;

/// Questions rules and alerts ask about past requests.
#[async_trait]
pub trait History: Send + Sync {
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
}
