//! Identities that cannot be borrowed: an API key never votes as a person, and a person's vote
//! is never blocked or counted by a key; a requester is the person however written; and only
//! the workspace greenlight is installed in (or one allowed) may vote.

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use greenlight::config::{Config, Secret};
use greenlight::domain::SystemClock;
use greenlight::store::Scope;
use greenlight_sandbox::{
    Click, HomeClick, Sandbox, SandboxConfig, SandboxHandle, Transport, User,
};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::helpers::*;

/// `POST /v1/requests/{id}/decisions` approving with another key than the app's own.
async fn approve_with(app: &TestApp, key: &str, id: &str) -> (u16, Value) {
    call(
        &app.http,
        &app.base,
        key,
        Method::POST,
        &format!("/v1/requests/{id}/decisions"),
        Some(json!({"verdict": "approve"})),
    )
    .await
}

async fn keys_create(db_url: &str, name: &str) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(["keys", "create", "--name", name, "--scopes", "decide"])
        .env("GREENLIGHT_DATABASE_URL", db_url)
        .env_remove("GREENLIGHT_CONFIG")
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("finishes")
        .expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_named_like_a_slack_user_is_refused_and_an_old_one_never_blocks_a_person() {
    let app = spawn_app_with(|c| c.workflows[0].approvals_required = 2).await;

    // `keys create` refuses names Slack would read as a person, a group or formatting.
    for name in [
        "U0BOB",
        "W012A3CDE",
        "S0SRE",
        "<@U0BOB>",
        "*ci*",
        "ci@example",
    ] {
        let out = keys_create(&app.db_url, name).await;
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
        assert!(out.stdout.is_empty(), "{name}: no key printed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--name") && err.contains(name),
            "{name}: {err}"
        );
    }
    let out = keys_create(&app.db_url, "U0BOB").await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("looks like a Slack user or group id"),
        "{out:?}"
    );

    // A key named so before the rule keeps working, as a key: its vote is `key:U0BOB`.
    let old = create_key(&app.db_url, "U0BOB", &[Scope::Decide]).await;
    let id = app.create_ok("Deploy api v1.3").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;
    let (status, body) = approve_with(&app, &old, &id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["decisions"][0]["by"], "key:U0BOB");
    assert_eq!(body["decisions"][0]["kind"], "machine");
    // The message names the key (its `:` escaped, as every name is), never as a mention of Bob.
    let progress = app
        .sandbox
        .wait_for_message(CHANNEL, &msg.ts, |m| text_of(m).contains("1 of 2"), WAIT)
        .await
        .expect("the progress is shown");
    let text = text_of(&progress);
    assert!(
        text.contains("key:\u{200b}U0BOB") && !text.contains("<@U0BOB>"),
        "{text}"
    );

    // The real Bob's Deny counts: the key's vote did not use his.
    assert!(app.click(&msg, "greenlight.deny", "U0BOB").await.acked());
    let done = app.decided_message(&msg).await;
    assert!(
        text_of(&done).contains("*Denied* by <@U0BOB>"),
        "{}",
        text_of(&done)
    );
    let got = app.get(&id).await;
    assert_eq!(
        (got["status"].as_str(), got["decided_by"].as_str()),
        (Some("denied"), Some("U0BOB"))
    );
    assert!(app.sandbox.ephemerals(CHANNEL, "U0BOB").is_empty());

    // And a person's vote is never counted as the key's: Bob approving does not stop the key.
    let id = app.create_ok("Deploy api v1.4").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;
    assert!(app.click(&msg, "greenlight.approve", "U0BOB").await.acked());
    app.sandbox
        .wait_for_message(CHANNEL, &msg.ts, |m| text_of(m).contains("1 of 2"), WAIT)
        .await
        .expect("Bob's approval is shown");
    let (status, body) = approve_with(&app, &old, &id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["decided_by"].as_str()),
        (Some("approved"), Some("key:U0BOB"))
    );
    app.stop().await;
}

/// A requester written as a mention, with spaces or in lower case is the same person: kept as
/// the user id when the request is made, so they cannot approve their own request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_given_as_a_mention_cannot_approve_their_own_request() {
    let app = spawn_app().await;
    for (n, written) in ["<@U0ALICE>", " U0ALICE ", "u0alice", "<@U0ALICE|alice>"]
        .into_iter()
        .enumerate()
    {
        let (status, body) = app
            .create(json!({"title": format!("Deploy #{n}"), "requester": written}))
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["requester"], "U0ALICE", "{written:?}");
        let id = body["id"].as_str().unwrap().to_owned();
        let msg = app.posted(&id).await;
        assert!(
            text_of(&msg).contains("requested by <@U0ALICE>"),
            "{}",
            text_of(&msg)
        );
        assert!(
            app.click(&msg, "greenlight.approve", "U0ALICE")
                .await
                .acked()
        );
        app.sandbox
            .wait_until(WAIT, |sb| {
                let refusals = sb.ephemerals(CHANNEL, "U0ALICE").into_iter().filter(|e| {
                    e.text
                        .contains("You asked for this request, so you cannot approve it yourself")
                });
                (refusals.count() > n).then_some(())
            })
            .await
            .unwrap_or_else(|| panic!("{written:?}: Alice is told she asked for it"));
        let got = app.get(&id).await;
        assert_eq!(got["status"], "pending", "{written:?}");
        assert!(got["decisions"].as_array().unwrap().is_empty(), "{got}");
    }
    // A name that is not a Slack user stays as written.
    let (status, body) = app
        .create(json!({"title": "Nightly", "requester": "walter"}))
        .await;
    assert_eq!((status, body["requester"].as_str()), (201, Some("walter")));
    app.stop().await;
}

