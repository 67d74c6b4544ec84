//! Decision receipts as a use case: the Ed25519 keys (made on first start, rotated by
//! `greenlight signing-key rotate`, shared by every replica through the database), signing a
//! decided request's claims (`domain::ReceiptClaims`) as a compact JWS, and the JWKS that
//! publishes the public keys.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::domain::{Millis, ReceiptClaims, Request};
use crate::store::{SigningKeys, StoreError, StoreResult, StoredSigningKey};

/// How stale a replica's copy of the keys may be: a rotation reaches every replica's signing
/// and its JWKS within this.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// PKCS #8 v1 (RFC 8410) around an Ed25519 seed: this prefix, then the 32 bytes.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A key ready to sign with.
struct Key {
    kid: String,
    created_at: Millis,
    encoding: EncodingKey,
    /// The JWK's `x`.
    public_x: String,
}

impl Key {
    fn load(stored: &StoredSigningKey) -> StoreResult<Self> {
        let seed = STANDARD
            .decode(&stored.seed)
            .ok()
            .filter(|s| s.len() == 32)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "signing key {}: its seed is not 32 bytes",
                    stored.kid
                ))
            })?;
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        Ok(Self {
            kid: stored.kid.clone(),
            created_at: stored.created_at,
            encoding: EncodingKey::from_ed_der(&der),
            public_x: stored.public_key.clone(),
        })
    }
}

/// A new key pair made at `now`; its `kid` is its RFC 7638 JWK thumbprint.
pub fn generate(now: Millis) -> StoredSigningKey {
    let mut seed = [0_u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
        .unwrap_or_else(|_| unreachable!("any 32 bytes are an Ed25519 seed"));
    let x = URL_SAFE_NO_PAD.encode(ring::signature::KeyPair::public_key(&pair).as_ref());
    let thumbprint = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    StoredSigningKey {
        kid: URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint.as_bytes())),
        created_at: now,
        seed: STANDARD.encode(seed),
        public_key: x,
    }
}

/// Adds a new signing key; returns its `kid`. Every replica signs with it within
/// `RELOAD_EVERY`, and keeps publishing the old ones for as long as receipts live.
pub async fn rotate(store: &dyn SigningKeys, now: Millis) -> StoreResult<String> {
    let key = generate(now);
    store.add_signing_key(&key).await?;
    Ok(key.kid)
}

type Loaded = Option<(Instant, Arc<Vec<Key>>)>;

pub struct Receipts {
    store: Arc<dyn SigningKeys>,
    /// `iss`: the server's `public_url`, or `greenlight`.
    issuer: String,
    loaded: Mutex<Loaded>,
}

impl Receipts {
    pub fn new(store: Arc<dyn SigningKeys>, issuer: String) -> Self {
        Self {
            store,
            issuer,
            loaded: Mutex::new(None),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Makes the first key if there is none (the first start). Two replicas starting at once
    /// may each make one: both sign validly, and the newer one signs from then on.
    pub async fn ensure_key(&self, now: Millis) -> StoreResult<()> {
        if self.store.signing_keys().await?.is_empty() {
            self.store.add_signing_key(&generate(now)).await?;
            self.forget();
        }
        Ok(())
    }

    fn forget(&self) {
        if let Ok(mut loaded) = self.loaded.lock() {
            *loaded = None;
        }
    }

    /// The keys, oldest first, read again when older than `RELOAD_EVERY`.
    async fn keys(&self) -> StoreResult<Arc<Vec<Key>>> {
        if let Ok(loaded) = self.loaded.lock()
            && let Some((at, keys)) = loaded.as_ref()
            && at.elapsed() < RELOAD_EVERY
        {
            return Ok(keys.clone());
        }
        let stored = self.store.signing_keys().await?;
        let keys = Arc::new(
            stored
                .iter()
                .map(Key::load)
                .collect::<StoreResult<Vec<_>>>()?,
        );
        if let Ok(mut loaded) = self.loaded.lock() {
            *loaded = Some((Instant::now(), keys.clone()));
        }
        Ok(keys)
    }

    /// The receipt of a decided request (`None` while it is pending), signed by the newest key
    /// made at or before its decision: the same bytes on every call and every replica.
    pub async fn sign(&self, request: &Request, ttl_ms: Millis) -> StoreResult<Option<String>> {
        let Some(claims) = ReceiptClaims::of(request, &self.issuer, ttl_ms) else {
            return Ok(None);
        };
        let keys = self.keys().await?;
        let decided = request.decided_at.map_or(0, |t| t.as_millisecond());
        let Some(key) = keys
            .iter()
            .rev()
            .find(|k| k.created_at <= decided)
            .or_else(|| keys.first())
        else {
            return Err(StoreError::Unavailable(
                "no receipt signing key yet (the server makes one at start)".into(),
            ));
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("signing key {}: {e}", key.kid)))
    }

    /// The JWKS: the newest key, and each older key until `keep_ms` after the key that
    /// replaced it was made (the longest `receipt_ttl`: every receipt it signed has expired).
    pub async fn jwks(&self, now: Millis, keep_ms: Millis) -> StoreResult<serde_json::Value> {
        let keys = self.keys().await?;
        let published = keys.iter().enumerate().filter(|(i, _)| {
            keys.get(i + 1)
                .is_none_or(|next| next.created_at.saturating_add(keep_ms) > now)
        });
        let jwks: Vec<serde_json::Value> = published
            .map(|(_, k)| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": k.public_x,
                    "kid": k.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        Ok(serde_json::json!({ "keys": jwks }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_what_its_public_half_verifies() {
        let stored = generate(1_000);
        let key = Key::load(&stored).unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(
            &header,
            &serde_json::json!({"sub": "req_1", "exp": 4_000_000_000_u64}),
            &key.encoding,
        )
        .unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_ed_components(&stored.public_key).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        let data =
            jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims["sub"], "req_1");
        assert_eq!(data.header.kid.as_deref(), Some(stored.kid.as_str()));
        // Another key's public half does not.
        let other = generate(2_000);
        let wrong = jsonwebtoken::DecodingKey::from_ed_components(&other.public_key).unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &wrong, &validation).is_err());
        assert_ne!(stored.kid, other.kid);
        assert_eq!(stored.kid.len(), 43, "a SHA-256 thumbprint, base64url");
    }
}
