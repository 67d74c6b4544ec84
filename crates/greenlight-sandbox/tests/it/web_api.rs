use std::time::{Duration, Instant};

use greenlight_sandbox::{SandboxConfig, sign};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn tokens_are_checked_like_slack() {
    let sb = start().await;
    let missing = api_with_token(&sb, "auth.test", json!({}), None).await;
    assert_eq!(
        (missing.status, &missing.body),
        (200, &json!({"ok": false, "error": "not_authed"}))
    );
    let wrong = api_with_token(&sb, "auth.test", json!({}), Some("xoxb-nope")).await;
    assert_eq!(
        (wrong.status, &wrong.body["error"]),
        (200, &json!("invalid_auth"))
    );
    let app = api_with_token(
        &sb,
        "chat.postMessage",
        json!({}),
        Some("xapp-1-sandbox-app-token"),
    )
    .await;
    assert_eq!(app.body["error"], "not_allowed_token_type");
    let bot_for_socket = api(&sb, "apps.connections.open", json!({})).await;
    assert_eq!(bot_for_socket.body["error"], "not_allowed_token_type");
    let unknown = api(&sb, "chat.explode", json!({})).await;
    assert_eq!(unknown.body["error"], "unknown_method");

    let me = api(&sb, "auth.test", json!({})).await;
    assert_eq!(me.body["ok"], true);
    assert_eq!(me.body["user_id"], "U0GREENBOT");
    assert_eq!(me.body["bot_id"], "B0GREENBOT");
    assert_eq!(me.body["team_id"], "T0SANDBOX");
    assert!(me.body.get("error").is_none());

    // Form bodies may carry the token as a field; GET with a query works for reads.
    let form = client()
        .post(format!("{}auth.test", sb.api_url()))
        .form(&[("token", BOT)])
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(form["ok"], true);
    let get = client()
        .get(format!(
            "{}users.info?token={BOT}&user=U0ALICE",
            sb.api_url()
        ))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(get["user"]["name"], "alice");
    // JSON bodies need the header: a token field is not enough.
    let json_field = api_with_token(&sb, "auth.test", json!({"token": BOT}), None).await;
    assert_eq!(json_field.body["error"], "not_authed");
    assert_eq!(sb.calls().len(), 9);
    assert!(sb.calls().iter().all(|c| c.args.get("token").is_none()));
}

#[tokio::test]
async fn a_message_is_posted_then_updated() {
    let sb = start().await;
    let posted = api(
        &sb,
        "chat.postMessage",
        json!({"channel": "#deploy", "text": "Deploy?", "blocks": approval_blocks()}),
    )
    .await;
    assert_eq!(posted.body["ok"], true, "{}", posted.body);
    assert_eq!(posted.body["channel"], "C0DEPLOY");
    let ts = posted.body["ts"].as_str().unwrap().to_owned();
    assert_eq!(posted.body["message"]["ts"], ts);
    assert_eq!(posted.body["message"]["bot_id"], "B0GREENBOT");
    assert_eq!(posted.body["message"]["blocks"][2]["block_id"], "decide");
    // Slack fills in block ids the app left out.
    assert!(posted.body["message"]["blocks"][0]["block_id"].is_string());

    let updated = api(
        &sb,
        "chat.update",
        json!({"channel": "C0DEPLOY", "ts": ts, "text": "Approved by alice", "blocks": []}),
    )
    .await;
    assert_eq!(updated.body["ok"], true, "{}", updated.body);
    assert_eq!(updated.body["text"], "Approved by alice");
    let stored = sb.message("deploy", &ts).unwrap();
    assert_eq!(
        (stored.text.as_str(), stored.blocks.len(), stored.edits),
        ("Approved by alice", 0, 1)
    );

    let next = api(
        &sb,
        "chat.postMessage",
        json!({"channel": "C0DEPLOY", "text": "two"}),
    )
    .await;
    let next_ts = next.body["ts"].as_str().unwrap();
    assert!(next_ts.parse::<f64>().unwrap() > ts.parse::<f64>().unwrap());
    assert_eq!(next_ts.split('.').nth(1).map(str::len), Some(6));
    assert_eq!(sb.messages("C0DEPLOY").len(), 2);

    let history = api(&sb, "conversations.history", json!({"channel": "C0DEPLOY"})).await;
    assert_eq!(history.body["messages"][0]["text"], "two");
}

