//! Crash safety of the outbox with real processes: the server is killed with SIGKILL at
//! (seeded, so repeatable) random moments while 200 requests are created, clicked and their
//! callbacks delivered. In the end every decision shows on its message, every machine was told,
//! and nothing was decided twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use greenlight_sandbox::Click;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::helpers::*;
use crate::receiver::Receiver;

const REQUESTS: usize = 200;
const KILLS: usize = 6;
const SEED: u64 = 0x5eed;
const PATIENCE: Duration = Duration::from_secs(60);

fn config() -> String {
    r##"
[delivery]
allow_private_targets = true
max_attempts = 1000
backoff_base = "20ms"
backoff_max = "200ms"
slack_posts_per_second = 1000
slack_post_burst = 1000

[[workflow]]
name = "deploy"
channel = "#deploy"
"##
    .to_owned()
}

/// Calls the API until the server answers (it may be dead or restarting).
async fn call_until_answered(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut req = http
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(key);
        if let Some(b) = &body {
            req = req.json(b);
        }
        if let Ok(res) = req.send().await {
            let status = res.status().as_u16();
            if let Ok(text) = res.text().await
                && status < 500
            {
                return (status, serde_json::from_str(&text).unwrap_or(Value::Null));
            }
        }
        assert!(
            Instant::now() < deadline,
            "the server never answered {path}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_update_and_no_callback_and_decides_once() {
    init();
    let machine = Receiver::start(&[], 200).await;
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:{}", dir.path().join("greenlight.db").display());
    let secret = random_secret();
    let sandbox = start_sandbox(&secret).await;
    let key = create_key(&db_url, "ci", &[greenlight::store::Scope::Admin]).await;
    let options = ProcessOptions {
        config: Some(config()),
        // The same address across restarts, so clients and the sandbox just retry.
        addr: Some(free_port()),
        ..Default::default()
    };
    let addr = options.addr.unwrap();
    let base = format!("http://{addr}");
    let server = Arc::new(Mutex::new(Some(
        Process::start_with(&sandbox, dir.path(), &db_url, &secret, &options).await,
    )));

    let killer = {
        let server = server.clone();
        let sandbox = sandbox.clone();
        let dir = dir.path().to_owned();
        let db_url = db_url.clone();
        let secret = secret.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(SEED);
            for _ in 0..KILLS {
                let pause = rng.random_range(300..1500);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                let mut slot = server.lock().await;
                if let Some(p) = slot.take() {
                    p.kill9();
                }
                *slot = Some(Process::start_with(&sandbox, &dir, &db_url, &secret, &options).await);
            }
        })
    };

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let callback = machine.url("/done");
    let driver = futures::stream::iter(0..REQUESTS)
        .map(|i| {
            let (http, base, key, sandbox, callback) = (
                http.clone(),
                base.clone(),
                key.clone(),
                sandbox.clone(),
                callback.clone(),
            );
            async move {
                // The idempotency key makes a create retried across a crash find its request.
                let (status, created) = call_until_answered(
                    &http,
                    &base,
                    &key,
                    Method::POST,
                    "/v1/requests",
                    Some(
                        json!({"title": format!("Deploy #{i}"), "callback_url": callback,
                                "idempotency_key": format!("crash-{i}")}),
                    ),
                )
                .await;
                assert!(status == 201 || status == 200, "{status} {created}");
                let id = created["id"].as_str().unwrap().to_owned();
                let msg = sandbox
                    .wait_for_message_in(CHANNEL, |m| text_of(m).contains(&id), PATIENCE)
                    .await
                    .unwrap_or_else(|| panic!("message for {id} posted"));
                let action = if i % 2 == 0 {
                    "greenlight.approve"
                } else {
                    "greenlight.deny"
                };
                let deadline = Instant::now() + PATIENCE;
                // A click that hits a dead server is clicked again, like a person would.
                loop {
                    let click = Click::new(CHANNEL, &msg.ts, action, "U0ALICE");
                    match sandbox.click(click).await {
                        Ok(o) if o.acked() => break,
                        // The click was decided before the kill cut its ack off, and the
                        // message has lost its buttons since: the checks below see the outcome.
                        Err(e) if e.code() == "button_not_found" => break,
                        _ => {}
                    }
                    assert!(Instant::now() < deadline, "click on {id} never acked");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (id, i % 2 == 0)
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>();
    let requests = driver.await;
    killer.await.unwrap();

    // Every decision reaches its message and its machine.
    let deadline = Instant::now() + PATIENCE;
    for (id, approve) in &requests {
        let (verdict, event) = if *approve {
            ("*Approved*", "request.approved")
        } else {
            ("*Denied*", "request.denied")
        };
        let (_, got) = call_until_answered(
            &http,
            &base,
            &key,
            Method::GET,
            &format!("/v1/requests/{id}"),
            None,
        )
        .await;
        assert_eq!(got["decisions"].as_array().unwrap().len(), 1, "{got}");
        let ts = got["slack"]["ts"].as_str().unwrap().to_owned();
        let left = deadline.saturating_duration_since(Instant::now());
        let shown = sandbox
            .wait_for_message(CHANNEL, &ts, |m| text_of(m).contains(verdict), left)
            .await;
        assert!(shown.is_some(), "message of {id} never showed {verdict}");
        machine
            .wait_for(deadline.saturating_duration_since(Instant::now()), |r| {
                r.iter()
                    .any(|c| c.json()["type"] == event && c.json()["data"]["id"] == id.as_str())
            })
            .await;
    }
    // Exactly one decision per request in the audit log, whatever was retried.
    let mut audit: Vec<Value> = Vec::new();
    loop {
        let after = audit.last().map_or(0, |e| e["id"].as_i64().unwrap());
        let path = format!("/v1/audit?limit=1000&after={after}");
        let (_, page) = call_until_answered(&http, &base, &key, Method::GET, &path, None).await;
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            break;
        }
        audit.extend(events);
    }
    for (id, _) in &requests {
        let decided = audit
            .iter()
            .filter(|e| {
                e["request_id"] == id.as_str()
                    && (e["event"] == "request.approved" || e["event"] == "request.denied")
            })
            .count();
        assert_eq!(decided, 1, "{id} decided {decided} times");
    }
    // No request got two messages, even when a kill fell between Slack accepting the post and
    // the server saving its ts: the retry found the first copy by its metadata.
    let messages = sandbox.messages(CHANNEL);
    for (id, _) in &requests {
        let copies = messages
            .iter()
            .filter(|m| text_of(m).contains(id.as_str()))
            .count();
        assert_eq!(copies, 1, "{id} has {copies} messages");
    }
    let adopted = sandbox
        .calls_to("conversations.history")
        .iter()
        .filter(|c| c.ok)
        .count();
    eprintln!(
        "{REQUESTS} requests, {KILLS} kills: {} messages, {adopted} history look-ups, {} callbacks received",
        messages.len(),
        machine.received().len()
    );
    drop(server);
}
