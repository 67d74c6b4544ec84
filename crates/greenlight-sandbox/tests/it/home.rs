//! App Home: views.publish, app_home_opened events (HTTP and Socket Mode), clicks in the Home
//! tab, and where events and commands are sent.

use greenlight_sandbox::{HomeClick, SandboxConfig, SandboxError, SandboxEvent, Transport};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::socket_mode::{ack, connect, next_json};

/// A Home tab listing two pending requests, each with its own Approve button.
fn home_view() -> Value {
    let row = |id: &str, title: &str| {
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*{title}*")},
            "accessory": {"type": "button", "action_id": "approve", "value": id, "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"}}})
    };
    json!({"type": "home", "callback_id": "greenlight_home", "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": "Pending approvals"}},
        row("req_1", "Deploy api"),
        row("req_2", "Refund 1042"),
    ]})
}

async fn publish(sb: &greenlight_sandbox::SandboxHandle, user: &str) -> Value {
    let a = api(
        sb,
        "views.publish",
        json!({"user_id": user, "view": home_view()}),
    )
    .await;
    assert_eq!(a.body["ok"], true, "{}", a.body);
    a.body
}

#[tokio::test]
async fn views_publish_stores_a_home_tab_per_user_like_slack() {
    let sb = start().await;
    let first = publish(&sb, "U0ALICE").await;
    let view = &first["view"];
    assert_eq!(view["type"], "home");
    assert_eq!(view["team_id"], "T0SANDBOX");
    assert_eq!(view["app_id"], "A0GREENLIGHT");
    assert_eq!(view["bot_id"], "B0GREENBOT");
    assert_eq!(view["callback_id"], "greenlight_home");
    assert_eq!(view["state"], json!({"values": {}}));
    assert_eq!(view["root_view_id"], view["id"]);
    assert!(view["close"].is_null() && view["submit"].is_null());
    // Slack fills in block ids.
    assert!(view["blocks"][1]["block_id"].is_string());

    let stored = sb.home_view("U0ALICE").expect("published");
    assert_eq!(stored.id, view["id"].as_str().unwrap());
    assert_eq!(stored.hash, view["hash"].as_str().unwrap());
    assert!(sb.home_view("U0BOB").is_none());

    // A second publish keeps the id, changes the hash; a stale hash is refused.
    let second = publish(&sb, "U0ALICE").await;
    assert_eq!(second["view"]["id"], view["id"]);
    let stale = api(
        &sb,
        "views.publish",
        json!({"user_id": "U0ALICE", "view": home_view(), "hash": "1.stale"}),
    )
    .await;
    assert_eq!(stale.body["error"], "hash_conflict");
    let fresh = api(
        &sb,
        "views.publish",
        json!({"user_id": "U0ALICE", "view": home_view(), "hash": second["view"]["hash"]}),
    )
    .await;
    assert_eq!(fresh.body["ok"], true, "{}", fresh.body);

    let nobody = api(
        &sb,
        "views.publish",
        json!({"user_id": "U0NOPE", "view": home_view()}),
    )
    .await;
    assert_eq!(nobody.body["error"], "invalid_arguments");
    assert_eq!(
        nobody.body["response_metadata"]["messages"][0],
        "invalid `user_id`"
    );
    let modal = api(
        &sb,
        "views.publish",
        json!({"user_id": "U0BOB", "view": {"type": "modal", "title": {"type": "plain_text", "text": "x"}, "blocks": []}}),
    )
    .await;
    assert_eq!(modal.body["error"], "invalid_arguments", "{}", modal.body);
    let missing = api(&sb, "views.publish", json!({"user_id": "U0BOB"})).await;
    assert_eq!(missing.body["error"], "invalid_arguments");
}

