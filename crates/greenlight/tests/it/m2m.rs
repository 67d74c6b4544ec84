//! Machine to machine: rules that read signals and history, digests instead of floods, and
//! alerts on anomalies, all on the real server, store and sandbox.

use std::time::{Duration, Instant};

use futures::StreamExt;
use greenlight::config::{Alert, AlertKind, Config, Workflow};
use greenlight::domain::{Notify, Verdict};
use greenlight::store::Scope;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::receiver::Receiver;

fn events<'a>(audit: &'a [Value], event: &str) -> Vec<&'a Value> {
    audit.iter().filter(|e| e["event"] == event).collect()
}

fn of_request<'a>(audit: &'a [Value], id: &str) -> Vec<&'a str> {
    audit
        .iter()
        .filter(|e| e["request_id"] == id)
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

/// Every audit entry (the API pages by 1,000).
async fn full_audit(app: &TestApp) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let path = format!("/v1/audit?limit=1000{after}");
        let (status, body) = app.call(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{body}");
        let page = body["events"].as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            return out;
        }
        after = format!("&after={}", page.last().unwrap()["id"]);
        out.extend(page);
    }
}

/// The digest messages in `channel`, by their metadata.
fn digests(app: &TestApp, channel: &str) -> Vec<greenlight_sandbox::Message> {
    app.sandbox
        .messages(channel)
        .into_iter()
        .filter(|m| text_of(m).contains("auto-decision"))
        .collect()
}

