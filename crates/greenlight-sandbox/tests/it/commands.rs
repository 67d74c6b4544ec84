//! Slash commands: what the app receives (signed form POST, or a Socket Mode envelope), what
//! its ack shows the person, response_url follow-ups, and people's own messages.

use std::time::Duration;

use greenlight_sandbox::{CommandResponse, SandboxConfig, SandboxError, Transport};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::socket_mode::{ack, connect, next_json};

#[tokio::test]
async fn a_command_is_a_signed_form_post_with_slacks_fields() {
    let (sb, mut app) = with_fake_app().await;
    app.reply(
        "/slack/commands",
        Reply {
            content_type: "application/json",
            body: json!({"text": "2 pending", "blocks": [{"type": "section",
                "text": {"type": "mrkdwn", "text": "*2 pending*"}}]})
            .to_string(),
            delay: Duration::from_millis(50),
            ..Reply::default()
        },
    );
    let outcome = sb
        .slash_command("U0ALICE", "#deploy", "/greenlight", "pending now")
        .await
        .unwrap();
    assert!(outcome.acked());
    assert_eq!(outcome.ack.transport, Transport::Http);
    assert!(outcome.ack.latency >= Duration::from_millis(50));

    let req = app.next().await;
    assert_eq!(req.path, "/slack/commands");
    assert_eq!(req.content_type, "application/x-www-form-urlencoded");
    assert!(req.signed);
    let names: Vec<String> = req.form().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        names,
        [
            "token",
            "team_id",
            "team_domain",
            "channel_id",
            "channel_name",
            "user_id",
            "user_name",
            "command",
            "text",
            "api_app_id",
            "is_enterprise_install",
            "response_url",
            "trigger_id"
        ]
    );
    let field = |k: &str| req.field(k).unwrap();
    assert_eq!(field("team_id"), "T0SANDBOX");
    assert_eq!(field("team_domain"), "sandbox");
    assert_eq!(field("channel_id"), "C0DEPLOY");
    assert_eq!(field("channel_name"), "deploy");
    assert_eq!(field("user_id"), "U0ALICE");
    assert_eq!(field("user_name"), "alice");
    assert_eq!(field("command"), "/greenlight");
    assert_eq!(field("text"), "pending now");
    assert_eq!(field("api_app_id"), "A0GREENLIGHT");
    assert_eq!(field("is_enterprise_install"), "false");
    assert_eq!(field("response_url"), outcome.response_url);
    assert_eq!(field("trigger_id"), outcome.trigger_id);
    // The slash travels percent-encoded, as in Slack's signing test vector.
    assert!(req.body.contains("command=%2Fgreenlight"), "{}", req.body);

    // The JSON ack is shown to Alice alone.
    let Some(CommandResponse::Ephemeral(e)) = &outcome.response else {
        panic!("an ephemeral response: {:?}", outcome.response);
    };
    assert_eq!(
        (e.channel.as_str(), e.user.as_str(), e.text.as_str()),
        ("C0DEPLOY", "U0ALICE", "2 pending")
    );
    assert!(e.blocks[0]["block_id"].is_string());
    assert_eq!(sb.ephemerals("C0DEPLOY", "U0ALICE"), vec![e.clone()]);
    assert!(sb.messages("C0DEPLOY").is_empty());
    assert_eq!(sb.deliveries()[0].kind, "slash_command");
}

