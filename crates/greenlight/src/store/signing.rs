//! The keys that sign decision receipts, shared by every replica through the database.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::Millis;

/// One Ed25519 key: `seed` is the private key (32 bytes), `public_key` its public half.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredSigningKey {
    pub kid: String,
    pub created_at: Millis,
    /// Base64 of the 32-byte seed.
    pub seed: String,
    /// Base64url (no padding) of the 32-byte public key, as a JWK's `x`.
    pub public_key: String,
}

impl std::fmt::Debug for StoredSigningKey {
    /// Never prints the seed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSigningKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait SigningKeys: Send + Sync {
    /// Every key, oldest first.
    async fn signing_keys(&self) -> StoreResult<Vec<StoredSigningKey>>;

    async fn add_signing_key(&self, key: &StoredSigningKey) -> StoreResult<()>;
}
