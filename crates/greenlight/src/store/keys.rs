//! API keys (stored by the hash of their secret) and the scopes they grant.

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::StoreResult;
use crate::domain::ApiKeyId;

/// API keys, found by the hash of their secret.
#[async_trait]
pub trait ApiKeys: Send + Sync {
    async fn insert_api_key(&self, key: &ApiKey, hash: &str) -> StoreResult<()>;

    async fn find_api_key(&self, hash: &str) -> StoreResult<Option<ApiKey>>;

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>>;

    async fn revoke_api_key(&self, id: &ApiKeyId, now: Timestamp) -> StoreResult<bool>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Request,
    Read,
    Decide,
    /// Report signals (`POST /v1/signals`).
    Signal,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Request,
        Scope::Read,
        Scope::Decide,
        Scope::Signal,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Request => "request",
            Scope::Read => "read",
            Scope::Decide => "decide",
            Scope::Signal => "signal",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl ApiKey {
    pub fn allows(&self, scope: Scope) -> bool {
        self.revoked_at.is_none()
            && (self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin))
    }
}
