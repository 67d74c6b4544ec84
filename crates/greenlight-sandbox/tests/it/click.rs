use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use greenlight_sandbox::{Click, SandboxConfig, SandboxError, SandboxHandle, Transport, User};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::helpers::*;

/// What the fake app answers: status, body and how long it waits first.
#[derive(Clone)]
struct Script {
    status: u16,
    body: String,
    delay: Duration,
}

struct Receiver {
    url: String,
    payloads: mpsc::UnboundedReceiver<Value>,
    script: Arc<Mutex<Script>>,
}

#[derive(Clone)]
struct AppState {
    secret: String,
    tx: mpsc::UnboundedSender<Value>,
    script: Arc<Mutex<Script>>,
}

/// A tiny app that checks the request exactly as a Slack app must (signature, content type,
/// form body) with its own HMAC code, then hands the payload to the test.
async fn receiver(secret: &str) -> Receiver {
    let (tx, payloads) = mpsc::unbounded_channel();
    let script = Arc::new(Mutex::new(Script {
        status: 200,
        body: String::new(),
        delay: Duration::ZERO,
    }));
    let state = AppState {
        secret: secret.to_owned(),
        tx,
        script: script.clone(),
    };
    let app = axum::Router::new()
        .route("/slack/interactions", post(interactions))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/slack/interactions",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url,
        payloads,
        script,
    }
}

