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

    /// Adds up to `limit` entries not yet in the hash chain to its end, oldest first; returns
    /// how many. With several replicas one of them chains at a time (the others get 0).
    async fn chain_audit(&self, limit: u32) -> StoreResult<u32>;

    /// Chain positions after `after_seq`, in order, with their entries.
    async fn audit_chain(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<ChainLink>>;

    /// Entries that are in no chain position, oldest first.
    async fn unchained_audit(&self, limit: u32) -> StoreResult<Vec<AuditEvent>>;
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
    /// The entry's place in the hash chain, and the hashes (absent until chained, which the
    /// server does within a second of the write).
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
}