#[tokio::test]
async fn slack_error_names_for_bad_requests() {
    let sb = start().await;
    let cases = [
        (
            "chat.postMessage",
            json!({"channel": "C0NOPE", "text": "x"}),
            "channel_not_found",
        ),
        (
            "chat.postMessage",
            json!({"channel": "C0DEPLOY"}),
            "no_text",
        ),
        (
            "chat.postMessage",
            json!({"channel": "C0DEPLOY", "blocks": "not json"}),
            "invalid_blocks_format",
        ),
        (
            "chat.postMessage",
            json!({"channel": "C0DEPLOY", "blocks": [{"type": "bogus"}]}),
            "invalid_blocks",
        ),
        (
            "chat.update",
            json!({"channel": "C0DEPLOY", "ts": "1.000001", "text": "x"}),
            "message_not_found",
        ),
        (
            "chat.update",
            json!({"channel": "C0DEPLOY", "ts": "1.000001", "text": "x".repeat(4001)}),
            "msg_too_long",
        ),
        ("users.info", json!({"user": "U0NOBODY"}), "user_not_found"),
        (
            "users.lookupByEmail",
            json!({"email": "nobody@example.com"}),
            "users_not_found",
        ),
        (
            "usergroups.users.list",
            json!({"usergroup": "S0NONE"}),
            "no_such_subteam",
        ),
        (
            "conversations.info",
            json!({"channel": "C0NOPE"}),
            "channel_not_found",
        ),
        (
            "chat.postEphemeral",
            json!({"channel": "C0DEPLOY", "user": "U0NOBODY", "text": "x"}),
            "user_not_in_channel",
        ),
        (
            "views.open",
            json!({"trigger_id": "123.456.abc", "view": {"type": "modal", "title": {"type": "plain_text", "text": "Why"}, "blocks": []}}),
            "invalid_trigger_id",
        ),
    ];
    for (method, args, error) in cases {
        let a = api(&sb, method, args).await;
        assert_eq!(
            (a.status, a.body["ok"].clone(), a.body["error"].clone()),
            (200, json!(false), json!(error)),
            "{method}"
        );
    }

    let long_button = json!([{"type": "actions", "elements": [{"type": "button", "action_id": "a",
        "text": {"type": "plain_text", "text": "x".repeat(76)}}]}]);
    let a = api(
        &sb,
        "chat.postMessage",
        json!({"channel": "C0DEPLOY", "blocks": long_button}),
    )
    .await;
    assert_eq!(a.body["error"], "invalid_blocks");
    let msg = a.body["response_metadata"]["messages"][0].as_str().unwrap();
    assert!(msg.contains("/blocks/0/elements/0/text/text"), "{msg}");

    let ok = [
        (
            "users.lookupByEmail",
            json!({"email": "Carol@example.com"}),
            "/user/id",
            json!("U0CAROL"),
        ),
        (
            "usergroups.users.list",
            json!({"usergroup": "S0SRE"}),
            "/users",
            json!(["U0CAROL", "U0DAVE"]),
        ),
        (
            "conversations.info",
            json!({"channel": "C0OPS"}),
            "/channel/name",
            json!("ops"),
        ),
    ];
    for (method, args, pointer, want) in ok {
        let a = api(&sb, method, args).await;
        assert_eq!(a.body.pointer(pointer), Some(&want), "{method}: {}", a.body);
    }
}

