//! SQLite: standing approvals.

use async_trait::async_trait;
use rusqlite::params;

use super::rows::{all, first};
use super::*;
use crate::domain::{ApiKeyId, Millis, RequestId, StandingApproval, StandingId, WorkflowName};
use crate::store::rows as shared;

shared_sql! {
    INSERT_STANDING = shared::INSERT_STANDING;
    STANDING_FOR = shared::STANDING_FOR;
    LIVE_STANDING = shared::LIVE_STANDING;
    GET_STANDING = shared::GET_STANDING;
    LIVE_STANDING_GRANTED_BY = shared::LIVE_STANDING_GRANTED_BY;
    STANDING_OF_REQUEST = shared::STANDING_OF_REQUEST;
    REVOKE_STANDING = shared::REVOKE_STANDING;
}

#[async_trait]
impl StandingApprovals for SqliteStore {
    async fn add_standing(
        &self,
        s: &StandingApproval,
        audit: &[NewAudit],
        effects: &[Effect],
        now: Millis,
    ) -> StoreResult<()> {
        let entries = Entries::of(now, audit, effects)?;
        let row = (
            s.id.to_string(),
            s.workflow.to_string(),
            s.granted_by.clone(),
            s.caller.to_string(),
            s.caller_name.clone(),
            to_json(&serde_json::Value::Object(s.r#match.clone()))?,
            s.request_id.to_string(),
            millis(s.created_at),
            millis(s.expires_at),
        );
        self.writer
            .write(move |conn| {
                conn.prepare_cached(&INSERT_STANDING)?.execute(params![
                    row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8
                ])?;
                entries.write_jobs(conn)?;
                Ok(())
            })
            .await
    }

    async fn standing_for(
        &self,
        workflow: &WorkflowName,
        caller: &ApiKeyId,
        now: Millis,
    ) -> StoreResult<Vec<StandingApproval>> {
        let (workflow, caller) = (workflow.to_string(), caller.to_string());
        let rows = self
            .readers
            .read(move |conn| all(conn, &STANDING_FOR, params![workflow, caller, now]))
            .await?;
        shared::standing(rows)
    }

    async fn live_standing(&self, now: Millis) -> StoreResult<Vec<StandingApproval>> {
        let rows = self
            .readers
            .read(move |conn| all(conn, &LIVE_STANDING, params![now]))
            .await?;
        shared::standing(rows)
    }

    async fn live_standing_granted_by(
        &self,
        granted_by: &str,
        now: Millis,
    ) -> StoreResult<Vec<StandingApproval>> {
        let granted_by = granted_by.to_owned();
        let rows = self
            .readers
            .read(move |conn| all(conn, &LIVE_STANDING_GRANTED_BY, params![granted_by, now]))
            .await?;
        shared::standing(rows)
    }

    async fn standing_of_request(&self, request: &RequestId) -> StoreResult<Vec<StandingApproval>> {
        let request = request.to_string();
        let rows = self
            .readers
            .read(move |conn| all(conn, &STANDING_OF_REQUEST, params![request]))
            .await?;
        shared::standing(rows)
    }

    async fn get_standing(&self, id: &StandingId) -> StoreResult<Option<StandingApproval>> {
        let id = id.to_string();
        let row = self
            .readers
            .read(move |conn| first::<shared::StandingRow>(conn, &GET_STANDING, params![id]))
            .await?;
        row.map(StandingApproval::try_from).transpose()
    }

    async fn revoke_standing(
        &self,
        id: &StandingId,
        by: &str,
        now: Millis,
        audit: &[NewAudit],
        effects: &[Effect],
    ) -> StoreResult<bool> {
        let entries = Entries::of(now, audit, effects)?;
        let (id, by) = (id.to_string(), by.to_owned());
        self.writer
            .write(move |conn| {
                let changed = conn
                    .prepare_cached(&REVOKE_STANDING)?
                    .execute(params![id, now, by])?;
                if changed == 1 {
                    entries.write_jobs(conn)?;
                }
                Ok(changed == 1)
            })
            .await
    }
}