#[tokio::test]
async fn opening_home_posts_a_signed_app_home_opened_event_to_the_events_url() {
    let (sb, mut app) = with_fake_app().await;
    let outcome = sb.open_home("U0BOB").await.unwrap();
    assert!(outcome.acked());
    assert_eq!(outcome.transport, Transport::Http);

    let req = app.next().await;
    assert_eq!(req.path, "/slack/events");
    assert_eq!(req.content_type, "application/json");
    assert!(req.signed);
    let p = req.json();
    assert_eq!(p["type"], "event_callback");
    assert_eq!(p["team_id"], "T0SANDBOX");
    assert_eq!(p["api_app_id"], "A0GREENLIGHT");
    assert!(p["token"].is_string());
    assert!(p["event_id"].as_str().unwrap().starts_with("Ev"));
    assert!(p["event_time"].is_u64());
    assert_eq!(p["authorizations"][0]["user_id"], "U0GREENBOT");
    assert_eq!(p["authorizations"][0]["is_bot"], true);
    let e = &p["event"];
    assert_eq!(e["type"], "app_home_opened");
    assert_eq!(e["user"], "U0BOB");
    assert_eq!(e["channel"], "D0BOB");
    assert_eq!(sb.dm_channel("U0BOB"), "D0BOB");
    assert_eq!(e["tab"], "home");
    assert!(e["event_ts"].as_str().unwrap().contains('.'));
    // Before any publish there is no view, as in Slack.
    assert!(e.get("view").is_none(), "{e}");

    publish(&sb, "U0BOB").await;
    sb.open_home("U0BOB").await.unwrap();
    let again = app.next().await.json();
    assert_ne!(again["event_id"], p["event_id"]);
    assert_eq!(again["event"]["view"]["type"], "home");
    assert_eq!(
        again["event"]["view"]["id"].as_str(),
        Some(sb.home_view("U0BOB").unwrap().id.as_str())
    );
    let delivered = sb.deliveries();
    assert_eq!(delivered[0].kind, "app_home_opened");
    assert_eq!(delivered[0].user, "U0BOB");

    assert!(matches!(
        sb.open_home("U0NOPE").await,
        Err(SandboxError::UnknownUser(_))
    ));
}

#[tokio::test]
async fn over_socket_mode_the_event_is_an_events_api_envelope() {
    let sb = start().await;
    let (mut ws, _) = connect(&sb).await;
    let opening = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.open_home("U0CAROL").await })
    };
    let envelope = next_json(&mut ws).await;
    assert_eq!(envelope["type"], "events_api");
    assert_eq!(envelope["accepts_response_payload"], false);
    assert_eq!(envelope["retry_attempt"], 0);
    assert_eq!(envelope["retry_reason"], "");
    assert_eq!(envelope["payload"]["type"], "event_callback");
    assert_eq!(envelope["payload"]["event"]["type"], "app_home_opened");
    assert_eq!(envelope["payload"]["event"]["user"], "U0CAROL");
    ack(&mut ws, &envelope, None).await;
    let outcome = opening.await.unwrap().unwrap();
    assert_eq!(
        (outcome.transport, outcome.status),
        (Transport::SocketMode, 200)
    );
}

#[tokio::test]
async fn a_click_in_the_home_tab_is_block_actions_with_the_view_as_container() {
    let (sb, mut app) = with_fake_app().await;
    publish(&sb, "U0DAVE").await;
    let view_id = sb.home_view("U0DAVE").unwrap().id;

    let outcome = sb
        .click_home(HomeClick::new("U0DAVE", "approve").with_value("req_2"))
        .await
        .unwrap();
    assert!(outcome.acked());
    let req = app.next().await;
    assert_eq!(req.path, "/slack/interactions");
    assert!(req.signed);
    let p: Value = serde_json::from_str(&req.field("payload").unwrap()).unwrap();
    assert_eq!(p["type"], "block_actions");
    assert_eq!(p["container"], json!({"type": "view", "view_id": view_id}));
    assert_eq!(p["view"]["id"], view_id.as_str());
    assert_eq!(p["view"]["type"], "home");
    assert!(p["view"]["blocks"].as_array().is_some_and(|b| b.len() == 3));
    assert_eq!(p["user"]["id"], "U0DAVE");
    assert_eq!(p["team"]["id"], "T0SANDBOX");
    assert_eq!(p["api_app_id"], "A0GREENLIGHT");
    assert!(p["trigger_id"].is_string() && p["token"].is_string());
    let action = &p["actions"][0];
    assert_eq!(action["action_id"], "approve");
    assert_eq!(action["value"], "req_2");
    assert_eq!(action["type"], "button");
    assert!(action["block_id"].is_string() && action["action_ts"].is_string());
    // Views have no channel, message or response_url.
    for absent in ["channel", "message", "response_url"] {
        assert!(p.get(absent).is_none(), "{absent} in {p}");
    }
    // The trigger opens a modal, as from any click.
    let opened = api(
        &sb,
        "views.open",
        json!({"trigger_id": p["trigger_id"], "view": {"type": "modal",
            "title": {"type": "plain_text", "text": "Why?"}, "blocks": []}}),
    )
    .await;
    assert_eq!(opened.body["ok"], true, "{}", opened.body);

    assert!(matches!(
        sb.click_home(HomeClick::new("U0DAVE", "approve").with_value("req_9"))
            .await,
        Err(SandboxError::HomeButtonNotFound { .. })
    ));
    assert!(matches!(
        sb.click_home(HomeClick::new("U0ERIN", "approve")).await,
        Err(SandboxError::NoHomeView(_))
    ));
}

