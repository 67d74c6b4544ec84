//! The approval loop as a person sees it: message, click, exactly one decision, message updated,
//! machine told.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_on_approve_decides_updates_the_message_and_is_audited() {
    let app = spawn_app().await;
    let req = app
        .create(json!({
            "workflow": "deploy", "title": "Deploy api v1.2",
            "details": "Rolls out *api* to prod", "params": {"version": "1.2", "replicas": 3},
            "requester": "U0FRANK", "expires_in": "1h"
        }))
        .await;
    assert_eq!(req.0, 201, "{}", req.1);
    let id = req.1["id"].as_str().unwrap().to_owned();
    assert_eq!(req.1["status"], "pending");

    let msg = app.posted(&id).await;
    assert!(has_buttons(&msg));
    let blocks = text_of(&msg);
    assert!(
        blocks.contains("Deploy api v1.2")
            && blocks.contains("*version*")
            && blocks.contains("<@U0FRANK>")
    );
    assert!(blocks.contains("expires <!date^"), "{blocks}");

    let ack = app.click(&msg, "greenlight.approve", "U0ALICE").await;
    assert!(ack.acked(), "{ack:?}");

    let updated = app.decided_message(&msg).await;
    let text = text_of(&updated);
    assert!(text.contains("*Approved* by <@U0ALICE>"), "{text}");

    let got = app.get(&id).await;
    assert_eq!(got["status"], "approved");
    assert_eq!(got["decided_by"], "U0ALICE");
    assert_eq!(got["decisions"].as_array().unwrap().len(), 1);
    assert_eq!(got["decisions"][0]["kind"], "user");
    assert_eq!(got["slack"]["channel"], CHANNEL);
    assert_eq!(got["slack"]["ts"], msg.ts.as_str());

    let audit = app.audit().await;
    let events: Vec<&str> = audit
        .iter()
        .filter(|e| e["request_id"] == id.as_str())
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["request.created", "request.approved"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_on_deny_denies() {
    let app = spawn_app().await;
    let id = app.create_ok("Drop the staging database").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;
    assert!(app.click(&msg, "greenlight.deny", "U0BOB").await.acked());
    let text = text_of(&app.decided_message(&msg).await);
    assert!(text.contains("*Denied* by <@U0BOB>"), "{text}");
    assert_eq!(app.get(&id).await["status"], "denied");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_click_decides_once_and_the_second_click_is_told_why() {
    let app = spawn_app().await;
    let id = app.create_ok("Rotate keys").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;
    let first = app.click(&msg, "greenlight.approve", "U0ALICE").await;
    assert!(first.acked());
    // The second click comes from the screen that still shows the buttons.
    assert_eq!(
        app.stale_click(&msg, "greenlight.deny", "U0ALICE", &id)
            .await,
        200
    );
    let got = app.get(&id).await;
    assert_eq!(got["status"], "approved");
    assert_eq!(got["decisions"].as_array().unwrap().len(), 1);
    let note = app
        .sandbox
        .wait_until(WAIT, |sb| {
            sb.ephemerals(CHANNEL, "U0ALICE").into_iter().next()
        })
        .await
        .expect("ephemeral for the second click");
    assert!(
        note.text.contains("already approved by <@U0ALICE>"),
        "{}",
        note.text
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_people_clicking_at_once_make_exactly_one_decision() {
    let app = spawn_app().await;
    let id = app.create_ok("Release 2.0").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;
    let users: Vec<String> = (1..=20).map(|i| format!("U0USER{i:03}")).collect();
    // Everyone has the message with its buttons on screen and clicks at the same moment.
    let clicks = users.iter().enumerate().map(|(i, u)| {
        let action = if i % 2 == 0 {
            "greenlight.approve"
        } else {
            "greenlight.deny"
        };
        app.stale_click(&msg, action, u, &id)
    });
    let statuses = futures::future::join_all(clicks).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    let got = app.get(&id).await;
    assert_ne!(got["status"], "pending");
    let decisions = got["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1, "{got}");
    assert_eq!(got["decided_by"], decisions[0]["by"]);
    let audit = app.audit().await;
    let decided = audit
        .iter()
        .filter(|e| e["request_id"] == id.as_str() && e["event"] != "request.created")
        .count();
    assert_eq!(decided, 1);
    // Everyone else is told it was already decided.
    let told = app
        .sandbox
        .wait_until(WAIT, |sb| {
            let n: usize = users.iter().map(|u| sb.ephemerals(CHANNEL, u).len()).sum();
            (n == 19).then_some(n)
        })
        .await;
    assert_eq!(told, Some(19));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_as_soon_as_the_click_lands() {
    let app = spawn_app().await;
    let id = app.create_ok("Scale up").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;
    let (http, base, key, path) = (
        app.http.clone(),
        app.base.clone(),
        app.key.clone(),
        format!("/v1/requests/{id}?wait=30"),
    );
    let waiter = tokio::spawn(async move {
        let r = call(&http, &base, &key, Method::GET, &path, None).await;
        (r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the long-poll must wait while pending"
    );
    let clicked = Instant::now();
    assert!(
        app.click(&msg, "greenlight.approve", "U0CAROL")
            .await
            .acked()
    );
    let ((status, body), returned) = waiter.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["status"], "approved");
    assert!(returned.duration_since(clicked) < Duration::from_secs(1));

    // A wait on an already decided request returns at once, and one on a pending request
    // returns pending when the wait runs out.
    let other = app.create_ok("Other").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = app
        .call(Method::GET, &format!("/v1/requests/{other}?wait=1"), None)
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pending")));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_returns_the_same_request() {
    let app = spawn_app().await;
    let body = json!({"title": "Deploy", "params": {"v": 1}});
    let send = || async {
        let res = app
            .http
            .post(format!("{}/v1/requests", app.base))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", "build-77")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json::<serde_json::Value>().await.unwrap())
    };
    let (status, first) = send().await;
    assert_eq!(status, 201);
    let (status, again) = send().await;
    assert_eq!(status, 200);
    assert_eq!(first["id"], again["id"]);

    // The body field works too, and concurrent retries still make one request.
    let tries = (0..8).map(|_| app.create(json!({"title": "Migrate", "idempotency_key": "mig-1"})));
    let results = futures::future::join_all(tries).await;
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|(s, b)| (*s == 200 || *s == 201) && b["id"] == results[0].1["id"])
    );

    let (status, err) = app
        .create(json!({"title": "Something else", "idempotency_key": "mig-1"}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(err["error"]["code"], "idempotency_key_reused");

    let (status, list) = app.call(Method::GET, "/v1/requests?limit=10", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["requests"].as_array().unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_strips_the_buttons_and_later_clicks_change_nothing() {
    let app = spawn_app().await;
    let id = app.create_ok("Nightly purge").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/v1/requests/{id}/cancel"),
            Some(json!({"reason": "superseded"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    let text = text_of(&app.decided_message(&msg).await);
    assert!(
        text.contains("*Cancelled* by key:\u{200b}ci") && text.contains("superseded"),
        "{text}"
    );

    let (status, body) = app
        .call(Method::POST, &format!("/v1/requests/{id}/cancel"), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_pending"))
    );

    // A click on a stale copy of the message is refused and told why.
    let body = block_actions("U0DAVE", &msg.ts, "greenlight.approve", &id);
    let (status, _) = app
        .slack_post(
            &body,
            "application/x-www-form-urlencoded",
            &app.signed_headers(&body, now_unix()),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.get(&id).await["status"], "cancelled");
    let note = app
        .sandbox
        .wait_until(WAIT, |sb| {
            sb.ephemerals(CHANNEL, "U0DAVE").into_iter().next()
        })
        .await
        .expect("ephemeral");
    assert!(note.text.contains("already cancelled"), "{}", note.text);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_can_decide_with_a_decide_key() {
    let app = spawn_app().await;
    let id = app.create_ok("Refund 40 USD").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/v1/requests/{id}/decisions"),
            Some(json!({"verdict": "approve", "reason": "under limit"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "approved");
    assert_eq!(body["decisions"][0]["kind"], "machine");
    // Under the key's own namespace: a key's name never passes for a person's id.
    assert_eq!(body["decisions"][0]["by"], "key:ci");
    assert_eq!(body["decided_by"], "key:ci");
    let text = text_of(&app.decided_message(&msg).await);
    assert!(
        text.contains("*Approved* by key:\u{200b}ci") && text.contains("under limit"),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requester_text_is_escaped_in_the_message() {
    let app = spawn_app().await;
    let (status, body) = app
        .create(json!({"title": "Deploy <!channel>", "details": "<!here> & <https://evil.example|click>", "params": {"<@U0ALICE>": "<!everyone>"}}))
        .await;
    assert_eq!(status, 201);
    let msg = app.posted(body["id"].as_str().unwrap()).await;
    let text = text_of(&msg);
    for raw in ["<!here>", "<!everyone>", "<https://evil", "<@U0ALICE>"] {
        assert!(!text.contains(raw), "{raw} leaked into {text}");
    }
    assert!(text.contains("&lt;!here&gt; &amp;"), "{text}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_slack_does_not_slow_the_ack() {
    let app = spawn_app().await;
    let id = app.create_ok("Deploy while Slack is slow").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;
    for method in ["chat.update", "chat.postEphemeral", "chat.postMessage"] {
        app.sandbox.set_latency(method, Duration::from_millis(2500));
    }
    let ack = app.click(&msg, "greenlight.approve", "U0ALICE").await;
    assert!(ack.acked());
    // Slack allows 3 s; the ack must not wait for the 2.5 s chat.update.
    assert!(
        ack.latency < Duration::from_millis(1000),
        "ack took {:?}",
        ack.latency
    );
    let late = app.click(&msg, "greenlight.deny", "U0BOB").await;
    assert!(
        late.latency < Duration::from_millis(1000),
        "second ack took {:?}",
        late.latency
    );
    let text = text_of(&app.decided_message(&msg).await);
    assert!(text.contains("*Approved*"));
    app.stop().await;
}
