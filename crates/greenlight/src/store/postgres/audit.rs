//! PostgreSQL: the audit log and its hash chain, extended by one replica at a time with the
//! entries the writing transactions queued in `audit_pending`.

use async_trait::async_trait;

use super::*;
use crate::store::rows;

/// The advisory lock of the audit chainer ("glaudt").
const CHAIN_LOCK: i64 = 0x676c_6175_6474;

/// `rows::PENDING` for PostgreSQL: the queued ids first (the queue's own index), then their
/// entries by id. As a join, PostgreSQL may plan a scan of the whole audit log.
const PENDING: &str = "SELECT a.id, a.at, a.request_id, a.event, a.actor, a.data, \
     CAST(NULL AS BIGINT) AS seq, CAST(NULL AS TEXT) AS prev_hash, CAST(NULL AS TEXT) AS hash \
     FROM audit a WHERE a.id = ANY(ARRAY(SELECT audit_id FROM audit_pending ORDER BY audit_id \
     LIMIT $1)) ORDER BY a.id";

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
        // Only what greenlight queued: an entry inserted behind its back stays unchained, for
        // `audit verify` to report.
        let found: Vec<rows::AuditRow> = sqlx::query_as(PENDING)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        if found.is_empty() {
            return Ok(0);
        }
        let last: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let entries = found
            .into_iter()
            .map(AuditEvent::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        let links = rows::link(last, &entries);
        let mut qb = Statement::new("INSERT INTO audit_chain (seq, audit_id, prev_hash, hash) ");
        qb.push_values(&links, |mut row, (seq, id, prev, hash)| {
            row.push_bind(*seq)
                .push_bind(*id)
                .push_bind(prev.clone())
                .push_bind(hash.clone());
        });
        qb.build().execute(&mut *tx).await?;
        let ids: Vec<i64> = links.iter().map(|l| l.1).collect();
        sqlx::query("DELETE FROM audit_pending WHERE audit_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
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

    async fn unchained_audit(&self, limit: u32) -> StoreResult<Vec<Unchained>> {
        let found: Vec<rows::UnchainedRow> = sqlx::query_as(rows::UNCHAINED)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(found.into_iter().map(Unchained::from).collect())
    }
}
