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
