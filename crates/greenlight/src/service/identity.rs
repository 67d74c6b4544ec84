//! Workload identity: an OIDC token (GitHub Actions, GitLab, a Kubernetes service account)
//! verified against the `[[trust]]` policies, so that who asks is proven instead of claimed.
//!
//! Each step refuses with its own reason: the algorithm (asymmetric only, pinned per token;
//! `none` and HMAC never, so a public key cannot serve as an HMAC secret), the issuer (exactly a
//! policy's), the key (by `kid` in the issuer's JWKS, fetched again at most ten times a minute
//! when a token names one not seen), the signature, `aud`, `exp`, `nbf` and `iat` (60 s of
//! leeway), the lifetime (`max_token_lifetime`), then the policy's `when`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::Mutex;

use crate::config::TrustPolicy;
use crate::domain::{ApiKeyId, Identity};
use crate::store::ApiKey;

/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 60;
/// The longest a JWKS is kept, whatever its Cache-Control says.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Fetches of one issuer's JWKS for unknown `kid`s, per minute.
pub const REFETCHES_PER_MINUTE: usize = 10;

/// The algorithms a workload token may use: asymmetric only.
const ACCEPTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a token was refused; every variant is answered 401 `invalid_token` with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a JWT: {0}")]
    Malformed(String),
    #[error(
        "algorithm {0} is not accepted: workload tokens are signed with RS256, ES256 or another asymmetric algorithm"
    )]
    Algorithm(String),
    #[error("issuer {0:?} is not trusted (no [[trust]] policy names it)")]
    UntrustedIssuer(String),
    #[error("audience: the token's aud does not contain {0}")]
    Audience(String),
    #[error("expired")]
    Expired,
    #[error("not yet valid (nbf or iat in the future)")]
    NotYetValid,
    #[error("unknown key {0:?}: not in the issuer's JWKS")]
    UnknownKey(String),
    #[error("signature does not verify")]
    Signature,
    #[error("lifetime {0} s is above the policy's max_token_lifetime of {1} s")]
    Lifetime(i64, i64),
    #[error("trust {0:?}: its when is false for this token")]
    WhenFalse(String),
    #[error("trust {0:?}: its when could not be decided: {1}")]
    WhenFailed(String, String),
    #[error("cannot fetch the issuer's keys: {0}")]
    Jwks(String),
}

/// A token a policy accepted.
#[derive(Debug, Clone)]
pub struct Verified {
    pub identity: Identity,
    pub policy: TrustPolicy,
    /// The request's `requester`, from the policy's template (default: the token's `sub`).
    pub requester: String,
}

impl Verified {
    /// The API key the token acts as: an id derived from the policy and the subject, the
    /// policy's scopes, named `oidc:{trust}/{subject}` (the audit log's actor).
    pub fn key(&self) -> ApiKey {
        let created_at = self
            .identity
            .claims
            .get("iat")
            .and_then(serde_json::Value::as_i64)
            .and_then(|s| jiff::Timestamp::from_second(s).ok())
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        ApiKey {
            id: ApiKeyId::for_workload(&self.identity.trust, &self.identity.subject),
            name: format!("oidc:{}/{}", self.identity.trust, self.identity.subject),
            scopes: self.policy.scopes.clone(),
            created_at,
            revoked_at: None,
        }
    }
}