#[tokio::test]
async fn plain_text_empty_and_in_channel_acks_show_as_slack_shows_them() {
    let (sb, app) = with_fake_app().await;
    let reply = |body: String, content_type| Reply {
        body,
        content_type,
        ..Reply::default()
    };
    app.reply("/slack/commands", reply("On it".into(), "text/plain"));
    let out = sb
        .slash_command("U0BOB", "C0OPS", "/greenlight", "help")
        .await
        .unwrap();
    assert!(matches!(&out.response, Some(CommandResponse::Ephemeral(e)) if e.text == "On it"));

    app.reply("/slack/commands", reply(String::new(), "text/plain"));
    let out = sb
        .slash_command("U0BOB", "C0OPS", "/greenlight", "")
        .await
        .unwrap();
    assert!(out.acked() && out.response.is_none());

    app.reply(
        "/slack/commands",
        reply(
            json!({"response_type": "in_channel", "text": "Deploy queued"}).to_string(),
            "application/json",
        ),
    );
    let out = sb
        .slash_command("U0BOB", "C0OPS", "/greenlight", "deploy api")
        .await
        .unwrap();
    let Some(CommandResponse::InChannel(m)) = &out.response else {
        panic!("{:?}", out.response);
    };
    assert_eq!(m.text, "Deploy queued");
    // Slack shares the invocation too, then the answer.
    let shown: Vec<(String, String)> = sb
        .messages("C0OPS")
        .into_iter()
        .map(|m| (m.user, m.text))
        .collect();
    assert_eq!(
        shown,
        [
            ("U0BOB".to_owned(), "/greenlight deploy api".to_owned()),
            ("U0GREENBOT".to_owned(), "Deploy queued".to_owned())
        ]
    );
}

#[tokio::test]
async fn no_ack_in_time_shows_slacks_error_line_to_the_person() {
    let mut config = SandboxConfig::for_tests().with_signing_secret("s3cret");
    config.ack_timeout = Duration::from_millis(200);
    let sb = start_with(config).await;
    let app = fake_app("s3cret").await;
    sb.set_app_base_url(&app.base);
    app.reply(
        "/slack/commands",
        Reply {
            delay: Duration::from_millis(600),
            ..Reply::default()
        },
    );
    let out = sb
        .slash_command("U0CAROL", "C0DEPLOY", "/greenlight", "pending")
        .await
        .unwrap();
    assert!(out.ack.timed_out && !out.acked());
    let Some(CommandResponse::Ephemeral(e)) = &out.response else {
        panic!("{:?}", out.response);
    };
    assert_eq!(
        e.text,
        "/greenlight failed with the error \"operation_timeout\""
    );

    app.reply(
        "/slack/commands",
        Reply {
            status: 500,
            ..Reply::default()
        },
    );
    let out = sb
        .slash_command("U0CAROL", "C0DEPLOY", "/greenlight", "pending")
        .await
        .unwrap();
    assert_eq!(out.ack.status, 500);
    assert!(
        matches!(&out.response, Some(CommandResponse::Ephemeral(e)) if e.text.contains("dispatch_failed"))
    );
}

#[tokio::test]
async fn over_socket_mode_a_command_is_a_slash_commands_envelope_and_the_ack_payload_answers() {
    let sb = start().await;
    let (mut ws, _) = connect(&sb).await;
    let running = {
        let sb = sb.clone();
        tokio::spawn(async move {
            sb.slash_command("U0DAVE", "C0PAYMENTS", "/greenlight", "show req_1")
                .await
        })
    };
    let envelope = next_json(&mut ws).await;
    assert_eq!(envelope["type"], "slash_commands");
    assert_eq!(envelope["accepts_response_payload"], true);
    let p = &envelope["payload"];
    assert_eq!(p["command"], "/greenlight");
    assert_eq!(p["text"], "show req_1");
    assert_eq!(p["user_id"], "U0DAVE");
    assert_eq!(p["channel_id"], "C0PAYMENTS");
    assert_eq!(p["is_enterprise_install"], "false");
    assert!(p["response_url"].is_string() && p["trigger_id"].is_string());
    ack(
        &mut ws,
        &envelope,
        Some(json!({"text": "req_1 is pending"})),
    )
    .await;
    let out = running.await.unwrap().unwrap();
    assert_eq!(
        (out.ack.transport, out.ack.status),
        (Transport::SocketMode, 200)
    );
    assert_eq!(out.ack.json(), Some(json!({"text": "req_1 is pending"})));
    assert_eq!(
        sb.ephemerals("C0PAYMENTS", "U0DAVE")[0].text,
        "req_1 is pending"
    );
}

