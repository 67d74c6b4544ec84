//! Time: requests nobody decided expire (or are approved or denied, as the workflow says), also
//! when they expired while the server was down; reminders nudge the approvers in the thread and
//! escalate. A test clock moves time; nothing sleeps for minutes.

use std::time::Duration;

use serde_json::json;

use greenlight::config::Config;
use greenlight::domain::{Clock, OnExpiry};

use crate::helpers::*;

const MIN: Duration = Duration::from_secs(60);

async fn create(app: &TestApp, body: serde_json::Value) -> String {
    let (status, req) = app.create(body).await;
    assert_eq!(status, 201, "{req}");
    req["id"].as_str().unwrap().to_owned()
}

/// A signed click at the test clock's time (the server checks Slack's timestamp against it).
async fn click_at(
    app: &TestApp,
    clock: &TestClock,
    ts: &str,
    action: &str,
    user: &str,
    id: &str,
) -> u16 {
    let body = block_actions(user, ts, action, id);
    let headers = app.signed_headers(&body, clock.now().as_second());
    app.slack_post(&body, "application/x-www-form-urlencoded", &headers)
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecided_request_expires_the_message_says_so_and_the_waiter_is_told() {
    let clock = TestClock::new();
    let app = spawn_app_clocked(|_| {}, clock.clone()).await;
    let id = create(&app, json!({"title": "Deploy api", "expires_in": "1h"})).await;
    let msg = app.posted(&id).await;

    let waiter = {
        let (http, base, key, path) = (
            app.http.clone(),
            app.base.clone(),
            app.key.clone(),
            format!("/v1/requests/{id}?wait=60"),
        );
        tokio::spawn(
            async move { call(&http, &base, &key, reqwest::Method::GET, &path, None).await },
        )
    };
    clock.advance(59 * MIN);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        app.get(&id).await["status"],
        "pending",
        "not before its time"
    );

    clock.advance(2 * MIN);
    let done = app.decided_message(&msg).await;
    assert!(
        text_of(&done).contains("*Expired* after 1h, no decision"),
        "{}",
        text_of(&done)
    );
    let (status, told) = waiter.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(told["status"], "expired");
    assert_eq!(told["decided_by"], "timeout");
    assert_eq!(told["decisions"], json!([]));

    // A click from someone who still had the buttons on screen changes nothing.
    assert_eq!(
        click_at(&app, &clock, &msg.ts, "greenlight.approve", "U0ALICE", &id).await,
        200
    );
    app.sandbox
        .wait_until(WAIT, |sb| {
            sb.ephemerals(CHANNEL, "U0ALICE")
                .into_iter()
                .find(|e| e.text.contains("already expired"))
        })
        .await
        .expect("alice told it expired");
    assert_eq!(app.get(&id).await["status"], "expired");
    let expired_events = app
        .audit()
        .await
        .into_iter()
        .filter(|e| e["request_id"] == id.as_str() && e["event"] == "request.expired")
        .count();
    assert_eq!(expired_events, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_expiry_approve_or_deny_decides_with_a_timeout_decision() {
    for (on_expiry, status, words) in [
        (
            OnExpiry::Approve,
            "approved",
            "*Approved* automatically: no decision within 30m",
        ),
        (
            OnExpiry::Deny,
            "denied",
            "*Denied* automatically: no decision within 30m",
        ),
    ] {
        let clock = TestClock::new();
        let app = spawn_app_clocked(
            |c: &mut Config| {
                c.workflows[0].expires_in = Some("30m".parse().unwrap());
                c.workflows[0].on_expiry = on_expiry;
            },
            clock.clone(),
        )
        .await;
        // No expires_in in the request: the workflow's applies.
        let id = create(&app, json!({"title": "Nightly job"})).await;
        let msg = app.posted(&id).await;
        assert!(app.get(&id).await["expires_at"].is_string());
        clock.advance(31 * MIN);
        let done = app.decided_message(&msg).await;
        assert!(text_of(&done).contains(words), "{}", text_of(&done));
        let got = app.get(&id).await;
        assert_eq!(got["status"], status);
        assert_eq!(got["decisions"][0]["kind"], "timeout");
        assert_eq!(got["decided_by"], "timeout");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_expired_while_the_server_was_down_is_expired_on_start() {
    let clock = TestClock::new();
    let app = spawn_app_clocked(|_| {}, clock.clone()).await;
    let id = create(&app, json!({"title": "Deploy", "expires_in": "10m"})).await;
    let msg = app.posted(&id).await;
    // Down for two hours: stopped, time passes, started again.
    let later = TestClock::new();
    later.advance(120 * MIN);
    let app = app.restart(|_| {}, later.clone()).await;
    let done = app.decided_message(&msg).await;
    assert!(
        text_of(&done).contains("*Expired* after 10m"),
        "{}",
        text_of(&done)
    );
    assert_eq!(app.get(&id).await["status"], "expired");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_mention_the_approvers_in_the_thread_and_the_second_escalates() {
    let clock = TestClock::new();
    let app = spawn_app_clocked(
        |c: &mut Config| {
            let w = &mut c.workflows[0];
            w.approvers = vec!["U0ALICE".parse().unwrap(), "S0SRE".parse().unwrap()];
            w.remind_after = Some("15m".parse().unwrap());
            w.escalate_to = Some("U0ERIN".parse().unwrap());
        },
        clock.clone(),
    )
    .await;
    let id = create(&app, json!({"title": "Deploy api v3"})).await;
    let msg = app.posted(&id).await;

    clock.advance(16 * MIN);
    let replies = |n: usize| {
        let sandbox = app.sandbox.clone();
        let ts = msg.ts.clone();
        async move {
            sandbox
                .wait_until(WAIT, |sb| {
                    let r = sb.thread_replies(CHANNEL, &ts);
                    (r.len() >= n).then_some(r)
                })
                .await
                .unwrap_or_else(|| panic!("{n} reminder(s) in the thread"))
        }
    };
    let first = replies(1).await;
    assert!(first[0].text.contains("<@U0ALICE>"), "{}", first[0].text);
    assert!(
        first[0].text.contains("<!subteam^S0SRE>"),
        "{}",
        first[0].text
    );
    assert!(first[0].text.contains("Deploy api v3"));
    assert!(!first[0].text.contains("U0ERIN"), "no escalation yet");

    clock.advance(15 * MIN);
    let second = replies(2).await;
    assert!(
        second[1].text.contains("Escalating to <@U0ERIN>"),
        "{}",
        second[1].text
    );
    assert!(second[1].text.contains("Reminder 2"));

    // Deciding ends the reminders; the audit shows the two that were sent.
    assert_eq!(
        click_at(&app, &clock, &msg.ts, "greenlight.approve", "U0ALICE", &id).await,
        200
    );
    app.decided_message(&msg).await;
    let reminded = app
        .audit()
        .await
        .into_iter()
        .filter(|e| e["request_id"] == id.as_str() && e["event"] == "request.reminded")
        .count();
    assert_eq!(reminded, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_racing_the_expiry_still_makes_one_decision() {
    let clock = TestClock::new();
    let app = spawn_app_clocked(|_| {}, clock.clone()).await;
    let id = create(&app, json!({"title": "Deploy", "expires_in": "5m"})).await;
    let msg = app.posted(&id).await;
    clock.advance(5 * MIN);
    // The scheduler and Alice's click go for the same version; one of them wins.
    assert_eq!(
        click_at(&app, &clock, &msg.ts, "greenlight.approve", "U0ALICE", &id).await,
        200
    );
    app.decided_message(&msg).await;
    let got = app.get(&id).await;
    assert!(
        got["status"] == "approved" || got["status"] == "expired",
        "{got}"
    );
    let decisions = app
        .audit()
        .await
        .into_iter()
        .filter(|e| {
            e["request_id"] == id.as_str()
                && (e["event"] == "request.approved" || e["event"] == "request.expired")
        })
        .count();
    assert_eq!(decisions, 1);
    app.stop().await;
}

/// With stages, a reminder mentions the approvers of the stages open then, not the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_of_a_workflow_with_stages_mention_the_open_stages_approvers() {
    let clock = TestClock::new();
    let app = spawn_app_clocked(
        |c: &mut Config| {
            let w = &mut c.workflows[0];
            w.remind_after = Some("15m".parse().unwrap());
            w.stages = vec![
                greenlight::config::Stage {
                    name: "owners".into(),
                    approvers: vec!["S0SRE".parse().unwrap()],
                    approvals_required: 1,
                },
                greenlight::config::Stage {
                    name: "security".into(),
                    approvers: vec!["U0ERIN".parse().unwrap()],
                    approvals_required: 1,
                },
            ];
        },
        clock.clone(),
    )
    .await;
    let id = create(&app, json!({"title": "Deploy api v4"})).await;
    let msg = app.posted(&id).await;
    clock.advance(16 * MIN);
    let reminder = app
        .sandbox
        .wait_until(WAIT, |sb| {
            sb.thread_replies(CHANNEL, &msg.ts)
                .into_iter()
                .find(|m| m.text.contains("Reminder 1"))
        })
        .await
        .expect("a reminder in the thread");
    assert!(
        reminder.text.contains("<!subteam^S0SRE>"),
        "{}",
        reminder.text
    );
    assert!(!reminder.text.contains("U0ERIN"), "{}", reminder.text);
    app.stop().await;
}
