//! The shared row types (`store::rows`) read from a rusqlite row, column by column in the
//! order their `SELECT`s name them.

use rusqlite::{Params, Row};

use super::super::DigestEntry;
use super::super::rows::{
    ActionRow, ApiKeyRow, AttemptRow, AuditRow, ChainRow, DeliveryRow, JobRow, RequestRow,
    SignalRow,
};
use super::StoreResult;

pub trait FromRow: Sized {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self>;
}

/// Every row `sql` returns.
pub fn all<T: FromRow>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl Params,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |row| T::from_row(row))?;
    Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
}

/// The first row `sql` returns, if any.
pub fn first<T: FromRow>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl Params,
) -> StoreResult<Option<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    Ok(match rows.next()? {
        Some(row) => Some(T::from_row(row)?),
        None => None,
    })
}

/// The one row `sql` returns (an aggregate).
pub fn one<T: FromRow>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl Params,
) -> StoreResult<T> {
    let mut stmt = conn.prepare_cached(sql)?;
    Ok(stmt.query_row(params, |row| T::from_row(row))?)
}

macro_rules! scalar {
    ($($t:ty),*) => {$(
        impl FromRow for $t {
            fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
                row.get(0)
            }
        }
    )*};
}

scalar!(i64, Option<i64>, String, bool);

impl<A: rusqlite::types::FromSql, B: rusqlite::types::FromSql> FromRow for (A, B) {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok((row.get(0)?, row.get(1)?))
    }
}

impl<A, B, C> FromRow for (A, B, C)
where
    A: rusqlite::types::FromSql,
    B: rusqlite::types::FromSql,
    C: rusqlite::types::FromSql,
{
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
    }
}

impl FromRow for RequestRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            workflow: row.get(1)?,
            title: row.get(2)?,
            details: row.get(3)?,
            params: row.get(4)?,
            requester: row.get(5)?,
            status: row.get(6)?,
            decisions: row.get(7)?,
            decided_by: row.get(8)?,
            reason: row.get(9)?,
            created_at: row.get(10)?,
            decided_at: row.get(11)?,
            expires_at: row.get(12)?,
            channel: row.get(13)?,
            slack_channel: row.get(14)?,
            slack_ts: row.get(15)?,
            callback_url: row.get(16)?,
            version: row.get(17)?,
            reminders: row.get(18)?,
            remind_at: row.get(19)?,
            api_key_id: row.get(20)?,
            metadata: row.get(21)?,
            tool_call: row.get(22)?,
            digest_key: row.get(23)?,
        })
    }
}

impl FromRow for ApiKeyRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            scopes: row.get(2)?,
            created_at: row.get(3)?,
            revoked_at: row.get(4)?,
        })
    }
}

impl FromRow for AuditRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            at: row.get(1)?,
            request_id: row.get(2)?,
            event: row.get(3)?,
            actor: row.get(4)?,
            data: row.get(5)?,
            seq: row.get(6)?,
            prev_hash: row.get(7)?,
            hash: row.get(8)?,
        })
    }
}

impl FromRow for ChainRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: row.get(0)?,
            audit_id: row.get(1)?,
            prev_hash: row.get(2)?,
            hash: row.get(3)?,
            at: row.get(4)?,
            request_id: row.get(5)?,
            event: row.get(6)?,
            actor: row.get(7)?,
            data: row.get(8)?,
        })
    }
}

impl FromRow for JobRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            payload: row.get(1)?,
            attempts: row.get(2)?,
            claims: row.get(3)?,
            created_at: row.get(4)?,
        })
    }
}

impl FromRow for DeliveryRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            kind: row.get(1)?,
            payload: row.get(2)?,
            state: row.get(3)?,
            attempts: row.get(4)?,
            last_error: row.get(5)?,
            next_attempt_at: row.get(6)?,
            created_at: row.get(7)?,
            updated_at: row.get(8)?,
        })
    }
}

impl FromRow for AttemptRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            job_id: row.get(0)?,
            at: row.get(1)?,
            outcome: row.get(2)?,
            error: row.get(3)?,
        })
    }
}

impl FromRow for ActionRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            name: row.get(0)?,
            ok: row.get(1)?,
            summary: row.get(2)?,
            attempts: row.get(3)?,
            at: row.get(4)?,
        })
    }
}

impl FromRow for SignalRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            name: row.get(0)?,
            value: row.get(1)?,
            since: row.get(2)?,
            updated_at: row.get(3)?,
            set_by: row.get(4)?,
            expires_at: row.get(5)?,
        })
    }
}

impl FromRow for DigestEntry {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            title: row.get(1)?,
            status: row.get(2)?,
            decided_by: row.get(3)?,
            requester: row.get(4)?,
        })
    }
}