/// The count a digest message shows ("*2000 auto-decisions*").
fn digest_count(m: &greenlight_sandbox::Message) -> u64 {
    let text = text_of(m);
    let after = text.split(":robot_face: *").nth(1).unwrap_or_default();
    after
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_digest_auto_approvals_are_all_recorded_and_called_back_in_a_few_messages() {
    const N: usize = 2000;
    let machine = Receiver::start(&[], 200).await;
    let app = spawn_app_with(|c: &mut Config| {
        c.delivery.allow_private_targets = true;
        c.limits.requests_per_minute_per_key = 1_000_000;
        c.public_url = Some("https://greenlight.example.com".into());
        let mut w = c.workflows.remove(0);
        w = w.with_rule("small-payment", "params.amount < 500", Verdict::Approve);
        w.rules[0].notify = Some(Notify::Digest);
        w.digest_interval = "1h".parse().unwrap();
        c.workflows.push(w);
    })
    .await;
    let callback = machine.url("/paid");
    let started = Instant::now();
    let statuses: Vec<(u16, Value)> = futures::stream::iter(0..N)
        .map(|i| {
            let body = json!({
                "title": format!("Pay invoice {i}"),
                "params": {"amount": 100 + (i % 300)},
                "requester": if i % 3 == 0 { "U0FRANK" } else { "billing-bot" },
                "callback_url": callback,
            });
            let app = &app;
            async move { app.create(body).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let took = started.elapsed();
    let mut ids = Vec::new();
    for (status, body) in &statuses {
        assert_eq!(*status, 201, "{body}");
        assert_eq!(body["status"], "approved", "{body}");
        assert_eq!(body["decided_by"], "small-payment");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    eprintln!("{N} digest creates in {took:?}");

    // Every one was called back (created, then approved), with nothing lost.
    let got = machine
        .wait_for(Duration::from_secs(60), |r| r.len() >= 2 * N)
        .await;
    let approved: std::collections::HashSet<String> = got
        .iter()
        .map(|r| r.json())
        .filter(|b| b["type"] == "request.approved")
        .map(|b| b["data"]["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(approved.len(), N, "one approved callback per request");

    // Slack saw the digest and its updates: no message per request.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown: u64 = digests(&app, CHANNEL).iter().map(digest_count).sum();
        if shown == N as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "the digests show {shown} of {N}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let messages = app.sandbox.messages(CHANNEL);
    assert!(
        messages.len() <= 2,
        "a digest per window, nothing per request: {} messages",
        messages.len()
    );
    let posts = app.sandbox.calls_to("chat.postMessage").len();
    let updates = app.sandbox.calls_to("chat.update").len();
    assert!(posts <= 2, "{posts} posts");
    assert!(
        updates <= 5 + took.as_secs() as usize,
        "{updates} updates: one every couple of seconds at most"
    );
    let digest = &digests(&app, CHANNEL)[0];
    let text = text_of(digest);
    assert!(text.contains("rule *small-payment* approved"), "{text}");
    assert!(text.contains("<@U0FRANK>"), "who it was for: {text}");
    assert!(
        text.contains("<https://greenlight.example.com/v1/requests/req_"),
        "each recent one links to its API resource: {text}"
    );

    // And every one is in the API and the audit, as approved by the rule.
    let one = app.get(&ids[N / 2]).await;
    assert_eq!(one["status"], "approved");
    assert!(
        one["slack"].is_null(),
        "no message of its own: {}",
        one["slack"]
    );
    let audit = full_audit(&app).await;
    let decided = events(&audit, "request.approved");
    assert_eq!(decided.len(), N);
    assert!(decided.iter().all(|e| e["data"]["notify"] == "digest"));
    assert_eq!(
        of_request(&audit, &ids[7]),
        ["request.created", "request.approved"]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_rules_post_nothing_but_are_recorded_and_called_back() {
    let machine = Receiver::start(&[], 200).await;
    let app = spawn_app_with(|c: &mut Config| {
        c.delivery.allow_private_targets = true;
        let mut w = c.workflows.remove(0);
        w = w.with_rule("tiny", "params.amount < 5", Verdict::Approve);
        w.notify = Notify::Silent;
        c.workflows.push(w);
    })
    .await;
    let (status, req) = app
        .create(
            json!({"title": "Pay 1", "params": {"amount": 1}, "callback_url": machine.url("/x")}),
        )
        .await;
    assert_eq!((status, req["status"].as_str()), (201, Some("approved")));
    let got = machine.wait_for(WAIT, |r| r.len() >= 2).await;
    let mut types: Vec<String> = got.iter().map(|r| r.json()["type"].to_string()).collect();
    types.sort();
    assert_eq!(types, ["\"request.approved\"", "\"request.created\""]);
    // A request left to people still gets its message, silent or not.
    let (_, pending) = app
        .create(json!({"title": "Pay 900", "params": {"amount": 900}}))
        .await;
    app.posted(pending["id"].as_str().unwrap()).await;
    assert_eq!(
        app.sandbox.messages(CHANNEL).len(),
        1,
        "only the one people decide"
    );
    let audit = app.audit().await;
    let id = req["id"].as_str().unwrap();
    assert_eq!(
        of_request(&audit, id),
        ["request.created", "request.approved"]
    );
    app.stop().await;
}

async fn set_signal(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    call(
        &app.http,
        &app.base,
        key,
        Method::POST,
        "/v1/signals",
        Some(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_green_in_staging_for_24_hours_is_approved_and_not_before() {
    let clock = TestClock::new();
    let app = spawn_app_clocked(
        |c: &mut Config| {
            let w = c.workflows.remove(0).with_rule(
                "staging-green",
                r#"signals["staging/api"].value == "green" && signals["staging/api"].unchanged_for > duration("24h")"#,
                Verdict::Approve,
            );
            c.workflows.push(w);
        },
        clock.clone(),
    )
    .await;
    let reporter = create_key(&app.db_url, "staging-monitor", &[Scope::Signal]).await;
    let deploy = || async { app.create(json!({"title": "Deploy api to prod"})).await.1 };

    // Never reported: left to people, and the audit says why the rule did not match.
    let first = deploy().await;
    assert_eq!(first["status"], "pending");
    let audit = app.audit().await;
    let failed = events(&audit, "rule.failed");
    assert_eq!(failed.len(), 1, "{audit:?}");
    assert_eq!(failed[0]["request_id"], first["id"]);
    let why = failed[0]["data"]["error"].as_str().unwrap();
    assert!(why.contains("signal \"staging/api\" is unknown"), "{why}");

    // Red: no match.
    let (status, red) = set_signal(
        &app,
        &reporter,
        json!({"name": "staging/api", "value": "red"}),
    )
    .await;
    assert_eq!(status, 200, "{red}");
    assert_eq!(
        (red["changed"].as_bool(), red["set_by"].as_str()),
        (Some(true), Some("staging-monitor"))
    );
    clock.advance(Duration::from_secs(30 * 3600));
    assert_eq!(deploy().await["status"], "pending");

    // Green, but too fresh.
    let (_, green) = set_signal(
        &app,
        &reporter,
        json!({"name": "staging/api", "value": "green", "ttl": "48h"}),
    )
    .await;
    assert_eq!(green["changed"], true);
    clock.advance(Duration::from_secs(23 * 3600));
    assert_eq!(deploy().await["status"], "pending");

    // Refreshed (same value, since kept) and green for 25 hours: approved by the rule.
    let (_, refreshed) = set_signal(
        &app,
        &reporter,
        json!({"name": "staging/api", "value": "green", "ttl": "2h"}),
    )
    .await;
    assert_eq!(refreshed["changed"], false);
    assert_eq!(refreshed["since"], green["since"]);
    assert_eq!(refreshed["live"], true);
    clock.advance(Duration::from_secs(3600 + 60));
    let approved = deploy().await;
    assert_eq!(
        approved["status"], "approved",
        "green for 24 h 1 min: {approved}"
    );
    assert_eq!(approved["decided_by"], "staging-green");

    // Past its ttl (2 h after the refresh) it is unknown again.
    clock.advance(Duration::from_secs(3600));
    let lapsed = deploy().await;
    assert_eq!(lapsed["status"], "pending");
    let (status, shown) = app.call(Method::GET, "/v1/signals/staging/api", None).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        (shown["value"].as_str(), shown["live"].as_bool()),
        (Some("green"), Some(false))
    );
    let (_, all) = app.call(Method::GET, "/v1/signals", None).await;
    assert_eq!(all["signals"].as_array().unwrap().len(), 1, "{all}");
    let audit = app.audit().await;
    let why = events(&audit, "rule.failed")
        .into_iter()
        .find(|e| e["request_id"] == lapsed["id"])
        .expect("the lapsed signal is named")["data"]["error"]
        .clone();
    assert!(why.as_str().unwrap().contains("is unknown"), "{why}");

    // Every change is audited, a refresh is not.
    let changes = events(&audit, "signal.changed");
    assert_eq!(changes.len(), 2, "red, then green: {changes:?}");
    assert_eq!(changes[1]["data"]["previous"], "red");
    assert_eq!(changes[1]["actor"], "staging-monitor");

    // Scopes and bad input.
    let (status, body) = app.call(Method::GET, "/v1/signals/prod/db", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, body) =
        set_signal(&app, &reporter, json!({"name": "Staging API", "value": 1})).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = set_signal(
        &app,
        &reporter,
        json!({"name": "x", "value": 1, "ttl": "0s"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = set_signal(&app, &reporter, json!({"name": "x"})).await;
    assert_eq!(status, 400, "a value is required");
    let requester = create_key(&app.db_url, "ci-only", &[Scope::Request]).await;
    let (status, body) = set_signal(&app, &requester, json!({"name": "x", "value": 1})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_approved_in_staging_is_approved_in_prod_without_asking_again() {
    let app = spawn_app_with(|c: &mut Config| {
        c.workflows = vec![
            Workflow::new("staging".parse().unwrap(), "#deploy".parse().unwrap()),
            Workflow::new("prod".parse().unwrap(), "#deploy".parse().unwrap()).with_rule(
                "promoted",
                r#"approved_in("staging", "version", params.version) && count_denials("prod", "1h") < 3"#,
                Verdict::Approve,
            ),
        ];
    })
    .await;
    let ask = |workflow: &'static str, version: &'static str| {
        let app = &app;
        async move {
            let (status, body) = app
                .create(json!({"workflow": workflow, "title": format!("Deploy {version}"), "params": {"version": version}}))
                .await;
            assert_eq!(status, 201, "{body}");
            body
        }
    };
    let staging = ask("staging", "1.4.2").await;
    assert_eq!(
        ask("prod", "1.4.2").await["status"],
        "pending",
        "not approved in staging yet"
    );
    let id = staging["id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/requests/{id}/decisions"),
            Some(json!({"verdict": "approve"})),
        )
        .await;
    assert_eq!(status, 200);
    let second = ask("prod", "1.4.2").await;
    assert_eq!(second["status"], "approved", "{second}");
    assert_eq!(second["decided_by"], "promoted");
    assert_eq!(
        ask("prod", "1.5.0").await["status"],
        "pending",
        "another version"
    );
    app.stop().await;
}

fn alert(name: &str, above: u32, per_requester: bool) -> Alert {
    Alert {
        name: name.into(),
        kind: AlertKind::Requests,
        above,
        within: "10m".parse().unwrap(),
        rule: None,
        workflow: Some("deploy".parse().unwrap()),
        per_requester,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_fires_once_per_window_and_again_in_the_next() {
    let clock = TestClock::new();
    let app = spawn_app_clocked(
        |c: &mut Config| {
            c.alerts.channel = Some("C0OPS".parse().unwrap());
            c.alert_rules = vec![alert("deploy-flood", 3, false), alert("one-bot", 5, true)];
            let w = c.workflows.remove(0).with_rule(
                "everything",
                "params.auto == true",
                Verdict::Approve,
            );
            c.workflows.push(w);
            c.alert_rules.push(Alert {
                name: "rule-runaway".into(),
                kind: AlertKind::AutoDecisions,
                rule: Some("everything".into()),
                workflow: None,
                ..alert("x", 1, false)
            });
        },
        clock.clone(),
    )
    .await;
    let alerts_in_ops = |app: &TestApp| {
        app.sandbox
            .messages("C0OPS")
            .into_iter()
            .map(|m| text_of(&m))
            .filter(|t| t.contains("Alert"))
            .collect::<Vec<_>>()
    };
    for i in 0..4 {
        app.create(json!({"title": format!("Deploy {i}"), "requester": "U0FRANK"}))
            .await;
    }
    let fired = app
        .sandbox
        .wait_for_message_in("C0OPS", |m| text_of(m).contains("deploy-flood"), WAIT)
        .await
        .expect("the flood alert fires");
    let text = text_of(&fired);
    assert!(
        text.contains("4 requests in workflow *deploy* in the last 10m (above 3)"),
        "{text}"
    );
    // More in the same window: quiet. Two auto-decisions trip the rule alert, once.
    for i in 0..3 {
        app.create(json!({"title": format!("More {i}"), "requester": "U0FRANK", "params": {"auto": i < 2}}))
            .await;
    }
    app.sandbox
        .wait_for_message_in("C0OPS", |m| text_of(m).contains("one-bot"), WAIT)
        .await
        .expect("the per-requester alert fires for U0FRANK");
    app.sandbox
        .wait_for_message_in("C0OPS", |m| text_of(m).contains("rule-runaway"), WAIT)
        .await
        .expect("the rule alert fires");
    tokio::time::sleep(greenlight::service::alerts::CHECK_EVERY * 2).await;
    let shown = alerts_in_ops(&app);
    assert_eq!(shown.len(), 3, "each once: {shown:?}");
    assert!(
        shown
            .iter()
            .any(|t| t.contains("<@U0FRANK> made 7 requests")),
        "{shown:?}"
    );

    // The next window: the flood fires again once its window has passed.
    clock.advance(Duration::from_secs(11 * 60));
    for i in 0..4 {
        app.create(json!({"title": format!("Later {i}"), "requester": "U0ERIN"}))
            .await;
    }
    let deadline = Instant::now() + WAIT;
    while alerts_in_ops(&app)
        .iter()
        .filter(|t| t.contains("deploy-flood"))
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "{:?}", alerts_in_ops(&app));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(greenlight::service::alerts::CHECK_EVERY * 2).await;
    let audit = full_audit(&app).await;
    let fired: Vec<&str> = events(&audit, "alert.fired")
        .iter()
        .map(|e| e["data"]["alert"].as_str().unwrap())
        .collect();
    let mut sorted = fired.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        ["deploy-flood", "deploy-flood", "one-bot", "rule-runaway"]
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("greenlight_alerts_fired_total{alert=\"deploy-flood\"} 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("alerts"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    app.stop().await;
}
