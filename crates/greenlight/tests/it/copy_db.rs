//! `greenlight copy-db`: a team that started on SQLite moves to PostgreSQL without losing
//! history. Run as the real binary; the copied database then serves the old buttons.

use std::process::Output;

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

fn greenlight(args: &[&str]) -> Output {
    std::process::Command::new(bin())
        .args(args)
        .env_remove("GREENLIGHT_CONFIG")
        .env_remove("GREENLIGHT_WEBHOOK_SECRET")
        .output()
        .expect("greenlight runs")
}

fn webhook_secret(db_url: &str) -> String {
    let out = std::process::Command::new(bin())
        .arg("webhook-secret")
        .env("GREENLIGHT_DATABASE_URL", db_url)
        .env_remove("GREENLIGHT_CONFIG")
        .env_remove("GREENLIGHT_WEBHOOK_SECRET")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_db_moves_everything_from_sqlite_to_postgres_and_refuses_a_full_target() {
    // A SQLite database with history: decided and pending requests, deliveries, keys, secret.
    let app = spawn_app().await;
    let decided = app.create_ok("Deploy api v1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pending = app.create_ok("Deploy api v2").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&decided).await;
    posted(&app.sandbox, &pending).await;
    assert!(
        app.click(&msg, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    app.decided_message(&msg).await;
    let audit_before = app.audit().await;
    let sqlite = app.db_url.clone();
    let key = app.key.clone();
    let sandbox = app.sandbox.clone();
    let _kept = app.stop().await;
    let secret = webhook_secret(&sqlite);

    let target = TestDb::postgres().await;
    let out = greenlight(&["copy-db", "--from", &sqlite, "--to", &target.url]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1], cols[2], "counts match: {line}");
    }
    let count = |name: &str| -> i64 {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|n| n.parse().ok())
            .unwrap_or(-1)
    };
    assert_eq!(count("requests"), 2);
    assert_eq!(count("audit"), audit_before.len() as i64);
    assert!(count("outbox") >= 3 && count("api_keys") >= 1 && count("meta") == 1);

    // Refused a second time: the target is no longer empty, and nothing changes.
    let again = greenlight(&["copy-db", "--from", &sqlite, "--to", &target.url]);
    assert_eq!(again.status.code(), Some(5));
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(why.contains("not empty"), "{why}");

    // The same secret signs callbacks, and a server on PostgreSQL knows everything.
    assert_eq!(webhook_secret(&target.url), secret);
    let dir = tempfile::tempdir().unwrap();
    let signing = sandbox.config().signing_secret.clone();
    let server = Process::start(&sandbox, dir.path(), &target.url, &signing).await;
    let pg_base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let (_, got) = call(
        &http,
        &pg_base,
        &key,
        Method::GET,
        &format!("/v1/requests/{decided}"),
        None,
    )
    .await;
    assert_eq!(
        (got["status"].as_str(), got["decided_by"].as_str()),
        (Some("approved"), Some("U0ALICE"))
    );
    let (status, audit) = call(
        &http,
        &pg_base,
        &key,
        Method::GET,
        "/v1/audit?limit=1000",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let copied: Vec<_> = audit["events"].as_array().unwrap().clone();
    // The chain may have grown since the first look (it is written just after each entry).
    let content = |events: &[serde_json::Value]| -> Vec<serde_json::Value> {
        events
            .iter()
            .map(|e| {
                json!([
                    e["id"],
                    e["at"],
                    e["request_id"],
                    e["event"],
                    e["actor"],
                    e["data"]
                ])
            })
            .collect()
    };
    assert_eq!(
        content(&copied),
        content(&audit_before),
        "the audit log, in order, as it was"
    );
    let verified = std::process::Command::new(bin())
        .args(["audit", "verify"])
        .env("GREENLIGHT_DATABASE_URL", &target.url)
        .env_remove("GREENLIGHT_CONFIG")
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "the copied chain verifies: {}",
        String::from_utf8_lossy(&verified.stdout)
    );
    // Old buttons still work against the new database, and new entries follow the old ones.
    let pending_msg = posted(&sandbox, &pending).await;
    let ack = sandbox
        .click(greenlight_sandbox::Click::new(
            CHANNEL,
            &pending_msg.ts,
            "greenlight.deny",
            "U0BOB",
        ))
        .await
        .unwrap();
    assert!(ack.acked());
    let (_, got) = call(
        &http,
        &pg_base,
        &key,
        Method::GET,
        &format!("/v1/requests/{pending}?wait=5"),
        None,
    )
    .await;
    assert_eq!(got["status"], "denied");
    let (_, audit) = call(
        &http,
        &pg_base,
        &key,
        Method::GET,
        "/v1/audit?limit=1000",
        None,
    )
    .await;
    let ids: Vec<i64> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]) && ids.len() > copied.len());
    let (status, _) = call(
        &http,
        &pg_base,
        &key,
        Method::POST,
        "/v1/requests",
        Some(json!({"title": "After the move"})),
    )
    .await;
    assert_eq!(status, 201);
}

#[test]
fn copy_db_refuses_copying_a_database_onto_itself() {
    let out = greenlight(&[
        "copy-db",
        "--from",
        "sqlite:/tmp/same.db",
        "--to",
        "sqlite:/tmp/same.db",
    ]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("same database"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_db_names_the_row_postgres_cannot_hold_and_copies_nothing() {
    use sqlx::Connection;
    // A SQLite file written by an older greenlight, which let NUL into a title and a param.
    let app = spawn_app().await;
    let id = app.create_ok("Deploy api v1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sqlite = app.db_url.clone();
    let _kept = app.stop().await;
    let path = sqlite.trim_start_matches("sqlite:").to_owned();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let target = TestDb::postgres().await;
    for (column, value) in [
        ("title", "'Deploy ' || char(0) || 'api'"),
        ("params", r#"'{"version":"1\u0000"}'"#),
    ] {
        conn.execute(
            &format!("UPDATE requests SET title = 'Deploy api v1', params = '{{}}', {column} = {value} WHERE id = ?1"),
            [&id],
        )
        .unwrap();
        let out = greenlight(&["copy-db", "--from", &sqlite, "--to", &target.url]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{column}: {stderr}");
        assert!(
            stderr.contains(&format!("requests row {id}")) && stderr.contains(column),
            "{column}: the error names neither the row nor the column: {stderr}"
        );
        let mut pg = sqlx::PgConnection::connect(&target.url).await.unwrap();
        for table in ["api_keys", "requests", "audit", "outbox"] {
            let (n,): (i64,) =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                    .fetch_one(&mut pg)
                    .await
                    .unwrap();
            assert_eq!(n, 0, "{column}: {table} was written to");
        }
    }
}