#[tokio::test]
async fn form_bodies_carry_blocks_as_json_strings() {
    let sb = start().await;
    let blocks = approval_blocks().to_string();
    let res: serde_json::Value = client()
        .post(format!("{}chat.postMessage", sb.api_url()))
        .header("Authorization", format!("Bearer {BOT}"))
        .form(&[
            ("channel", "payments"),
            ("text", "Pay?"),
            ("blocks", blocks.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["channel"], "C0PAYMENTS");
    assert_eq!(sb.messages("C0PAYMENTS")[0].blocks.len(), 3);
}

#[tokio::test]
async fn thread_replies_and_ephemerals() {
    let sb = start().await;
    let parent = post_approval(&sb).await;
    let reply = api(
        &sb,
        "chat.postMessage",
        json!({"channel": "C0DEPLOY", "thread_ts": parent, "text": "Reminder: <!subteam^S0SRE>"}),
    )
    .await;
    assert_eq!(reply.body["message"]["thread_ts"], parent.as_str());
    let reply_ts = reply.body["ts"].as_str().unwrap();
    // A reply to a reply lands in the parent's thread.
    api(
        &sb,
        "chat.postMessage",
        json!({"channel": "C0DEPLOY", "thread_ts": reply_ts, "text": "again"}),
    )
    .await;
    assert_eq!(sb.messages("C0DEPLOY").len(), 1);
    let replies = sb.thread_replies("C0DEPLOY", &parent);
    assert_eq!(
        replies.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["Reminder: <!subteam^S0SRE>", "again"]
    );
    let api_replies = api(
        &sb,
        "conversations.replies",
        json!({"channel": "C0DEPLOY", "ts": parent}),
    )
    .await;
    assert_eq!(
        api_replies.body["messages"].as_array().map(Vec::len),
        Some(3)
    );

    let eph = api(
        &sb,
        "chat.postEphemeral",
        json!({"channel": "C0DEPLOY", "user": "U0BOB", "text": "You cannot approve your own request"}),
    )
    .await;
    assert_eq!(eph.body["ok"], true);
    assert!(eph.body["message_ts"].is_string());
    assert_eq!(
        sb.ephemerals("C0DEPLOY", "U0BOB")[0].text,
        "You cannot approve your own request"
    );
    assert!(sb.ephemerals("C0DEPLOY", "U0ALICE").is_empty());
}

#[tokio::test]
async fn latency_fault_delays_the_call() {
    let sb = start().await;
    let latency = Duration::from_secs(2);
    sb.set_latency("chat.postMessage", latency);
    let started = Instant::now();
    let slow = tokio::spawn({
        let sb = sb.clone();
        async move {
            api(
                &sb,
                "chat.postMessage",
                json!({"channel": "C0DEPLOY", "text": "slow"}),
            )
            .await
        }
    });
    // Other methods are not held up: auth.test answers while the slow call still waits.
    api(&sb, "auth.test", json!({})).await;
    assert!(
        !slow.is_finished(),
        "auth.test waited for the slowed method"
    );
    let a = slow.await.unwrap();
    assert!(started.elapsed() >= latency);
    assert_eq!(a.body["ok"], true);
    sb.clear_faults();
    let started = Instant::now();
    api(
        &sb,
        "chat.postMessage",
        json!({"channel": "C0DEPLOY", "text": "fast"}),
    )
    .await;
    assert!(
        started.elapsed() < latency,
        "the latency outlived clear_faults"
    );
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_then_recover() {
    let sb = start().await;
    sb.rate_limit("chat.update", 7, 1);
    let a = api(
        &sb,
        "chat.update",
        json!({"channel": "C0DEPLOY", "ts": "1.1", "text": "x"}),
    )
    .await;
    assert_eq!(a.status, 429);
    assert_eq!(a.retry_after.as_deref(), Some("7"));
    assert_eq!(a.body, json!({"ok": false, "error": "ratelimited"}));
    // Only that method, and only once.
    assert_eq!(api(&sb, "auth.test", json!({})).await.status, 200);
    let again = api(
        &sb,
        "chat.update",
        json!({"channel": "C0DEPLOY", "ts": "1.1", "text": "x"}),
    )
    .await;
    assert_eq!(
        (again.status, again.body["error"].as_str()),
        (200, Some("message_not_found"))
    );
    let calls = sb.calls_to("chat.update");
    assert_eq!(
        calls.iter().map(|c| c.http_status).collect::<Vec<_>>(),
        [429, 200]
    );
    assert_eq!(calls[0].error.as_deref(), Some("ratelimited"));
}

#[tokio::test]
async fn forced_errors_count_down_and_http_errors_hit_every_method() {
    let sb = start().await;
    sb.fail_with("chat.postMessage", "channel_not_found", Some(2));
    for _ in 0..2 {
        let a = api(
            &sb,
            "chat.postMessage",
            json!({"channel": "C0DEPLOY", "text": "x"}),
        )
        .await;
        assert_eq!(a.body["error"], "channel_not_found");
    }
    let a = api(
        &sb,
        "chat.postMessage",
        json!({"channel": "C0DEPLOY", "text": "x"}),
    )
    .await;
    assert_eq!(a.body["ok"], true);

    sb.http_error("*", 500, None);
    for method in ["auth.test", "chat.postMessage", "views.open"] {
        assert_eq!(api(&sb, method, json!({})).await.status, 500);
    }
    sb.clear_faults();
    assert_eq!(api(&sb, "auth.test", json!({})).await.body["ok"], true);
    // Faults come before auth: Slack being down does not look at tokens.
    sb.http_error("auth.test", 503, Some(1));
    assert_eq!(
        api_with_token(&sb, "auth.test", json!({}), None)
            .await
            .status,
        503
    );
}

#[tokio::test]
async fn faults_through_the_control_api() {
    let sb = start().await;
    let http = client();
    let res = http
        .post(format!("{}/_sandbox/faults", sb.url()))
        .json(&json!({"method": "chat.postMessage", "rate_limit_retry_after": 3, "times": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let bad = http
        .post(format!("{}/_sandbox/faults", sb.url()))
        .json(&json!({"method": "x", "error": "a", "http_status": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    for _ in 0..2 {
        assert_eq!(
            api(
                &sb,
                "chat.postMessage",
                json!({"channel": "C0DEPLOY", "text": "x"})
            )
            .await
            .status,
            429
        );
    }
    assert_eq!(
        api(
            &sb,
            "chat.postMessage",
            json!({"channel": "C0DEPLOY", "text": "x"})
        )
        .await
        .status,
        200
    );
    http.post(format!("{}/_sandbox/faults", sb.url()))
        .json(&json!({"method": "*", "http_status": 500}))
        .send()
        .await
        .unwrap();
    http.delete(format!("{}/_sandbox/faults", sb.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(api(&sb, "auth.test", json!({})).await.status, 200);

    let calls: serde_json::Value = http
        .get(format!(
            "{}/_sandbox/calls?method=chat.postMessage",
            sb.url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<_> = calls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["http_status"].clone())
        .collect();
    assert_eq!(statuses, [json!(429), json!(429), json!(200)]);
    let messages: serde_json::Value = http
        .get(format!("{}/_sandbox/messages?channel=deploy", sb.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(messages[0]["text"], "x");
}

#[tokio::test]
async fn signing_matches_slacks_test_vector() {
    let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let want = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    assert_eq!(
        sign(
            "8f742231b10e8888abcd99yyyzzz85a5",
            1531420618,
            body.as_bytes()
        ),
        want
    );
    let sb = start_with(
        SandboxConfig::for_tests().with_signing_secret("8f742231b10e8888abcd99yyyzzz85a5"),
    )
    .await;
    assert_eq!(sb.sign(1531420618, body.as_bytes()), want);
}

#[tokio::test]
async fn generated_users_for_load_tests() {
    let sb = start_with(SandboxConfig::for_tests().with_users(50)).await;
    let a = api(&sb, "users.info", json!({"user": "U0USER050"})).await;
    assert_eq!(a.body["user"]["profile"]["email"], "user050@example.com");
    assert_eq!(sb.config().users.len(), 50);
}

#[tokio::test]
async fn wait_for_message_wakes_on_the_update() {
    let sb = start().await;
    let ts = post_approval(&sb).await;
    let waiter = {
        let sb = sb.clone();
        let ts = ts.clone();
        tokio::spawn(async move {
            sb.wait_for_message("C0DEPLOY", &ts, |m| m.text == "done", 5 * SECOND)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    api(
        &sb,
        "chat.update",
        json!({"channel": "C0DEPLOY", "ts": ts, "text": "done"}),
    )
    .await;
    let got = waiter.await.unwrap().expect("woken by the update");
    assert_eq!(got.edits, 1);
    let none = sb
        .wait_for_message(
            "C0DEPLOY",
            &ts,
            |m| m.text == "never",
            Duration::from_millis(100),
        )
        .await;
    assert!(none.is_none());
}
