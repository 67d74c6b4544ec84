//! PostgreSQL: the audit log and its hash chain, extended by one replica at a time.

use async_trait::async_trait;

use super::*;
use crate::store::rows;

/// The advisory lock of the audit chainer ("glaudt").
const CHAIN_LOCK: i64 = 0x676c_6175_6474;
/// How far below the highest chained id the chainer looks for entries committed late.
const CHAIN_LOOKBACK: i64 = 100_000;

#[async_trait]
impl AuditLog for PostgresStore {
    async fn list_audit(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let sql = format!(
            "{} WHERE a.id > $1 ORDER BY a.id LIMIT $2",
            rows::AUDIT_SELECT
        );
        let found: Vec<rows::AuditRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        found.into_iter().map(AuditEvent::try_from).collect()
    }

    async fn chain_audit(&self, limit: u32) -> StoreResult<u32> {
        let mut tx = self.pool.begin().await?;
        // One chainer at a time across replicas; the others find the work done.
        let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !ours {
            return Ok(0);
        }
        let last: Option<(i64, String, i64)> = sqlx::query_as(
            "SELECT seq, hash, (SELECT MAX(audit_id) FROM audit_chain) FROM audit_chain \
             ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        // Ids are handed out before commit, so an entry can commit after a later one was
        // chained: look back a window below the highest chained id.
        let after = last.as_ref().map_or(0, |l| (l.2 - CHAIN_LOOKBACK).max(0));
        let found: Vec<rows::AuditRow> = sqlx::query_as(rows::UNCHAINED_AFTER)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        if found.is_empty() {
            return Ok(0);
        }
        let entries = found
            .into_iter()
            .map(AuditEvent::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        let links = rows::link(last.map(|(seq, hash, _)| (seq, hash)), &entries);
        let mut qb = Statement::new("INSERT INTO audit_chain (seq, audit_id, prev_hash, hash) ");
        qb.push_values(&links, |mut row, (seq, id, prev, hash)| {
            row.push_bind(*seq)
                .push_bind(*id)
                .push_bind(prev.clone())
                .push_bind(hash.clone());
        });
        qb.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(u32::try_from(links.len()).unwrap_or(u32::MAX))
    }

    async fn audit_chain(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<ChainLink>> {
        let sql = format!(
            "{} WHERE c.seq > $1 ORDER BY c.seq LIMIT $2",
            rows::CHAIN_SELECT
        );
        let found: Vec<rows::ChainRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        found.into_iter().map(ChainLink::try_from).collect()
    }

    async fn unchained_audit(&self, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let found: Vec<rows::AuditRow> = sqlx::query_as(rows::UNCHAINED_AFTER)
            .bind(0_i64)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        found.into_iter().map(AuditEvent::try_from).collect()
    }
}