#[tokio::test]
async fn response_url_answers_a_command_later() {
    let (sb, _app) = with_fake_app().await;
    let out = sb
        .slash_command("U0ERIN", "C0DEPLOY", "/greenlight", "pending")
        .await
        .unwrap();
    let post = |body: Value| {
        let url = out.response_url.clone();
        async move {
            client()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post(json!({"text": "Nothing pending"})).await, 200);
    assert_eq!(
        sb.ephemerals("C0DEPLOY", "U0ERIN")[0].text,
        "Nothing pending"
    );
    // There is no original message to replace for a command: the answer is simply posted.
    assert_eq!(
        post(json!({"text": "Still nothing", "replace_original": true})).await,
        200
    );
    assert_eq!(sb.ephemerals("C0DEPLOY", "U0ERIN").len(), 2);
    assert_eq!(
        post(json!({"text": "For all", "response_type": "in_channel"})).await,
        200
    );
    assert_eq!(sb.messages("C0DEPLOY")[0].text, "For all");
}

#[tokio::test]
async fn bad_commands_are_refused_before_anything_is_sent() {
    let (sb, _app) = with_fake_app().await;
    for (user, channel, command) in [
        ("U0ALICE", "C0DEPLOY", "greenlight"),
        ("U0ALICE", "C0DEPLOY", "/green light"),
        ("U0NOPE", "C0DEPLOY", "/greenlight"),
        ("U0ALICE", "#nowhere", "/greenlight"),
    ] {
        let err = sb
            .slash_command(user, channel, command, "")
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SandboxError::InvalidCommand(_)
                    | SandboxError::UnknownUser(_)
                    | SandboxError::UnknownChannel(_)
            ),
            "{err}"
        );
    }
    assert!(sb.deliveries().is_empty());
}

#[tokio::test]
async fn the_control_api_runs_commands_and_posts_peoples_messages() {
    let (sb, mut app) = with_fake_app().await;
    app.reply(
        "/slack/commands",
        Reply {
            body: "ok".into(),
            ..Reply::default()
        },
    );
    let (status, out) = control(
        &sb,
        "POST",
        "command",
        json!({"user": "U0FRANK", "channel": "deploy", "command": "/greenlight", "text": "pending"}),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        (out["status"].as_u64(), out["transport"].as_str()),
        (Some(200), Some("http"))
    );
    assert_eq!(out["response"]["kind"], "ephemeral");
    assert_eq!(out["response"]["message"]["text"], "ok");
    assert!(out["response_url"].is_string());
    assert_eq!(
        app.next().await.field("user_id").as_deref(),
        Some("U0FRANK")
    );
    let (status, bad) = control(
        &sb,
        "POST",
        "command",
        json!({"user": "U0FRANK", "channel": "deploy", "command": "nope"}),
    )
    .await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("invalid_command"))
    );

    let (status, m) = control(
        &sb,
        "POST",
        "messages",
        json!({"channel": "#deploy", "user": "U0FRANK", "text": "shipping after lunch"}),
    )
    .await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(
        (m["user"].as_str(), m["bot_id"].as_str()),
        (Some("U0FRANK"), Some(""))
    );
    // History shows a person's message without bot or app ids; the bot cannot edit it.
    let h = api(&sb, "conversations.history", json!({"channel": "C0DEPLOY"})).await;
    let top = &h.body["messages"][0];
    assert_eq!(top["user"], "U0FRANK");
    assert!(
        top.get("bot_id").is_none() && top.get("app_id").is_none(),
        "{top}"
    );
    let edit = api(
        &sb,
        "chat.update",
        json!({"channel": "C0DEPLOY", "ts": m["ts"], "text": "x"}),
    )
    .await;
    assert_eq!(edit.body["error"], "cant_update_message");
    assert!(sb.post_as_user("C0DEPLOY", "U0NOPE", "hi").is_err());
}
