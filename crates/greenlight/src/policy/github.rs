//! GitHub App credentials, pure: the `X-Hub-Signature-256` check of a webhook (HMAC-SHA256 of
//! the raw body, compared in constant time), the App JWT (RS256, signed with the App's private
//! key) that buys installation tokens, and the rule that a review only goes to a
//! `deployment_callback_url` under the configured `api_url`.

use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::Sha256;

/// Why a webhook's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no X-Hub-Signature-256 header")]
    Missing,
    #[error("X-Hub-Signature-256 is not sha256=<64 hex digits>")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body")]
    Mismatch,
}

/// Checks GitHub's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn verify_signature(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let given: [u8; 32] = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(SignatureError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// `sha256=<hex>` for `body`: what GitHub sends (for tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// How long an App JWT lives: GitHub refuses more than 10 minutes.
pub const APP_JWT_LIFETIME_SECS: i64 = 9 * 60;
/// How far back `iat` is set, for clocks a little ahead of GitHub's (GitHub's advice).
pub const APP_JWT_BACKDATE_SECS: i64 = 60;

/// The App's private key, read once.
#[derive(Clone)]
pub struct AppKey(EncodingKey);

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey(***)")
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the GitHub App private key is not an RSA key in PEM (-----BEGIN RSA PRIVATE KEY----- or -----BEGIN PRIVATE KEY-----): {0}"
)]
pub struct BadKey(String);

impl AppKey {
    pub fn from_pem(pem: &str) -> Result<Self, BadKey> {
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| BadKey(e.to_string()))?;
        // A key of another kind (EC in a PKCS #8 wrapper) only fails when it signs: try it now.
        let probe = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &serde_json::json!({"probe": true}),
            &key,
        );
        probe.map_err(|e| BadKey(e.to_string()))?;
        Ok(Self(key))
    }

    /// The App JWT at `now_secs` (Unix time): `iss` the App's id, `iat` a minute back, `exp`
    /// nine minutes on.
    pub fn app_jwt(&self, app_id: u64, now_secs: i64) -> Result<String, String> {
        let claims = serde_json::json!({
            "iss": app_id.to_string(),
            "iat": now_secs - APP_JWT_BACKDATE_SECS,
            "exp": now_secs + APP_JWT_LIFETIME_SECS,
        });
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.0)
            .map_err(|e| e.to_string())
    }
}

/// Whether `url` is under `api_url`: same scheme, host and port, and its path inside
/// `api_url`'s path. A forged webhook cannot send the installation token elsewhere.
pub fn under_api_url(api_url: &str, url: &str) -> bool {
    let (Ok(base), Ok(target)) = (reqwest::Url::parse(api_url), reqwest::Url::parse(url)) else {
        return false;
    };
    if base.scheme() != target.scheme()
        || base.host_str() != target.host_str()
        || base.port_or_known_default() != target.port_or_known_default()
        || !target.username().is_empty()
        || target.password().is_some()
    {
        return false;
    }
    let prefix = base.path().trim_end_matches('/');
    let path = target.path();
    // Dots are resolved by the parser, so `..` cannot climb out of the prefix here.
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The run id in a `deployment_callback_url`
/// (`.../repos/{owner}/{repo}/actions/runs/{run_id}/deployment_protection_rule`).
pub fn run_id_of(callback_url: &str) -> Option<u64> {
    let url = reqwest::Url::parse(callback_url).ok()?;
    let segments: Vec<&str> = url.path_segments()?.collect();
    let at = segments.iter().rposition(|s| *s == "runs")?;
    segments.get(at + 1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let body = br#"{"zen":"hi"}"#;
        let good = sign(b"secret", body);
        assert_eq!(verify_signature(b"secret", Some(&good), body), Ok(()));
        assert_eq!(
            verify_signature(b"other", Some(&good), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"secret", Some(&good), b"{}"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"secret", None, body),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(b"secret", Some("sha1=abc"), body),
            Err(SignatureError::Malformed)
        );
    }

    /// GitHub's documented example: secret "It's a Secret to Everybody", payload
    /// "Hello, World!".
    #[test]
    fn githubs_documented_example() {
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            verify_signature(
                b"It's a Secret to Everybody",
                Some(expected),
                b"Hello, World!"
            ),
            Ok(())
        );
    }

    #[test]
    fn callback_urls_under_the_api() {
        let api = "https://api.github.com";
        let ok = "https://api.github.com/repos/acme/api/actions/runs/42/deployment_protection_rule";
        assert!(under_api_url(api, ok));
        assert!(!under_api_url(api, "https://evil.example/repos/x"));
        assert!(!under_api_url(api, "http://api.github.com/repos/x"));
        assert!(!under_api_url(
            api,
            "https://api.github.com.evil.example/repos/x"
        ));
        assert!(!under_api_url(api, "https://user@api.github.com/repos/x"));
        assert!(!under_api_url(api, "https://api.github.com:8443/repos/x"));
        let ghes = "https://ghe.example.com/api/v3";
        assert!(under_api_url(
            ghes,
            "https://ghe.example.com/api/v3/repos/a/b"
        ));
        assert!(!under_api_url(
            ghes,
            "https://ghe.example.com/api/v30/repos/a/b"
        ));
        assert!(!under_api_url(
            ghes,
            "https://ghe.example.com/api/v3/../../login"
        ));
        assert!(!under_api_url(ghes, "https://ghe.example.com/other"));
        assert!(!under_api_url(api, "not a url"));
    }

    #[test]
    fn run_ids() {
        assert_eq!(
            run_id_of(
                "https://api.github.com/repos/acme/api/actions/runs/4242/deployment_protection_rule"
            ),
            Some(4242)
        );
        assert_eq!(run_id_of("https://api.github.com/repos/acme/api"), None);
    }
}
