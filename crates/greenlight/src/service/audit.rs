//! The audit log's hash chain as a use case: the server keeps chaining new entries, and
//! `greenlight audit verify` walks the chain to prove nothing was edited, deleted, reordered or
//! inserted since (see `domain::entry_hash` for the canonical form).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::{GENESIS, Millis, entry_hash};
use crate::store::{AuditEvent, AuditLog, ChainLink, StoreResult};

/// Entries chained per transaction.
const CHAIN_BATCH: u32 = 5_000;
/// How often the server looks for entries to chain.
pub const CHAIN_EVERY: Duration = Duration::from_millis(250);
const PAGE: u32 = 10_000;

/// Chains everything not chained yet; returns how many entries it chained.
pub async fn chain_all(store: &dyn AuditLog) -> StoreResult<u64> {
    let mut total = 0;
    loop {
        let n = store.chain_audit(CHAIN_BATCH).await?;
        total += u64::from(n);
        if n < CHAIN_BATCH {
            return Ok(total);
        }
    }
}

/// The server's chainer: new entries get their place in the chain within a quarter second.
pub async fn keep_chaining(store: std::sync::Arc<dyn AuditLog>, stop: CancellationToken) {
    let mut chaining = crate::store::Retrying::new("chain audit entries");
    loop {
        let wait = match chain_all(store.as_ref()).await {
            Ok(_) => {
                chaining.succeeded();
                CHAIN_EVERY
            }
            Err(e) => chaining.failed(&e).max(CHAIN_EVERY),
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    // What the last moments wrote, before the database closes.
    let _ = chain_all(store.as_ref()).await;
}

/// What a walk of an intact chain found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intact {
    pub entries: u64,
    /// The last position and its hash: what to keep elsewhere to anchor the log.
    pub head: Option<(i64, String)>,
    /// Entries greenlight wrote that wait for the chainer (PostgreSQL chains within a second
    /// of the write while a server runs; SQLite chains as it writes).
    pub pending: u64,
}

/// The first thing wrong with the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("entry {id} (chain position {seq}) was edited after it was written")]
    Edited { id: i64, seq: i64 },
    #[error("entry {id} (chain position {seq}) was deleted")]
    Deleted { id: i64, seq: i64 },
    #[error("chain position {seq} is missing: an entry's place in the chain was deleted")]
    Gap { seq: i64 },
    #[error(
        "entry {id} (chain position {seq}) does not follow the entry before it: entries were reordered, inserted or deleted"
    )]
    Unlinked { id: i64, seq: i64 },
    #[error(
        "entry {id} is in no chain position and greenlight never queued it for one: it was inserted outside greenlight"
    )]
    Inserted { id: i64 },
    #[error("entry {id} (chain position {seq}) cannot be read: {problem}")]
    Unreadable { id: i64, seq: i64, problem: String },
    #[error(
        "entry {id} (chain position {seq}) is dated {behind_s} s before the entry before it: it was not written in order"
    )]
    Backdated { id: i64, seq: i64, behind_s: i64 },
    #[error("entry {id} is dated {ahead_s} s in the future")]
    Future { id: i64, ahead_s: i64 },
}

/// How far the clocks of greenlight's writers (replicas, or one process's concurrent writes)
/// may disagree: an entry may be dated this much before the one chained before it, or this
/// much ahead of the verifier's clock, before it counts as forged.
pub const CLOCK_SKEW_MS: Millis = 60_000;

/// An entry dated more than the skew ahead of `now`.
fn future(id: i64, at: Millis, now: Millis) -> Result<(), Broken> {
    let ahead = at - now;
    if ahead > CLOCK_SKEW_MS {
        return Err(Broken::Future {
            id,
            ahead_s: ahead / 1000,
        });
    }
    Ok(())
}

