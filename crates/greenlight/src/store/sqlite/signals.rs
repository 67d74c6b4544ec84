//! SQLite: signals, set by compare-and-set.

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::rows::{all, first};
use super::*;
use crate::domain::{Millis, Signal, SignalName};
use crate::store::rows as shared;

sql!(
    GET_SIGNAL = "SELECT {} FROM signals WHERE name = ?1",
    shared::SIGNAL_COLUMNS
);
sql!(
    LIST_SIGNALS = "SELECT {} FROM signals ORDER BY name",
    shared::SIGNAL_COLUMNS
);

/// The compare-and-set of a signal: insert when there was none, else update if it was last
/// set at `expected`.
fn put_signal_in(conn: &Connection, s: &Signal, expected: Option<Millis>) -> StoreResult<bool> {
    let value = s.value.to_string();
    let changed = match expected {
        None => conn
            .prepare_cached(
                "INSERT INTO signals (name, value, since, updated_at, set_by, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING",
            )?
            .execute(params![
                s.name.as_str(),
                value,
                millis(s.since),
                millis(s.updated_at),
                s.set_by,
                s.expires_at.map(millis),
            ])?,
        Some(expected) => conn
            .prepare_cached(
                "UPDATE signals SET value = ?2, since = ?3, updated_at = ?4, set_by = ?5, \
                 expires_at = ?6 WHERE name = ?1 AND updated_at = ?7",
            )?
            .execute(params![
                s.name.as_str(),
                value,
                millis(s.since),
                millis(s.updated_at),
                s.set_by,
                s.expires_at.map(millis),
                expected,
            ])?,
    };
    Ok(changed == 1)
}

#[async_trait]
impl Signals for SqliteStore {
    async fn signal(&self, name: &SignalName) -> StoreResult<Option<Signal>> {
        let name = name.clone();
        self.readers
            .point(move |conn| {
                first::<shared::SignalRow>(conn, &GET_SIGNAL, [name.as_str()])?
                    .map(Signal::try_from)
                    .transpose()
            })
            .await
    }

    async fn signals(&self) -> StoreResult<Vec<Signal>> {
        self.readers
            .read(|conn| {
                let found: Vec<shared::SignalRow> = all(conn, &LIST_SIGNALS, [])?;
                found.into_iter().map(Signal::try_from).collect()
            })
            .await
    }

    async fn put_signal(
        &self,
        signal: &Signal,
        expected: Option<Millis>,
        audit: &[NewAudit],
        now: Millis,
    ) -> StoreResult<bool> {
        let (signal, entries) = (signal.clone(), Entries::of(now, audit, &[])?);
        self.writer
            .write(move |conn| {
                let written = put_signal_in(conn, &signal, expected)?;
                if written {
                    entries.write(conn)?;
                }
                Ok(written)
            })
            .await
    }
}
