//! SQLite: when each alert last fired.

use async_trait::async_trait;
use rusqlite::params;

use super::*;
use crate::domain::Millis;

#[async_trait]
impl Alerts for SqliteStore {
    async fn claim_alert(
        &self,
        key: &str,
        now: Millis,
        window_ms: Millis,
        audit: &[NewAudit],
        effects: &[Effect],
    ) -> StoreResult<bool> {
        let (key, entries) = (key.to_owned(), Entries::of(now, audit, effects)?);
        self.writer
            .write(move |conn| {
                let changed = conn
                    .prepare_cached(
                        "INSERT INTO alert_state (key, fired_at) VALUES (?1, ?2) ON CONFLICT (key) \
                         DO UPDATE SET fired_at = excluded.fired_at WHERE alert_state.fired_at <= ?3",
                    )?
                    .execute(params![key, now, now - window_ms])?;
                let fired = changed == 1;
                if fired {
                    entries.write(conn)?;
                }
                Ok(fired)
            })
            .await
    }
}
