//! API keys: `gl_` + 32 random bytes, shown once; only their SHA-256 is stored. A fast hash is
//! right here because the key is random, not a password.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use rand::RngCore;
use sha2::{Digest, Sha256};

use std::sync::Arc;

use super::AppState;
use super::error::ApiError;
use crate::service::CreateInput;
use crate::service::identity::{TokenError, Verified, looks_like_jwt};
use crate::store::{ApiKey, Scope};

pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("gl_{}", hex::encode(bytes))
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The caller, authenticated by its API key or by a workload token (OIDC) a `[[trust]]`
/// policy accepted; a token acts as a key with its policy's scopes.
pub struct Caller {
    pub key: ApiKey,
    /// The workload token, when one authenticated the call.
    pub token: Option<Arc<Verified>>,
}

impl Caller {
    pub fn require(&self, scope: Scope) -> Result<&ApiKey, ApiError> {
        if self.key.allows(scope) {
            Ok(&self.key)
        } else {
            let what = match &self.token {
                Some(t) => format!("trust {:?} does not grant", t.policy.name),
                None => "this API key lacks".to_owned(),
            };
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{what} the {:?} scope", scope.as_str()),
            ))
        }
    }

    /// Stamps a create with the token that asked: its requester and workflows come from the
    /// policy, and the request keeps the verified identity.
    pub fn stamp(&self, input: &mut CreateInput) {
        input.token = self.token.clone();
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <api key>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Authorization must be: Bearer <api key>"))?;
        if looks_like_jwt(token)
            && let Some(verified) = state.service.verify_token(token).await
        {
            return match verified {
                Ok(v) => Ok(Caller {
                    key: v.key(),
                    token: Some(Arc::new(v)),
                }),
                Err(TokenError::Jwks(e)) => {
                    tracing::warn!(error = %e, "cannot fetch a trusted issuer's keys; workload token not checked");
                    Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "issuer_unavailable",
                        format!(
                            "the token's issuer cannot be reached to check it: {e}; try again later"
                        ),
                    )
                    .with_retry_after(5))
                }
                Err(e) => {
                    tracing::info!(reason = %e, "workload token refused");
                    Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "invalid_token",
                        format!("workload token refused: {e}"),
                    ))
                }
            };
        }
        let key = state
            .service
            .store()
            .find_api_key(&hash_key(token))
            .await?
            .filter(|k| k.revoked_at.is_none())
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?;
        Ok(Caller { key, token: None })
    }
}
