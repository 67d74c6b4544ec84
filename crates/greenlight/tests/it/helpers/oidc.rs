//! An OIDC issuer on loopback, written from the OpenID Connect Discovery and JWK specifications
//! (not from greenlight's code): a discovery document, a JWKS that can be rotated, and tokens
//! minted with GitHub Actions' and Kubernetes' claim shapes, signed with the PEM test keys in
//! tests/it/fixtures/oidc (RSA and two EC P-256 keys).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const RSA_1: &str = include_str!("../fixtures/oidc/rsa-1.pem");
const EC_1: &str = include_str!("../fixtures/oidc/ec-1.pem");
const EC_2: &str = include_str!("../fixtures/oidc/ec-2.pem");

/// A test key: its `kid`, algorithm and signing key.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub key: EncodingKey,
    pub pem: &'static str,
}

impl TestKey {
    pub fn rsa() -> Self {
        Self::of("rsa-1", Algorithm::RS256, RSA_1)
    }

    pub fn ec() -> Self {
        Self::of("ec-1", Algorithm::ES256, EC_1)
    }

    /// The key a rotation brings.
    pub fn ec_next() -> Self {
        Self::of("ec-2", Algorithm::ES256, EC_2)
    }

    fn of(kid: &str, alg: Algorithm, pem: &'static str) -> Self {
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
            _ => EncodingKey::from_ec_pem(pem.as_bytes()),
        }
        .expect("a test key");
        Self {
            kid: kid.to_owned(),
            alg,
            key,
            pem,
        }
    }

    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).expect("a public JWK");
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }

    /// A token with these claims, signed by this key.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("signs")
    }
}

struct Inner {
    url: String,
    published: Vec<TestKey>,
}

/// The running issuer.
#[derive(Clone)]
pub struct Issuer {
    inner: Arc<Mutex<Inner>>,
    /// JWKS fetches so far.
    pub jwks_fetches: Arc<AtomicUsize>,
    pub url: String,
}

impl Issuer {
    pub async fn start(published: Vec<TestKey>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let issuer = Self {
            inner: Arc::new(Mutex::new(Inner {
                url: url.clone(),
                published,
            })),
            jwks_fetches: Arc::new(AtomicUsize::new(0)),
            url,
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/keys", get(jwks))
            .with_state(issuer.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        issuer
    }

    /// Publishes `keys` instead (a rotation).
    pub fn publish(&self, keys: Vec<TestKey>) {
        self.inner.lock().unwrap().published = keys;
    }

    pub fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// GitHub Actions' claims for a tag push of acme/api, valid from `now` for `lifetime` s.
    pub fn github_claims(&self, audience: &str, now: i64, lifetime: i64) -> Value {
        json!({
            "iss": self.url,
            "aud": audience,
            "sub": "repo:acme/api:ref:refs/tags/v1.2",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": "a-unique-id",
            "repository": "acme/api",
            "repository_owner_id": "1234",
            "ref": "refs/tags/v1.2",
            "workflow": "deploy.yml",
            "run_id": "8812",
            "environment": "production",
        })
    }

    /// A Kubernetes projected service-account token's claims.
    pub fn kubernetes_claims(&self, audience: &str, now: i64) -> Value {
        json!({
            "iss": self.url,
            "aud": [audience, "https://kubernetes.default.svc"],
            "sub": "system:serviceaccount:payments:worker",
            "iat": now,
            "exp": now + 600,
            "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "worker"}},
        })
    }
}

async fn discovery(State(issuer): State<Issuer>) -> axum::Json<Value> {
    let url = issuer.inner.lock().unwrap().url.clone();
    axum::Json(json!({
        "issuer": url,
        "jwks_uri": format!("{url}/keys"),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
}

async fn jwks(State(issuer): State<Issuer>) -> axum::Json<JwkSet> {
    issuer.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys = issuer
        .inner
        .lock()
        .unwrap()
        .published
        .iter()
        .map(TestKey::jwk)
        .collect();
    axum::Json(JwkSet { keys })
}
