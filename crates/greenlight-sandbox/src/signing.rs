//! Slack request signing, v0 (see slack-protocol.md).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `v0=` + hex HMAC-SHA256 of `v0:<timestamp>:<body>` keyed by the signing secret.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(b"v0:");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}