#[tokio::test]
async fn events_and_commands_urls_follow_the_interactivity_url_unless_set() {
    let sb = start_with(
        SandboxConfig::for_tests()
            .with_interactivity_url("http://127.0.0.1:8080/slack/interactions"),
    )
    .await;
    assert_eq!(sb.events_url(), "http://127.0.0.1:8080/slack/events");
    assert_eq!(sb.commands_url(), "http://127.0.0.1:8080/slack/commands");
    // greenlight dev learns its port late and sets only the interactivity URL.
    sb.set_interactivity_url("http://127.0.0.1:9123/hooks/slack/interactions");
    assert_eq!(sb.events_url(), "http://127.0.0.1:9123/slack/events");
    sb.set_events_url("http://127.0.0.1:7000/events");
    sb.set_interactivity_url("http://127.0.0.1:9999/slack/interactions");
    assert_eq!(sb.events_url(), "http://127.0.0.1:7000/events");
    assert_eq!(sb.commands_url(), "http://127.0.0.1:9999/slack/commands");

    sb.set_app_base_url("http://127.0.0.1:5000/");
    assert_eq!(
        sb.interactivity_url(),
        "http://127.0.0.1:5000/slack/interactions"
    );
    assert_eq!(sb.events_url(), "http://127.0.0.1:5000/slack/events");
    assert_eq!(sb.commands_url(), "http://127.0.0.1:5000/slack/commands");

    let config = SandboxConfig::for_tests().with_commands_url("http://127.0.0.1:1/cmd");
    assert_eq!(
        start_with(config).await.commands_url(),
        "http://127.0.0.1:1/cmd"
    );

    // The control API shows and sets them; "" derives again.
    let (status, urls) = control(
        &sb,
        "PUT",
        "urls",
        json!({"interactivity_url": "http://127.0.0.1:6000/slack/interactions", "events_url": ""}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(urls["events_url"], "http://127.0.0.1:6000/slack/events");
    assert_eq!(urls["events_url_derived"], true);
    assert_eq!(urls["commands_url"], "http://127.0.0.1:5000/slack/commands");
    let (_, state) = control(&sb, "GET", "state", Value::Null).await;
    assert_eq!(state["events_url"], "http://127.0.0.1:6000/slack/events");
}

#[tokio::test]
async fn home_routes_of_the_control_api_open_click_and_show_the_tab() {
    let (sb, mut app) = with_fake_app().await;
    let mut events = sb.subscribe();
    let (_, empty) = control(&sb, "GET", "home?user=U0ALICE", Value::Null).await;
    assert_eq!(
        empty,
        json!({"user": "U0ALICE", "channel": "D0ALICE", "view": null})
    );

    let (status, opened) = control(&sb, "POST", "home/open", json!({"user": "U0ALICE"})).await;
    assert_eq!(
        (status, opened["status"].as_u64()),
        (200, Some(200)),
        "{opened}"
    );
    assert_eq!(opened["transport"], "http");
    assert_eq!(app.next().await.path, "/slack/events");

    publish(&sb, "U0ALICE").await;
    let published = loop {
        if let SandboxEvent::HomeViewPublished(v) = events.recv().await.unwrap() {
            break v;
        }
    };
    assert_eq!(published.user, "U0ALICE");
    let (_, shown) = control(&sb, "GET", "home?user=U0ALICE", Value::Null).await;
    assert_eq!(shown["view"]["id"], published.id.as_str());

    let (status, clicked) = control(
        &sb,
        "POST",
        "home/click",
        json!({"user": "U0ALICE", "action_id": "approve", "value": "req_1"}),
    )
    .await;
    assert_eq!(status, 200, "{clicked}");
    assert!(clicked["latency_ms"].is_number());
    let p: Value = serde_json::from_str(&app.next().await.field("payload").unwrap()).unwrap();
    assert_eq!(p["actions"][0]["value"], "req_1");
    let (status, missing) = control(
        &sb,
        "POST",
        "home/click",
        json!({"user": "U0BOB", "action_id": "approve"}),
    )
    .await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (400, Some("home_view_not_found"))
    );
}

#[tokio::test]
async fn the_page_has_a_home_tab_and_a_message_box_fed_by_the_event_stream() {
    let sb = start().await;
    let html = client()
        .get(sb.url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for id in [
        "id=\"hometab\"",
        "id=\"homebody\"",
        "id=\"composer\"",
        "id=\"msgbox\"",
    ] {
        assert!(html.contains(id), "{id} missing from the page");
    }
    let mut events = client()
        .get(format!("{}/_sandbox/events", sb.url()))
        .send()
        .await
        .unwrap();
    publish(&sb, "U0FRANK").await;
    let mut seen = String::new();
    while !seen.contains("home_view_published") {
        let chunk = tokio::time::timeout(5 * SECOND, events.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("\"user\":\"U0FRANK\""), "{seen}");
}
