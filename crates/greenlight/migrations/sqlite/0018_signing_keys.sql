-- The Ed25519 keys that sign decision receipts, shared by every replica. The newest key made at
-- or before a decision signs its receipt; `greenlight signing-key rotate` adds one. Keys are
-- never deleted (an old receipt stays verifiable against an old JWKS); `seed` is the private
-- key (32 bytes, base64), as secret as the webhook secret.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    created_at BIGINT NOT NULL,
    seed TEXT NOT NULL,
    public_key TEXT NOT NULL
);
