//! The audit log, its hash chain, and their types.

use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;

use super::StoreResult;
use crate::domain::RequestId;

/// The append-only audit log and the hash chain over it.
#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn list_audit(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEvent>>;

    /// Adds up to `limit` of the entries greenlight queued for the hash chain to its end, oldest
    /// first; returns how many. Only queued entries: an entry written behind greenlight's back
    /// is never chained. With several replicas one of them chains at a time (the others get 0).
    async fn chain_audit(&self, limit: u32) -> StoreResult<u32>;

    /// Chain positions after `after_seq`, in order, with their entries.
    async fn audit_chain(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<ChainLink>>;

    /// Entries that are in no chain position, oldest first.
    async fn unchained_audit(&self, limit: u32) -> StoreResult<Vec<Unchained>>;
}

#[derive(Debug, Clone)]
pub struct NewAudit {
    pub request_id: Option<RequestId>,
    pub event: &'static str,
    pub actor: String,
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub id: i64,
    pub at: Timestamp,
    pub request_id: Option<String>,
    pub event: String,
    pub actor: String,
    pub data: serde_json::Value,
    /// The entry's place in the hash chain, and the hashes (on SQLite written with the entry;
    /// on PostgreSQL within a second of the write).
    pub seq: Option<i64>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
    /// `data` exactly as stored: what the hash covers.
    #[serde(skip)]
    pub data_json: String,
}

impl AuditEvent {
    pub fn content(&self) -> crate::domain::AuditContent<'_> {
        crate::domain::AuditContent {
            id: self.id,
            at_ms: self.at.as_millisecond(),
            request_id: self.request_id.as_deref(),
            event: &self.event,
            actor: &self.actor,
            data_json: &self.data_json,
        }
    }
}

/// One position of the audit chain, with the entry it names (`None`: that entry is gone).
#[derive(Debug, Clone)]
pub struct ChainLink {
    pub seq: i64,
    pub audit_id: i64,
    pub prev_hash: String,
    pub hash: String,
    pub entry: Option<AuditEvent>,
    /// Why the entry could not be read (then `entry` is `None` although the entry is there).
    pub unreadable: Option<String>,
}

/// An entry in no chain position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unchained {
    pub id: i64,
    /// `None`: the stored time is not a number.
    pub at_ms: Option<i64>,
    /// Whether greenlight queued it for the chain (it wrote it); if not, it came from outside.
    pub pending: bool,
}