/// Xavier, of another organization's workspace, in #deploy through Slack Connect.
const PARTNER: &str = "U0XAVIER";
const ELSEWHERE: &str = "your click from another workspace did not count";

/// The sandbox as Slack, with Xavier sharing the workspace's channels.
async fn shared_with_a_partner(config: SandboxConfig) -> SandboxHandle {
    init();
    let config = config
        .with_signing_secret(random_secret())
        .with_user(User::new(PARTNER, "xavier", "Xavier Xu").of_team("T0PARTNER"));
    Sandbox::start(config).await.expect("sandbox starts")
}

async fn boot_on(sandbox: SandboxHandle, customize: impl FnOnce(&mut Config)) -> TestApp {
    boot(
        sandbox,
        TestDb::sqlite(),
        None,
        customize,
        Arc::new(SystemClock),
    )
    .await
}

/// Waits until `user` was told `text` in #deploy `times` times.
async fn told_times(sandbox: &SandboxHandle, user: &str, text: &str, times: usize) {
    sandbox
        .wait_until(WAIT, |sb| {
            let notes = sb.ephemerals(CHANNEL, user);
            (notes.iter().filter(|e| e.text.contains(text)).count() >= times).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{user} told {text:?} {times} time(s)"));
}

/// The audit log's refused votes, as (actor, team, why).
async fn refused_votes(app: &TestApp) -> Vec<(String, String, String)> {
    app.audit()
        .await
        .iter()
        .filter(|e| e["event"] == "vote.refused")
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (s(&e["actor"]), s(&e["data"]["team"]), s(&e["data"]["why"]))
        })
        .collect()
}

async fn pending_with_no_votes(app: &TestApp, id: &str) {
    let got = app.get(id).await;
    assert_eq!(got["status"], "pending", "{got}");
    assert!(got["decisions"].as_array().unwrap().is_empty(), "{got}");
}

/// A workflow with no approver list: anyone who sees the channel may vote, but only people of
/// the workspace greenlight is installed in. A click from elsewhere, in the channel, on the
/// Home tab or as a deny reason, is told so, counts for nothing and is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_from_another_workspace_counts_for_nothing_wherever_it_comes_from() {
    let sandbox = shared_with_a_partner(SandboxConfig::for_tests()).await;
    let app = boot_on(sandbox, |c| c.workflows[0].require_deny_reason = true).await;
    let id = app.create_ok("Deploy api v2").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;

    // In the channel: Approve, and Deny (which would have opened the modal asking why).
    for action in ["greenlight.approve", "greenlight.deny"] {
        assert!(app.click(&msg, action, PARTNER).await.acked());
    }
    told_times(&app.sandbox, PARTNER, ELSEWHERE, 2).await;
    assert!(
        app.sandbox.views().is_empty(),
        "no modal for a deny that cannot count"
    );
    pending_with_no_votes(&app, &id).await;

    // On the Home tab: refused, and told at the top of the tab.
    app.sandbox.open_home(PARTNER).await.unwrap();
    app.sandbox
        .wait_until(WAIT, |sb| {
            sb.home_view(PARTNER)
                .filter(|v| v.view.to_string().contains(&id))
        })
        .await
        .expect("Xavier's tab is published");
    let click = app
        .sandbox
        .click_home(HomeClick::new(PARTNER, "greenlight.approve").with_value(&id))
        .await
        .unwrap();
    assert!(click.acked(), "{click:?}");
    app.sandbox
        .wait_until(WAIT, |sb| {
            sb.home_view(PARTNER)
                .filter(|v| v.view.to_string().contains("did not count"))
        })
        .await
        .expect("Xavier's tab says why");
    pending_with_no_votes(&app, &id).await;

    // A deny reason submitted from there (Alice's modal, sent as Xavier): the modal says why.
    assert!(app.click(&msg, "greenlight.deny", "U0ALICE").await.acked());
    let view = app
        .sandbox
        .wait_until(WAIT, |sb| {
            sb.views().into_iter().find(|v| v.private_metadata == id)
        })
        .await
        .expect("the modal opened for Alice");
    let sent = app
        .sandbox
        .submit_view(&view.id, PARTNER, [("greenlight.reason", "not yours")])
        .await
        .unwrap();
    let body = sent.json().expect("an errors ack");
    assert_eq!(body["response_action"], "errors", "{body}");
    assert!(
        body["errors"]["greenlight.reason"]
            .as_str()
            .unwrap()
            .contains("another workspace"),
        "{body}"
    );
    pending_with_no_votes(&app, &id).await;

    // Every refusal is audited, with the workspace it came from.
    let refused = refused_votes(&app).await;
    assert_eq!(refused.len(), 4, "{refused:?}");
    for r in &refused {
        assert_eq!(
            (r.0.as_str(), r.1.as_str(), r.2.as_str()),
            (PARTNER, "T0PARTNER", "other_workspace")
        );
    }

    // The workspace's own people decide as before.
    let done = app
        .sandbox
        .submit_view(
            &view.id,
            "U0ALICE",
            [("greenlight.reason", "Change freeze")],
        )
        .await
        .unwrap();
    assert!(done.acked() && done.body.is_empty(), "{done:?}");
    let got = app.get(&id).await;
    assert_eq!(
        (got["status"].as_str(), got["decided_by"].as_str()),
        (Some("denied"), Some("U0ALICE"))
    );

    // `[slack] allowed_teams` lets Xavier's workspace vote.
    let app = app
        .restart(
            |c| c.slack.allowed_teams = vec!["T0PARTNER".into()],
            Arc::new(SystemClock),
        )
        .await;
    let id = app.create_ok("Deploy api v3").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;
    assert!(app.click(&msg, "greenlight.approve", PARTNER).await.acked());
    app.decided_message(&msg).await;
    let got = app.get(&id).await;
    assert_eq!(
        (got["status"].as_str(), got["decided_by"].as_str()),
        (Some("approved"), Some(PARTNER))
    );
    app.stop().await;
}

