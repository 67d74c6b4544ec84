//! SQLite: the audit log and its hash chain, which the writer extends in id order.

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::rows::{all, first};
use super::*;
use crate::store::rows as shared;

sql!(
    LIST_AUDIT = "{} WHERE a.id > ?1 ORDER BY a.id LIMIT ?2",
    shared::AUDIT_SELECT
);
sql!(
    AUDIT_CHAIN = "{} WHERE c.seq > ?1 ORDER BY c.seq LIMIT ?2",
    shared::CHAIN_SELECT
);

shared_sql! {
    UNCHAINED = shared::UNCHAINED_AFTER;
}

/// Chains the next entries. One writer commits in id order, so nothing below the last chained
/// id can still appear.
fn chain_in(conn: &Connection, limit: u32) -> StoreResult<u32> {
    let last: Option<(i64, String, i64)> = first(
        conn,
        "SELECT seq, hash, audit_id FROM audit_chain ORDER BY seq DESC LIMIT 1",
        [],
    )?;
    let after = last.as_ref().map_or(0, |l| l.2);
    let found: Vec<shared::AuditRow> = all(conn, &UNCHAINED, params![after, i64::from(limit)])?;
    if found.is_empty() {
        return Ok(0);
    }
    let entries = found
        .into_iter()
        .map(AuditEvent::try_from)
        .collect::<StoreResult<Vec<_>>>()?;
    let links = shared::link(last.map(|(seq, hash, _)| (seq, hash)), &entries);
    let mut insert = conn.prepare_cached(
        "INSERT INTO audit_chain (seq, audit_id, prev_hash, hash) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (seq, id, prev, hash) in &links {
        insert.execute(params![seq, id, prev, hash])?;
    }
    Ok(u32::try_from(links.len()).unwrap_or(u32::MAX))
}

#[async_trait]
impl AuditLog for SqliteStore {
    async fn list_audit(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        self.readers
            .read(move |conn| {
                let found: Vec<shared::AuditRow> =
                    all(conn, &LIST_AUDIT, params![after, i64::from(limit)])?;
                found.into_iter().map(AuditEvent::try_from).collect()
            })
            .await
    }

    async fn chain_audit(&self, limit: u32) -> StoreResult<u32> {
        self.writer.write(move |conn| chain_in(conn, limit)).await
    }

    async fn audit_chain(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<ChainLink>> {
        self.readers
            .read(move |conn| {
                let found: Vec<shared::ChainRow> =
                    all(conn, &AUDIT_CHAIN, params![after_seq, i64::from(limit)])?;
                found.into_iter().map(ChainLink::try_from).collect()
            })
            .await
    }

    async fn unchained_audit(&self, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        self.readers
            .read(move |conn| {
                let found: Vec<shared::AuditRow> =
                    all(conn, &UNCHAINED, params![0_i64, i64::from(limit)])?;
                found.into_iter().map(AuditEvent::try_from).collect()
            })
            .await
    }
}
