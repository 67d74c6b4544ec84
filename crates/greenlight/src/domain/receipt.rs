//! A decision receipt: what greenlight signs when a request leaves `pending`, so that the
//! executor (a deploy script, a payment worker) can check for itself, offline and later, that
//! these exact params were approved, by whom, and until when it should act on it. Pure: the
//! claims and the params' hash; signing belongs to the service.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Params, Request};

/// The claims of a receipt (a JWS, EdDSA), as `greenlight receipt verify` and any JOSE library
/// read them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptClaims {
    /// Who signed: the server's `public_url` (`greenlight` when none is configured).
    pub iss: String,
    /// The request id.
    pub sub: String,
    /// When it was decided (seconds): signing is deterministic, so every replica and every
    /// call gives the same receipt.
    pub iat: i64,
    /// `iat` + the workflow's `receipt_ttl`: how long an executor should act on it.
    pub exp: i64,
    pub workflow: String,
    /// `approved`, `denied`, `expired` or `cancelled`.
    pub status: String,
    pub decided_by: Option<String>,
    /// RFC 3339.
    pub decided_at: String,
    /// Hex SHA-256 of the request's `approved_params` (when approvers could edit them, else its
    /// `params`) as RFC 8785 canonical JSON.
    pub params_sha256: String,
    pub requester: Option<String>,
    /// The verified subject of the workload token that asked, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_sub: Option<String>,
}

impl ReceiptClaims {
    /// The claims of a decided request (`None` while it is pending).
    pub fn of(request: &Request, issuer: &str, ttl_ms: i64) -> Option<Self> {
        let decided_at = request.decided_at.filter(|_| request.status.is_final())?;
        let iat = decided_at.as_second();
        Some(Self {
            iss: issuer.to_owned(),
            sub: request.id.to_string(),
            iat,
            exp: iat.saturating_add(ttl_ms / 1000),
            workflow: request.workflow.to_string(),
            status: request.status.as_str().to_owned(),
            decided_by: request.decided_by.clone(),
            decided_at: decided_at.to_string(),
            // What it was approved to run with: approvers' edits included.
            params_sha256: params_sha256(request.effective_params()),
            requester: request.requester.clone(),
            identity_sub: request.identity.as_ref().map(|i| i.subject.clone()),
        })
    }
}

/// Hex SHA-256 of `params` in RFC 8785 (JCS) canonical form: keys sorted by UTF-16 code
/// units, no whitespace, numbers as ECMAScript prints them. An executor about to run with some
/// params hashes them the same way (Python: `json.dumps(p, sort_keys=True,
/// separators=(",", ":"), ensure_ascii=False)` for params without floats, or any JCS library).
pub fn params_sha256(params: &Params) -> String {
    let canonical = serde_jcs::to_vec(params).unwrap_or_else(|_| b"{}".to_vec());
    hex::encode(Sha256::digest(canonical))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_hash_over_the_canonical_form_whatever_the_key_order() {
        let a: Params = serde_json::from_str(r#"{"b":2,"a":{"y":[1,"é"],"x":null}}"#).unwrap();
        let b: Params = serde_json::from_str(r#"{"a":{"x":null,"y":[1,"é"]},"b":2}"#).unwrap();
        assert_eq!(params_sha256(&a), params_sha256(&b));
        let canonical = r#"{"a":{"x":null,"y":[1,"é"]},"b":2}"#;
        assert_eq!(
            params_sha256(&a),
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let c: Params = serde_json::from_str(r#"{"a":{"x":null,"y":[1,"e"]},"b":2}"#).unwrap();
        assert_ne!(params_sha256(&a), params_sha256(&c));
        // RFC 8785's own number form: 1e21 and 1.0 print as ECMAScript does.
        let n: Params = serde_json::from_str(r#"{"n":1.0,"m":1e21}"#).unwrap();
        assert_eq!(
            params_sha256(&n),
            hex::encode(Sha256::digest(br#"{"m":1e+21,"n":1}"#))
        );
    }
}
