//! A fake of GitHub's REST API on loopback, written from GitHub's documentation (not from
//! greenlight's code): "Authenticating as a GitHub App" (an RS256 JWT, `iss` the App id, at
//! most 10 minutes), "Create an installation access token for an app" (`POST
//! /app/installations/{id}/access_tokens`, 201 `{token, expires_at}`), and "Review custom
//! deployment protection rules for a workflow run" (`POST
//! /repos/{owner}/{repo}/actions/runs/{run_id}/deployment_protection_rule`, 204, 422 when the
//! run no longer waits). Webhooks are signed as GitHub signs them: `X-Hub-Signature-256:
//! sha256=` + hex HMAC-SHA256 of the body with the webhook secret.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use sha2::Sha256;

pub const APP_ID: u64 = 424242;
pub const APP_KEY: &str = include_str!("../fixtures/github/app.pem");
pub const APP_PUBLIC_KEY: &str = include_str!("../fixtures/github/app.pub.pem");
pub const WEBHOOK_SECRET: &str = "it's a secret to everybody";
pub const INSTALLATION: u64 = 77;

/// A review the fake received.
#[derive(Debug, Clone)]
pub struct ReceivedReview {
    pub path: String,
    pub body: Value,
    pub token: String,
}

#[derive(Default)]
struct Inner {
    /// Tokens issued: (token, installation, expires at in Unix seconds).
    tokens: Vec<(String, u64, i64)>,
    reviews: Vec<ReceivedReview>,
    /// Answer reviews with 422 while set.
    refuse_reviews: bool,
    /// Answer reviews with 500 this many more times.
    fail_reviews: u32,
    /// App JWTs refused (bad signature, iss, lifetime).
    bad_jwts: Vec<String>,
}

#[derive(Clone)]
pub struct FakeGithub {
    inner: Arc<Mutex<Inner>>,
    /// How long an installation token lives, in seconds (GitHub: an hour).
    token_lifetime: Arc<Mutex<i64>>,
    pub url: String,
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl FakeGithub {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let fake = Self {
            inner: Default::default(),
            token_lifetime: Arc::new(Mutex::new(3600)),
            url: format!("http://{addr}"),
        };
        let app = Router::new()
            .route(
                "/app/installations/{installation}/access_tokens",
                post(access_token),
            )
            .route(
                "/repos/{owner}/{repo}/actions/runs/{run_id}/deployment_protection_rule",
                post(review),
            )
            .with_state(fake.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        fake
    }

    pub fn set_token_lifetime(&self, secs: i64) {
        *self.token_lifetime.lock().unwrap() = secs;
    }

    pub fn refuse_reviews(&self, refuse: bool) {
        self.inner.lock().unwrap().refuse_reviews = refuse;
    }

    pub fn fail_reviews(&self, times: u32) {
        self.inner.lock().unwrap().fail_reviews = times;
    }

    pub fn reviews(&self) -> Vec<ReceivedReview> {
        self.inner.lock().unwrap().reviews.clone()
    }

    /// Reviews with a `state` (status reports left out).
    pub fn decisions(&self) -> Vec<ReceivedReview> {
        self.reviews()
            .into_iter()
            .filter(|r| r.body.get("state").is_some())
            .collect()
    }

    pub fn tokens_issued(&self) -> usize {
        self.inner.lock().unwrap().tokens.len()
    }

    pub fn bad_jwts(&self) -> Vec<String> {
        self.inner.lock().unwrap().bad_jwts.clone()
    }

    /// The callback URL GitHub would put in a webhook for this run.
    pub fn callback_url(&self, repository: &str, run_id: u64) -> String {
        format!(
            "{}/repos/{repository}/actions/runs/{run_id}/deployment_protection_rule",
            self.url
        )
    }

    /// A `deployment_protection_rule` webhook body, shaped like GitHub's documented example.
    pub fn protection_rule_payload(
        &self,
        repository: &str,
        environment: &str,
        run_id: u64,
        creator: &str,
    ) -> Value {
        json!({
            "action": "requested",
            "environment": environment,
            "event": "push",
            "ref": "refs/heads/main",
            "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
            "deployment_callback_url": self.callback_url(repository, run_id),
            "deployment": {
                "id": 1,
                "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
                "ref": "main",
                "environment": environment,
                "creator": {"login": creator, "id": 1, "type": "User"},
            },
            "pull_requests": [],
            "repository": {
                "id": 1296269,
                "full_name": repository,
                "html_url": format!("https://github.com/{repository}"),
            },
            "installation": {"id": INSTALLATION},
            "sender": {"login": creator, "id": 1, "type": "User"},
        })
    }
}

/// `sha256=<hex HMAC-SHA256>`, as GitHub signs a webhook.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts a webhook to greenlight as GitHub does, signed with `secret`.
pub async fn deliver_webhook(
    http: &reqwest::Client,
    base: &str,
    event: &str,
    body: &Value,
    secret: &str,
) -> reqwest::Response {
    let bytes = serde_json::to_vec(body).unwrap();
    http.post(format!("{base}/github/webhook"))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", ulid::Ulid::new().to_string())
        .header("x-hub-signature-256", github_signature(secret, &bytes))
        .body(bytes)
        .send()
        .await
        .unwrap()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(
            json!({"message": message, "documentation_url": "https://docs.github.com/rest"}),
        ),
    )
        .into_response()
}

