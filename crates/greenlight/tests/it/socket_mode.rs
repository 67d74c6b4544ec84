//! Socket Mode: no signing secret, no public URL; clicks arrive over WebSockets the server opens.

use std::sync::Arc;
use std::time::Duration;

use greenlight::config::Secret;
use greenlight::domain::SystemClock;
use greenlight_sandbox::{Click, Sandbox, SandboxConfig, Transport};
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

async fn wait_for_connections(sandbox: &greenlight_sandbox::SandboxHandle, n: usize) {
    sandbox
        .wait_until(Duration::from_secs(20), |sb| {
            (sb.open_connections() >= n).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{n} Socket Mode connection(s) within 20 s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_arrive_over_socket_mode_and_survive_disconnects_and_a_sandbox_restart() {
    init();
    let sb_config = SandboxConfig::for_tests();
    let app_token = sb_config
        .app_token
        .clone()
        .expect("the sandbox has an app token");
    let sandbox = Sandbox::start(sb_config.clone()).await.unwrap();
    // Nothing listens here: a click that fell back to HTTP would fail.
    sandbox.set_interactivity_url(format!("http://{}/slack/interactions", free_port()));

    let app = boot(
        sandbox.clone(),
        TestDb::sqlite(),
        None,
        |c| {
            c.slack.signing_secret = None;
            c.slack.app_token = Some(Secret::new(app_token));
        },
        Arc::new(SystemClock),
    )
    .await;
    wait_for_connections(&sandbox, 1).await;

    // Without a signing secret the HTTP endpoint is off, not open.
    let res = app
        .http
        .post(format!("{}/slack/interactions", app.base))
        .body("payload=%7B%7D")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    let create = |title: &'static str| {
        let app = &app;
        async move {
            let (s, b) = app.create(json!({"title": title})).await;
            assert_eq!(s, 201, "{b}");
            b["id"].as_str().unwrap().to_owned()
        }
    };

    // Creates a request, clicks it in `sandbox` over the socket and returns the decided request.
    let decide = |sandbox: greenlight_sandbox::SandboxHandle, title: &'static str, action, user| {
        let (app, create) = (&app, &create);
        async move {
            let id = create(title).await;
            let msg = posted(&sandbox, &id).await;
            let out = sandbox
                .click(Click::new(CHANNEL, &msg.ts, action, user))
                .await
                .unwrap();
            assert_eq!(out.transport, Transport::SocketMode);
            assert!(out.acked(), "{out:?}");
            let path = format!("/v1/requests/{id}?wait=5");
            app.call(Method::GET, &path, None).await.1
        }
    };

    let got = decide(
        sandbox.clone(),
        "Over the socket",
        "greenlight.approve",
        "U0ALICE",
    )
    .await;
    assert_eq!(got["status"], "approved");
    assert_eq!(got["decided_by"], "U0ALICE");

    // Slack asks for a refresh: the server reconnects and the next click still lands.
    assert!(sandbox.disconnect_all("refresh_requested") >= 1);
    wait_for_connections(&sandbox, 1).await;
    let got = decide(
        sandbox.clone(),
        "After a refresh",
        "greenlight.deny",
        "U0BOB",
    )
    .await;
    assert_eq!(got["status"], "denied");

    // The sandbox (Slack) goes away and comes back on the same address.
    let addr = sandbox.addr();
    sandbox.shutdown().await;
    let sandbox = Sandbox::start(sb_config.with_listen(addr)).await.unwrap();
    sandbox.set_interactivity_url(format!("http://{}/slack/interactions", free_port()));
    wait_for_connections(&sandbox, 1).await;
    let got = decide(
        sandbox,
        "After Slack restarted",
        "greenlight.approve",
        "U0CAROL",
    )
    .await;
    assert_eq!(got["status"], "approved");

    app.stop().await;
}
