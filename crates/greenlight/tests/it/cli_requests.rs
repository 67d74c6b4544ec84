//! An operator at a terminal: `greenlight requests list | show | approve | deny | cancel`.

use std::process::Output;
use std::time::Duration;

use greenlight::store::Scope;
use tokio::process::Command;

use crate::helpers::*;

fn greenlight(app: &TestApp, token: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("GREENLIGHT_URL", &app.base)
        .env("GREENLIGHT_TOKEN", token)
        .env_remove("GREENLIGHT_CONFIG")
        .kill_on_drop(true);
    cmd
}

async fn run(mut cmd: Command) -> Output {
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("finishes")
        .expect("runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_shows_and_decides_from_the_terminal() {
    let app = spawn_app().await;
    let first = app.create_ok("Deploy api v1.2").await;
    let second = app
        .create_ok("Rotate the \u{1b}[31mdatabase\u{1b}[0m password")
        .await;
    let (first_id, second_id) = (
        first["id"].as_str().unwrap().to_owned(),
        second["id"].as_str().unwrap().to_owned(),
    );
    // Both posts recorded before anything is listed: one recorded between the CLI's list and
    // the API's would make the two answers differ.
    app.posted(&first_id).await;
    app.posted(&second_id).await;
    for id in [&first_id, &second_id] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let got = app.get(id).await;
            if got["slack"]["ts"].is_string() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{id} never recorded its post: {got}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    // The table: a header, newest first, aligned, and no escape sequence from a title.
    let out = run(greenlight(&app, &app.key, &["requests", "list"])).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID  "), "{table}");
    for col in ["STATUS", "WORKFLOW", "TITLE", "DECIDED BY", "AGE"] {
        assert!(lines[0].contains(col), "{table}");
    }
    assert!(lines[1].starts_with(&second_id), "newest first: {table}");
    assert!(lines[2].starts_with(&first_id), "{table}");
    let status_at = lines[0].find("STATUS").unwrap();
    assert_eq!(&lines[1][status_at..status_at + 7], "pending", "{table}");
    assert!(!table.contains('\u{1b}'), "{table:?}");

    // --json is the API's own answer.
    let out = run(greenlight(&app, &app.key, &["requests", "list", "--json"])).await;
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (_, api) = app
        .call(reqwest::Method::GET, "/v1/requests?limit=20", None)
        .await;
    assert_eq!(page, api);

    // Paging: one a page, with the command for the next.
    let out = run(greenlight(
        &app,
        &app.key,
        &["requests", "list", "--limit", "1", "--status", "pending"],
    ))
    .await;
    assert_eq!(stdout(&out).lines().count(), 2);
    let hint = stderr(&out);
    assert!(
        hint.contains(&format!(
            "greenlight requests list --cursor {second_id} --status pending --limit 1"
        )),
        "{hint}"
    );
    let out = run(greenlight(
        &app,
        &app.key,
        &[
            "requests", "list", "--limit", "1", "--cursor", &second_id, "--json",
        ],
    ))
    .await;
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["requests"][0]["id"], first_id.as_str());

    // A machine approves; the answer is the outcome.
    let out = run(greenlight(
        &app,
        &app.key,
        &[
            "requests",
            "approve",
            &first_id,
            "--reason",
            "green in staging",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "approved by key:ci: green in staging\n");
    assert_eq!(app.get(&first_id).await["status"], "approved");

    // Voting again on a decided request changes nothing, and says who decided (exit 1).
    let out = run(greenlight(
        &app,
        &app.key,
        &["requests", "deny", &first_id, "--reason", "too late"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("is no longer pending (approved by key:ci: green in staging)"),
        "{out:?}"
    );
    assert_eq!(app.get(&first_id).await["status"], "approved");

    // show: the fields, the vote and the Slack post.
    let out = run(greenlight(&app, &app.key, &["requests", "show", &first_id])).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let shown = stdout(&out);
    assert!(
        shown.contains(&format!("id          {first_id}\n")),
        "{shown}"
    );
    assert!(
        shown.contains("status      approved by key:ci: green in staging\n"),
        "{shown}"
    );
    assert!(shown.contains("title       Deploy api v1.2\n"), "{shown}");
    assert!(shown.contains("requester   U0FRANK\n"), "{shown}");
    assert!(shown.contains("votes:\n"), "{shown}");
    assert!(
        shown.contains("  key:ci  machine  approve  green in staging"),
        "{shown}"
    );
    assert!(shown.contains("deliveries:\n"), "{shown}");
    let out = run(greenlight(
        &app,
        &app.key,
        &["requests", "show", &first_id, "--json"],
    ))
    .await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["id"], first_id.as_str());
    assert_eq!(json["decisions"][0]["by"], "key:ci");

    // Cancel the other; cancelling twice is exit 1.
    let out = run(greenlight(
        &app,
        &app.key,
        &["requests", "cancel", &second_id],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).starts_with("cancelled"), "{out:?}");
    let out = run(greenlight(
        &app,
        &app.key,
        &["requests", "cancel", &second_id],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_commands_fail_with_the_ask_exit_codes() {
    let app = spawn_app().await;
    let id = app.create_ok("Needs a decider").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Usage errors: deny without a reason, a bad id, a bad filter, an unknown request.
    for args in [
        vec!["requests", "deny", id.as_str()],
        vec!["requests", "show", "not-an-id"],
        vec!["requests", "list", "--status", "maybe"],
        vec!["requests", "list", "--limit", "0"],
        vec!["requests", "show", "req_01J00000000000000000000000"],
    ] {
        let out = run(greenlight(&app, &app.key, &args)).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }

    // A key without the decide scope cannot vote: a key problem, exit 5, nothing changed.
    let reader = create_key(&app.db_url, "viewer", &[Scope::Read]).await;
    let out = run(greenlight(&app, &reader, &["requests", "approve", &id])).await;
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(app.get(&id).await["status"], "pending");
    let out = run(greenlight(&app, &reader, &["requests", "list"])).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let mut unreachable = greenlight(&app, &app.key, &["requests", "list"]);
    unreachable.env("GREENLIGHT_URL", format!("http://{}", free_port()));
    let out = run(unreachable).await;
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("cannot reach greenlight"), "{out:?}");

    // Every command says in its help what it reads.
    for sub in ["list", "show", "approve", "deny", "cancel"] {
        let out = run(greenlight(&app, &app.key, &["requests", sub, "--help"])).await;
        let help = stdout(&out);
        assert!(
            help.contains("GREENLIGHT_URL") && help.contains("GREENLIGHT_TOKEN"),
            "{sub}: {help}"
        );
    }
    app.stop().await;
}
