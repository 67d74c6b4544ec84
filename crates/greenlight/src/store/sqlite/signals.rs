//! SQLite: signals, set by compare-and-set under the cap, which the one writer thread checks
//! in the transaction that inserts.

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::rows::{all, first, one};
use super::*;
use crate::domain::{Millis, Signal, SignalName};
use crate::store::SignalWrite;
use crate::store::rows as shared;

sql!(
    GET_SIGNAL = "SELECT {} FROM signals WHERE name = ?1",
    shared::SIGNAL_COLUMNS
);
sql!(
    pub(super) PAGE_OF_SIGNALS = "SELECT {} FROM signals WHERE name > ?1 ORDER BY name LIMIT ?2",
    shared::SIGNAL_COLUMNS
);
sql!(
    LIVE_SIGNALS = "SELECT {} FROM signals WHERE expires_at IS NULL OR expires_at > ?1",
    shared::SIGNAL_COLUMNS
);
sql!(
    LIVE_SIGNALS_NAMED = "SELECT {} FROM signals WHERE name IN (SELECT value FROM json_each(?1)) \
     AND (expires_at IS NULL OR expires_at > ?2)",
    shared::SIGNAL_COLUMNS
);
sql!(
    pub(super) LAPSED_SIGNALS = "SELECT {} FROM signals WHERE expires_at < ?1 \
     ORDER BY expires_at LIMIT ?2",
    shared::SIGNAL_COLUMNS
);
/// A new signal, while fewer than `?7` are stored.
const INSERT_SIGNAL: &str = "INSERT INTO signals (name, value, since, updated_at, set_by, \
     expires_at) SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE (SELECT count(*) FROM signals) < ?7 \
     ON CONFLICT (name) DO NOTHING";
/// Whether the name is taken, and how many signals there are: why an insert wrote nothing.
const NAME_TAKEN_AND_COUNT: &str =
    "SELECT EXISTS (SELECT 1 FROM signals WHERE name = ?1), (SELECT count(*) FROM signals)";

/// The compare-and-set of a signal: insert when there was none (and there is room), else
/// update if it was last set at `expected`.
fn put_signal_in(
    conn: &Connection,
    s: &Signal,
    expected: Option<Millis>,
    max: u32,
) -> StoreResult<SignalWrite> {
    let value = s.value.to_string();
    let Some(expected) = expected else {
        let inserted = conn.prepare_cached(INSERT_SIGNAL)?.execute(params![
            s.name.as_str(),
            value,
            millis(s.since),
            millis(s.updated_at),
            s.set_by,
            s.expires_at.map(millis),
            i64::from(max),
        ])?;
        if inserted == 1 {
            return Ok(SignalWrite::Written);
        }
        let (taken, count): (bool, i64) = one(conn, NAME_TAKEN_AND_COUNT, [s.name.as_str()])?;
        return Ok(if !taken && count >= i64::from(max) {
            SignalWrite::Full
        } else {
            SignalWrite::Conflict
        });
    };
    let updated = conn
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
        ])?;
    Ok(if updated == 1 {
        SignalWrite::Written
    } else {
        SignalWrite::Conflict
    })
}

fn signals_of(found: Vec<shared::SignalRow>) -> StoreResult<Vec<Signal>> {
    found.into_iter().map(Signal::try_from).collect()
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

    async fn list_signals(
        &self,
        after: Option<&SignalName>,
        limit: u32,
    ) -> StoreResult<Vec<Signal>> {
        // Every name is longer than "": the first page starts there.
        let after = after.map_or_else(String::new, |n| n.as_str().to_owned());
        self.readers
            .read(move |conn| signals_of(all(conn, &PAGE_OF_SIGNALS, params![after, limit])?))
            .await
    }

    async fn live_signals(
        &self,
        names: Option<&[SignalName]>,
        now: Millis,
    ) -> StoreResult<Vec<Signal>> {
        match names {
            None => {
                self.readers
                    .read(move |conn| signals_of(all(conn, &LIVE_SIGNALS, [now])?))
                    .await
            }
            Some([]) => Ok(Vec::new()),
            Some(names) => {
                let names = to_json(&names)?;
                self.readers
                    .point(move |conn| {
                        signals_of(all(conn, &LIVE_SIGNALS_NAMED, params![names, now])?)
                    })
                    .await
            }
        }
    }

    async fn put_signal(
        &self,
        signal: &Signal,
        expected: Option<Millis>,
        max: u32,
        audit: &[NewAudit],
        now: Millis,
    ) -> StoreResult<SignalWrite> {
        let (signal, entries) = (signal.clone(), Entries::of(now, audit, &[])?);
        self.writer
            .write(move |conn| {
                let written = put_signal_in(conn, &signal, expected, max)?;
                if written == SignalWrite::Written {
                    entries.write(conn)?;
                }
                Ok(written)
            })
            .await
    }

    async fn delete_signal(
        &self,
        name: &SignalName,
        expected: Millis,
        audit: &[NewAudit],
        now: Millis,
    ) -> StoreResult<bool> {
        let (name, entries) = (name.clone(), Entries::of(now, audit, &[])?);
        self.writer
            .write(move |conn| {
                let deleted = conn
                    .prepare_cached("DELETE FROM signals WHERE name = ?1 AND updated_at = ?2")?
                    .execute(params![name.as_str(), expected])?;
                if deleted == 1 {
                    entries.write(conn)?;
                }
                Ok(deleted == 1)
            })
            .await
    }

    async fn lapsed_signals(&self, before: Millis, limit: u32) -> StoreResult<Vec<Signal>> {
        self.readers
            .read(move |conn| signals_of(all(conn, &LAPSED_SIGNALS, params![before, limit])?))
            .await
    }
}
