//! Identities that cannot be borrowed: an API key never votes as a person, and a person's vote
//! is never blocked or counted by a key.

use std::process::Output;
use std::time::Duration;

use greenlight::store::Scope;
use reqwest::Method;
use serde_json::json;
use tokio::process::Command;

use crate::helpers::*;

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
    let (status, body) = call(
        &app.http,
        &app.base,
        &old,
        Method::POST,
        &format!("/v1/requests/{id}/decisions"),
        Some(json!({"verdict": "approve"})),
    )
    .await;
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
    let (status, body) = call(
        &app.http,
        &app.base,
        &old,
        Method::POST,
        &format!("/v1/requests/{id}/decisions"),
        Some(json!({"verdict": "approve"})),
    )
    .await;
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
