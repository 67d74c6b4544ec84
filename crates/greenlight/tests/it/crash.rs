//! Crash safety with real processes: kill -9 and restart on the same SQLite file.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_survive_kill_9_and_old_buttons_still_work() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:{}", dir.path().join("greenlight.db").display());
    let secret = random_secret();
    let sandbox = start_sandbox(&secret).await;
    let key = create_key(&db_url, "ci", &[greenlight::store::Scope::Admin]).await;
    let http = reqwest::Client::new();

    let server = Process::start(&sandbox, dir.path(), &db_url, &secret).await;
    let base = format!("http://{}", server.addr);
    let mut ids = Vec::new();
    for title in ["Decided before the crash", "Still pending at the crash"] {
        let (status, body) = call(
            &http,
            &base,
            &key,
            Method::POST,
            "/v1/requests",
            Some(json!({"title": title})),
        )
        .await;
        assert_eq!(status, 201);
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let decided = posted(&sandbox, &ids[0]).await;
    let pending = posted(&sandbox, &ids[1]).await;
    let ack = sandbox
        .click(greenlight_sandbox::Click::new(
            CHANNEL,
            &decided.ts,
            "greenlight.approve",
            "U0ALICE",
        ))
        .await
        .unwrap();
    assert!(ack.acked());
    // The ack came after the commit: kill at once, before anything else can happen.
    server.kill9();

    let server = Process::start(&sandbox, dir.path(), &db_url, &secret).await;
    let base = format!("http://{}", server.addr);
    let (_, got) = call(
        &http,
        &base,
        &key,
        Method::GET,
        &format!("/v1/requests/{}", ids[0]),
        None,
    )
    .await;
    assert_eq!(got["status"], "approved");
    assert_eq!(got["decided_by"], "U0ALICE");
    // If the update did not go out before the crash, the outbox sends it after the restart.
    sandbox
        .wait_for_message(CHANNEL, &decided.ts, |m| !has_buttons(m), WAIT)
        .await
        .expect("decided message updated");

    // The buttons posted before the crash still work against the new process.
    let ack = sandbox
        .click(greenlight_sandbox::Click::new(
            CHANNEL,
            &pending.ts,
            "greenlight.deny",
            "U0BOB",
        ))
        .await
        .unwrap();
    assert!(ack.acked());
    let (_, got) = call(
        &http,
        &base,
        &key,
        Method::GET,
        &format!("/v1/requests/{}?wait=5", ids[1]),
        None,
    )
    .await;
    assert_eq!(got["status"], "denied");
    sandbox
        .wait_for_message(CHANNEL, &pending.ts, |m| !has_buttons(m), WAIT)
        .await
        .expect("second message updated");
    // Each request was decided once and posted once.
    assert_eq!(
        sandbox
            .calls_to("chat.postMessage")
            .iter()
            .filter(|c| c.ok)
            .count(),
        2
    );
    drop(server);
}
