//! PostgreSQL: API keys.

use async_trait::async_trait;
use jiff::Timestamp;

use super::*;
use crate::domain::ApiKeyId;
use crate::store::rows;

#[async_trait]
impl ApiKeys for PostgresStore {
    async fn insert_api_key(&self, key: &ApiKey, hash: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(key.id.as_str())
        .bind(&key.name)
        .bind(hash)
        .bind(rows::scopes_text(key))
        .bind(millis(key.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn find_api_key(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        let sql = format!(
            "SELECT {} FROM api_keys WHERE hash = $1",
            rows::API_KEY_COLUMNS
        );
        let row: Option<rows::ApiKeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(ApiKey::try_from).transpose()
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        let sql = format!("SELECT {} FROM api_keys ORDER BY id", rows::API_KEY_COLUMNS);
        let found: Vec<rows::ApiKeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        found.into_iter().map(ApiKey::try_from).collect()
    }

    async fn revoke_api_key(&self, id: &ApiKeyId, now: Timestamp) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(millis(now))
                .bind(id.as_str())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}
