//! PostgreSQL: signals, set by compare-and-set under the cap. Inserts of new names take one
//! advisory lock for their transaction, so that each counts the signals with every other
//! insert committed: two replicas can never both take the last place.

use async_trait::async_trait;
use sqlx::Postgres;

use super::*;
use crate::domain::{Millis, Signal, SignalName};
use crate::store::{SignalWrite, rows};

/// The advisory lock inserts of new signals take ("glsign").
const INSERT_LOCK: i64 = 0x676c_7369_676e;

async fn signals_of(
    sql: String,
    bind: impl FnOnce(
        sqlx::query::QueryAs<'_, Postgres, rows::SignalRow, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<
        '_,
        Postgres,
        rows::SignalRow,
        sqlx::postgres::PgArguments,
    >,
    pool: &PgPool,
) -> StoreResult<Vec<Signal>> {
    let found: Vec<rows::SignalRow> = bind(sqlx::query_as(sqlx::AssertSqlSafe(sql)))
        .fetch_all(pool)
        .await?;
    found.into_iter().map(Signal::try_from).collect()
}

#[async_trait]
impl Signals for PostgresStore {
    async fn signal(&self, name: &SignalName) -> StoreResult<Option<Signal>> {
        let sql = format!(
            "SELECT {} FROM signals WHERE name = $1",
            rows::SIGNAL_COLUMNS
        );
        let row: Option<rows::SignalRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(Signal::try_from).transpose()
    }

    async fn list_signals(
        &self,
        after: Option<&SignalName>,
        limit: u32,
    ) -> StoreResult<Vec<Signal>> {
        let sql = format!(
            "SELECT {} FROM signals WHERE name > $1 ORDER BY name LIMIT $2",
            rows::SIGNAL_COLUMNS
        );
        let after = after.map_or_else(String::new, |n| n.as_str().to_owned());
        signals_of(sql, |q| q.bind(after).bind(i64::from(limit)), &self.pool).await
    }

    async fn live_signals(
        &self,
        names: Option<&[SignalName]>,
        now: Millis,
    ) -> StoreResult<Vec<Signal>> {
        let live = "(expires_at IS NULL OR expires_at > $1)";
        match names {
            None => {
                let sql = format!("SELECT {} FROM signals WHERE {live}", rows::SIGNAL_COLUMNS);
                signals_of(sql, |q| q.bind(now), &self.pool).await
            }
            Some([]) => Ok(Vec::new()),
            Some(names) => {
                let sql = format!(
                    "SELECT {} FROM signals WHERE name = ANY($2) AND {live}",
                    rows::SIGNAL_COLUMNS
                );
                let names: Vec<String> = names.iter().map(|n| n.as_str().to_owned()).collect();
                signals_of(sql, |q| q.bind(now).bind(names), &self.pool).await
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
        let mut tx = self.pool.begin().await?;
        let written = match expected {
            None => insert_signal_in(&mut tx, signal, max).await?,
            Some(expected) => {
                let done = bind_signal(
                    sqlx::query(
                        "UPDATE signals SET value = $2, since = $3, updated_at = $4, \
                         set_by = $5, expires_at = $6 WHERE name = $1 AND updated_at = $7",
                    ),
                    signal,
                )
                .bind(expected)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 1 {
                    SignalWrite::Written
                } else {
                    SignalWrite::Conflict
                }
            }
        };
        if written == SignalWrite::Written && !audit.is_empty() {
            let mut qb = Statement::new("WITH src AS (SELECT 1 AS one)");
            push_audit_and_effects(&mut qb, "src", now, audit, &[])?;
            qb.push(" SELECT count(*) FROM src");
            qb.build_query_scalar::<i64>().fetch_one(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    async fn delete_signal(
        &self,
        name: &SignalName,
        expected: Millis,
        audit: &[NewAudit],
        now: Millis,
    ) -> StoreResult<bool> {
        let mut qb = Statement::new("WITH gone AS (DELETE FROM signals WHERE name = ");
        qb.push_bind(name.as_str().to_owned())
            .push(" AND updated_at = ")
            .push_bind(expected)
            .push(" RETURNING 1)");
        push_audit_and_effects(&mut qb, "gone", now, audit, &[])?;
        qb.push(" SELECT count(*) FROM gone");
        Ok(count_of(&mut qb, &self.pool).await? == 1)
    }

    async fn lapsed_signals(&self, before: Millis, limit: u32) -> StoreResult<Vec<Signal>> {
        let sql = format!(
            "SELECT {} FROM signals WHERE expires_at < $1 ORDER BY expires_at LIMIT $2",
            rows::SIGNAL_COLUMNS
        );
        signals_of(sql, |q| q.bind(before).bind(i64::from(limit)), &self.pool).await
    }
}

/// The insert of a new signal, while fewer than `max` are stored. Under the insert lock, the
/// count is read by a statement that starts after every earlier insert committed.
async fn insert_signal_in(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    s: &Signal,
    max: u32,
) -> StoreResult<SignalWrite> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(INSERT_LOCK)
        .execute(&mut **tx)
        .await?;
    let done = bind_signal(
        sqlx::query(
            "INSERT INTO signals (name, value, since, updated_at, set_by, expires_at) \
             SELECT $1, $2, $3, $4, $5, $6 WHERE (SELECT count(*) FROM signals) < $7 \
             ON CONFLICT (name) DO NOTHING",
        ),
        s,
    )
    .bind(i64::from(max))
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(SignalWrite::Written);
    }
    let (taken, count): (bool, i64) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM signals WHERE name = $1), (SELECT count(*) FROM signals)",
    )
    .bind(s.name.as_str())
    .fetch_one(&mut **tx)
    .await?;
    Ok(if !taken && count >= i64::from(max) {
        SignalWrite::Full
    } else {
        SignalWrite::Conflict
    })
}

/// Binds a signal's columns as `$1` to `$6`.
fn bind_signal<'q>(
    q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    s: &Signal,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    q.bind(s.name.as_str().to_owned())
        .bind(s.value.to_string())
        .bind(millis(s.since))
        .bind(millis(s.updated_at))
        .bind(s.set_by.clone())
        .bind(s.expires_at.map(millis))
}
