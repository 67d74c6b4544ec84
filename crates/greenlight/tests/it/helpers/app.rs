//! `TestApp`: the real server in-process on 127.0.0.1:0, a SQLite file, the sandbox as Slack.

use std::sync::Arc;

use greenlight::app::Application;
use greenlight::config::{Config, Secret, SlackConfig, Workflow};
use greenlight::domain::{Clock, SystemClock};
use greenlight::store::Scope;
use greenlight_sandbox::{Click, ClickOutcome, Message, SandboxHandle};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{
    CHANNEL, TestDb, WAIT, block_actions, create_key, has_buttons, init, now_unix, posted,
    random_secret, start_sandbox,
};

pub struct TestApp {
    pub base: String,
    pub sandbox: SandboxHandle,
    pub key: String,
    pub http: reqwest::Client,
    pub db_url: String,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    db: TestDb,
}

/// The tests' one default config: one `deploy` workflow, Slack over HTTP at `sandbox`.
pub fn config(sandbox: &SandboxHandle, db_url: &str, secret: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db_url.to_owned(),
        database: Default::default(),
        shutdown_timeout: "10s".parse().unwrap(),
        slack: SlackConfig {
            bot_token: Some(Secret::new(sandbox.config().bot_token.clone())),
            signing_secret: Some(Secret::new(secret)),
            app_token: None,
            api_url: sandbox.api_url(),
            socket_connections: SlackConfig::DEFAULT_SOCKET_CONNECTIONS,
            allowed_teams: Vec::new(),
        },
        workflows: vec![Workflow::new(
            "deploy".parse().unwrap(),
            "#deploy".parse().unwrap(),
        )],
        source: None,
        delivery: Default::default(),
        alerts: Default::default(),
        limits: Default::default(),
        mcp: Default::default(),
        public_url: None,
        alert_rules: Vec::new(),
        trust: Vec::new(),
        github: None,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// `spawn_app` with the config changed first (workflows, `[delivery]`, `[alerts]`).
pub async fn spawn_app_with(customize: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_clocked(customize, Arc::new(SystemClock)).await
}

/// `spawn_app_with` on a clock the test controls (expiry, reminders).
pub async fn spawn_app_clocked(
    customize: impl FnOnce(&mut Config),
    clock: Arc<dyn Clock>,
) -> TestApp {
    init();
    let sandbox = start_sandbox(&random_secret()).await;
    boot(sandbox, TestDb::sqlite(), None, customize, clock).await
}

/// Starts a server on `db` with the default `config`, changed by `customize`, talking to
/// `sandbox`; `key` is the API key to keep (a restart), or `None` for a new admin key. Every
/// in-process server of the tests starts here.
pub async fn boot(
    sandbox: SandboxHandle,
    db: TestDb,
    key: Option<String>,
    customize: impl FnOnce(&mut Config),
    clock: Arc<dyn Clock>,
) -> TestApp {
    let secret = sandbox.config().signing_secret.clone();
    let mut cfg = config(&sandbox, &db.url, &secret);
    customize(&mut cfg);
    let app = Application::build(&cfg, clock).await.expect("app builds");
    let addr = app.local_addr();
    // Without a signing secret (Socket Mode) there is no HTTP endpoint to send clicks to.
    if cfg.slack.signing_secret.is_some() {
        sandbox.set_interactivity_url(format!("http://{addr}/slack/interactions"));
    }
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        app.run_until_stopped(stop).await.expect("server runs");
    });
    let key = match key {
        Some(key) => key,
        None => create_key(&db.url, "ci", &[Scope::Admin]).await,
    };
    TestApp {
        base: format!("http://{addr}"),
        sandbox,
        key,
        http: reqwest::Client::new(),
        db_url: db.url.clone(),
        shutdown,
        server: Some(server),
        db,
    }
}

impl TestApp {
    /// Stops the server; the database stays until the returned `TestDb` is dropped.
    pub async fn stop(self) -> TestDb {
        self.halted().await.db
    }

