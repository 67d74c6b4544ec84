//! Starts the real server on 127.0.0.1:0 with a real SQLite file, talking to the sandbox.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenlight::app::Application;
use greenlight::config::{Config, Secret, SlackConfig, Workflow};
use greenlight::domain::{ApiKeyId, Clock, SystemClock};
use greenlight::http::auth::{generate_key, hash_key};
use greenlight::store::{self, ApiKey, Scope};
use greenlight_sandbox::{Click, ClickOutcome, Message, Sandbox, SandboxConfig, SandboxHandle};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const CHANNEL: &str = "C0DEPLOY";
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub base: String,
    pub sandbox: SandboxHandle,
    pub key: String,
    pub http: reqwest::Client,
    pub db_url: String,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub fn init() {
    greenlight::install_crypto_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Where the tests find a PostgreSQL server to create their databases in.
pub fn postgres_admin_url() -> String {
    std::env::var("GREENLIGHT_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of the test's own: a SQLite file in a temporary directory, or a fresh PostgreSQL
/// database (created here, dropped when this is dropped, even after a failure).
pub struct TestDb {
    pub url: String,
    postgres: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            url: format!("sqlite:{}", dir.path().join("greenlight.db").display()),
            postgres: None,
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> Self {
        use sqlx::Connection;
        let admin = postgres_admin_url();
        // The creation time in the name lets a later run drop what a killed run left behind.
        let name = format!(
            "gl_test_{}_{}",
            jiff::Timestamp::now().as_second(),
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin} (GREENLIGHT_TEST_POSTGRES_URL): {e}; start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`")
        });
        sweep_stale_databases(&mut conn).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Self {
            url: format!("{base}/{name}"),
            postgres: Some(name),
            _dir: None,
        }
    }

    pub async fn of(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::sqlite(),
            Backend::Postgres => Self::postgres().await,
        }
    }
}

/// Databases of test runs that died more than an hour ago.
async fn sweep_stale_databases(conn: &mut sqlx::PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'gl\\_test\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    let hour_ago = jiff::Timestamp::now().as_second() - 3600;
    for name in names {
        let born: Option<i64> = name.split('_').nth(2).and_then(|t| t.parse().ok());
        if born.is_some_and(|t| t < hour_ago) {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.postgres.take() else {
            return;
        };
        // Drop may run inside the test's runtime: drop the database from a thread of its own.
        let admin = postgres_admin_url();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop a test database; a later run drops it");
        }
    }
}

/// The store backends every store test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn random_secret() -> String {
    generate_key()
}

pub async fn start_sandbox(secret: &str) -> SandboxHandle {
    // The named default users (U0ALICE…) plus a crowd (U0USER001…) for concurrency tests.
    let mut config = SandboxConfig::for_tests().with_signing_secret(secret);
    config
        .users
        .extend(SandboxConfig::for_tests().with_users(25).users);
    Sandbox::start(config).await.expect("sandbox starts")
}

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
    }
}

pub async fn create_key(db_url: &str, name: &str, scopes: &[Scope]) -> String {
    let store = store::connect(db_url).await.expect("store opens");
    let secret = generate_key();
    let key = ApiKey {
        id: ApiKeyId::generate(),
        name: name.to_owned(),
        scopes: scopes.to_vec(),
        created_at: jiff::Timestamp::now(),
        revoked_at: None,
    };
    store
        .insert_api_key(&key, &hash_key(&secret))
        .await
        .unwrap();
    secret
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
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:{}", dir.path().join("greenlight.db").display());
    let secret = random_secret();
    let sandbox = start_sandbox(&secret).await;
    let mut cfg = config(&sandbox, &db_url, &secret);
    customize(&mut cfg);
    let app = Application::build(&cfg, clock).await.expect("app builds");
    let addr = app.local_addr();
    sandbox.set_interactivity_url(format!("http://{addr}/slack/interactions"));
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        app.run_until_stopped(stop).await.expect("server runs");
    });
    let key = create_key(&db_url, "ci", &[Scope::Admin]).await;
    TestApp {
        base: format!("http://{addr}"),
        sandbox,
        key,
        http: reqwest::Client::new(),
        db_url,
        shutdown,
        server: Some(server),
        _dir: dir,
    }
}

impl TestApp {
    /// Stops the server; the database stays until the returned directory is dropped.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        self._dir
    }

    /// Stops the server and starts a new one on the same database, sandbox and API key (a
    /// restart, or a deploy with another config).
    pub async fn restart(
        mut self,
        customize: impl FnOnce(&mut Config),
        clock: Arc<dyn Clock>,
    ) -> TestApp {
        self.shutdown.cancel();
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        let secret = self.sandbox.config().signing_secret.clone();
        let mut cfg = config(&self.sandbox, &self.db_url, &secret);
        customize(&mut cfg);
        let app = Application::build(&cfg, clock).await.expect("app builds");
        let addr = app.local_addr();
        self.sandbox
            .set_interactivity_url(format!("http://{addr}/slack/interactions"));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            app.run_until_stopped(stop).await.expect("server runs");
        });
        TestApp {
            base: format!("http://{addr}"),
            shutdown,
            server: Some(server),
            ..self
        }
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

pub fn has_buttons(m: &Message) -> bool {
    m.blocks.iter().any(|b| b["type"] == "actions")
}

pub fn text_of(m: &Message) -> String {
    serde_json::to_string(&m.blocks).unwrap()
}

pub async fn posted(sandbox: &SandboxHandle, id: &str) -> Message {
    sandbox
        .wait_for_message_in(CHANNEL, |m| text_of(m).contains(id), WAIT)
        .await
        .unwrap_or_else(|| panic!("message for {id} posted"))
}

/// A block_actions payload as Slack would send it, for crafted clicks.
pub fn block_actions(user: &str, message_ts: &str, action_id: &str, value: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "team": {"id": "T0SANDBOX", "domain": "sandbox"},
        "user": {"id": user, "username": "someone", "name": "someone", "team_id": "T0SANDBOX"},
        "api_app_id": "A0GREENLIGHT",
        "token": "legacy",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": CHANNEL, "is_ephemeral": false},
        "trigger_id": "1.2.3",
        "channel": {"id": CHANNEL, "name": "deploy"},
        "message": {"type": "message", "ts": message_ts, "text": "x"},
        "response_url": "http://127.0.0.1:9/response",
        "state": {"values": {}},
        "actions": [{"action_id": action_id, "block_id": "greenlight.actions", "value": value,
                      "type": "button", "text": {"type": "plain_text", "text": "Approve"}, "action_ts": "1.2"}]
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

pub fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The greenlight binary, run as a real process.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
}

pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_greenlight"))
}

pub fn write_config(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("greenlight.toml");
    std::fs::write(
        &path,
        "[[workflow]]\nname = \"deploy\"\nchannel = \"#deploy\"\n",
    )
    .unwrap();
    path
}

/// How to run the binary beyond the defaults.
#[derive(Default)]
pub struct ProcessOptions {
    /// The whole config file (default: one `deploy` workflow).
    pub config: Option<String>,
    pub env: Vec<(String, String)>,
    /// Append stderr (the log) to this file instead of the test's stderr.
    pub log: Option<PathBuf>,
    /// Listen here (default: a free port).
    pub addr: Option<SocketAddr>,
}

impl Process {
    pub async fn start(
        sandbox: &SandboxHandle,
        dir: &std::path::Path,
        db_url: &str,
        secret: &str,
    ) -> Self {
        Self::start_with(sandbox, dir, db_url, secret, &ProcessOptions::default()).await
    }

    pub async fn start_with(
        sandbox: &SandboxHandle,
        dir: &std::path::Path,
        db_url: &str,
        secret: &str,
        options: &ProcessOptions,
    ) -> Self {
        let addr = options.addr.unwrap_or_else(free_port);
        let config = match &options.config {
            Some(text) => {
                let path = dir.join("greenlight.toml");
                std::fs::write(&path, text).unwrap();
                path
            }
            None => write_config(dir),
        };
        let stderr = match &options.log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap(),
            ),
            None => Stdio::inherit(),
        };
        let child = Command::new(bin())
            .arg("serve")
            .env("GREENLIGHT_CONFIG", config)
            .env("GREENLIGHT_DATABASE_URL", db_url)
            .env("GREENLIGHT_LISTEN", addr.to_string())
            .env("SLACK_BOT_TOKEN", &sandbox.config().bot_token)
            .env("SLACK_SIGNING_SECRET", secret)
            .env("SLACK_API_URL", sandbox.api_url())
            .env("RUST_LOG", "warn")
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("greenlight starts");
        let deadline = Instant::now() + WAIT;
        let http = reqwest::Client::new();
        loop {
            let health = http.get(format!("http://{addr}/healthz")).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "server did not become healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sandbox.set_interactivity_url(format!("http://{addr}/slack/interactions"));
        Self { child, addr }
    }

    pub fn kill9(mut self) {
        // SIGKILL: no shutdown hooks, no flush; exactly a crash.
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A clock that runs with real time plus an offset the test moves forward, so nothing waits
/// for minutes and everything that merely needs time to pass still sees it pass.
#[derive(Default)]
pub struct TestClock {
    offset_ms: std::sync::atomic::AtomicI64,
}

impl TestClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap();
        self.offset_ms
            .fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> jiff::Timestamp {
        let ms = self.offset_ms.load(std::sync::atomic::Ordering::SeqCst);
        jiff::Timestamp::from_millisecond(jiff::Timestamp::now().as_millisecond() + ms)
            .expect("test time in range")
    }
}
