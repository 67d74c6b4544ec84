//! PostgreSQL: the receipt signing keys, one set for every replica.

use async_trait::async_trait;

use super::*;
use crate::store::rows;

#[async_trait]
impl SigningKeys for PostgresStore {
    async fn signing_keys(&self) -> StoreResult<Vec<StoredSigningKey>> {
        Ok(sqlx::query_as(rows::LIST_SIGNING_KEYS)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn add_signing_key(&self, key: &StoredSigningKey) -> StoreResult<()> {
        sqlx::query(rows::INSERT_SIGNING_KEY)
            .bind(&key.kid)
            .bind(key.created_at)
            .bind(&key.seed)
            .bind(&key.public_key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
