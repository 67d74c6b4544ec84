//! The shared row types (`store::rows`) read from a rusqlite row, column by column in the
//! order their `SELECT`s name them.

use rusqlite::types::ValueRef;
use rusqlite::{Params, Row};

use super::super::DigestEntry;
use super::super::rows::{
    ActionRow, ApiKeyRow, AttemptRow, AuditRow, ChainRow, DeliveryRow, JobRow, RequestRow,
    SignalRow, StandingRow, UnchainedRow,
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

/// `FromRow` for row types whose fields are their `SELECT`'s columns, in the same order.
macro_rules! in_column_order {
    ($($t:ident { $($field:ident),* $(,)? })*) => {$(
        impl FromRow for $t {
            fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
                let mut column = 0;
                let mut next = || {
                    column += 1;
                    column - 1
                };
                Ok(Self { $($field: row.get(next())?,)* })
            }
        }
    )*};
}

in_column_order! {
    RequestRow {
        id, workflow, title, details, params, requester, status, decisions, decided_by, reason,
        created_at, decided_at, expires_at, channel, slack_channel, slack_ts, callback_url,
        version, reminders, remind_at, api_key_id, metadata, tool_call, digest_key,
        slack_copies, identity, form,
    }
    ApiKeyRow { id, name, scopes, created_at, revoked_at }
    StandingRow {
        id, workflow, granted_by, caller, caller_name, match_params, request_id, created_at,
        expires_at, revoked_at, revoked_by,
    }
    AuditRow { id, at, request_id, event, actor, data, seq, prev_hash, hash }
    JobRow { id, payload, attempts, claims, created_at }
    DeliveryRow {
        id, kind, payload, state, attempts, last_error, next_attempt_at, created_at, updated_at,
    }
    AttemptRow { job_id, at, outcome, error }
    ActionRow { name, ok, summary, attempts, at }
    SignalRow { name, value, since, updated_at, set_by, expires_at }
    DigestEntry { id, title, status, decided_by, requester }
}

/// SQLite keeps whatever a column is given, so an entry edited from outside may hold a time
/// that is text or data that is a number: such a column is read as absent and named in
/// `unreadable`, so that `audit verify` names the entry instead of failing to read the chain.
impl FromRow for ChainRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        let mut unreadable = Vec::new();
        let mut int = |i: usize, name: &str| -> rusqlite::Result<Option<i64>> {
            Ok(match row.get_ref(i)? {
                ValueRef::Integer(n) => Some(n),
                ValueRef::Null => None,
                other => {
                    unreadable.push(format!(
                        "its {name} is {}, not a number",
                        other.data_type().to_string().to_lowercase()
                    ));
                    None
                }
            })
        };
        let at = int(4, "time")?;
        let mut text = |i: usize, name: &str| -> rusqlite::Result<Option<String>> {
            Ok(match row.get_ref(i)? {
                ValueRef::Text(t) => match std::str::from_utf8(t) {
                    Ok(t) => Some(t.to_owned()),
                    Err(_) => {
                        unreadable.push(format!("its {name} is not UTF-8"));
                        None
                    }
                },
                ValueRef::Null => None,
                other => {
                    unreadable.push(format!(
                        "its {name} is {}, not text",
                        other.data_type().to_string().to_lowercase()
                    ));
                    None
                }
            })
        };
        let request_id = text(5, "request id")?;
        let event = text(6, "event")?;
        let actor = text(7, "actor")?;
        let data = text(8, "data")?;
        Ok(ChainRow {
            seq: row.get(0)?,
            audit_id: row.get(1)?,
            prev_hash: row.get(2)?,
            hash: row.get(3)?,
            at,
            request_id,
            event,
            actor,
            data,
            unreadable: (!unreadable.is_empty()).then(|| unreadable.join(", ")),
        })
    }
}

/// As for `ChainRow`: a time that is not a number reads as `None`.
impl FromRow for UnchainedRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(UnchainedRow {
            id: row.get(0)?,
            at: match row.get_ref(1)? {
                ValueRef::Integer(n) => Some(n),
                _ => None,
            },
            pending: row.get(2)?,
        })
    }
}
