//! SQLite: meta values, backup (`VACUUM INTO` from a reader) and shutdown; coordination is
//! in process, since one process owns the file.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::params;

use super::rows::one;
use super::*;

shared_sql! {
    PROBE_WRITE = crate::store::rows::PROBE_WRITE;
}

#[async_trait]
impl Admin for SqliteStore {
    async fn meta_get_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                )?
                .execute(params![key, value])?;
                one(conn, "SELECT value FROM meta WHERE key = ?1", [&key])
            })
            .await
    }

    async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    fn coordination(&self) -> Arc<dyn Coordination> {
        self.coordination.clone()
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn writes_failing(&self) -> bool {
        self.health.failing()
    }

    async fn probe_write(&self, now: Millis) -> StoreResult<()> {
        let value = now.to_string();
        self.writer
            .write(move |conn| {
                conn.prepare_cached(&PROBE_WRITE)?.execute(params![value])?;
                Ok(())
            })
            .await
    }

    async fn backup(&self, path: &std::path::Path) -> StoreResult<()> {
        // A reader's snapshot, written out whole: consistent, and the writer goes on meanwhile.
        let target = path
            .to_str()
            .ok_or_else(|| {
                StoreError::Unavailable(format!("{} is not a UTF-8 path", path.display()))
            })?
            .to_owned();
        self.readers
            .read(move |conn| {
                conn.execute("VACUUM INTO ?1", [target])?;
                Ok(())
            })
            .await
    }
}
