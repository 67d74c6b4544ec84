//! Callbacks to the waiting machine, signed per the Standard Webhooks spec
//! (<https://www.standardwebhooks.com/>): `webhook-id` (stable across retries of one event),
//! `webhook-timestamp` (seconds, the attempt's time) and `webhook-signature: v1,<base64 of
//! HMAC-SHA256(key, "id.timestamp.body")>`, keyed with the bytes of a `whsec_<base64>` secret.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::domain::Request;

const PREFIX: &str = "whsec_";
/// The `meta` key under which a generated secret is kept.
pub const SECRET_META_KEY: &str = "webhook_secret";

/// A webhook signing key. Never prints itself.
#[derive(Clone)]
pub struct WebhookSecret {
    text: String,
    key: Vec<u8>,
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a webhook secret is \"whsec_\" followed by base64 (at least 24 bytes of key)")]
pub struct BadSecret;

impl WebhookSecret {
    pub fn parse(text: &str) -> Result<Self, BadSecret> {
        let encoded = text.trim().strip_prefix(PREFIX).ok_or(BadSecret)?;
        let key = STANDARD.decode(encoded).map_err(|_| BadSecret)?;
        if key.len() < 24 {
            return Err(BadSecret);
        }
        Ok(Self {
            text: text.trim().to_owned(),
            key,
        })
    }

    /// A fresh `whsec_` secret of 32 random bytes.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self {
            text: format!("{PREFIX}{}", STANDARD.encode(key)),
            key: key.to_vec(),
        }
    }

    /// The `whsec_...` text, for the operator who must give it to receivers.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The `webhook-signature` header value.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// A new event id: the same for every endpoint and every retry of one event.
pub fn new_message_id() -> String {
    format!("msg_{}", ulid::Ulid::new())
}

/// The body of a callback: `{"type", "timestamp", "data": <the request>}`, fixed when the event
/// happens so that every retry sends the same bytes.
pub fn payload(
    event: &str,
    request: &Request,
    at: jiff::Timestamp,
    receipt: Option<&str>,
) -> String {
    payload_of_stage(event, None, request, at, receipt)
}

/// `payload`, with the stage an event is about (`stage.approved`) beside `type`.
pub fn payload_of_stage(
    event: &str,
    stage: Option<&str>,
    request: &Request,
    at: jiff::Timestamp,
    receipt: Option<&str>,
) -> String {
    // Receivers (the workflow's webhooks as much as the caller's own) get the request without
    // the credentials a callback URL may carry.
    let mut body = serde_json::json!({
        "type": event,
        "timestamp": at,
        "data": redacted(request),
    });
    if let Some(stage) = stage {
        body["stage"] = stage.into();
    }
    // Once decided: the signed decision receipt (`GET /v1/requests/{id}/receipt`).
    if let Some(receipt) = receipt {
        body["receipt"] = receipt.into();
    }
    body.to_string()
}

/// A URL as others may see it: scheme, host, port and path; no user, password, query or
/// fragment (where tokens live).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// The request with its `callback_url` redacted.
pub fn redacted(request: &Request) -> Request {
    let mut shown = request.clone();
    shown.callback_url = shown.callback_url.as_deref().map(redact_url);
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls_show_no_credentials() {
        assert_eq!(
            redact_url("https://bob:s3cret@ci.example.com:8443/hooks/done?token=abc#frag"),
            "https://ci.example.com:8443/hooks/done"
        );
        assert_eq!(redact_url("not a url"), "(not a URL)");
    }

    #[test]
    fn signs_like_the_spec_example() {
        // The example from the Standard Webhooks specification.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn refuses_malformed_secrets_and_never_prints_one() {
        assert!(WebhookSecret::parse("not-a-secret").is_err());
        assert!(WebhookSecret::parse("whsec_!!!").is_err());
        assert!(WebhookSecret::parse("whsec_c2hvcnQ=").is_err());
        let s = WebhookSecret::generate();
        assert!(WebhookSecret::parse(s.expose()).is_ok());
        assert!(!format!("{s:?}").contains(&s.expose()[6..]));
    }
}
