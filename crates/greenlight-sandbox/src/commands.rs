//! Slash commands: the payload Slack sends when a person runs `/command text` in a channel,
//! its delivery (a `slash_commands` Socket Mode envelope, or a signed form POST to the
//! commands URL) and what the ack puts on screen.

use serde_json::{Map, Value, json};

use crate::blocks;
use crate::error::SandboxError;
use crate::interact::{Outgoing, Route, VERIFICATION_TOKEN, deliver};
use crate::model::{ClickOutcome, CommandOutcome, CommandResponse};
use crate::state::Shared;

/// `/name`: a slash, then at least one character, no whitespace.
fn valid_command(command: &str) -> bool {
    command
        .strip_prefix('/')
        .is_some_and(|name| !name.is_empty() && !name.chars().any(char::is_whitespace))
}

pub(crate) async fn slash_command(
    shared: &Shared,
    user: &str,
    channel: &str,
    command: &str,
    text: &str,
) -> Result<CommandOutcome, SandboxError> {
    let user = shared
        .user(user)
        .ok_or_else(|| SandboxError::UnknownUser(user.to_owned()))?
        .clone();
    let channel = shared
        .channel(channel)
        .ok_or_else(|| SandboxError::UnknownChannel(channel.to_owned()))?
        .clone();
    if !valid_command(command) {
        return Err(SandboxError::InvalidCommand(command.to_owned()));
    }
    let response_url = shared.issue_response_url(&channel.id, None, &user.id);
    let trigger_id = shared.issue_trigger(&user.id);
    let c = &shared.config;
    // Slack's fields, in Slack's order; every value is a string (they come from a form).
    let fields: Vec<(&str, String)> = vec![
        ("token", VERIFICATION_TOKEN.to_owned()),
        ("team_id", c.team_id.clone()),
        ("team_domain", c.team_domain.clone()),
        ("channel_id", channel.id.clone()),
        ("channel_name", channel.name.clone()),
        ("user_id", user.id.clone()),
        ("user_name", user.name.clone()),
        ("command", command.to_owned()),
        ("text", text.to_owned()),
        ("api_app_id", c.app_id.clone()),
        ("is_enterprise_install", "false".to_owned()),
        ("response_url", response_url.clone()),
        ("trigger_id", trigger_id.clone()),
    ];
    let http_body =
        serde_urlencoded::to_string(&fields).map_err(|e| SandboxError::Client(e.to_string()))?;
    let payload: Map<String, Value> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String(v.clone())))
        .collect();
    let out = Outgoing {
        route: Route::Commands,
        kind: "slash_command".into(),
        user: user.id.clone(),
        payload: Value::Object(payload),
        http_body,
        accepts_response_payload: true,
    };
    let ack = deliver(shared, out).await?;
    let response = show_ack(shared, &channel.id, &user.id, command, text, &ack);
    Ok(CommandOutcome {
        ack,
        response_url,
        trigger_id,
        response,
    })
}

/// The ack body is an immediate response: JSON `{text, blocks, response_type}` (a Socket Mode
/// ack's `payload`, or an HTTP body), or plain text. No ack in time shows Slack's error line.
fn show_ack(
    shared: &Shared,
    channel: &str,
    user: &str,
    command: &str,
    text: &str,
    ack: &ClickOutcome,
) -> Option<CommandResponse> {
    let fail = |reason: &str| {
        let line = format!("{command} failed with the error \"{reason}\"");
        CommandResponse::Ephemeral(shared.post_ephemeral(channel, user, None, line, Vec::new()))
    };
    if !ack.acked() {
        return Some(fail(if ack.timed_out {
            "operation_timeout"
        } else {
            "dispatch_failed"
        }));
    }
    if ack.body.trim().is_empty() {
        return None;
    }
    let reply = match serde_json::from_str::<Value>(&ack.body) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"text": ack.body}),
    };
    let reply_text = reply
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let reply_blocks = match reply.get("blocks") {
        None | Some(Value::Null) => Vec::new(),
        Some(b) => match (blocks::validate(b, 50), b.as_array()) {
            (Ok(()), Some(list)) => {
                let mut list = list.clone();
                blocks::fill_ids(&mut list);
                list
            }
            _ => return Some(fail("invalid_blocks")),
        },
    };
    if reply_text.is_empty() && reply_blocks.is_empty() {
        return None;
    }
    if reply.get("response_type").and_then(Value::as_str) == Some("in_channel") {
        // Slack shares the person's invocation too when the answer is for everyone.
        let invocation = format!("{command} {text}").trim_end().to_owned();
        shared.post_user_message(channel, user, invocation);
        let m = shared.post_bot_message(channel, None, reply_text, reply_blocks);
        Some(CommandResponse::InChannel(m))
    } else {
        let e = shared.post_ephemeral(channel, user, None, reply_text, reply_blocks);
        Some(CommandResponse::Ephemeral(e))
    }
}

#[cfg(test)]
mod tests {
    use super::valid_command;

    #[test]
    fn a_command_is_a_slash_and_a_name() {
        assert!(valid_command("/greenlight"));
        for bad in ["greenlight", "/", "/green light", ""] {
            assert!(!valid_command(bad), "{bad:?}");
        }
    }
}
