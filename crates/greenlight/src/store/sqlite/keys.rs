//! SQLite: API keys.

use async_trait::async_trait;
use jiff::Timestamp;

use super::rows::{all, first};
use super::*;
use crate::domain::ApiKeyId;
use crate::store::rows as shared;

sql!(
    FIND_API_KEY = "SELECT {} FROM api_keys WHERE hash = ?1",
    shared::API_KEY_COLUMNS
);
sql!(
    LIST_API_KEYS = "SELECT {} FROM api_keys ORDER BY id",
    shared::API_KEY_COLUMNS
);

#[async_trait]
impl ApiKeys for SqliteStore {
    async fn insert_api_key(&self, key: &ApiKey, hash: &str) -> StoreResult<()> {
        self.writer
            .execute(
                "INSERT INTO api_keys (id, name, hash, scopes, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                (
                    key.id.to_string(),
                    key.name.clone(),
                    hash.to_owned(),
                    shared::scopes_text(key),
                    millis(key.created_at),
                ),
            )
            .await
            .map(|_| ())
    }

    async fn find_api_key(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        let hash = hash.to_owned();
        self.readers
            .point(move |conn| {
                first::<shared::ApiKeyRow>(conn, &FIND_API_KEY, [hash])?
                    .map(ApiKey::try_from)
                    .transpose()
            })
            .await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.readers
            .read(|conn| {
                let found: Vec<shared::ApiKeyRow> = all(conn, &LIST_API_KEYS, [])?;
                found.into_iter().map(ApiKey::try_from).collect()
            })
            .await
    }

    async fn revoke_api_key(&self, id: &ApiKeyId, now: Timestamp) -> StoreResult<bool> {
        let changed = self
            .writer
            .execute(
                "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                (millis(now), id.to_string()),
            )
            .await?;
        Ok(changed == 1)
    }
}
