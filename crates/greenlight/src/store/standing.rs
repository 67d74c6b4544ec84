//! Standing approvals, kept for every replica: granted with an audit entry in one write, found
//! by workflow and caller at each create, listed and revoked.

use async_trait::async_trait;

use super::{NewAudit, StoreResult};
use crate::domain::{ApiKeyId, Millis, StandingApproval, StandingId, WorkflowName};

#[async_trait]
pub trait StandingApprovals: Send + Sync {
    /// Stores `standing` and writes `audit` with it, in one transaction.
    async fn add_standing(
        &self,
        standing: &StandingApproval,
        audit: &[NewAudit],
        now: Millis,
    ) -> StoreResult<()>;

    /// The live (unrevoked, unexpired) standing approvals of `caller` in `workflow`, oldest
    /// first.
    async fn standing_for(
        &self,
        workflow: &WorkflowName,
        caller: &ApiKeyId,
        now: Millis,
    ) -> StoreResult<Vec<StandingApproval>>;

    /// Every live standing approval, soonest to expire first.
    async fn live_standing(&self, now: Millis) -> StoreResult<Vec<StandingApproval>>;

    async fn get_standing(&self, id: &StandingId) -> StoreResult<Option<StandingApproval>>;

    /// Ends a live standing approval, writing `audit` with it; `false` (and nothing written)
    /// when it is not live (unknown, expired or revoked already).
    async fn revoke_standing(
        &self,
        id: &StandingId,
        by: &str,
        now: Millis,
        audit: &[NewAudit],
    ) -> StoreResult<bool>;
}
