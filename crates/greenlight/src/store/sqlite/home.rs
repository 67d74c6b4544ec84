//! SQLite: who opened the Home tab lately.

use async_trait::async_trait;
use rusqlite::params;

use super::rows::all;
use super::*;
use crate::domain::Millis;

#[async_trait]
impl Home for SqliteStore {
    async fn record_home_opened(
        &self,
        user: &str,
        now: Millis,
        forget_before: Millis,
        effects: &[Effect],
    ) -> StoreResult<()> {
        let (user, entries) = (user.to_owned(), Entries::of(now, &[], effects)?);
        self.writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO home_opened (user_id, opened_at) VALUES (?1, ?2) \
                     ON CONFLICT (user_id) DO UPDATE SET opened_at = excluded.opened_at",
                )?
                .execute(params![user, now])?;
                conn.prepare_cached("DELETE FROM home_opened WHERE opened_at < ?1")?
                    .execute([forget_before])?;
                entries.write(conn)
            })
            .await
    }

    async fn home_viewers(&self, since: Millis, limit: u32) -> StoreResult<Vec<String>> {
        self.readers
            .read(move |conn| {
                all(
                    conn,
                    "SELECT user_id FROM home_opened WHERE opened_at >= ?1 \
                     ORDER BY opened_at DESC, user_id LIMIT ?2",
                    params![since, i64::from(limit)],
                )
            })
            .await
    }
}
