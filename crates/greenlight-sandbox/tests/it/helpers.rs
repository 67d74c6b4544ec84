use std::time::Duration;

use greenlight_sandbox::{Sandbox, SandboxConfig, SandboxHandle};
use serde_json::Value;

pub const BOT: &str = "xoxb-sandbox-bot-token";

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub async fn start() -> SandboxHandle {
    start_with(SandboxConfig::for_tests()).await
}

pub async fn start_with(config: SandboxConfig) -> SandboxHandle {
    Sandbox::start(config).await.expect("sandbox starts")
}

pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

/// A JSON Web API call with the bot token.
pub async fn api(sb: &SandboxHandle, method: &str, args: Value) -> Answer {
    api_with_token(sb, method, args, Some(BOT)).await
}

pub async fn api_with_token(
    sb: &SandboxHandle,
    method: &str,
    args: Value,
    token: Option<&str>,
) -> Answer {
    let mut req = client()
        .post(format!("{}{method}", sb.api_url()))
        .json(&args);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("api call");
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = res.json().await.expect("json answer");
    Answer {
        status,
        retry_after,
        body,
    }
}

pub fn approval_blocks() -> Value {
    serde_json::json!([
        {"type": "header", "text": {"type": "plain_text", "text": "Deploy api to prod"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Requested by* <@U0BOB>"}},
        {"type": "actions", "block_id": "decide", "elements": [
            {"type": "button", "action_id": "approve", "style": "primary", "value": "req_1",
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": "deny", "style": "danger", "value": "req_1",
             "text": {"type": "plain_text", "text": "Deny"},
             "confirm": {"title": {"type": "plain_text", "text": "Sure?"},
                         "text": {"type": "mrkdwn", "text": "Deny the deploy"},
                         "confirm": {"type": "plain_text", "text": "Deny"},
                         "deny": {"type": "plain_text", "text": "Back"}}}
        ]}
    ])
}

/// Posts the approval message to #deploy and returns its ts.
pub async fn post_approval(sb: &SandboxHandle) -> String {
    let a = api(
        sb,
        "chat.postMessage",
        serde_json::json!({"channel": "C0DEPLOY", "text": "Deploy api to prod", "blocks": approval_blocks()}),
    )
    .await;
    assert_eq!(a.body["ok"], true, "{}", a.body);
    a.body["ts"].as_str().expect("ts").to_owned()
}

pub const SECOND: Duration = Duration::from_secs(1);

/// One request the fake app received, with the signature already checked.
pub struct Received {
    pub path: String,
    pub content_type: String,
    pub body: String,
    /// The v0 signature matched (checked with this test's own HMAC code) and the timestamp
    /// is within five minutes.
    pub signed: bool,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    pub fn form(&self) -> Vec<(String, String)> {
        serde_urlencoded::from_str(&self.body).expect("a form body")
    }

    pub fn field(&self, key: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// How the fake app answers a path: status, content type, body, delay.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub delay: Duration,
}

impl Default for Reply {
    fn default() -> Self {
        Self {
            status: 200,
            content_type: "text/plain",
            body: String::new(),
            delay: Duration::ZERO,
        }
    }
}

/// A Slack app on a random port serving `/slack/interactions`, `/slack/events` and
/// `/slack/commands`, recording every request.
pub struct FakeApp {
    pub base: String,
    pub received: tokio::sync::mpsc::UnboundedReceiver<Received>,
    pub replies: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Reply>>>,
}

impl FakeApp {
    pub fn reply(&self, path: &str, reply: Reply) {
        self.replies.lock().unwrap().insert(path.to_owned(), reply);
    }

    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(5 * SECOND, self.received.recv())
            .await
            .expect("a request in time")
            .expect("app running")
    }
}

#[derive(Clone)]
struct FakeAppState {
    secret: String,
    tx: tokio::sync::mpsc::UnboundedSender<Received>,
    replies: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Reply>>>,
}

pub async fn fake_app(secret: &str) -> FakeApp {
    use axum::routing::post;
    let (tx, received) = tokio::sync::mpsc::unbounded_channel();
    let replies = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let state = FakeAppState {
        secret: secret.to_owned(),
        tx,
        replies: replies.clone(),
    };
    let app = axum::Router::new()
        .route("/slack/{kind}", post(fake_app_handler))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakeApp {
        base,
        received,
        replies,
    }
}

async fn fake_app_handler(
    axum::extract::State(st): axum::extract::State<FakeAppState>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use hmac::Mac;
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let ts: i64 = header("x-slack-request-timestamp").parse().unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(st.secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(&body);
    let want = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    let path = uri.path().to_owned();
    st.tx
        .send(Received {
            path: path.clone(),
            content_type: header("content-type"),
            body: String::from_utf8_lossy(&body).into_owned(),
            signed: header("x-slack-signature") == want && (now - ts).abs() <= 300,
        })
        .unwrap();
    let reply = st
        .replies
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or_default();
    tokio::time::sleep(reply.delay).await;
    (
        axum::http::StatusCode::from_u16(reply.status).unwrap(),
        [(axum::http::header::CONTENT_TYPE, reply.content_type)],
        reply.body,
    )
        .into_response()
}

/// A sandbox whose app URLs all point at a fresh fake app (signing secret `s3cret`).
pub async fn with_fake_app() -> (SandboxHandle, FakeApp) {
    let sb = start_with(SandboxConfig::for_tests().with_signing_secret("s3cret")).await;
    let app = fake_app("s3cret").await;
    sb.set_app_base_url(&app.base);
    (sb, app)
}

/// A POST to the control API; returns (status, JSON body).
pub async fn control(sb: &SandboxHandle, method: &str, path: &str, body: Value) -> (u16, Value) {
    let url = format!("{}/_sandbox/{path}", sb.url());
    let req = match method {
        "GET" => client().get(url),
        "PUT" => client().put(url).json(&body),
        _ => client().post(url).json(&body),
    };
    let res = req.send().await.expect("control call");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