/// Walks the whole chain in order, then looks for entries outside it.
pub async fn verify(
    store: &dyn AuditLog,
    now: Millis,
) -> StoreResult<Result<Intact, (Broken, Intact)>> {
    let mut intact = Intact::default();
    let mut expected = 1;
    let mut prev = GENESIS.to_owned();
    let mut prev_at = None;
    loop {
        let page = store.audit_chain(expected - 1, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for link in &page {
            if let Err(broken) = check(link, expected, &prev) {
                return Ok(Err((broken, intact)));
            }
            let at = link.entry.as_ref().map_or(0, |e| e.at.as_millisecond());
            let dated = future(link.audit_id, at, now).and_then(|()| match prev_at {
                Some(before) if at < before - CLOCK_SKEW_MS => Err(Broken::Backdated {
                    id: link.audit_id,
                    seq: link.seq,
                    behind_s: (before - at) / 1000,
                }),
                _ => Ok(()),
            });
            if let Err(broken) = dated {
                return Ok(Err((broken, intact)));
            }
            prev_at = Some(at);
            intact.entries += 1;
            intact.head = Some((link.seq, link.hash.clone()));
            prev = link.hash.clone();
            expected = link.seq + 1;
        }
    }
    // Greenlight chains what it writes (SQLite: in the same transaction; PostgreSQL: queued in
    // the same transaction, chained within a second): an unchained entry it did not queue came
    // from outside, however old or new it is.
    for entry in store.unchained_audit(PAGE).await? {
        if let Err(broken) = future(entry.id, entry.at_ms.unwrap_or(0), now) {
            return Ok(Err((broken, intact)));
        }
        if !entry.pending {
            return Ok(Err((Broken::Inserted { id: entry.id }, intact)));
        }
        intact.pending += 1;
    }
    Ok(Ok(intact))
}

fn check(link: &ChainLink, expected: i64, prev: &str) -> Result<(), Broken> {
    let (id, seq) = (link.audit_id, link.seq);
    if seq != expected {
        return Err(Broken::Gap { seq: expected });
    }
    if link.prev_hash != prev {
        return Err(Broken::Unlinked { id, seq });
    }
    if let Some(problem) = &link.unreadable {
        return Err(Broken::Unreadable {
            id,
            seq,
            problem: problem.clone(),
        });
    }
    let Some(entry) = &link.entry else {
        return Err(Broken::Deleted { id, seq });
    };
    if entry_hash(&entry.content(), prev) != link.hash {
        return Err(Broken::Edited { id, seq });
    }
    Ok(())
}

/// One line of `greenlight audit export`: everything a third party needs to recompute the
/// hash (`data_json` is what the hash covers; `data` is the same, parsed).
pub fn export_line(entry: &AuditEvent) -> serde_json::Value {
    serde_json::json!({
        "seq": entry.seq,
        "id": entry.id,
        "at_ms": entry.at.as_millisecond(),
        "at": entry.at,
        "request_id": entry.request_id,
        "event": entry.event,
        "actor": entry.actor,
        "data": entry.data,
        "data_json": entry.data_json,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    })
}

/// Every chained entry after the chain position of entry `after_id` (0: from the start), in
/// chain order, handed to `line` one by one.
pub async fn export(
    store: &dyn AuditLog,
    after_id: i64,
    mut line: impl FnMut(&AuditEvent) -> std::io::Result<()>,
) -> StoreResult<Result<u64, std::io::Error>> {
    let mut after_seq = 0;
    if after_id > 0 {
        let entry = store.list_audit(after_id - 1, 1).await?;
        match entry.first() {
            Some(e) if e.id == after_id => after_seq = e.seq.unwrap_or(i64::MAX),
            _ => after_seq = i64::MAX,
        }
    }
    let mut written = 0;
    loop {
        let page = store.audit_chain(after_seq, PAGE).await?;
        if page.is_empty() {
            return Ok(Ok(written));
        }
        for link in &page {
            after_seq = link.seq;
            if let Some(entry) = &link.entry {
                if let Err(e) = line(entry) {
                    return Ok(Err(e));
                }
                written += 1;
            }
        }
    }
}
