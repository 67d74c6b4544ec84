//! Delivery that loses nothing: signed callbacks retried with one id, Slack rate limits and
//! outages ridden out, errors that cannot heal shown and announced, private targets refused.

use std::time::{Duration, Instant};

use greenlight::config::{Config, Secret};
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;
use crate::receiver::Receiver;

const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Quick retries, so that a story with failures takes seconds, not minutes.
fn fast_retries(c: &mut Config) {
    c.delivery.allow_private_targets = true;
    c.delivery.backoff_base = "50ms".parse().unwrap();
    c.delivery.backoff_max = "300ms".parse().unwrap();
    c.delivery.webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_fails_twice_arrives_three_times_with_one_id_and_a_valid_signature() {
    let machine = Receiver::start(&[500, 500], 200).await;
    let app = spawn_app_with(fast_retries).await;
    let (status, created) = app
        .create(json!({"title": "Deploy api v2", "callback_url": machine.url("/greenlight")}))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();

    let got = machine.wait_for(WAIT, |r| r.len() >= 3).await;
    let verifier = standardwebhooks::Webhook::new(WEBHOOK_SECRET).unwrap();
    for r in &got {
        verifier
            .verify(r.body.as_bytes(), &r.headers)
            .expect("signature verifies");
        assert_eq!(r.method, Method::POST);
    }
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert_eq!(got[1].header("webhook-id"), got[2].header("webhook-id"));
    assert!(got[0].header("webhook-id").starts_with("msg_"));
    let event = got[2].json();
    assert_eq!(event["type"], "request.created");
    assert_eq!(event["data"]["id"], id);
    assert_eq!(event["data"]["status"], "pending");

    // The API shows the story: two failures, then success.
    wait_delivery(&app, id, "webhook", |d| d[0]["state"] == "done").await;
    let hook = &delivery_of(&app, id, "webhook").await[0];
    assert_eq!(hook["attempts"], 3, "{hook}");
    assert_eq!(hook["last_error"], "HTTP 500");
    let outcomes: Vec<&str> = hook["recent_attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["done", "failed", "failed"]);

    // The decision is a new event with a new id.
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/requests/{id}/decisions"),
            Some(json!({"verdict": "approve"})),
        )
        .await;
    assert_eq!(status, 200);
    let got = machine.wait_for(WAIT, |r| r.len() >= 4).await;
    let approved = &got[3];
    verifier
        .verify(approved.body.as_bytes(), &approved.headers)
        .unwrap();
    assert_eq!(approved.json()["type"], "request.approved");
    assert_eq!(approved.json()["data"]["decided_by"], "key:ci");
    assert_ne!(approved.header("webhook-id"), got[0].header("webhook-id"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_that_method_for_retry_after_and_the_update_lands_afterwards() {
    let app = spawn_app().await;
    let id = app.create_ok("Rotate certificates").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;
    app.sandbox.rate_limit("chat.update", 2, 3);
    assert!(
        app.click(&msg, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );

    // Another request is posted meanwhile: only chat.update is paused.
    let other = app.create_ok("Unrelated").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.posted(&other).await;

    let updated = app
        .sandbox
        .wait_for_message(
            CHANNEL,
            &msg.ts,
            |m| !has_buttons(m),
            Duration::from_secs(20),
        )
        .await
        .expect("the update lands after the rate limit");
    assert!(text_of(&updated).contains("*Approved* by <@U0ALICE>"));
    // The sandbox records a call after it has applied it: wait for the record of the success.
    let calls = app
        .sandbox
        .wait_until(WAIT, |sb| {
            let calls = sb.calls_to("chat.update");
            calls.iter().any(|c| c.http_status == 200).then_some(calls)
        })
        .await
        .expect("the successful chat.update is recorded");
    assert_eq!(calls.len(), 4, "three 429s, then success");
    assert_eq!(
        calls.iter().map(|c| c.http_status).collect::<Vec<_>>(),
        [429, 429, 429, 200]
    );
    for pair in calls.windows(2) {
        let gap = pair[1].at_unix_ms - pair[0].at_unix_ms;
        assert!(
            gap >= 2000,
            "a retry came {gap} ms after a 429 with Retry-After: 2"
        );
    }
    let post = app
        .sandbox
        .calls_to("chat.postMessage")
        .into_iter()
        .find(|c| c.args.to_string().contains(&other))
        .unwrap();
    assert!(post.at_unix_ms < calls[3].at_unix_ms);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_slack_is_down_clicks_are_acked_and_everything_lands_when_it_is_back() {
    // The 30-second outage is compressed: backoff tops out at 300 ms instead of minutes, so a
    // few seconds of 500s put every job through many failed attempts.
    let app = spawn_app_with(|c| {
        fast_retries(c);
        c.delivery.max_attempts = 1000;
    })
    .await;
    let mut ids = Vec::new();
    let mut msgs = Vec::new();
    for i in 0..4 {
        let id = app.create_ok(&format!("Before the outage {i}")).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        msgs.push(app.posted(&id).await);
        ids.push(id);
    }

    app.sandbox.http_error("*", 500, None);
    let down = Instant::now();
    for (i, msg) in msgs.iter().enumerate() {
        let action = if i % 2 == 0 {
            "greenlight.approve"
        } else {
            "greenlight.deny"
        };
        let ack = app.click(msg, action, "U0BOB").await;
        assert!(ack.acked(), "{ack:?}");
        assert!(ack.latency < Duration::from_millis(2500), "{ack:?}");
    }
    let mut late = Vec::new();
    for i in 0..3 {
        late.push(
            app.create_ok(&format!("During the outage {i}")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Decided and recorded while Slack is down; the updates wait in the outbox.
    for id in &ids {
        let got = app.get(id).await;
        assert_ne!(got["status"], "pending");
    }
    wait_delivery(&app, &ids[0], "slack_update", |d| {
        d.iter()
            .any(|u| u["attempts"].as_u64() >= Some(3) && u["last_error"] == "HTTP 500")
    })
    .await;
    let pending = &delivery_of(&app, &ids[0], "slack_update").await[0];
    assert_eq!(pending["state"], "pending");
    assert!(pending["next_attempt_at"].is_string(), "{pending}");
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down.elapsed())).await;

    app.sandbox.clear_faults();
    for (i, msg) in msgs.iter().enumerate() {
        let m = app.decided_message(msg).await;
        let word = if i % 2 == 0 { "*Approved*" } else { "*Denied*" };
        assert!(text_of(&m).contains(word), "{}", text_of(&m));
    }
    for id in &late {
        let msg = app.posted(id).await;
        assert!(has_buttons(&msg));
    }
    for id in ids.iter().chain(&late) {
        for d in app.get(id).await["delivery"].as_array().unwrap() {
            assert_ne!(d["state"], "dead", "{d}");
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_that_cannot_heal_is_shown_on_the_request_and_announced_once() {
    let app = spawn_app_with(|c| {
        fast_retries(c);
        c.alerts.channel = Some("C0OPS".parse().unwrap());
    })
    .await;
    app.sandbox
        .fail_with("chat.postMessage", "channel_not_found", Some(1));
    let id = app.create_ok("Deploy to a channel that is gone").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_delivery(&app, &id, "slack_post", |d| d[0]["state"] == "dead").await;
    let post = &delivery_of(&app, &id, "slack_post").await[0];
    assert_eq!(post["last_error"], "channel_not_found");
    assert_eq!(post["attempts"], 1, "not retried");

    let alert = app
        .sandbox
        .wait_for_message_in("C0OPS", |m| text_of(m).contains(&id), WAIT)
        .await
        .expect("the ops channel is told");
    assert!(text_of(&alert).contains("channel_not_found"));

    // The decision is never lost: the machine decides and is told.
    let (status, decided) = app
        .call(
            Method::POST,
            &format!("/v1/requests/{id}/decisions"),
            Some(json!({"verdict": "approve"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(decided["status"], "approved");
    let audit = app.audit().await;
    assert!(
        audit
            .iter()
            .any(|e| e["event"] == "delivery.failed" && e["request_id"] == id.as_str())
    );

    // When the alert cannot be posted either, it dies quietly instead of alerting about itself.
    app.sandbox
        .fail_with("chat.postMessage", "not_in_channel", None);
    let before = app.sandbox.calls_to("chat.postMessage").len();
    let id2 = app.create_ok("Another").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_delivery(&app, &id2, "slack_alert", |d| {
        d.len() == 1 && d[0]["state"] == "dead"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.sandbox.calls_to("chat.postMessage").len() - before,
        2,
        "one post, one alert, nothing more"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("greenlight_outbox_dead_total"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_urls_that_reach_private_addresses_are_refused_unless_allowed() {
    let app = spawn_app().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://10.0.0.8/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.1.1/",
        "http://0.0.0.0:80/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00:ec2::254]/",
    ] {
        let (status, body) = app.create(json!({"title": "x", "callback_url": url})).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error"]["code"], "callback_url_not_allowed", "{url}");
    }
    let (_, list) = app.call(Method::GET, "/v1/requests", None).await;
    assert_eq!(
        list["requests"].as_array().unwrap().len(),
        0,
        "nothing created"
    );
    app.stop().await;

    let app = spawn_app_with(|c| c.delivery.allow_private_targets = true).await;
    let (status, body) = app
        .create(json!({"title": "x", "callback_url": "http://localhost:9/hook"}))
        .await;
    assert_eq!(status, 201, "{body}");
    app.stop().await;
}

/// Slack took the post but its answer never arrived (a proxy's 502, a crash before the ts was
/// saved): the retry finds the message by its metadata and adopts it instead of posting twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_answer_was_lost_is_adopted_not_posted_twice() {
    let app = spawn_app_with(fast_retries).await;
    app.sandbox.add_fault(
        "chat.postMessage",
        greenlight_sandbox::FaultKind::AnswerLost { status: 502 },
        Some(1),
    );
    let created = app.create_ok("Deploy api v9").await;
    let id = created["id"].as_str().unwrap();
    wait_delivery(&app, id, "slack_post", |d| d[0]["state"] == "done").await;
    let copies: Vec<_> = app
        .sandbox
        .messages(CHANNEL)
        .into_iter()
        .filter(|m| text_of(m).contains(id))
        .collect();
    assert_eq!(copies.len(), 1, "one message, not two");
    let got = app.get(id).await;
    assert_eq!(
        got["slack"]["ts"],
        copies[0].ts.as_str(),
        "the first copy was adopted"
    );
    assert_eq!(
        copies[0].metadata.as_ref().map(|m| m["event_type"].clone()),
        Some(json!("greenlight_request"))
    );
    let looked = app.sandbox.calls_to("conversations.history");
    assert!(
        looked
            .iter()
            .any(|c| c.ok && c.args["include_all_metadata"] == "true"),
        "{looked:?}"
    );
    // The message is the request's own: clicks on it decide it.
    assert!(
        app.click(&copies[0], "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    app.decided_message(&copies[0]).await;
}

/// Without the history scope the lost answer's message cannot be found: the post goes ahead as
/// before (a second copy, never no message), and the request points at the copy it knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_history_scope_a_lost_answer_falls_back_to_posting_again() {
    let app = spawn_app_with(fast_retries).await;
    app.sandbox
        .fail_with("conversations.history", "missing_scope", None);
    app.sandbox.add_fault(
        "chat.postMessage",
        greenlight_sandbox::FaultKind::AnswerLost { status: 502 },
        Some(1),
    );
    let created = app.create_ok("Deploy api v10").await;
    let id = created["id"].as_str().unwrap();
    wait_delivery(&app, id, "slack_post", |d| d[0]["state"] == "done").await;
    let copies: Vec<_> = app
        .sandbox
        .messages(CHANNEL)
        .into_iter()
        .filter(|m| text_of(m).contains(id))
        .collect();
    assert_eq!(copies.len(), 2);
    assert_eq!(app.get(id).await["slack"]["ts"], copies[1].ts.as_str());
}

/// What a black-box probe found accepted: the host's own interface addresses (here on a
/// documentation range), documentation ranges, discard, IPv4-translated and local NAT64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_urls_to_this_host_and_to_special_purpose_ranges_are_refused() {
    let app = spawn_app().await;
    // This host first: before the guard knew them, these were the ones that got through, and
    // a test run then only ever reaches this machine.
    let mut urls: Vec<String> = if_addrs::get_if_addrs()
        .unwrap()
        .into_iter()
        .filter(|i| !i.is_loopback())
        .map(|i| match i.ip() {
            std::net::IpAddr::V4(ip) => format!("http://{ip}:9/hook"),
            std::net::IpAddr::V6(ip) => format!("http://[{ip}]:9/hook"),
        })
        .collect();
    urls.extend(
        [
            "http://192.0.2.1/",
            "http://198.51.100.7/",
            "http://203.0.113.9/",
            "http://[2001:db8::1]/",
            "http://[3fff::1]/",
            "http://[100::1]/",
            "http://[::ffff:0:7f00:1]/",
            "http://[64:ff9b:1::a00:1]/",
            "http://[64:ff9b::c000:201]/",
            "http://[2002:c000:201::1]/",
            "http://[5f00::1]/",
            "http://192.88.99.1/",
        ]
        .map(String::from),
    );
    for url in &urls {
        let (status, body) = app.create(json!({"title": "x", "callback_url": url})).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error"]["code"], "callback_url_not_allowed", "{url}");
    }
    let (_, list) = app.call(Method::GET, "/v1/requests", None).await;
    assert_eq!(list["requests"].as_array().unwrap().len(), 0);
    app.stop().await;
}
