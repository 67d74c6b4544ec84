//! The CLI as a pipeline uses it: `greenlight ask --wait` exit codes, `greenlight keys create`;
//! and as a person at a terminal sees it.

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

    let out = run(ask(&app, &app.key, &["--title", "x", "--timeout", "5m"])).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "--timeout means nothing without --wait"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--wait"),
        "{out:?}"
    );

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_waiting_at_a_terminal_shows_where_and_how_long_and_piped_shows_nothing() {
    let app = spawn_app().await;

    // Piped: stdout has the id and the outcome, stderr nothing at all.
    let out = run(ask(
        &app,
        &app.key,
        &["--title", "Piped", "--wait", "--timeout", "2s"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().nth(1),
        Some("pending")
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{out:?}");

    // At a terminal (script(1) gives it one): a status line rewritten in place each second.
    let line = format!(
        "{} ask --title 'At a terminal' --wait --timeout 3s",
        bin().display()
    );
    let out = run({
        let mut c = Command::new("script");
        c.args(["-q", "-e", "-c", &line, "/dev/null"])
            .env("GREENLIGHT_URL", &app.base)
            .env("GREENLIGHT_TOKEN", &app.key)
            .env_remove("GREENLIGHT_CONFIG")
            .kill_on_drop(true);
        c
    })
    .await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let screen = String::from_utf8_lossy(&out.stdout);
    let redraws = screen
        .matches("\rwaiting for a decision in #deploy (workflow deploy), ")
        .count();
    assert!((2..=5).contains(&redraws), "{redraws} redraws: {screen:?}");
    assert!(screen.contains("0s so far, gives up in 3s"), "{screen:?}");
    assert!(screen.contains("2s so far, gives up in 1s"), "{screen:?}");
    assert!(!screen.contains("\nwaiting"), "never scrolls: {screen:?}");
    // The line is wiped before the outcome, which stands alone.
    assert!(screen.contains("\r\u{1b}[Kpending"), "{screen:?}");
    app.stop().await;
}

/// A proxy in front of `upstream` that passes the first request on, lets the server answer it,
/// and hangs up on the client without passing the answer back; later connections go through.
async fn lose_first_answer(upstream: String) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut client, _)) = listener.accept().await {
            let mut server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            if !std::mem::take(&mut first) {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                continue;
            }
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = client.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
                assert!(n > 0, "client hung up mid-request");
            }
            server.write_all(&request).await.unwrap();
            let _ = server.read(&mut buf).await.unwrap();
            // The server has answered; the client never hears it.
            drop(client);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_retries_a_create_whose_answer_was_lost_and_still_creates_once() {
    let app = spawn_app().await;
    let proxy = lose_first_answer(app.base.trim_start_matches("http://").to_owned()).await;
    let mut cmd = ask(&app, &app.key, &["--title", "Answer lost on the way"]);
    cmd.env("GREENLIGHT_URL", format!("http://{proxy}"));
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("retrying"),
        "{out:?}"
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (_, page) = app
        .call(reqwest::Method::GET, "/v1/requests?limit=200", None)
        .await;
    let made: Vec<&serde_json::Value> = page["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["title"] == "Answer lost on the way")
        .collect();
    assert_eq!(made.len(), 1, "{page}");
    assert_eq!(made[0]["id"], id.as_str());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_waits_for_a_server_that_is_still_starting() {
    let addr = free_port();
    let child = {
        let mut c = Command::new(bin());
        c.args(["ask", "--title", "Early bird"])
            .env("GREENLIGHT_URL", format!("http://{addr}"))
            .env("GREENLIGHT_TOKEN", "gl_placeholder")
            .env_remove("GREENLIGHT_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        c.spawn().unwrap()
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let app = spawn_app_with(|c| c.listen = addr).await;
    // The key the early `ask` holds did not exist yet; it learns that only once it gets through.
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("retrying for up to 10s"), "{stderr}");
    assert!(stderr.contains("unknown or revoked API key"), "{stderr}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run({
            let mut c = Command::new(bin());
            c.args(["completions", shell]);
            c
        })
        .await;
        assert_eq!(out.status.code(), Some(0), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["requests", "ask", "slack-manifest", "approve", "workflow"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
    }
    let out = run({
        let mut c = Command::new(bin());
        c.args(["completions", "tcsh"]);
        c
    })
    .await;
    assert_eq!(out.status.code(), Some(2));
}

/// `ask --field ... --buttons answer --wait --json`: a question from a shell, answered in
/// Slack, the typed answers in the JSON; without --json, name=value lines after the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_with_fields_returns_the_answers() {
    let app = spawn_app().await;
    for json in [true, false] {
        let title = format!("Which environment? ({json})");
        let mut args = vec![
            "--title",
            &title,
            "--buttons",
            "answer",
            "--field",
            "env:select:staging,production",
            "--field",
            "replicas:number",
            "--wait",
            "--timeout",
            "30s",
        ];
        if json {
            args.push("--json");
        }
        let child = ask(&app, &app.key, &args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let msg = app
            .sandbox
            .wait_for_message_in(CHANNEL, |m| text_of(m).contains(&title), WAIT)
            .await
            .expect("posted");
        assert!(
            app.click(&msg, "greenlight.approve", "U0ALICE")
                .await
                .acked()
        );
        let view = app
            .sandbox
            .wait_until(WAIT, |sb| sb.views().into_iter().find(|v| v.open))
            .await
            .expect("the modal opened");
        let ack = app
            .sandbox
            .submit_view(
                &view.id,
                "U0ALICE",
                [
                    ("greenlight.field.env", "production"),
                    ("greenlight.field.replicas", "4"),
                ],
            )
            .await
            .unwrap();
        assert!(ack.body.is_empty(), "{}", ack.body);
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let stdout = String::from_utf8_lossy(&out.stdout);
        if json {
            let got: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            assert_eq!(
                got["response"],
                serde_json::json!({"env": "production", "replicas": 4})
            );
        } else {
            assert!(stdout.contains("\nenv=production\n"), "{stdout}");
            assert!(stdout.contains("\nreplicas=4\n"), "{stdout}");
        }
    }
    let bad = run(ask(
        &app,
        &app.key,
        &["--title", "x", "--field", "env:select"],
    ))
    .await;
    assert_eq!(bad.status.code(), Some(2));
    let bad = run(ask(
        &app,
        &app.key,
        &["--title", "x", "--field", "n:colour"],
    ))
    .await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("invalid_field_type")
            || String::from_utf8_lossy(&bad.stderr).contains("colour"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    app.stop().await;
}
