//! greenlight's client of its own HTTP API, for whatever runs beside a server rather than in it:
//! the CLI's `ask`, `requests` and `audit`, and an MCP stdio server. It knows the routes, the
//! bearer key and the error format; it prints nothing and knows nothing of the command line.
//! Imports the HTTP adapter's response types and the domain; only the CLI imports it.

use std::time::Duration;

use serde_json::Value;

use crate::domain::{RequestId, Status, Verdict, WorkflowName};

/// Where the client talks when GREENLIGHT_URL is not set.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Longest single long-poll the server grants (`?wait=`); longer waits loop.
pub const MAX_WAIT: Duration = Duration::from_secs(crate::http::MAX_WAIT_SECS);

/// How long any call but a long-poll may take, end to end.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long past its wait a long-poll may take before the client gives up on it.
const LONG_POLL_MARGIN: Duration = Duration::from_secs(30);

/// A greenlight server and the API key to call it with.
#[derive(Debug, Clone)]
pub struct GreenlightClient {
    http: reqwest::Client,
    base: String,
    credential: Credential,
}

/// Where the bearer credential comes from. Workload tokens rotate, so all but a static one are
/// read again on every call.
#[derive(Debug, Clone)]
pub enum Credential {
    /// An API key (or a token) given once: GREENLIGHT_TOKEN.
    Static(String),
    /// GitHub Actions' OIDC token, asked of `ACTIONS_ID_TOKEN_REQUEST_URL` with
    /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN` (the job needs `permissions: id-token: write`), for
    /// `audience` when given.
    GitHubActions { audience: Option<String> },
    /// An environment variable holding a token: a GitLab CI `id_tokens` variable.
    EnvVar(String),
    /// A file holding a token: a Kubernetes projected service-account token.
    File(std::path::PathBuf),
}

/// Why a call did not give an answer. Each variant's text is what a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the input: a 4xx other than 401 and 403 (`code` is the API's stable
    /// error code, such as `not_found`, `not_pending` or `unknown_workflow`).
    #[error("{message} ({code})")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    /// The key is unknown, revoked or lacks the scope for this call (401, 403).
    #[error("{message} ({code})")]
    Unauthorized {
        status: u16,
        code: String,
        message: String,
    },
    /// No answer came back from the URL: refused, reset, timed out. A call that creates or
    /// changes something may or may not have reached the server.
    #[error("cannot reach greenlight at {0}: {1}")]
    Unreachable(String, String),
    /// Anything else: no key, a 5xx, an answer that is not the API's JSON.
    #[error("{0}")]
    Failed(String),
}

/// The filters and page of `GET /v1/requests`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub status: Option<Status>,
    pub workflow: Option<WorkflowName>,
    /// 1-200; the server's default is 50.
    pub limit: Option<u32>,
    /// The `next_cursor` of the page before.
    pub cursor: Option<RequestId>,
}

impl GreenlightClient {
    /// The server at GREENLIGHT_URL (default http://127.0.0.1:8080) with the key in
    /// GREENLIGHT_TOKEN (required).
    pub fn from_env() -> Result<Self, ClientError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let base = var("GREENLIGHT_URL").unwrap_or_else(|| DEFAULT_URL.to_owned());
        let token = var("GREENLIGHT_TOKEN").ok_or_else(|| {
            ClientError::Failed(
                "GREENLIGHT_TOKEN is not set (create one with `greenlight keys create`)".into(),
            )
        })?;
        Self::new(&base, &token)
    }

    /// The server at GREENLIGHT_URL with `credential` instead of GREENLIGHT_TOKEN.
    pub fn from_env_with(credential: Credential) -> Result<Self, ClientError> {
        let base = std::env::var("GREENLIGHT_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let mut client = Self::new(&base, "")?;
        client.credential = credential;
        Ok(client)
    }

    /// The server at `base_url` (`http://host:port`, a trailing slash or not) with `token`.
    pub fn new(base_url: &str, token: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Failed(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            credential: Credential::Static(token.to_owned()),
        })
    }

    /// The bearer credential for the next call, read again unless it is static.
    async fn bearer(&self) -> Result<String, ClientError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        match &self.credential {
            Credential::Static(token) => Ok(token.clone()),
            Credential::EnvVar(name) => var(name).map(|t| t.trim().to_owned()).ok_or_else(|| {
                ClientError::Failed(format!(
                    "the token variable {name} is not set (GitLab CI: declare it under id_tokens: in the job)"
                ))
            }),
            Credential::File(path) => std::fs::read_to_string(path)
                .map(|t| t.trim().to_owned())
                .map_err(|e| {
                    ClientError::Failed(format!("cannot read the token file {}: {e}", path.display()))
                }),
            Credential::GitHubActions { audience } => {
                let missing = |name: &str| {
                    ClientError::Failed(format!(
                        "--oidc github: {name} is not set; run in a GitHub Actions job with `permissions: id-token: write`"
                    ))
                };
                let url = var("ACTIONS_ID_TOKEN_REQUEST_URL")
                    .ok_or_else(|| missing("ACTIONS_ID_TOKEN_REQUEST_URL"))?;
                let request_token = var("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
                    .ok_or_else(|| missing("ACTIONS_ID_TOKEN_REQUEST_TOKEN"))?;
                let mut url = reqwest::Url::parse(&url).map_err(|e| {
                    ClientError::Failed(format!("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL: {e}"))
                })?;
                if let Some(audience) = audience {
                    url.query_pairs_mut().append_pair("audience", audience);
                }
                let res = self
                    .http
                    .get(url)
                    .header(reqwest::header::AUTHORIZATION, format!("bearer {request_token}"))
                    .timeout(CALL_TIMEOUT)
                    .send()
                    .await
                    .map_err(|e| {
                        ClientError::Failed(format!(
                            "cannot get the job's OIDC token from GitHub: {}",
                            root_cause(&e)
                        ))
                    })?;
                let status = res.status();
                let body: Value = res.json().await.unwrap_or_default();
                match body["value"].as_str() {
                    Some(token) if status.is_success() => Ok(token.to_owned()),
                    _ => Err(ClientError::Failed(format!(
                        "GitHub gave no OIDC token (HTTP {status}); does the job have `permissions: id-token: write`?"
                    ))),
                }
            }
        }
    }

    /// The server's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `POST /v1/requests`: the new request (or, when `body.idempotency_key` repeats, the one
    /// an earlier call made), as `get` shows it.
    pub async fn create(&self, body: &Value) -> Result<Value, ClientError> {
        self.send(self.http.post(self.url("/v1/requests")).json(body))
            .await
    }

    /// `GET /v1/requests/{id}`; with `wait`, a long-poll that answers once the request is no
    /// longer pending or the wait (at most [`MAX_WAIT`], at least a second) is over.
    pub async fn get(&self, id: &RequestId, wait: Option<Duration>) -> Result<Value, ClientError> {
        let url = self.url(&format!("/v1/requests/{id}"));
        match wait {
            Some(wait) => {
                let secs = wait.as_secs().clamp(1, MAX_WAIT.as_secs());
                let req = self.http.get(url).query(&[("wait", secs)]);
                self.send_within(req, Duration::from_secs(secs) + LONG_POLL_MARGIN)
                    .await
            }
            None => self.send(self.http.get(url)).await,
        }
    }

    /// `GET /v1/requests`: `{"requests": [...], "next_cursor": ID or null}`, newest first.
    pub async fn list(&self, query: &ListQuery) -> Result<Value, ClientError> {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(s) = query.status {
            pairs.push(("status", s.as_str().to_owned()));
        }
        if let Some(w) = &query.workflow {
            pairs.push(("workflow", w.to_string()));
        }
        if let Some(l) = query.limit {
            pairs.push(("limit", l.to_string()));
        }
        if let Some(c) = &query.cursor {
            pairs.push(("cursor", c.to_string()));
        }
        self.send(self.http.get(self.url("/v1/requests")).query(&pairs))
            .await
    }

    /// `POST /v1/requests/{id}/cancel`: the cancelled request.
    pub async fn cancel(&self, id: &RequestId, reason: Option<&str>) -> Result<Value, ClientError> {
        let mut body = serde_json::json!({});
        if let Some(r) = reason {
            body["reason"] = r.into();
        }
        let url = self.url(&format!("/v1/requests/{id}/cancel"));
        self.send(self.http.post(url).json(&body)).await
    }

    /// `GET /v1/standing`: `{"standing": [...]}`, the live standing approvals.
    pub async fn standing(&self) -> Result<Value, ClientError> {
        self.send(self.http.get(self.url("/v1/standing"))).await
    }

    /// `POST /v1/standing/{id}/revoke` (admin scope): the standing approval, revoked.
    pub async fn revoke_standing(&self, id: &str) -> Result<Value, ClientError> {
        let id = urlencoding::encode(id);
        self.send(
            self.http
                .post(self.url(&format!("/v1/standing/{id}/revoke"))),
        )
        .await
    }

    /// `POST /v1/requests/{id}/decisions`: a machine's vote (the key needs the decide scope);
    /// the request after it, decided or still pending.
    pub async fn decide(
        &self,
        id: &RequestId,
        verdict: Verdict,
        reason: Option<&str>,
        stage: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut body = serde_json::json!({"verdict": verdict.as_str()});
        if let Some(r) = reason {
            body["reason"] = r.into();
        }
        if let Some(s) = stage {
            body["stage"] = s.into();
        }
        let url = self.url(&format!("/v1/requests/{id}/decisions"));
        self.send(self.http.post(url).json(&body)).await
    }

    /// `GET /v1/audit`: `{"events": [...]}`, the entries after audit id `after` (admin scope).
    pub async fn audit(&self, after: i64, limit: u32) -> Result<Value, ClientError> {
        let req = self
            .http
            .get(self.url("/v1/audit"))
            .query(&[("after", after.to_string()), ("limit", limit.to_string())]);
        self.send(req).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        self.send_within(req, CALL_TIMEOUT).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `req` with the key; a long-poll passes its own, longer `timeout`.
    async fn send_within(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let req = req.timeout(timeout);
        let res = req
            .bearer_auth(self.bearer().await?)
            .send()
            .await
            .map_err(|e| ClientError::Unreachable(self.base.clone(), root_cause(&e)))?;
        let status = res.status().as_u16();
        let body: Value = res
            .json()
            .await
            .map_err(|e| ClientError::Failed(format!("bad response from greenlight: {e}")))?;
        if status < 400 {
            return Ok(body);
        }
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned();
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or("request failed")
            .to_owned();
        Err(match status {
            401 | 403 => ClientError::Unauthorized {
                status,
                code,
                message,
            },
            400..500 => ClientError::Rejected {
                status,
                code,
                message,
            },
            _ => ClientError::Failed(format!("{message} ({code})")),
        })
    }
}

/// The innermost cause of an error ("connection refused"), which is what a person can act on;
/// reqwest's own message only says that sending failed.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        let kind = match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                Some("connection refused (is the server running?)")
            }
            std::io::ErrorKind::TimedOut => Some("timed out"),
            std::io::ErrorKind::ConnectionReset => Some("connection reset"),
            _ => None,
        };
        if let Some(kind) = kind {
            return kind.to_owned();
        }
    }
    if e.downcast_ref::<reqwest::Error>()
        .is_some_and(reqwest::Error::is_timeout)
    {
        return "timed out".to_owned();
    }
    text
}
