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

/// Now, in Unix seconds.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

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
    /// Tokens handed out by the GitHub Actions token endpoint so far.
    pub actions_tokens: Arc<AtomicUsize>,
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
            actions_tokens: Arc::new(AtomicUsize::new(0)),
            url,
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/keys", get(jwks))
            .route("/_apis/token", get(actions_token))
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

    /// What a GitHub Actions job sees as `ACTIONS_ID_TOKEN_REQUEST_URL` (the runner's URL
    /// already carries `?api-version=`; clients append `&audience=`).
    pub fn actions_request_url(&self) -> String {
        format!("{}/_apis/token?api-version=2.0", self.url)
    }

    pub fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The tests' policy for this issuer: GitHub's shape, tags of owner 1234 only, requester
    /// `{{claims.repository}}@{{claims.ref}}`.
    pub fn policy(&self) -> greenlight::config::TrustPolicy {
        greenlight::config::TrustPolicy {
            name: "github-acme".into(),
            issuer: self.url.clone(),
            audience: "greenlight".into(),
            jwks_url: None,
            scopes: vec![
                greenlight::store::Scope::Request,
                greenlight::store::Scope::Read,
            ],
            workflows: Vec::new(),
            when: Some(
                greenlight::rules::Predicate::compile(
                    r#"claims.repository_owner_id == "1234" && claims.ref.startsWith("refs/tags/")"#,
                    greenlight::config::TRUST_NAMES,
                )
                .unwrap(),
            ),
            requester: Some("{{claims.repository}}@{{claims.ref}}".into()),
            max_token_lifetime: "1h".parse().unwrap(),
        }
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

/// The job's `ACTIONS_ID_TOKEN_REQUEST_TOKEN` in the tests.
pub const ACTIONS_REQUEST_TOKEN: &str = "runner-request-token";

/// GitHub Actions' OIDC token endpoint, as actions/toolkit's `getIDToken` calls it: a GET of
/// `ACTIONS_ID_TOKEN_REQUEST_URL` plus `&audience=`, with `Authorization: bearer
/// ACTIONS_ID_TOKEN_REQUEST_TOKEN`, answered `{"value": "<jwt>"}`; signed with the EC key.
async fn actions_token(
    State(issuer): State<Issuer>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<axum::Json<Value>, axum::http::StatusCode> {
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !auth.eq_ignore_ascii_case(&format!("bearer {ACTIONS_REQUEST_TOKEN}")) {
        return Err(axum::http::StatusCode::UNAUTHORIZED);
    }
    if query.get("api-version").map(String::as_str) != Some("2.0") {
        return Err(axum::http::StatusCode::BAD_REQUEST);
    }
    let audience = query
        .get("audience")
        .cloned()
        .unwrap_or_else(|| "https://github.com/acme".to_owned());
    issuer.actions_tokens.fetch_add(1, Ordering::SeqCst);
    let now = jiff::Timestamp::now().as_second();
    let token = TestKey::ec().sign(&issuer.github_claims(&audience, now, 300));
    Ok(axum::Json(json!({ "value": token })))
}
