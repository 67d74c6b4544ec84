//! API keys: `gl_` + 32 random bytes, shown once; only their SHA-256 is stored. A fast hash is
//! right here because the key is random, not a password.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use crate::store::{ApiKey, Scope};

pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("gl_{}", hex::encode(bytes))
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The caller, authenticated by its API key.
pub struct Caller(pub ApiKey);

impl Caller {
    pub fn require(&self, scope: Scope) -> Result<&ApiKey, ApiError> {
        if self.0.allows(scope) {
            Ok(&self.0)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this API key lacks the {:?} scope", scope.as_str()),
            ))
        }
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
        let key = state
            .service
            .store()
            .find_api_key(&hash_key(token))
            .await?
            .filter(|k| k.revoked_at.is_none())
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?;
        Ok(Caller(key))
    }
}