async fn interactions(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/x-www-form-urlencoded");
    let ts: i64 = header("x-slack-request-timestamp")
        .parse()
        .expect("numeric timestamp");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - ts).abs() <= 300, "stale timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(st.secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(&body);
    let want = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    if header("x-slack-signature") != want {
        return (StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap();
    assert_eq!(fields.len(), 1);
    assert_eq!(fields[0].0, "payload");
    let payload: Value = serde_json::from_str(&fields[0].1).unwrap();
    st.tx.send(payload).unwrap();
    let script = st.script.lock().unwrap().clone();
    tokio::time::sleep(script.delay).await;
    (StatusCode::from_u16(script.status).unwrap(), script.body)
}

async fn setup() -> (SandboxHandle, Receiver) {
    let config = SandboxConfig::for_tests()
        .with_signing_secret("s3cret")
        .with_interactivity_url("http://127.0.0.1:9/unused");
    let sb = start_with(config).await;
    let rx = receiver("s3cret").await;
    sb.set_interactivity_url(rx.url.clone());
    (sb, rx)
}

#[tokio::test]
async fn a_click_is_a_signed_block_actions_post() {
    let (sb, mut rx) = setup().await;
    let ts = post_approval(&sb).await;
    rx.script.lock().unwrap().delay = Duration::from_millis(120);

    let outcome = sb
        .click(Click::new("C0DEPLOY", &ts, "approve", "U0ALICE"))
        .await
        .unwrap();
    assert_eq!(
        (outcome.status, outcome.transport, outcome.timed_out),
        (200, Transport::Http, false)
    );
    assert!(outcome.acked());
    assert!(
        outcome.latency >= Duration::from_millis(120),
        "{:?}",
        outcome.latency
    );
    assert!(outcome.latency < Duration::from_secs(3));

    let p = rx.payloads.recv().await.unwrap();
    assert_eq!(p["type"], "block_actions");
    assert_eq!(p["api_app_id"], "A0GREENLIGHT");
    assert!(p["token"].is_string());
    assert_eq!(p["team"], json!({"id": "T0SANDBOX", "domain": "sandbox"}));
    assert_eq!(
        p["user"],
        json!({"id": "U0ALICE", "username": "alice", "name": "alice", "team_id": "T0SANDBOX"})
    );
    assert_eq!(p["channel"], json!({"id": "C0DEPLOY", "name": "deploy"}));
    assert_eq!(
        p["container"],
        json!({"type": "message", "message_ts": ts, "channel_id": "C0DEPLOY", "is_ephemeral": false})
    );
    assert_eq!(p["message"]["ts"], ts.as_str());
    assert_eq!(p["message"]["bot_id"], "B0GREENBOT");
    assert_eq!(p["message"]["blocks"].as_array().map(Vec::len), Some(3));
    assert_eq!(p["state"], json!({"values": {}}));
    let action = &p["actions"][0];
    assert_eq!(action["action_id"], "approve");
    assert_eq!(action["block_id"], "decide");
    assert_eq!(action["value"], "req_1");
    assert_eq!(action["type"], "button");
    assert_eq!(action["style"], "primary");
    assert_eq!(action["text"]["text"], "Approve");
    assert!(action["action_ts"].as_str().unwrap().contains('.'));
    let trigger = p["trigger_id"].as_str().unwrap();
    assert_eq!(trigger.split('.').count(), 3);
    assert!(p["response_url"].as_str().unwrap().starts_with(&sb.url()));

    // Every click is its own payload.
    sb.click(Click::new("C0DEPLOY", &ts, "approve", "U0ALICE"))
        .await
        .unwrap();
    let again = rx.payloads.recv().await.unwrap();
    assert_ne!(again["trigger_id"], p["trigger_id"]);
    assert_eq!(sb.deliveries().len(), 2);
}

/// Who clicked, and from where: a person of another organization (Slack Connect) clicks from
/// their own workspace; on Enterprise Grid the organization is named on the team, on the
/// payload and (as Slack documents) as the person's `team_id`.
#[tokio::test]
async fn a_click_names_the_workspace_and_organization_of_who_clicked() {
    let partner = User::new("U0XAVIER", "xavier", "Xavier Xu").of_team("T0PARTNER");
    let sb = start_with(
        SandboxConfig::for_tests()
            .with_signing_secret("s3cret")
            .with_user(partner),
    )
    .await;
    let mut rx = receiver("s3cret").await;
    sb.set_interactivity_url(rx.url.clone());
    let ts = post_approval(&sb).await;
    for user in ["U0XAVIER", "U0ALICE"] {
        sb.click(Click::new("C0DEPLOY", &ts, "approve", user))
            .await
            .unwrap();
    }
    let xavier = rx.payloads.recv().await.unwrap();
    assert_eq!(xavier["user"]["team_id"], "T0PARTNER");
    assert_eq!(
        xavier["team"],
        json!({"id": "T0PARTNER", "domain": "t0partner"})
    );
    assert_eq!(xavier["enterprise"], Value::Null);
    let alice = rx.payloads.recv().await.unwrap();
    assert_eq!(alice["user"]["team_id"], "T0SANDBOX");
    assert_eq!(alice["team"]["id"], "T0SANDBOX");
    let info = api(&sb, "users.info", json!({"user": "U0XAVIER"})).await;
    assert_eq!(info.body["user"]["team_id"], "T0PARTNER");
    let me = api(&sb, "auth.test", json!({})).await;
    assert_eq!(me.body["team_id"], "T0SANDBOX");
    assert!(me.body.get("enterprise_id").is_none(), "{}", me.body);

    let grid = start_with(
        SandboxConfig::for_tests()
            .with_signing_secret("s3cret")
            .with_enterprise("E0SANDBOX", "Sandbox Org"),
    )
    .await;
    let mut rx = receiver("s3cret").await;
    grid.set_interactivity_url(rx.url.clone());
    let me = api(&grid, "auth.test", json!({})).await;
    assert_eq!(
        (&me.body["team_id"], &me.body["enterprise_id"]),
        (&json!("T0SANDBOX"), &json!("E0SANDBOX"))
    );
    let ts = post_approval(&grid).await;
    grid.click(Click::new("C0DEPLOY", &ts, "approve", "U0ALICE"))
        .await
        .unwrap();
    let p = rx.payloads.recv().await.unwrap();
    assert_eq!(p["user"]["team_id"], "E0SANDBOX");
    assert_eq!(
        p["team"],
        json!({"id": "T0SANDBOX", "domain": "sandbox", "enterprise_id": "E0SANDBOX",
               "enterprise_name": "Sandbox Org"})
    );
    assert_eq!(
        p["enterprise"],
        json!({"id": "E0SANDBOX", "name": "Sandbox Org"})
    );
}

#[tokio::test]
async fn click_reports_the_apps_status_and_slow_acks() {
    let config = SandboxConfig::for_tests().with_signing_secret("s3cret");
    let sb = start_with(SandboxConfig {
        ack_timeout: Duration::from_millis(300),
        ..config
    })
    .await;
    let rx = receiver("s3cret").await;
    sb.set_interactivity_url(rx.url.clone());
    let ts = post_approval(&sb).await;

    rx.script.lock().unwrap().status = 500;
    let failed = sb
        .click(Click::new("C0DEPLOY", &ts, "deny", "U0BOB"))
        .await
        .unwrap();
    assert_eq!(failed.status, 500);
    assert!(!failed.acked());

    *rx.script.lock().unwrap() = Script {
        status: 200,
        body: String::new(),
        delay: Duration::from_millis(600),
    };
    let slow = sb
        .click(Click::new("C0DEPLOY", &ts, "deny", "U0BOB"))
        .await
        .unwrap();
    assert!(slow.timed_out);
    assert_eq!(slow.status, 0);
    assert!(slow.latency >= Duration::from_millis(300));

    // A wrong secret is caught by the app's own check.
    let other = start_with(SandboxConfig::for_tests().with_signing_secret("wrong")).await;
    other.set_interactivity_url(rx.url.clone());
    let ts = post_approval(&other).await;
    let rejected = other
        .click(Click::new("C0DEPLOY", &ts, "approve", "U0BOB"))
        .await
        .unwrap();
    assert_eq!(
        (rejected.status, rejected.body.as_str()),
        (401, "bad signature")
    );
}

#[tokio::test]
async fn click_refuses_what_does_not_exist() {
    let (sb, _rx) = setup().await;
    let ts = post_approval(&sb).await;
    let err = |r: Result<_, SandboxError>| r.err().map(|e| e.code());
    assert_eq!(
        err(sb
            .click(Click::new("C0DEPLOY", "1.000001", "approve", "U0ALICE"))
            .await),
        Some("message_not_found")
    );
    assert_eq!(
        err(sb
            .click(Click::new("C0DEPLOY", &ts, "launch", "U0ALICE"))
            .await),
        Some("button_not_found")
    );
    assert_eq!(
        err(sb
            .click(Click::new("C0DEPLOY", &ts, "approve", "U0MALLORY"))
            .await),
        Some("unknown_user")
    );
    assert_eq!(
        err(sb
            .click(Click::new("C0NOPE", &ts, "approve", "U0ALICE"))
            .await),
        Some("unknown_channel")
    );
    sb.set_interactivity_url("http://127.0.0.1:9/down");
    assert_eq!(
        err(sb
            .click(Click::new("C0DEPLOY", &ts, "approve", "U0ALICE"))
            .await),
        Some("delivery_failed")
    );
}

#[tokio::test]
async fn trigger_ids_open_one_modal_within_their_ttl() {
    let config = SandboxConfig::for_tests().with_signing_secret("s3cret");
    let sb = start_with(SandboxConfig {
        trigger_ttl: Duration::from_millis(300),
        ..config
    })
    .await;
    let mut rx = receiver("s3cret").await;
    sb.set_interactivity_url(rx.url.clone());
    let ts = post_approval(&sb).await;
    let view = json!({"type": "modal", "callback_id": "deny_reason", "private_metadata": "req_1",
        "title": {"type": "plain_text", "text": "Deny"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "blocks": [{"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Why?"},
                    "element": {"type": "plain_text_input", "action_id": "text", "multiline": true}}]});

    sb.click(Click::new("C0DEPLOY", &ts, "deny", "U0CAROL"))
        .await
        .unwrap();
    let trigger = rx.payloads.recv().await.unwrap()["trigger_id"].clone();
    let opened = api(
        &sb,
        "views.open",
        json!({"trigger_id": trigger, "view": view}),
    )
    .await;
    assert_eq!(opened.body["ok"], true, "{}", opened.body);
    let view_id = opened.body["view"]["id"].as_str().unwrap().to_owned();
    assert!(opened.body["view"]["hash"].is_string());
    assert_eq!(opened.body["view"]["callback_id"], "deny_reason");
    assert_eq!(opened.body["view"]["private_metadata"], "req_1");
    assert_eq!(opened.body["view"]["state"], json!({"values": {}}));
    let reused = api(
        &sb,
        "views.open",
        json!({"trigger_id": trigger, "view": view}),
    )
    .await;
    assert_eq!(reused.body["error"], "exchanged_trigger_id");
    assert_eq!(sb.views()[0].user, "U0CAROL");

    sb.click(Click::new("C0DEPLOY", &ts, "deny", "U0CAROL"))
        .await
        .unwrap();
    let late = rx.payloads.recv().await.unwrap()["trigger_id"].clone();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let expired = api(&sb, "views.open", json!({"trigger_id": late, "view": view})).await;
    assert_eq!(expired.body["error"], "expired_trigger_id");

    // The modal is submitted: errors keep it open, an empty ack closes it.
    rx.script.lock().unwrap().body =
        r#"{"response_action":"errors","errors":{"reason":"Say why"}}"#.into();
    let first = sb
        .submit_view(&view_id, "U0CAROL", [("reason", "")])
        .await
        .unwrap();
    assert_eq!(first.json().unwrap()["response_action"], "errors");
    let p = rx.payloads.recv().await.unwrap();
    assert_eq!(p["type"], "view_submission");
    assert_eq!(p["view"]["id"], view_id.as_str());
    assert_eq!(p["view"]["private_metadata"], "req_1");
    assert_eq!(
        p["view"]["state"]["values"]["reason"]["text"],
        json!({"type": "plain_text_input", "value": ""})
    );
    assert_eq!(sb.views()[0].errors, json!({"reason": "Say why"}));
    assert!(sb.views()[0].open);

    rx.script.lock().unwrap().body = String::new();
    sb.submit_view(&view_id, "U0CAROL", [("reason", "too risky")])
        .await
        .unwrap();
    let p = rx.payloads.recv().await.unwrap();
    assert_eq!(
        p["view"]["state"]["values"]["reason"]["text"]["value"],
        "too risky"
    );
    assert!(!sb.views()[0].open);
    assert!(
        sb.submit_view(&view_id, "U0CAROL", [("reason", "x")])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn response_url_replaces_the_message_or_answers_ephemerally() {
    let (sb, mut rx) = setup().await;
    let ts = post_approval(&sb).await;
    sb.click(Click::new("C0DEPLOY", &ts, "approve", "U0DAVE"))
        .await
        .unwrap();
    let url = rx.payloads.recv().await.unwrap()["response_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = client();
    let r = http
        .post(&url)
        .json(&json!({"text": "Only SRE may approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        sb.ephemerals("C0DEPLOY", "U0DAVE")[0].text,
        "Only SRE may approve"
    );
    http.post(&url)
        .json(&json!({"replace_original": true, "text": "Approved"}))
        .send()
        .await
        .unwrap();
    let m = sb.message("C0DEPLOY", &ts).unwrap();
    assert_eq!(
        (m.text.as_str(), m.blocks.len(), m.edits),
        ("Approved", 0, 1)
    );
    for _ in 0..3 {
        http.post(&url)
            .json(&json!({"text": "x"}))
            .send()
            .await
            .unwrap();
    }
    let sixth = http
        .post(&url)
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sixth.status(), 404);
}

#[tokio::test]
async fn clicks_through_the_control_api() {
    let (sb, mut rx) = setup().await;
    let ts = post_approval(&sb).await;
    let res: Value = client()
        .post(format!("{}/_sandbox/click", sb.url()))
        .json(&json!({"channel": "C0DEPLOY", "message_ts": ts, "action_id": "approve", "user": "U0ERIN"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["status"], 200);
    assert!(res["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(rx.payloads.recv().await.unwrap()["user"]["id"], "U0ERIN");
    let missing = client()
        .post(format!("{}/_sandbox/click", sb.url()))
        .json(&json!({"channel": "C0DEPLOY", "message_ts": ts, "action_id": "nope", "user": "U0ERIN"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "button_not_found");
}

/// conversations.open gives the app's direct message with one person; a message posted there
/// is shown to that person (the state lists it), and a click on it is a block_actions POST
/// from a `directmessage` channel, as Slack sends it.
#[tokio::test]
async fn a_direct_message_opens_holds_buttons_and_is_clicked_like_a_channel_message() {
    let (sb, mut rx) = setup().await;
    let missing = api(&sb, "conversations.open", json!({})).await;
    assert_eq!(missing.body["error"], "users_list_not_supplied");
    let nobody = api(&sb, "conversations.open", json!({"users": "U0NOBODY"})).await;
    assert_eq!(nobody.body["error"], "user_not_found");
    let group = api(&sb, "conversations.open", json!({"users": "U0ALICE,U0BOB"})).await;
    assert_eq!(group.body["error"], "method_not_supported_for_channel_type");

    let opened = api(&sb, "conversations.open", json!({"users": "U0ALICE"})).await;
    assert_eq!(opened.body["ok"], true, "{}", opened.body);
    let dm = opened.body["channel"]["id"].as_str().unwrap().to_owned();
    assert_eq!(dm, sb.dm_channel("U0ALICE"));
    assert_eq!(opened.body["already_open"], false);
    let again = api(
        &sb,
        "conversations.open",
        json!({"channel": dm, "return_im": true}),
    )
    .await;
    assert_eq!(again.body["already_open"], true);
    assert_eq!(again.body["channel"]["is_im"], true);
    assert_eq!(again.body["channel"]["user"], "U0ALICE");
    let info = api(&sb, "conversations.info", json!({"channel": dm})).await;
    assert_eq!(info.body["channel"]["is_im"], true, "{}", info.body);

    let posted = api(
        &sb,
        "chat.postMessage",
        json!({"channel": dm, "text": "Deploy api to prod", "blocks": approval_blocks()}),
    )
    .await;
    assert_eq!(posted.body["ok"], true, "{}", posted.body);
    let ts = posted.body["ts"].as_str().unwrap().to_owned();
    assert_eq!(sb.messages(&dm).len(), 1);
    let (_, state) = control(&sb, "GET", "state", json!(null)).await;
    assert!(
        state["dms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == dm.as_str() && d["user"] == "U0ALICE"),
        "{state}"
    );

    let outcome = sb
        .click(Click::new(&dm, &ts, "approve", "U0ALICE"))
        .await
        .unwrap();
    assert!(outcome.acked());
    let p = rx.payloads.recv().await.unwrap();
    assert_eq!(p["channel"]["id"], dm.as_str());
    assert_eq!(p["channel"]["name"], "directmessage");
    assert_eq!(p["container"]["channel_id"], dm.as_str());
    assert_eq!(p["actions"][0]["value"], "req_1");

    let updated = api(
        &sb,
        "chat.update",
        json!({"channel": dm, "ts": ts, "text": "Approved", "blocks": []}),
    )
    .await;
    assert_eq!(updated.body["ok"], true, "{}", updated.body);
}

/// `view.state.values` for each input element type, as Slack documents it: `value` for text and
/// number inputs, `selected_option` (the whole option) for a static select, `selected_options`
/// for checkboxes; an input nobody touched holds its initial value; a value the element does
/// not offer cannot be submitted.
#[tokio::test]
async fn a_submission_reports_each_input_types_state_and_initial_values() {
    let (sb, mut rx) = setup().await;
    let ts = post_approval(&sb).await;
    let option =
        |v: &str| json!({"text": {"type": "plain_text", "text": v.to_uppercase()}, "value": v});
    let input = |id: &str, element: Value| json!({"type": "input", "block_id": id, "label": {"type": "plain_text", "text": id}, "element": element});
    let view = json!({"type": "modal", "callback_id": "answers", "private_metadata": "req_1",
    "title": {"type": "plain_text", "text": "Answer"},
    "submit": {"type": "plain_text", "text": "Answer"},
    "blocks": [
        input("t", json!({"type": "plain_text_input", "action_id": "a", "initial_value": "hi"})),
        input("n", json!({"type": "number_input", "action_id": "a", "is_decimal_allowed": true, "initial_value": "2"})),
        input("s", json!({"type": "static_select", "action_id": "a", "options": [option("x"), option("y")],
                          "initial_option": option("x")})),
        input("c", json!({"type": "checkboxes", "action_id": "a", "options": [option("on"), option("off")]})),
    ]});
    sb.click(Click::new("C0DEPLOY", &ts, "approve", "U0ALICE"))
        .await
        .unwrap();
    let trigger = rx.payloads.recv().await.unwrap()["trigger_id"].clone();
    let opened = api(
        &sb,
        "views.open",
        json!({"trigger_id": trigger, "view": view}),
    )
    .await;
    assert_eq!(opened.body["ok"], true, "{}", opened.body);
    let view_id = opened.body["view"]["id"].as_str().unwrap().to_owned();

    // Nothing touched: the initial values.
    sb.submit_view_values(&view_id, "U0ALICE", Vec::<(String, Value)>::new())
        .await
        .unwrap();
    let p = rx.payloads.recv().await.unwrap();
    let values = &p["view"]["state"]["values"];
    assert_eq!(
        values["t"]["a"],
        json!({"type": "plain_text_input", "value": "hi"})
    );
    assert_eq!(
        values["n"]["a"],
        json!({"type": "number_input", "value": "2"})
    );
    assert_eq!(
        values["s"]["a"],
        json!({"type": "static_select", "selected_option": option("x")})
    );
    assert_eq!(
        values["c"]["a"],
        json!({"type": "checkboxes", "selected_options": []})
    );

    // The app's ack closed it; open another and fill it in.
    sb.click(Click::new("C0DEPLOY", &ts, "approve", "U0ALICE"))
        .await
        .unwrap();
    let trigger = rx.payloads.recv().await.unwrap()["trigger_id"].clone();
    let opened = api(
        &sb,
        "views.open",
        json!({"trigger_id": trigger, "view": view}),
    )
    .await;
    let view_id = opened.body["view"]["id"].as_str().unwrap().to_owned();
    let refused = sb
        .submit_view_values(&view_id, "U0ALICE", [("s", json!("z"))])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "invalid_input");
    sb.submit_view_values(
        &view_id,
        "U0ALICE",
        [
            ("n", json!("7.5")),
            ("s", json!("y")),
            ("c", json!(["on", "off"])),
        ],
    )
    .await
    .unwrap();
    let p = rx.payloads.recv().await.unwrap();
    let values = &p["view"]["state"]["values"];
    assert_eq!(values["n"]["a"]["value"], "7.5");
    assert_eq!(values["s"]["a"]["selected_option"], option("y"));
    assert_eq!(
        values["c"]["a"]["selected_options"],
        json!([option("on"), option("off")])
    );
}