/// Whether a bearer credential is a JWT (three base64url parts) rather than an API key.
pub fn looks_like_jwt(token: &str) -> bool {
    !token.starts_with("gl_")
        && token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

#[derive(Default)]
struct IssuerKeys {
    keys: Option<(JwkSet, Instant, Duration)>,
    refetches: VecDeque<Instant>,
}

pub struct Verifier {
    policies: Vec<TrustPolicy>,
    http: reqwest::Client,
    issuers: Mutex<HashMap<String, IssuerKeys>>,
}

impl Verifier {
    pub fn new(policies: Vec<TrustPolicy>) -> Result<Self, reqwest::Error> {
        Ok(Self {
            policies,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            issuers: Mutex::new(HashMap::new()),
        })
    }

    /// Whether any policy exists (without one, bearer tokens are API keys only).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Verifies `token` at `now` (Unix seconds).
    pub async fn verify(&self, token: &str, now: i64) -> Result<Verified, TokenError> {
        // The algorithm first, from the raw header: `none` and HMAC are refused by name, before
        // anything else about the token is looked at.
        let alg = raw_header(token)?
            .get("alg")
            .and_then(|a| a.as_str())
            .map(str::to_owned)
            .ok_or_else(|| TokenError::Malformed("the header names no alg".into()))?;
        if !ACCEPTED.iter().any(|a| format!("{a:?}") == alg) {
            return Err(TokenError::Algorithm(alg));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let unverified = unverified_claims(token)?;
        let issuer = unverified
            .get("iss")
            .and_then(|v| v.as_str())
            .ok_or_else(|| TokenError::Malformed("no iss claim".into()))?
            .to_owned();
        let candidates: Vec<&TrustPolicy> = self
            .policies
            .iter()
            .filter(|p| p.issuer == issuer)
            .collect();
        let Some(first) = candidates.first() else {
            return Err(TokenError::UntrustedIssuer(issuer));
        };
        let key = self.key_for(first, header.kid.as_deref()).await?;
        let mut last = TokenError::Audience(String::new());
        for policy in &candidates {
            match self.check(token, header.alg, &key, policy, now) {
                Ok(verified) => return Ok(verified),
                Err(TokenError::Audience(_)) => {
                    last = TokenError::Audience(
                        candidates
                            .iter()
                            .map(|p| format!("{:?}", p.audience))
                            .collect::<Vec<_>>()
                            .join(" or "),
                    );
                }
                Err(other) => return Err(other),
            }
        }
        Err(last)
    }

    fn check(
        &self,
        token: &str,
        alg: Algorithm,
        key: &DecodingKey,
        policy: &TrustPolicy,
        now: i64,
    ) -> Result<Verified, TokenError> {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&policy.issuer]);
        validation.set_audience(&[&policy.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            key,
            &validation,
        )
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => TokenError::Expired,
                K::ImmatureSignature => TokenError::NotYetValid,
                K::InvalidAudience => TokenError::Audience(policy.audience.clone()),
                K::InvalidSignature => TokenError::Signature,
                K::InvalidIssuer => TokenError::UntrustedIssuer(policy.issuer.clone()),
                _ => TokenError::Malformed(e.to_string()),
            }
        })?;
        let mut claims = data.claims;
        let number = |name: &str| claims.get(name).and_then(serde_json::Value::as_i64);
        let (iat, exp) = (number("iat").unwrap_or(0), number("exp").unwrap_or(0));
        if iat > now + LEEWAY_SECS as i64 {
            return Err(TokenError::NotYetValid);
        }
        let max = policy.max_token_lifetime.as_millis() / 1000;
        if exp - iat > max {
            return Err(TokenError::Lifetime(exp - iat, max));
        }
        if let Some(when) = &policy.when {
            let value = serde_json::Value::Object(claims.clone());
            match when.holds(&[("claims", &value)]) {
                Ok(true) => {}
                Ok(false) => return Err(TokenError::WhenFalse(policy.name.clone())),
                Err(e) => return Err(TokenError::WhenFailed(policy.name.clone(), e)),
            }
        }
        claims.remove("jti");
        let subject = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let identity = Identity {
            trust: policy.name.clone(),
            issuer: policy.issuer.clone(),
            subject: subject.clone(),
            claims,
        };
        let requester = match &policy.requester {
            Some(template) => identity.render(template),
            None => subject,
        };
        Ok(Verified {
            identity,
            policy: policy.clone(),
            requester,
        })
    }

    /// The issuer's key named `kid`: from the cached JWKS, else fetched again (rate-limited).
    async fn key_for(
        &self,
        policy: &TrustPolicy,
        kid: Option<&str>,
    ) -> Result<DecodingKey, TokenError> {
        let mut issuers = self.issuers.lock().await;
        let entry = issuers.entry(policy.issuer.clone()).or_default();
        let fresh = entry
            .keys
            .as_ref()
            .is_some_and(|(_, at, age)| at.elapsed() < *age);
        if let (true, Some((set, _, _))) = (fresh, entry.keys.as_ref())
            && let Some(key) = pick(set, kid)
        {
            return key;
        }
        // A stale set, or a kid not in it: fetch again, at most REFETCHES_PER_MINUTE a minute.
        let minute_ago = Instant::now().checked_sub(Duration::from_secs(60));
        entry
            .refetches
            .retain(|at| minute_ago.is_none_or(|m| *at > m));
        if entry.refetches.len() >= REFETCHES_PER_MINUTE {
            return match entry.keys.as_ref().and_then(|(set, _, _)| pick(set, kid)) {
                Some(key) => key,
                None => Err(TokenError::UnknownKey(kid.unwrap_or("(none)").to_owned())),
            };
        }
        entry.refetches.push_back(Instant::now());
        let (set, age) = self.fetch(policy).await?;
        let key = pick(&set, kid);
        entry.keys = Some((set, Instant::now(), age));
        key.unwrap_or_else(|| Err(TokenError::UnknownKey(kid.unwrap_or("(none)").to_owned())))
    }

    async fn fetch(&self, policy: &TrustPolicy) -> Result<(JwkSet, Duration), TokenError> {
        let url = match &policy.jwks_url {
            Some(url) => url.clone(),
            None => {
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    policy.issuer.trim_end_matches('/')
                );
                let doc: serde_json::Value = self.get_json(&discovery).await?.0;
                doc.get("jwks_uri")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| TokenError::Jwks(format!("{discovery} names no jwks_uri")))?
                    .to_owned()
            }
        };
        let (value, age) = self.get_json(&url).await?;
        let set: JwkSet = serde_json::from_value(value)
            .map_err(|e| TokenError::Jwks(format!("{url}: not a JWK Set: {e}")))?;
        Ok((set, age))
    }

    async fn get_json(&self, url: &str) -> Result<(serde_json::Value, Duration), TokenError> {
        let res = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| TokenError::Jwks(format!("{url}: {e}")))?;
        if !res.status().is_success() {
            return Err(TokenError::Jwks(format!("{url}: HTTP {}", res.status())));
        }
        let age = res
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .unwrap_or(JWKS_MAX_AGE)
            .min(JWKS_MAX_AGE);
        let value = res
            .json()
            .await
            .map_err(|e| TokenError::Jwks(format!("{url}: not JSON: {e}")))?;
        Ok((value, age))
    }
}

