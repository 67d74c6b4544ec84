//! Slack's side: the sandbox, signing secrets, crafted payloads and reading posted messages.

use greenlight::http::auth::generate_key;
use greenlight_sandbox::{Message, Sandbox, SandboxConfig, SandboxHandle};
use serde_json::json;

use super::WAIT;

pub const CHANNEL: &str = "C0DEPLOY";

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

/// Waits for an ephemeral note to `user` containing `text`.
pub async fn told(sandbox: &SandboxHandle, user: &str, text: &str) -> String {
    sandbox
        .wait_until(WAIT, |sb| {
            sb.ephemerals(CHANNEL, user)
                .into_iter()
                .find(|e| e.text.contains(text))
                .map(|e| e.text)
        })
        .await
        .unwrap_or_else(|| panic!("{user} was told {text:?}"))
}
