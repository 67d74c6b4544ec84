//! Every request to the Slack endpoint is verified; bad ones are refused and change nothing.

use serde_json::json;

use crate::helpers::*;

const FORM: &str = "application/x-www-form-urlencoded";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_garbled_requests_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let id = app.create_ok("Deploy").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;
    let body = block_actions("U0ALICE", &msg.ts, "greenlight.approve", &id);
    let audit_before = app.audit().await.len();
    let now = now_unix();

    let bad_sig = vec![
        ("x-slack-request-timestamp", now.to_string()),
        (
            "x-slack-signature",
            greenlight_sandbox::sign("not-the-secret", now, body.as_bytes()),
        ),
    ];
    let stale = app.signed_headers(&body, now - 301);
    let future = app.signed_headers(&body, now + 301);
    let no_ts = vec![("x-slack-signature", app.sandbox.sign(now, body.as_bytes()))];
    let no_sig = vec![("x-slack-request-timestamp", now.to_string())];
    let garbled_ts = vec![
        ("x-slack-request-timestamp", "yesterday".to_string()),
        ("x-slack-signature", app.sandbox.sign(now, body.as_bytes())),
    ];
    let wrong_version = vec![
        ("x-slack-request-timestamp", now.to_string()),
        (
            "x-slack-signature",
            app.sandbox
                .sign(now, body.as_bytes())
                .replacen("v0=", "v1=", 1),
        ),
    ];
    let cases = [
        ("bad signature", bad_sig, "invalid_signature"),
        ("stale timestamp", stale, "stale_request"),
        ("future timestamp", future, "stale_request"),
        ("no timestamp", no_ts, "missing_signature"),
        ("no signature", no_sig, "missing_signature"),
        ("garbled timestamp", garbled_ts, "invalid_timestamp"),
        ("wrong version", wrong_version, "invalid_signature"),
        ("no headers", vec![], "missing_signature"),
    ];
    for (what, headers, code) in cases {
        let (status, text) = app.slack_post(&body, FORM, &headers).await;
        assert_eq!(status, 401, "{what}: {text}");
        let err: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(err["error"]["code"], code, "{what}");
    }

    // A correctly signed body whose bytes were altered after signing.
    let headers = app.signed_headers(&body, now);
    let tampered = body.replace("greenlight.approve", "greenlight.deny");
    assert_eq!(app.slack_post(&tampered, FORM, &headers).await.0, 401);

    // Signed but malformed: 400.
    for (garbage, code) in [
        ("payload=%7Bnot-json", "invalid_payload"),
        ("nopayload=1", "invalid_payload"),
        ("payload=%7B%7D", "invalid_payload"),
        // Who clicked is checked first.
        (
            "payload=%7B%22type%22%3A%22block_actions%22%7D",
            "invalid_user_id",
        ),
    ] {
        let (status, text) = app
            .slack_post(garbage, FORM, &app.signed_headers(garbage, now))
            .await;
        assert_eq!(status, 400, "{garbage}: {text}");
        let err: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(err["error"]["code"], code, "{garbage}");
    }

    let got = app.get(&id).await;
    assert_eq!(got["status"], "pending");
    assert!(got["decisions"].as_array().unwrap().is_empty());
    assert_eq!(app.audit().await.len(), audit_before);
    assert!(app.sandbox.ephemerals(CHANNEL, "U0ALICE").is_empty());

    // And the real click still works afterwards.
    assert!(
        app.click(&msg, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    assert_eq!(app.get(&id).await["status"], "approved");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_verification_is_answered_with_the_challenge() {
    let app = spawn_app().await;
    let body = json!({"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}).to_string();
    let (status, text) = app
        .slack_post(
            &body,
            "application/json",
            &app.signed_headers(&body, now_unix()),
        )
        .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    // Unsigned, it is refused like anything else.
    assert_eq!(app.slack_post(&body, "application/json", &[]).await.0, 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_button_for_an_unknown_request_gets_a_200_and_a_note() {
    let app = spawn_app().await;
    let now = now_unix();
    for (user, value) in [
        ("U0ERIN", "req_01JD3K6Z7Q8R9S0T1V2W3X4Y5Z"),
        ("U0DAVE", "not-an-id"),
    ] {
        let body = block_actions(user, "1700000000.000100", "greenlight.approve", value);
        let (status, _) = app
            .slack_post(&body, FORM, &app.signed_headers(&body, now))
            .await;
        assert_eq!(status, 200);
        let note = app
            .sandbox
            .wait_until(WAIT, |sb| sb.ephemerals(CHANNEL, user).into_iter().next())
            .await
            .expect("ephemeral");
        assert!(
            note.text.contains("does not know this request"),
            "{}",
            note.text
        );
    }
    assert!(app.audit().await.is_empty());
    app.stop().await;
}

#[test]
fn the_sandbox_and_the_product_sign_alike_and_match_slacks_vector() {
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    assert_eq!(
        greenlight_sandbox::sign(secret, 1_531_420_618, body),
        expected
    );
    assert_eq!(
        greenlight::slack::signature::sign(secret.as_bytes(), "1531420618", body),
        expected
    );
}

/// `now - ts` overflows for these timestamps: the answer is a plain 401, not a panic in the
/// handler (a dropped connection) and not an accepted request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_that_overflow_the_window_check_are_refused_cleanly() {
    let app = spawn_app().await;
    let id = app.create_ok("Deploy").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;
    let body = block_actions("U0ALICE", &msg.ts, "greenlight.approve", &id);
    let audit_before = app.audit().await.len();
    for ts in [-9_223_372_035_058_666_394, i64::MIN, i64::MAX, i64::MIN + 1] {
        let (status, text) = app
            .slack_post(&body, FORM, &app.signed_headers(&body, ts))
            .await;
        assert_eq!(status, 401, "{ts}: {text}");
        let err: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(err["error"]["code"], "stale_request", "{ts}");
    }
    assert_eq!(app.get(&id).await["status"], "pending");
    assert_eq!(app.audit().await.len(), audit_before);
    app.stop().await;
}

/// `block_actions` with its JSON changed by `edit` (a user or team Slack would never send).
fn edited_click(body: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let form: Vec<(String, String)> = serde_urlencoded::from_str(body).unwrap();
    let mut payload: serde_json::Value = serde_json::from_str(&form[0].1).unwrap();
    edit(&mut payload);
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

/// A signed click must say who clicked: an empty or malformed user id is not a voter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_without_a_well_formed_user_or_team_is_refused_and_counts_for_nothing() {
    let app = spawn_app().await;
    let id = app.create_ok("Deploy").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;
    let click = block_actions("U0ALICE", &msg.ts, "greenlight.approve", &id);
    let audit_before = app.audit().await.len();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "empty user id",
            edited_click(&click, |p| p["user"]["id"] = json!("")),
            "invalid_user_id",
        ),
        (
            "no user",
            edited_click(&click, |p| {
                p.as_object_mut().unwrap().remove("user");
            }),
            "invalid_user_id",
        ),
        (
            "lower-case user id",
            edited_click(&click, |p| p["user"]["id"] = json!("u0alice")),
            "invalid_user_id",
        ),
        (
            "user id with a space",
            edited_click(&click, |p| p["user"]["id"] = json!("U0ALICE ")),
            "invalid_user_id",
        ),
        (
            "a bot id",
            edited_click(&click, |p| p["user"]["id"] = json!("B0BOT")),
            "invalid_user_id",
        ),
        (
            "empty team id",
            edited_click(&click, |p| {
                p["team"]["id"] = json!("");
                p["user"]["team_id"] = json!("");
            }),
            "invalid_team_id",
        ),
        (
            "no team anywhere",
            edited_click(&click, |p| {
                p["team"] = serde_json::Value::Null;
                p["user"].as_object_mut().unwrap().remove("team_id");
            }),
            "invalid_team_id",
        ),
    ];
    for (what, body, code) in &cases {
        let (status, text) = app
            .slack_post(body, FORM, &app.signed_headers(body, now_unix()))
            .await;
        assert_eq!(status, 400, "{what}: {text}");
        let err: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(err["error"]["code"], *code, "{what}");
    }
    let got = app.get(&id).await;
    assert_eq!(got["status"], "pending");
    assert!(got["decisions"].as_array().unwrap().is_empty(), "{got}");
    assert_eq!(app.audit().await.len(), audit_before);
    assert!(app.sandbox.ephemerals(CHANNEL, "").is_empty());

    // An org-wide install sends no team object but names the workspace on the user.
    let org = edited_click(&click, |p| p["team"] = serde_json::Value::Null);
    let (status, text) = app
        .slack_post(&org, FORM, &app.signed_headers(&org, now_unix()))
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(app.get(&id).await["status"], "approved");
    app.stop().await;
}

/// The same signed request sent again inside the 5-minute window is answered 200 and does
/// nothing: no second note to the user, no second Slack call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_request_is_acked_and_does_nothing() {
    let app = spawn_app().await;
    let now = now_unix();

    // A click on a button greenlight does not know: the first one earns a note.
    let body = block_actions(
        "U0ERIN",
        "1700000000.000100",
        "greenlight.approve",
        "req_01JD3K6Z7Q8R9S0T1V2W3X4Y5Z",
    );
    let headers = app.signed_headers(&body, now);
    assert_eq!(app.slack_post(&body, FORM, &headers).await.0, 200);
    app.sandbox
        .wait_until(WAIT, |sb| {
            sb.ephemerals(CHANNEL, "U0ERIN").into_iter().next()
        })
        .await
        .expect("the first click gets a note");
    let (status, text) = app.slack_post(&body, FORM, &headers).await;
    assert_eq!(status, 200, "{text}");

    // A real vote, then its replay: the replay is not told "already approved".
    let id = app.create_ok("Deploy").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;
    let vote = block_actions("U0ALICE", &msg.ts, "greenlight.approve", &id);
    let headers = app.signed_headers(&vote, now);
    assert_eq!(app.slack_post(&vote, FORM, &headers).await.0, 200);
    app.decided_message(&msg).await;
    let audit = app.audit().await.len();
    for _ in 0..3 {
        assert_eq!(app.slack_post(&vote, FORM, &headers).await.0, 200);
    }

    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.sandbox.ephemerals(CHANNEL, "U0ERIN").len(), 1);
    assert!(app.sandbox.ephemerals(CHANNEL, "U0ALICE").is_empty());
    assert_eq!(app.sandbox.calls_to("chat.postEphemeral").len(), 1);
    assert_eq!(app.sandbox.calls_to("chat.update").len(), 1);
    assert_eq!(app.audit().await.len(), audit);
    let got = app.get(&id).await;
    assert_eq!(got["decisions"].as_array().unwrap().len(), 1, "{got}");

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("greenlight_slack_replays_total"),
        "{metrics}"
    );
    app.stop().await;
}
