//! The CLI as a pipeline uses it: `greenlight ask --wait` exit codes, `greenlight keys create`.

use std::process::Output;
use std::time::Duration;

use reqwest::Method;
use tokio::process::Command;

use crate::helpers::*;

fn ask(app: &TestApp, token: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("ask")
        .args(args)
        .env("GREENLIGHT_URL", &app.base)
        .env("GREENLIGHT_TOKEN", token)
        .env_remove("GREENLIGHT_CONFIG")
        .kill_on_drop(true);
    cmd
}

async fn run(mut cmd: Command) -> Output {
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("ask finishes")
        .expect("ask runs")
}

/// Starts `ask --wait`, waits for its message, lets `act` decide, returns the exit code and stdout.
async fn ask_and<F, Fut>(app: &TestApp, title: &str, act: F) -> (i32, String)
where
    F: FnOnce(String, greenlight_sandbox::Message) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let child = ask(
        app,
        &app.key,
        &[
            "--workflow",
            "deploy",
            "--title",
            title,
            "--param",
            "version=1.10",
            "--wait",
            "--timeout",
            "30s",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let msg = app
        .sandbox
        .wait_for_message_in(CHANNEL, |m| text_of(m).contains(title), WAIT)
        .await
        .expect("posted");
    let id = text_of(&msg)
        .split('`')
        .find(|s| s.starts_with("req_"))
        .expect("id in message")
        .to_owned();
    act(id, msg).await;
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_wait_exits_with_the_outcome() {
    let app = spawn_app().await;
    let app = &app;

    let (code, out) = ask_and(app, "Ship it", |_, msg| async move {
        assert!(
            app.click(&msg, "greenlight.approve", "U0ALICE")
                .await
                .acked()
        );
    })
    .await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("req_"), "{out}");
    assert_eq!(lines[1], "approved by U0ALICE");

    let (code, _) = ask_and(app, "Ship that", |_, msg| async move {
        assert!(app.click(&msg, "greenlight.deny", "U0BOB").await.acked());
    })
    .await;
    assert_eq!(code, 1);

    let (code, out) = ask_and(app, "Ship nothing", |id, _| async move {
        let (s, _) = app
            .call(Method::POST, &format!("/v1/requests/{id}/cancel"), None)
            .await;
        assert_eq!(s, 200);
    })
    .await;
    assert_eq!(code, 3, "{out}");

    let out = run(ask(
        app,
        &app.key,
        &["--title", "Nobody answers", "--wait", "--timeout", "1s"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("pending"));

    // Without --wait it prints the id and exits 0 at once.
    let out = run(ask(
        app,
        &app.key,
        &["--title", "Fire and forget", "--param", "amount=120"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let got = app.get(&id).await;
    assert_eq!(got["params"]["amount"], 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_fails_clearly() {
    let app = spawn_app().await;
    let out = run(ask(&app, "gl_not_a_key", &["--title", "x"])).await;
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown or revoked API key"));

    let out = run(ask(&app, &app.key, &["--title", "x", "--workflow", "nope"])).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let out = run(ask(&app, &app.key, &["--wait"])).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --title is a usage error"
    );

    let out = run(ask(
        &app,
        &app.key,
        &["--title", "x", "--timeout", "forever"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(2));

    let mut unreachable = ask(&app, &app.key, &["--title", "x"]);
    unreachable.env("GREENLIGHT_URL", format!("http://{}", free_port()));
    let out = run(unreachable).await;
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach greenlight"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_prints_only_the_key_and_stores_only_a_hash() {
    let app = spawn_app().await;
    let db_path = app.db_url.trim_start_matches("sqlite:").to_owned();
    let out = run({
        let mut c = Command::new(bin());
        c.args([
            "keys",
            "create",
            "--name",
            "deployer",
            "--scopes",
            "request,read",
        ])
        .env("GREENLIGHT_DATABASE_URL", &app.db_url)
        .env_remove("GREENLIGHT_CONFIG");
        c
    })
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.trim();
    assert_eq!(stdout.lines().count(), 1);
    assert!(key.starts_with("gl_") && key.len() > 40, "{key}");

    let (status, _) = call(
        &app.http,
        &app.base,
        key,
        Method::POST,
        "/v1/requests",
        Some(serde_json::json!({"title": "x"})),
    )
    .await;
    assert_eq!(status, 201);
    let db = std::fs::read(&db_path).unwrap();
    let wal = std::fs::read(format!("{db_path}-wal")).unwrap_or_default();
    let needle = key.as_bytes();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the key is stored in clear"
        );
    }

    let out = run({
        let mut c = Command::new(bin());
        c.args(["keys", "create", "--name", "x", "--scopes", "root"])
            .env("GREENLIGHT_DATABASE_URL", &app.db_url)
            .env_remove("GREENLIGHT_CONFIG");
        c
    })
    .await;
    assert_eq!(out.status.code(), Some(2));
    app.stop().await;
}
