//! Nobody may flood, starve or stall the server: a per-key pace for creates, a cap on
//! long-polls, a bounded listener that drops half-open sockets, a time limit on slow bodies,
//! and callbacks that cannot hold up Slack.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use greenlight::store::Scope;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_pace_gets_429_with_retry_after_and_others_do_not() {
    let app = spawn_app_with(|c| c.limits.requests_per_minute_per_key = 5).await;
    for n in 0..5 {
        let (status, body) = app.create(json!({"title": format!("Burst #{n}")})).await;
        assert_eq!(status, 201, "{body}");
    }
    let res = app
        .http
        .post(format!("{}/v1/requests", app.base))
        .bearer_auth(&app.key)
        .json(&json!({"title": "One too many"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&retry), "Retry-After: {retry}");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Nothing was created by the refused call; another key has its own allowance.
    let (_, list) = app.call(Method::GET, "/v1/requests", None).await;
    assert_eq!(list["requests"].as_array().unwrap().len(), 5);
    let other = create_key(&app.db_url, "other", &[Scope::Request]).await;
    let (status, _) = call(
        &app.http,
        &app.base,
        &other,
        Method::POST,
        "/v1/requests",
        Some(json!({"title": "Another key"})),
    )
    .await;
    assert_eq!(status, 201);
    assert!(
        app.metrics()
            .await
            .contains("greenlight_rate_limited_total")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_past_the_cap_get_429_too_many_waiters() {
    let app = spawn_app_with(|c| c.limits.max_waiters = 2).await;
    let id = app.create_ok("Waited on").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/requests/{id}?wait=5");
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let (http, base, key, path) = (
                app.http.clone(),
                app.base.clone(),
                app.key.clone(),
                path.clone(),
            );
            tokio::spawn(async move { call(&http, &base, &key, Method::GET, &path, None).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = app.call(Method::GET, &path, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_waiters")),
        "{body}"
    );
    // A plain read is not a waiter.
    assert_eq!(
        app.call(Method::GET, &format!("/v1/requests/{id}"), None)
            .await
            .0,
        200
    );
    for w in waiting {
        assert_eq!(w.await.unwrap().0, 200);
    }
    // Places free up as waits end.
    assert_eq!(
        app.call(Method::GET, &format!("/v1/requests/{id}?wait=1"), None)
            .await
            .0,
        200
    );
}

/// Sends `head` (request headers and the start of a body that never finishes) and waits up to
/// `patience` for the answer: what the server said, and how long it took.
async fn slow_body(addr: &str, head: String, patience: Duration) -> (String, Duration) {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(patience, socket.read(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("left hanging past {patience:?}: {head}"))
        .unwrap();
    (
        String::from_utf8_lossy(&answer[..n]).into_owned(),
        started.elapsed(),
    )
}

/// The probe's finds: `?wait=20` stretched the limit of every route (35 s for a body to the
/// Slack receiver, which needs no key), and a body to `/mcp` from a `read` key was held for
/// `permission_timeout` + 60 s. Reading a body is bounded by `request_timeout` everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_finishes_is_cut_off_at_request_timeout_on_every_route() {
    let app = spawn_app_with(|c| c.limits.request_timeout = "1s".parse().unwrap()).await;
    let id = app.create_ok("Held open").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reader = create_key(&app.db_url, "reader", &[Scope::Read]).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let json = "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"title\":";
    let form =
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\npayload=";
    let bearer = |key: &str| format!("Authorization: Bearer {key}\r\n");
    let cases = [
        ("/v1/requests".to_owned(), bearer(&app.key), json),
        ("/v1/requests?wait=20".to_owned(), bearer(&app.key), json),
        (
            format!("/v1/requests/{id}/cancel?wait=20"),
            bearer(&app.key),
            json,
        ),
        (
            "/slack/interactions?wait=20".to_owned(),
            String::new(),
            form,
        ),
        ("/slack/events?wait=20".to_owned(), String::new(), json),
        ("/slack/commands?wait=20".to_owned(), String::new(), form),
        (
            "/mcp".to_owned(),
            format!(
                "{}Accept: application/json, text/event-stream\r\n",
                bearer(&reader)
            ),
            json,
        ),
    ];
    let answers = futures::future::join_all(cases.into_iter().map(|(path, auth, rest)| {
        let head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{rest}");
        let addr = addr.clone();
        async move { (path, slow_body(&addr, head, Duration::from_secs(8)).await) }
    }))
    .await;
    for (path, (text, took)) in answers {
        assert!(text.starts_with("HTTP/1.1 503"), "{path}: {text}");
        assert!(text.contains("\"timeout\""), "{path}: {text}");
        assert!(took < Duration::from_secs(5), "{path}: took {took:?}");
    }
}

/// Only the long-poll gets a longer limit, from the `wait` its handler reads: `?wai%74=2` is
/// `wait=2` to both, so a 2 s wait under a 1 s `request_timeout` is answered, not cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_takes_its_limit_from_the_wait_its_handler_reads() {
    let app = spawn_app_with(|c| c.limits.request_timeout = "1s".parse().unwrap()).await;
    let id = app.create_ok("Waited on").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for query in ["wait=2", "wai%74=2"] {
        let started = Instant::now();
        let (status, body) = app
            .call(Method::GET, &format!("/v1/requests/{id}?{query}"), None)
            .await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("pending")),
            "?{query}: {body}"
        );
        assert!(started.elapsed() >= Duration::from_secs(2), "?{query}");
    }
}

/// Every body over the limit (1 MiB) is a 413 in the API's error format, on every route that
/// reads one, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_over_the_limit_is_413_payload_too_large_in_json() {
    let app = spawn_app().await;
    let id = app.create_ok("Not cancelled").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = app.audit().await.len();
    let big = format!("{{\"title\":\"{}\"}}", "a".repeat(1024 * 1024));
    let paths = [
        "/v1/requests".to_owned(),
        format!("/v1/requests/{id}/decisions"),
        format!("/v1/requests/{id}/cancel"),
        "/v1/signals".to_owned(),
        "/slack/interactions".to_owned(),
        "/slack/events".to_owned(),
        "/slack/commands".to_owned(),
        "/mcp".to_owned(),
    ];
    for path in paths {
        let res = app
            .http
            .post(format!("{}{path}", app.base))
            .bearer_auth(&app.key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert_eq!(status, 413, "{path}: {text}");
        let body: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: {text:?} is not JSON: {e}"));
        assert_eq!(body["error"]["code"], "payload_too_large", "{path}");
        assert!(body["error"]["message"].is_string(), "{path}");
    }
    assert_eq!(app.audit().await.len(), before);
    assert_eq!(app.get(&id).await["status"], "pending");
}

/// The probe's attack: many sockets that connect and send nothing, against a process with few
/// file descriptors. They are closed after the header timeout, the process never runs out of
/// descriptors, and real requests are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_sockets_under_a_low_descriptor_limit_neither_starve_nor_stall_the_server() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite();
    let secret = random_secret();
    let sandbox = start_sandbox(&secret).await;
    let addr = free_port();
    let config = "[limits]\nmax_connections = 48\nheader_timeout = \"1s\"\n\n[[workflow]]\nname = \"deploy\"\nchannel = \"#deploy\"\n";
    let path = dir.path().join("greenlight.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -n 128 && exec \"{}\" serve",
            bin().display()
        ))
        .env("GREENLIGHT_CONFIG", &path)
        .env("GREENLIGHT_DATABASE_URL", &db.url)
        .env("GREENLIGHT_LISTEN", addr.to_string())
        .env("SLACK_BOT_TOKEN", &sandbox.config().bot_token)
        .env("SLACK_SIGNING_SECRET", &secret)
        .env("SLACK_API_URL", sandbox.api_url())
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 160 sockets that say nothing: more than the descriptors the process has.
    let mut idle = Vec::new();
    for _ in 0..160 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let opened = Instant::now();
    // Requests still get through, once the silent ones have been dropped.
    let health = http.get(format!("http://{addr}/healthz")).send().await;
    assert!(
        health.is_ok_and(|r| r.status().is_success()),
        "healthz was not served beside 160 silent sockets"
    );
    assert!(
        opened.elapsed() < Duration::from_secs(12),
        "took {:?}",
        opened.elapsed()
    );
    // Every silent socket is closed by the server within a few header timeouts, not left open.
    for mut s in idle {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(_)) | Ok(Err(_))),
            "a silent socket was still open after the header timeout"
        );
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the server kept running"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A listener that accepts connections and never answers: a callback URL that hangs.
async fn black_hole() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// The probe's second find: 70 callbacks to a URL that never answers delayed an unrelated
/// Slack post by 10-18 s. Callbacks have their own share now, capped per host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_to_a_url_that_never_answers_do_not_hold_up_slack() {
    let hole = black_hole().await;
    let app = spawn_app_with(|c| {
        c.delivery.allow_private_targets = true;
        c.delivery.slack_posts_per_second = 1000.0;
        c.delivery.slack_post_burst = 1000;
    })
    .await;
    let callback = format!("http://{hole}/never");
    for n in 0..70 {
        let (status, body) = app
            .create(json!({"title": format!("Hanging #{n}"), "callback_url": callback}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    // Let the worker take up the hanging callbacks.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let id = app.create_ok("Unrelated deploy").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.posted(&id).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the unrelated post took {took:?}"
    );
}