/// The key for `kid` in `set` (with no `kid`, the set's only key).
fn pick(set: &JwkSet, kid: Option<&str>) -> Option<Result<DecodingKey, TokenError>> {
    let jwk = match kid {
        Some(kid) => set.find(kid)?,
        None if set.keys.len() == 1 => &set.keys[0],
        None => return None,
    };
    Some(DecodingKey::from_jwk(jwk).map_err(|e| TokenError::Jwks(format!("key {kid:?}: {e}"))))
}

/// `max-age=N` of a Cache-Control header.
fn max_age(header: &str) -> Option<Duration> {
    header.split(',').find_map(|part| {
        part.trim()
            .strip_prefix("max-age=")
            .and_then(|n| n.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    })
}

/// The header as JSON, not yet verified: only to read its `alg`.
fn raw_header(token: &str) -> Result<serde_json::Map<String, serde_json::Value>, TokenError> {
    let header = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|e| TokenError::Malformed(format!("header: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| TokenError::Malformed(format!("header: {e}")))
}

/// The payload's claims, not yet verified: only to find the issuer's policy and keys.
fn unverified_claims(
    token: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, TokenError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| TokenError::Malformed("not three parts".into()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| TokenError::Malformed(format!("payload: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| TokenError::Malformed(format!("payload: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age_is_read() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("no-cache"), None);
    }
}
