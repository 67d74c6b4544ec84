//! Signals are bounded: listed a page at a time, deleted through the API (audited), capped at
//! `[limits] max_signals`, and purged once lapsed for longer than `[limits] signal_retention`;
//! all on the real server and a SQLite file (the store's side runs on both backends in
//! `store.rs`).

use std::collections::BTreeSet;

use greenlight::store::Scope;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

async fn set(app: &TestApp, key: &str, name: &str, value: Value) -> (u16, Value) {
    call(
        &app.http,
        &app.base,
        key,
        Method::POST,
        "/v1/signals",
        Some(json!({"name": name, "value": value})),
    )
    .await
}

async fn names(app: &TestApp) -> Vec<String> {
    let (status, list) = app.call(Method::GET, "/v1/signals", None).await;
    assert_eq!(status, 200, "{list}");
    list["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

fn events<'a>(audit: &'a [Value], event: &str) -> Vec<&'a Value> {
    audit.iter().filter(|e| e["event"] == event).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_are_listed_a_page_at_a_time_like_requests() {
    let app = spawn_app().await;
    let names: BTreeSet<String> = (0..120).map(|i| format!("svc/{i:03}")).collect();
    for name in &names {
        let (status, body) = set(&app, &app.key, name, json!("green")).await;
        assert_eq!(status, 200, "{body}");
    }

    // The default page is 50; following next_cursor gives every signal once, by name.
    let mut seen = Vec::new();
    let mut path = "/v1/signals".to_owned();
    let mut pages = Vec::new();
    loop {
        let (status, page) = app.call(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        let got = page["signals"].as_array().unwrap();
        pages.push(got.len());
        seen.extend(got.iter().map(|s| s["name"].as_str().unwrap().to_owned()));
        assert!(
            got.iter()
                .all(|s| s["live"] == true && s["value"] == "green")
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/signals?cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, [50, 50, 20]);
    assert_eq!(seen, names.iter().cloned().collect::<Vec<_>>());

    // A smaller page, and a cursor holding a `/` as it is.
    let (_, page) = app.call(Method::GET, "/v1/signals?limit=2", None).await;
    assert_eq!(page["next_cursor"], "svc/001", "{page}");
    let (_, page) = app
        .call(Method::GET, "/v1/signals?limit=200&cursor=svc/117", None)
        .await;
    let rest: Vec<&str> = page["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(rest, ["svc/118", "svc/119"]);
    assert_eq!(page["next_cursor"], Value::Null);

    // Bad paging: 400 invalid_query.
    for bad in [
        "limit=0",
        "limit=201",
        "limit=x",
        "cursor=Not%20A%20Name",
        "after=svc/001",
    ] {
        let (status, body) = app
            .call(Method::GET, &format!("/v1/signals?{bad}"), None)
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_query")),
            "{bad}: {body}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_is_deleted_through_the_api_with_an_audit_entry() {
    let app = spawn_app().await;
    let reporter = create_key(&app.db_url, "staging-monitor", &[Scope::Signal]).await;
    let reader = create_key(&app.db_url, "dashboard", &[Scope::Read]).await;
    let delete = |key: &str, name: &str| {
        let (app, key, path) = (&app, key.to_owned(), format!("/v1/signals/{name}"));
        async move { call(&app.http, &app.base, &key, Method::DELETE, &path, None).await }
    };
    assert_eq!(
        set(&app, &reporter, "staging/api", json!("green")).await.0,
        200
    );
    assert_eq!(
        set(&app, &reporter, "staging/db", json!("red")).await.0,
        200
    );

    // Only a key with the signal scope (or admin) may; bad names and unknown ones are refused.
    let before = app.audit().await.len();
    let (status, body) = delete(&reader, "staging/api").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, body) = delete(&reporter, "Staging API").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = delete(&reporter, "prod/api").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(app.audit().await.len(), before, "refusals change nothing");

    // Deleted: answered with what it was, gone from reads, audited with who and what.
    let (status, gone) = delete(&reporter, "staging/api").await;
    assert_eq!(status, 200, "{gone}");
    assert_eq!(
        (gone["name"].as_str(), gone["value"].as_str()),
        (Some("staging/api"), Some("green"))
    );
    let (status, body) = app.call(Method::GET, "/v1/signals/staging/api", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, body) = delete(&reporter, "staging/api").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "once"
    );
    let audit = app.audit().await;
    let deleted = events(&audit, "signal.deleted");
    assert_eq!(deleted.len(), 1, "{audit:?}");
    assert_eq!(deleted[0]["actor"], "staging-monitor");
    assert_eq!(deleted[0]["data"]["name"], "staging/api");
    assert_eq!(deleted[0]["data"]["value"], "green");

    // An admin key may too; the list no longer shows either.
    let (status, _) = delete(&app.key, "staging/db").await;
    assert_eq!(status, 200);
    let (_, list) = app.call(Method::GET, "/v1/signals", None).await;
    assert_eq!(list["signals"], json!([]), "{list}");
    // Set again after a delete: a new signal, its change audited as one.
    let (status, again) = set(&app, &reporter, "staging/api", json!("green")).await;
    assert_eq!((status, again["changed"].as_bool()), (200, Some(true)));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_name_past_max_signals_is_refused_and_existing_ones_are_still_set() {
    let app = spawn_app_with(|c| c.limits.max_signals = 4).await;
    for name in ["a", "b", "c"] {
        assert_eq!(set(&app, &app.key, name, json!(1)).await.0, 200);
    }

    // One place left and eight new names at once: exactly one takes it.
    let racers: Vec<(u16, Value)> = futures::future::join_all((0..8).map(|i| {
        let (app, name) = (&app, format!("new/{i}"));
        async move { set(app, &app.key, &name, json!(i)).await }
    }))
    .await;
    let won = racers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(won, 1, "{racers:?}");
    for (status, body) in racers.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(
            (*status, body["error"]["code"].as_str()),
            (429, Some("too_many_signals")),
            "{body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_signals"),
            "{body}"
        );
    }

    // Full: a new name is refused and changes nothing; an existing name is still set.
    let before = app.audit().await.len();
    let (status, body) = set(&app, &app.key, "d", json!(1)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_signals"))
    );
    assert_eq!(
        app.audit().await.len(),
        before,
        "a refused report is not audited"
    );
    let (status, body) = app.call(Method::GET, "/v1/signals/d", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = set(&app, &app.key, "a", json!(2)).await;
    assert_eq!(
        (status, body["changed"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    let (_, list) = app.call(Method::GET, "/v1/signals", None).await;
    assert_eq!(list["signals"].as_array().unwrap().len(), 4, "{list}");

    // A delete frees a place.
    let (status, _) = app.call(Method::DELETE, "/v1/signals/b", None).await;
    assert_eq!(status, 200);
    assert_eq!(set(&app, &app.key, "d", json!(1)).await.0, 200);
    assert!(
        app.metrics()
            .await
            .contains("greenlight_signals_refused_total")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_lapsed_longer_than_its_retention_is_deleted_with_an_audit_entry() {
    let clock = TestClock::new();
    let app = spawn_app_clocked(
        |c| c.limits.signal_retention = "1h".parse().unwrap(),
        clock.clone(),
    )
    .await;
    let ttl = |name: &str, ttl: &str| {
        let (app, body) = (&app, json!({"name": name, "value": "green", "ttl": ttl}));
        async move { app.call(Method::POST, "/v1/signals", Some(body)).await }
    };
    assert_eq!(ttl("lapses", "1m").await.0, 200);
    assert_eq!(ttl("refreshed", "1m").await.0, 200);
    assert_eq!(set(&app, &app.key, "forever", json!("green")).await.0, 200);

    // Lapsed, but within its retention: kept (shown as not live).
    clock.advance(std::time::Duration::from_secs(50 * 60));
    assert_eq!(ttl("refreshed", "1m").await.0, 200);
    tokio::time::sleep(greenlight::service::scheduler::TICK * 4).await;
    assert_eq!(names(&app).await, ["forever", "lapses", "refreshed"]);

    // Lapsed for over an hour: deleted by the scheduler, with an audit entry saying why.
    clock.advance(std::time::Duration::from_secs(15 * 60));
    let deadline = std::time::Instant::now() + WAIT;
    while names(&app).await.len() == 3 {
        assert!(std::time::Instant::now() < deadline, "never purged");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(names(&app).await, ["forever", "refreshed"]);
    let audit = app.audit().await;
    let deleted = events(&audit, "signal.deleted");
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0]["actor"], "greenlight");
    assert_eq!(deleted[0]["data"]["name"], "lapses");
    let why = deleted[0]["data"]["reason"].as_str().unwrap();
    assert!(why.contains("signal_retention (1h)"), "{why}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_see_the_signals_they_name_and_a_rule_over_all_of_them_sees_every_live_one() {
    use greenlight::config::{Config, Workflow};
    use greenlight::domain::Verdict;
    let app = spawn_app_with(|c: &mut Config| {
        c.workflows = vec![
            Workflow::new("deploy".parse().unwrap(), "#deploy".parse().unwrap()).with_rule(
                "green",
                r#"signals["staging/api"].value == "green" && "staging/db" in signals"#,
                Verdict::Approve,
            ),
            Workflow::new("release".parse().unwrap(), "#deploy".parse().unwrap()).with_rule(
                "frozen",
                r#"signals.exists(n, n.startsWith("freeze/") && signals[n].value == true)"#,
                Verdict::Deny,
            ),
        ];
    })
    .await;
    let ask = |workflow: &'static str| {
        let app = &app;
        async move {
            let (status, body) = app
                .create(json!({"workflow": workflow, "title": "Ship it"}))
                .await;
            assert_eq!(status, 201, "{body}");
            body["status"].as_str().unwrap().to_owned()
        }
    };
    for i in 0..40 {
        set(
            &app,
            &app.key,
            &format!("noise/{i}"),
            json!("x".repeat(1000)),
        )
        .await;
    }
    assert_eq!(
        set(&app, &app.key, "staging/api", json!("green")).await.0,
        200
    );
    assert_eq!(ask("deploy").await, "pending", "staging/db was never set");
    assert_eq!(set(&app, &app.key, "staging/db", json!("up")).await.0, 200);
    assert_eq!(ask("deploy").await, "approved");

    assert_eq!(ask("release").await, "pending");
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/signals",
            Some(json!({"name": "freeze/eu", "value": true, "ttl": "1h"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        ask("release").await,
        "denied",
        "found by iterating every live signal"
    );
    let (status, _) = app
        .call(Method::DELETE, "/v1/signals/freeze/eu", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        ask("release").await,
        "pending",
        "deleted: rules no longer see it"
    );
    app.stop().await;
}
