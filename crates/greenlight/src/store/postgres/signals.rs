//! PostgreSQL: signals, set by compare-and-set.

use async_trait::async_trait;
use sqlx::Postgres;

use super::*;
use crate::domain::{Millis, Signal, SignalName};
use crate::store::rows;

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

    async fn signals(&self) -> StoreResult<Vec<Signal>> {
        let sql = format!("SELECT {} FROM signals ORDER BY name", rows::SIGNAL_COLUMNS);
        let found: Vec<rows::SignalRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        found.into_iter().map(Signal::try_from).collect()
    }

    async fn put_signal(
        &self,
        signal: &Signal,
        expected: Option<Millis>,
        audit: &[NewAudit],
        now: Millis,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let written = put_signal_in(&mut *tx, signal, expected).await?;
        if written && !audit.is_empty() {
            let mut qb = Statement::new("WITH src AS (SELECT 1 AS one)");
            push_audit_and_effects(&mut qb, "src", now, audit, &[])?;
            qb.push(" SELECT count(*) FROM src");
            qb.build_query_scalar::<i64>().fetch_one(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(written)
    }
}

/// The compare-and-set of a signal: insert when there was none, else update if it was last
/// set at `expected`.
async fn put_signal_in<'c, E>(conn: E, s: &Signal, expected: Option<Millis>) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let done = match expected {
        None => sqlx::query(
            "INSERT INTO signals (name, value, since, updated_at, set_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
        ),
        Some(_) => sqlx::query(
            "UPDATE signals SET value = $2, since = $3, updated_at = $4, set_by = $5, \
             expires_at = $6 WHERE name = $1 AND updated_at = $7",
        ),
    }
    .bind(s.name.as_str().to_owned())
    .bind(s.value.to_string())
    .bind(millis(s.since))
    .bind(millis(s.updated_at))
    .bind(s.set_by.clone())
    .bind(s.expires_at.map(millis))
    .bind(expected.unwrap_or_default())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
