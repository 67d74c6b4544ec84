//! Standing approvals, kept for every replica: granted with an audit entry in one write, found
//! by workflow and caller at each create, listed and revoked.

use async_trait::async_trait;

use super::{Effect, NewAudit, StoreResult};
use crate::domain::{ApiKeyId, Millis, RequestId, StandingApproval, StandingId, WorkflowName};

#[async_trait]
pub trait StandingApprovals: Send + Sync {
    /// Stores `standing` and writes `audit` and `effects` with it, in one transaction.
    async fn add_standing(
        &self,
        standing: &StandingApproval,
        audit: &[NewAudit],
        effects: &[Effect],
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

    /// The live standing approvals `granted_by` granted, soonest to expire first.
    async fn live_standing_granted_by(
        &self,
        granted_by: &str,
        now: Millis,
    ) -> StoreResult<Vec<StandingApproval>>;

    /// Every standing approval granted with `request`'s approval, live or not, oldest first.
    async fn standing_of_request(&self, request: &RequestId) -> StoreResult<Vec<StandingApproval>>;

    async fn get_standing(&self, id: &StandingId) -> StoreResult<Option<StandingApproval>>;

    /// Ends a live standing approval, writing `audit` and `effects` with it; `false` (and
    /// nothing written) when it is not live (unknown, expired or revoked already).
    async fn revoke_standing(
        &self,
        id: &StandingId,
        by: &str,
        now: Millis,
        audit: &[NewAudit],
        effects: &[Effect],
    ) -> StoreResult<bool>;
}
