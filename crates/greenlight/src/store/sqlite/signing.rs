//! SQLite: the receipt signing keys.

use async_trait::async_trait;
use rusqlite::params;

use super::*;
use crate::store::rows as shared;

shared_sql! {
    LIST_SIGNING_KEYS = shared::LIST_SIGNING_KEYS;
    INSERT_SIGNING_KEY = shared::INSERT_SIGNING_KEY;
}

#[async_trait]
impl SigningKeys for SqliteStore {
    async fn signing_keys(&self) -> StoreResult<Vec<StoredSigningKey>> {
        self.readers
            .read(|conn| {
                let mut stmt = conn.prepare_cached(&LIST_SIGNING_KEYS)?;
                let rows = stmt.query_map([], |row| {
                    Ok(StoredSigningKey {
                        kid: row.get(0)?,
                        created_at: row.get(1)?,
                        seed: row.get(2)?,
                        public_key: row.get(3)?,
                    })
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }

    async fn add_signing_key(&self, key: &StoredSigningKey) -> StoreResult<()> {
        let key = key.clone();
        self.writer
            .write(move |conn| {
                conn.prepare_cached(&INSERT_SIGNING_KEY)?.execute(params![
                    key.kid,
                    key.created_at,
                    key.seed,
                    key.public_key
                ])?;
                Ok(())
            })
            .await
    }
}
