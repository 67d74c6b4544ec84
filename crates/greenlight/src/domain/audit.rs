//! The audit log's hash chain: each entry's hash covers a canonical form of its content and
//! the previous entry's hash, so an entry edited, deleted, reordered or inserted afterwards
//! breaks every hash after it. The canonical form is plain enough to recompute anywhere (the
//! "Verifying an export" section of docs/operations.md has a Python verifier):
//!
//! `hash = hex(SHA-256(UTF-8 of the compact JSON array
//!        [id, at, request_id, event, actor, data_json, prev_hash]))`
//!
//! with `at` in epoch milliseconds, `request_id` a string or null, `data_json` the entry's data
//! exactly as stored (a JSON text), and `prev_hash` the previous entry's hash (64 zeros for the
//! first). Compact means no spaces, non-ASCII characters as they are, and JSON's usual escapes,
//! i.e. Python's `json.dumps(value, separators=(",", ":"), ensure_ascii=False)`.

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an entry's hash covers.
#[derive(Debug, Clone, Copy)]
pub struct AuditContent<'a> {
    pub id: i64,
    pub at_ms: i64,
    pub request_id: Option<&'a str>,
    pub event: &'a str,
    pub actor: &'a str,
    pub data_json: &'a str,
}

/// The hash of an entry that follows `prev_hash`.
pub fn entry_hash(entry: &AuditContent<'_>, prev_hash: &str) -> String {
    let canonical = serde_json::json!([
        entry.id,
        entry.at_ms,
        entry.request_id,
        entry.event,
        entry.actor,
        entry.data_json,
        prev_hash
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(actor: &str) -> AuditContent<'_> {
        AuditContent {
            id: 1,
            at_ms: 1_700_000_000_000,
            request_id: Some("req_01"),
            event: "request.created",
            actor,
            data_json: r#"{"title":"Déploy \"api\""}"#,
        }
    }

    #[test]
    fn the_canonical_form_is_compact_json_and_escapes_separators() {
        let canonical =
            serde_json::json!([1, 2, null, "a\nb", "é", "{\"k\":1}", GENESIS]).to_string();
        assert_eq!(
            canonical,
            format!("[1,2,null,\"a\\nb\",\"é\",\"{{\\\"k\\\":1}}\",\"{GENESIS}\"]")
        );
        // A newline in one field cannot pass for a field boundary.
        assert_ne!(
            entry_hash(&entry("alice\nbob"), GENESIS),
            entry_hash(&entry("alice"), GENESIS)
        );
    }

    #[test]
    fn each_hash_depends_on_the_one_before() {
        let first = entry_hash(&entry("alice"), GENESIS);
        assert_eq!(first.len(), 64);
        assert_ne!(entry_hash(&entry("alice"), &first), first);
        assert_eq!(entry_hash(&entry("alice"), GENESIS), first, "deterministic");
    }
}