    /// Stops the server and starts a new one on the same database, sandbox and API key (a
    /// restart, or a deploy with another config).
    pub async fn restart(
        self,
        customize: impl FnOnce(&mut Config),
        clock: Arc<dyn Clock>,
    ) -> TestApp {
        let old = self.halted().await;
        boot(old.sandbox, old.db, Some(old.key), customize, clock).await
    }

    async fn halted(mut self) -> Self {
        self.shutdown.cancel();
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        self
    }

    /// GET /metrics, as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        call(&self.http, &self.base, &self.key, method, path, body).await
    }

    pub async fn create(&self, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, "/v1/requests", Some(body))
            .await
    }

    pub async fn create_ok(&self, title: &str) -> Value {
        let (status, body) = self
            .create(json!({"title": title, "requester": "U0FRANK"}))
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    pub async fn get(&self, id: &str) -> Value {
        let (status, body) = self
            .call(reqwest::Method::GET, &format!("/v1/requests/{id}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits for the request's message (with buttons carrying its id) to be posted.
    pub async fn posted(&self, id: &str) -> Message {
        posted(&self.sandbox, id).await
    }

    pub async fn click(&self, msg: &Message, action: &str, user: &str) -> ClickOutcome {
        self.sandbox
            .click(Click::new(CHANNEL, &msg.ts, action, user))
            .await
            .expect("click delivered")
    }

    /// Waits until the message no longer has buttons.
    pub async fn decided_message(&self, msg: &Message) -> Message {
        self.sandbox
            .wait_for_message(CHANNEL, &msg.ts, |m| !has_buttons(m), WAIT)
            .await
            .expect("message updated without buttons")
    }

    pub async fn audit(&self) -> Vec<Value> {
        let (status, body) = self
            .call(reqwest::Method::GET, "/v1/audit?limit=1000", None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["events"].as_array().cloned().unwrap_or_default()
    }

    /// POSTs raw bytes to the Slack endpoint with the given headers.
    pub async fn slack_post(
        &self,
        body: &str,
        content_type: &str,
        headers: &[(&str, String)],
    ) -> (u16, String) {
        let mut req = self
            .http
            .post(format!("{}/slack/interactions", self.base))
            .header("content-type", content_type)
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.text().await.unwrap())
    }

    /// A click from someone who still has the original message on screen: built from that
    /// message, not from the sandbox's current copy (which may have lost its buttons already).
    pub async fn stale_click(&self, msg: &Message, action: &str, user: &str, id: &str) -> u16 {
        let body = block_actions(user, &msg.ts, action, id);
        let headers = self.signed_headers(&body, now_unix());
        self.slack_post(&body, "application/x-www-form-urlencoded", &headers)
            .await
            .0
    }

    pub fn signed_headers(&self, body: &str, ts: i64) -> Vec<(&'static str, String)> {
        vec![
            ("x-slack-request-timestamp", ts.to_string()),
            ("x-slack-signature", self.sandbox.sign(ts, body.as_bytes())),
        ]
    }
}

/// `GET /v1/requests/{id}` with `key`.
pub async fn get_request(http: &reqwest::Client, base: &str, key: &str, id: &str) -> (u16, Value) {
    call(
        http,
        base,
        key,
        reqwest::Method::GET,
        &format!("/v1/requests/{id}"),
        None,
    )
    .await
}

pub async fn call(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("server answers");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The request's deliveries of `kind` (`slack_post`, `webhook`, ...), as the API shows them.
pub async fn delivery_of(app: &TestApp, id: &str, kind: &str) -> Vec<Value> {
    app.get(id).await["delivery"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == kind)
        .cloned()
        .collect()
}

/// Polls the API until the request's `kind` deliveries satisfy `pred`.
pub async fn wait_delivery(app: &TestApp, id: &str, kind: &str, pred: impl Fn(&[Value]) -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let d = delivery_of(app, id, kind).await;
        if pred(&d) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{kind} deliveries of {id}: {d:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
