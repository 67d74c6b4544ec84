//! PostgreSQL: standing approvals, one set for every replica.

use async_trait::async_trait;

use super::*;
use crate::domain::{ApiKeyId, Millis, RequestId, StandingApproval, StandingId, WorkflowName};
use crate::store::rows;

#[async_trait]
impl StandingApprovals for PostgresStore {
    async fn add_standing(
        &self,
        s: &StandingApproval,
        audit: &[NewAudit],
        effects: &[Effect],
        now: Millis,
    ) -> StoreResult<()> {
        let mut qb = Statement::new(
            "WITH src AS (INSERT INTO standing_approvals (id, workflow, granted_by, caller, \
             caller_name, match_params, request_id, created_at, expires_at) VALUES (",
        );
        qb.push_bind(s.id.to_string())
            .push(", ")
            .push_bind(s.workflow.to_string())
            .push(", ")
            .push_bind(s.granted_by.clone())
            .push(", ")
            .push_bind(s.caller.to_string())
            .push(", ")
            .push_bind(s.caller_name.clone())
            .push(", ")
            .push_bind(to_json(&serde_json::Value::Object(s.r#match.clone()))?)
            .push(", ")
            .push_bind(s.request_id.to_string())
            .push(", ")
            .push_bind(millis(s.created_at))
            .push(", ")
            .push_bind(millis(s.expires_at))
            .push(") RETURNING id)");
        push_audit_and_effects(&mut qb, "src", now, audit, effects)?;
        qb.push(" SELECT count(*) FROM src");
        count_of(&mut qb, &self.pool).await.map(|_| ())
    }

    async fn standing_for(
        &self,
        workflow: &WorkflowName,
        caller: &ApiKeyId,
        now: Millis,
    ) -> StoreResult<Vec<StandingApproval>> {
        let found = sqlx::query_as(rows::STANDING_FOR)
            .bind(workflow.to_string())
            .bind(caller.to_string())
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows::standing(found)
    }

    async fn live_standing(&self, now: Millis) -> StoreResult<Vec<StandingApproval>> {
        let found = sqlx::query_as(rows::LIVE_STANDING)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows::standing(found)
    }

    async fn live_standing_granted_by(
        &self,
        granted_by: &str,
        now: Millis,
    ) -> StoreResult<Vec<StandingApproval>> {
        let found = sqlx::query_as(rows::LIVE_STANDING_GRANTED_BY)
            .bind(granted_by.to_owned())
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows::standing(found)
    }

    async fn standing_of_request(&self, request: &RequestId) -> StoreResult<Vec<StandingApproval>> {
        let found = sqlx::query_as(rows::STANDING_OF_REQUEST)
            .bind(request.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows::standing(found)
    }

    async fn get_standing(&self, id: &StandingId) -> StoreResult<Option<StandingApproval>> {
        let found: Option<rows::StandingRow> = sqlx::query_as(rows::GET_STANDING)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        found.map(StandingApproval::try_from).transpose()
    }

    async fn revoke_standing(
        &self,
        id: &StandingId,
        by: &str,
        now: Millis,
        audit: &[NewAudit],
        effects: &[Effect],
    ) -> StoreResult<bool> {
        let mut qb = Statement::new("WITH src AS (UPDATE standing_approvals SET revoked_at = ");
        qb.push_bind(now)
            .push(", revoked_by = ")
            .push_bind(by.to_owned())
            .push(" WHERE id = ")
            .push_bind(id.to_string())
            .push(" AND revoked_at IS NULL AND expires_at > ")
            .push_bind(now)
            .push(" RETURNING id)");
        push_audit_and_effects(&mut qb, "src", now, audit, effects)?;
        qb.push(" SELECT count(*) FROM src");
        Ok(count_of(&mut qb, &self.pool).await? == 1)
    }
}