/// The same over Socket Mode, on Enterprise Grid: the organization greenlight is installed in
/// (its people's `user.team_id`) votes, another organization does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_socket_mode_on_enterprise_grid_only_the_organization_votes() {
    let sandbox = shared_with_a_partner(
        SandboxConfig::for_tests().with_enterprise("E0SANDBOX", "Sandbox Org"),
    )
    .await;
    let app_token = sandbox.config().app_token.clone().unwrap();
    sandbox.set_interactivity_url(format!("http://{}/slack/interactions", free_port()));
    let app = boot_on(sandbox.clone(), |c| {
        c.slack.signing_secret = None;
        c.slack.app_token = Some(Secret::new(app_token));
    })
    .await;
    sandbox
        .wait_until(Duration::from_secs(20), |sb| {
            (sb.open_connections() >= 1).then_some(())
        })
        .await
        .expect("a Socket Mode connection");
    let id = app.create_ok("Rotate keys").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;

    let out = sandbox
        .click(Click::new(CHANNEL, &msg.ts, "greenlight.approve", PARTNER))
        .await
        .unwrap();
    assert_eq!(out.transport, Transport::SocketMode);
    assert!(out.acked(), "{out:?}");
    told_times(&sandbox, PARTNER, ELSEWHERE, 1).await;
    pending_with_no_votes(&app, &id).await;
    assert_eq!(
        refused_votes(&app).await,
        [(
            PARTNER.to_owned(),
            "T0PARTNER".to_owned(),
            "other_workspace".to_owned()
        )]
    );

    assert!(
        app.click(&msg, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    app.decided_message(&msg).await;
    assert_eq!(app.get(&id).await["decided_by"], "U0ALICE");
    app.stop().await;
}

/// When Slack cannot say at start which workspace greenlight is installed in, the server
/// starts anyway and refuses clicks (it cannot tell whose they are), saying so; a click asks
/// Slack again, and once Slack answers, clicks count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_wait_for_slack_to_say_which_workspace_greenlight_is_in() {
    init();
    let sandbox = start_sandbox(&random_secret()).await;
    sandbox.http_error("auth.test", 500, None);
    let app = boot_on(sandbox, |_| {}).await;
    let id = app.create_ok("Deploy api v4").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;

    assert!(
        app.click(&msg, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    told_times(&app.sandbox, "U0ALICE", "cannot tell right now", 1).await;
    pending_with_no_votes(&app, &id).await;
    assert_eq!(
        refused_votes(&app).await,
        [(
            "U0ALICE".to_owned(),
            "T0SANDBOX".to_owned(),
            "workspace_unknown".to_owned()
        )]
    );

    app.sandbox.clear_faults();
    // A failed auth.test is asked again at most once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        app.click(&msg, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    app.decided_message(&msg).await;
    assert_eq!(app.get(&id).await["decided_by"], "U0ALICE");
    app.stop().await;
}
