//! PostgreSQL: counts and lookups over past requests, with the shared statements.

use async_trait::async_trait;

use super::*;
use crate::domain::Millis;
use crate::store::rows;

#[async_trait]
impl History for PostgresStore {
    async fn approved_with(
        &self,
        workflow: &str,
        param: &str,
        value: &serde_json::Value,
    ) -> StoreResult<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM requests WHERE workflow = $1 AND status = 'approved' \
             AND (params::jsonb -> $2) = $3::jsonb)",
        )
        .bind(workflow)
        .bind(param)
        .bind(value.to_string())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn count_created(&self, workflow: &str, since: Millis) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(rows::COUNT_CREATED)
            .bind(workflow)
            .bind(rows::first_id_at(since))
            .fetch_one(&self.pool)
            .await?)
    }

    async fn count_created_by_requester(
        &self,
        workflow: &str,
        since: Millis,
    ) -> StoreResult<Vec<(Option<String>, i64)>> {
        Ok(sqlx::query_as(rows::COUNT_CREATED_BY_REQUESTER)
            .bind(workflow)
            .bind(rows::first_id_at(since))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn count_denied(&self, workflow: &str, since: Millis) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(rows::COUNT_DENIED)
            .bind(workflow)
            .bind(since)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn count_decided_by(&self, rule: &str, since: Millis) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(rows::COUNT_DECIDED_BY)
            .bind(rule)
            .bind(since)
            .fetch_one(&self.pool)
            .await?)
    }
}