/// Checks the App JWT as GitHub does: RS256 with the App's public key, `iss` the App id,
/// `exp` in the future and no more than 10 minutes after `iat`.
fn check_app_jwt(jwt: &str) -> Result<(), String> {
    let key = DecodingKey::from_rsa_pem(APP_PUBLIC_KEY.as_bytes()).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<Value>(jwt, &key, &validation).map_err(|e| e.to_string())?;
    let claims = data.claims;
    let iss = match &claims["iss"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err("iss missing".into()),
    };
    if iss != APP_ID.to_string() {
        return Err(format!("iss {iss} is not the App id"));
    }
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    if exp - iat > 600 {
        return Err("'Expiration time' claim ('exp') is too far in the future".into());
    }
    if iat > now_secs() + 60 {
        return Err(
            "'Issued at' claim ('iat') must be an Integer representing a time in the past".into(),
        );
    }
    Ok(())
}

async fn access_token(
    State(fake): State<FakeGithub>,
    Path(installation): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let Some(jwt) = bearer(&headers) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    };
    if let Err(e) = check_app_jwt(&jwt) {
        fake.inner.lock().unwrap().bad_jwts.push(e.clone());
        return error(StatusCode::UNAUTHORIZED, &e);
    }
    if installation != INSTALLATION {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let lifetime = *fake.token_lifetime.lock().unwrap();
    let expires = now_secs() + lifetime;
    let mut inner = fake.inner.lock().unwrap();
    let token = format!("ghs_fake{}", inner.tokens.len() + 1);
    inner.tokens.push((token.clone(), installation, expires));
    let expires_at = jiff::Timestamp::from_second(expires).unwrap().to_string();
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "token": token,
            "expires_at": expires_at,
            "permissions": {"deployments": "write", "actions": "read"},
            "repository_selection": "all",
        })),
    )
        .into_response()
}

async fn review(
    State(fake): State<FakeGithub>,
    Path((owner, repo, run_id)): Path<(String, String, u64)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut inner = fake.inner.lock().unwrap();
    let Some(token) = bearer(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "Requires authentication");
    };
    let live = inner
        .tokens
        .iter()
        .any(|(t, _, expires)| *t == token && *expires > now_secs());
    if !live {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if body["environment_name"].as_str().is_none_or(str::is_empty)
        || body["comment"].as_str().is_none()
    {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "environment_name and comment are required",
        );
    }
    if let Some(state) = body.get("state")
        && !matches!(state.as_str(), Some("approved" | "rejected"))
    {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "state must be approved or rejected",
        );
    }
    if inner.fail_reviews > 0 {
        inner.fail_reviews -= 1;
        return error(StatusCode::INTERNAL_SERVER_ERROR, "Server Error");
    }
    if inner.refuse_reviews {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "No pending deployment requests to approve or reject",
        );
    }
    inner.reviews.push(ReceivedReview {
        path: format!("/repos/{owner}/{repo}/actions/runs/{run_id}/deployment_protection_rule"),
        body,
        token,
    });
    StatusCode::NO_CONTENT.into_response()
}
