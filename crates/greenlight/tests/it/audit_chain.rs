//! The audit log as evidence, through the real binary: `audit verify` and `audit export` on
//! what a running server wrote, a database an earlier version left unchained upgraded by
//! `migrate`, entries forged or made unreadable behind its back, and
//! `backup` taken under load whose copy verifies.

use std::process::Output;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::*;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the server's chainer has chained every entry written so far.
async fn chained(app: &TestApp) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let events = app.audit().await;
        if events.iter().all(|e| e["hash"].is_string()) {
            return events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never chained: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_chains_its_log_and_the_export_carries_the_hashes() {
    let app = spawn_app().await;
    for title in ["Deploy api v1", "Deploy api v2"] {
        let id = app.create_ok(title).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let msg = app.posted(&id).await;
        assert!(
            app.click(&msg, "greenlight.approve", "U0ALICE")
                .await
                .acked()
        );
        app.decided_message(&msg).await;
    }
    let events = chained(&app).await;
    assert!(events.len() >= 4);
    for pair in events.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }

    let verified = greenlight_on(&app.db_url, &["audit", "verify"]);
    assert!(verified.status.success(), "{}", stdout(&verified));
    assert!(stdout(&verified).contains(&format!("{} entries chained", events.len())));

    let export = greenlight_on(&app.db_url, &["audit", "export"]);
    assert!(export.status.success());
    let lines: Vec<Value> = stdout(&export)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), events.len());
    for (line, event) in lines.iter().zip(&events) {
        assert_eq!(line["hash"], event["hash"]);
        assert_eq!(line["id"], event["id"]);
        let data: Value = serde_json::from_str(line["data_json"].as_str().unwrap()).unwrap();
        assert_eq!(data, line["data"]);
    }
    // --after continues an earlier export.
    let last_but_one = lines[lines.len() - 2]["id"].as_i64().unwrap().to_string();
    let rest = greenlight_on(&app.db_url, &["audit", "export", "--after", &last_but_one]);
    assert_eq!(stdout(&rest).lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_chains_what_an_earlier_version_left_unchained() {
    // A database an earlier version wrote and stopped before its background chainer ran:
    // written, then the chain positions and the queue this version adds removed.
    let db = TestDb::sqlite();
    let store = greenlight::store::connect(&db.url).await.unwrap();
    let service = greenlight::service::Service::new(
        store.clone(),
        std::sync::Arc::new(greenlight::domain::SystemClock),
        vec![greenlight::config::Workflow::new(
            "deploy".parse().unwrap(),
            "#deploy".parse().unwrap(),
        )],
        std::sync::Arc::new(tokio::sync::Notify::new()),
    );
    let key = greenlight::store::ApiKey {
        id: greenlight::domain::ApiKeyId::generate(),
        name: "old".into(),
        scopes: vec![greenlight::store::Scope::Request],
        created_at: jiff::Timestamp::now(),
        revoked_at: None,
    };
    for n in 0..3 {
        let input = greenlight::service::CreateInput {
            title: format!("Old #{n}"),
            ..Default::default()
        };
        service.create(input, &key).await.unwrap();
    }
    store.close().await;
    drop(service);
    {
        let conn = rusqlite::Connection::open(db.url.trim_start_matches("sqlite:")).unwrap();
        let chained: i64 = conn
            .query_row("SELECT count(*) FROM audit_chain", [], |r| r.get(0))
            .unwrap();
        assert_eq!(chained, 3, "this version chains each entry as it writes it");
        conn.execute_batch(
            "DROP TRIGGER audit_chain_no_delete; DELETE FROM audit_chain; \
             DROP TABLE audit_pending; DELETE FROM _sqlx_migrations WHERE version = 17;",
        )
        .unwrap();
    }
    let migrated = greenlight_on(&db.url, &["migrate"]);
    assert!(migrated.status.success());
    assert!(
        String::from_utf8_lossy(&migrated.stderr).contains("chained 3 audit entries"),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let verified = greenlight_on(&db.url, &["audit", "verify"]);
    assert!(verified.status.success(), "{}", stdout(&verified));
    assert!(stdout(&verified).contains("3 entries chained"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_exits_1_naming_the_entry_that_was_edited() {
    let app = spawn_app().await;
    app.create_ok("Deploy api v3").await;
    app.create_ok("Deploy api v4").await;
    let events = chained(&app).await;
    let second = events[1]["id"].as_i64().unwrap();
    {
        let conn = rusqlite::Connection::open(app.db_url.trim_start_matches("sqlite:")).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn.execute_batch(&format!(
            "DROP TRIGGER audit_no_update; UPDATE audit SET data = '{{\"title\":\"Deploy nothing\"}}' WHERE id = {second}"
        ))
        .unwrap();
    }
    let verified = greenlight_on(&app.db_url, &["audit", "verify"]);
    assert_eq!(verified.status.code(), Some(1));
    assert!(
        stdout(&verified).contains(&format!("entry {second} (chain position 2) was edited")),
        "{}",
        stdout(&verified)
    );
}

/// `greenlight backup` while requests keep arriving: the copy is a consistent database whose
/// chain verifies, and the server never noticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_is_consistent_and_its_chain_verifies() {
    let app = spawn_app().await;
    let load = {
        let (http, base, key) = (app.http.clone(), app.base.clone(), app.key.clone());
        tokio::spawn(async move {
            futures::stream::iter(0..300)
                .map(|n| {
                    let (http, base, key) = (http.clone(), base.clone(), key.clone());
                    async move {
                        let (status, _) = call(
                            &http,
                            &base,
                            &key,
                            reqwest::Method::POST,
                            "/v1/requests",
                            Some(json!({"title": format!("Under load #{n}")})),
                        )
                        .await;
                        status
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<u16>>()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("backup.db");
    let backed_up = greenlight_on(&app.db_url, &["backup", copy.to_str().unwrap()]);
    assert!(
        backed_up.status.success(),
        "{}",
        String::from_utf8_lossy(&backed_up.stderr)
    );
    let statuses = load.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 201));
    let copy_url = format!("sqlite:{}", copy.display());
    let verified = greenlight_on(&copy_url, &["audit", "verify"]);
    assert!(verified.status.success(), "{}", stdout(&verified));
    // A backup refuses to overwrite.
    let again = greenlight_on(&app.db_url, &["backup", copy.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    // The copy is a database greenlight opens, with the requests of that moment.
    let store = greenlight::store::connect(&copy_url).await.unwrap();
    let listed = store
        .list_requests(&greenlight::store::ListFilter {
            limit: 200,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!listed.is_empty());
}

/// Inserts an audit entry the way someone with the database file would, the server stopped.
fn forge(db_url: &str, at_ms: i64, request_id: &str) -> i64 {
    let conn = rusqlite::Connection::open(db_url.trim_start_matches("sqlite:")).unwrap();
    conn.execute(
        "INSERT INTO audit (at, request_id, event, actor, data) VALUES (?1, ?2, 'request.approved', 'U0ALICE', '{}')",
        rusqlite::params![at_ms, request_id],
    )
    .unwrap();
    conn.last_insert_rowid()
}

/// The probe's forgery: "approved by U0ALICE" inserted with the server stopped. greenlight
/// chains only what it wrote, so the entry stays outside the chain through any number of
/// restarts, and `verify` reports it before and after, whatever its date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_forged_entry_before_and_after_restarts() {
    for (dated, ago_ms) in [("an hour before its predecessor", 3_600_000), ("now", 0)] {
        let app = spawn_app().await;
        let id = app.create_ok("Deploy api v5").await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let written = chained(&app).await.len();
        let key = app.key.clone();
        let sandbox = app.sandbox.clone();
        let db = app.stop().await;
        let forged = forge(
            &db.url,
            jiff::Timestamp::now().as_millisecond() - ago_ms,
            &id,
        );
        let reported = |out: &Output| {
            assert_eq!(out.status.code(), Some(1), "{dated}: {}", stdout(out));
            assert!(
                stdout(out).contains(&format!("entry {forged} is in no chain position"))
                    && stdout(out).contains("inserted outside greenlight"),
                "{dated}: {}",
                stdout(out)
            );
        };
        reported(&greenlight_on(&db.url, &["audit", "verify"]));
        // Two starts and stops of the server, with a write in between.
        let mut db = db;
        for round in 0..2 {
            let app = boot(
                sandbox.clone(),
                db,
                Some(key.clone()),
                |_| {},
                std::sync::Arc::new(greenlight::domain::SystemClock),
            )
            .await;
            app.create_ok(&format!("Deploy api v5.{round}")).await;
            // Everything greenlight wrote is chained; the forged entry is not.
            let events = app.audit().await;
            assert!(events.len() > written + 1 + round, "{events:?}");
            for e in &events {
                assert_eq!(
                    e["hash"].is_string(),
                    e["id"].as_i64() != Some(forged),
                    "{dated}: {e}"
                );
            }
            db = app.stop().await;
            reported(&greenlight_on(&db.url, &["audit", "verify"]));
        }
        assert_eq!(greenlight_on(&db.url, &["migrate"]).status.code(), Some(0));
        reported(&greenlight_on(&db.url, &["audit", "verify"]));
    }
}

/// An entry whose time is not a time is named with exit 1, not a failure to read (exit 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_an_unreadable_entry() {
    let app = spawn_app().await;
    app.create_ok("Deploy api v7").await;
    app.create_ok("Deploy api v8").await;
    let first = chained(&app).await[0]["id"].as_i64().unwrap();
    let db_url = app.db_url.clone();
    let _db = app.stop().await;
    let conn = rusqlite::Connection::open(db_url.trim_start_matches("sqlite:")).unwrap();
    conn.execute_batch(&format!(
        "DROP TRIGGER audit_no_update; UPDATE audit SET at = 'yesterday' WHERE id = {first}"
    ))
    .unwrap();
    drop(conn);
    let verified = greenlight_on(&db_url, &["audit", "verify"]);
    assert_eq!(verified.status.code(), Some(1), "{}", stdout(&verified));
    assert!(
        stdout(&verified).contains(&format!("entry {first} (chain position 1) cannot be read"))
            && stdout(&verified).contains("time is text"),
        "{}",
        stdout(&verified)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_an_entry_dated_in_the_future() {
    let app = spawn_app().await;
    let id = app.create_ok("Deploy api v6").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    chained(&app).await;
    let db_url = app.db_url.clone();
    let _db = app.stop().await;
    let a_year_ahead = jiff::Timestamp::now().as_millisecond() + 365 * 86_400_000;
    let forged = forge(&db_url, a_year_ahead, &id);
    let verified = greenlight_on(&db_url, &["audit", "verify"]);
    assert_eq!(verified.status.code(), Some(1), "{}", stdout(&verified));
    assert!(
        stdout(&verified).contains(&format!("entry {forged} is dated"))
            && stdout(&verified).contains("in the future"),
        "{}",
        stdout(&verified)
    );
}
