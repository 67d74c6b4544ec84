//! SQLite: the audit log and its hash chain, which the writer extends in the transaction that
//! writes each entry.

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
    PENDING = shared::PENDING;
    UNCHAINED = shared::UNCHAINED;
}

/// The chain's last position and hash, if any.
fn chain_head(conn: &Connection) -> StoreResult<Option<(i64, String)>> {
    first(
        conn,
        "SELECT seq, hash FROM audit_chain ORDER BY seq DESC LIMIT 1",
        [],
    )
}

fn insert_link(
    conn: &Connection,
    (seq, id, prev, hash): &(i64, i64, String, String),
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO audit_chain (seq, audit_id, prev_hash, hash) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![seq, id, prev, hash])?;
    Ok(())
}

/// Chains entries the writer has just inserted, in the same transaction, in the order written.
pub(super) fn chain_written(
    conn: &Connection,
    entries: &[crate::domain::AuditContent<'_>],
) -> StoreResult<()> {
    let (mut seq, mut prev) = chain_head(conn)?.unwrap_or((0, crate::domain::GENESIS.to_owned()));
    for content in entries {
        seq += 1;
        let hash = crate::domain::entry_hash(content, &prev);
        let link = (
            seq,
            content.id,
            std::mem::replace(&mut prev, hash.clone()),
            hash,
        );
        insert_link(conn, &link)?;
    }
    Ok(())
}

/// Chains the next queued entries (those an earlier version left unchained).
fn chain_in(conn: &Connection, limit: u32) -> StoreResult<u32> {
    let found: Vec<shared::AuditRow> = all(conn, &PENDING, params![i64::from(limit)])?;
    if found.is_empty() {
        return Ok(0);
    }
    let entries = found
        .into_iter()
        .map(AuditEvent::try_from)
        .collect::<StoreResult<Vec<_>>>()?;
    let links = shared::link(chain_head(conn)?, &entries);
    let mut done = conn.prepare_cached("DELETE FROM audit_pending WHERE audit_id = ?1")?;
    for link in &links {
        insert_link(conn, link)?;
        done.execute(params![link.1])?;
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

    async fn unchained_audit(&self, limit: u32) -> StoreResult<Vec<Unchained>> {
        self.readers
            .read(move |conn| {
                let found: Vec<shared::UnchainedRow> =
                    all(conn, &UNCHAINED, params![i64::from(limit)])?;
                Ok(found.into_iter().map(Unchained::from).collect())
            })
            .await
    }
}
