//! Who may approve, how many must, and what the message shows while they do: approvers (people
//! and user groups), N of M, self-approval, confirmation dialogs, channel overrides.

use serde_json::{Value, json};

use greenlight::config::{Config, Workflow};

use crate::helpers::*;

fn deploy(c: &mut Config) -> &mut Workflow {
    &mut c.workflows[0]
}

async fn create(app: &TestApp, body: Value) -> String {
    let (status, req) = app.create(body).await;
    assert_eq!(status, 201, "{req}");
    req["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_approvers_count_and_a_group_member_is_an_approver() {
    let app = spawn_app_with(|c| {
        deploy(c).approvers = vec!["U0ALICE".parse().unwrap(), "S0SRE".parse().unwrap()];
    })
    .await;
    let id = create(&app, json!({"title": "Deploy api", "requester": "U0FRANK"})).await;
    let msg = app.posted(&id).await;

    // Bob is neither Alice nor in @sre: told so, and his deny counts for nothing.
    assert!(app.click(&msg, "greenlight.deny", "U0BOB").await.acked());
    let note = told(&app.sandbox, "U0BOB", "not an approver for deploy").await;
    assert!(note.contains("did not count"), "{note}");
    let got = app.get(&id).await;
    assert_eq!(got["status"], "pending");
    assert_eq!(got["decisions"], json!([]));

    // Carol is in @sre (S0SRE), resolved through usergroups.users.list.
    assert!(
        app.click(&msg, "greenlight.approve", "U0CAROL")
            .await
            .acked()
    );
    let done = app.decided_message(&msg).await;
    assert!(text_of(&done).contains("*Approved* by <@U0CAROL>"));
    assert_eq!(app.get(&id).await["decided_by"], "U0CAROL");
    assert!(!app.sandbox.calls_to("usergroups.users.list").is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_needs_two_different_people_and_shows_progress() {
    let app = spawn_app_with(|c| {
        let w = deploy(c);
        w.approvers = ["U0ALICE", "U0BOB", "U0CAROL"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        w.approvals_required = 2;
    })
    .await;
    let id = create(&app, json!({"title": "Migrate db"})).await;
    let msg = app.posted(&id).await;
    assert!(
        text_of(&msg).contains("0 of 2 approvals"),
        "{}",
        text_of(&msg)
    );

    assert!(
        app.click(&msg, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    let progress = app
        .sandbox
        .wait_for_message(
            CHANNEL,
            &msg.ts,
            |m| text_of(m).contains("1 of 2 approvals"),
            WAIT,
        )
        .await
        .expect("progress shown");
    assert!(text_of(&progress).contains("1 of 2 approvals: <@U0ALICE>"));
    assert!(has_buttons(&progress), "still actionable");

    // Alice again: nothing changes, she is told.
    assert!(
        app.click(&msg, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    told(&app.sandbox, "U0ALICE", "already voted").await;
    let got = app.get(&id).await;
    assert_eq!(got["status"], "pending");
    assert_eq!(got["decisions"].as_array().unwrap().len(), 1);

    assert!(app.click(&msg, "greenlight.approve", "U0BOB").await.acked());
    let done = app.decided_message(&msg).await;
    assert!(text_of(&done).contains("*Approved* by <@U0BOB>"));
    let got = app.get(&id).await;
    assert_eq!(got["status"], "approved");
    let voters: Vec<&str> = got["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["by"].as_str().unwrap())
        .collect();
    assert_eq!(voters, ["U0ALICE", "U0BOB"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_deny_denies_a_quorum_in_progress() {
    let app = spawn_app_with(|c| deploy(c).approvals_required = 3).await;
    let id = create(&app, json!({"title": "Rotate keys"})).await;
    let msg = app.posted(&id).await;
    assert!(
        app.click(&msg, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    app.sandbox
        .wait_for_message(CHANNEL, &msg.ts, |m| text_of(m).contains("1 of 3"), WAIT)
        .await
        .expect("progress shown");
    assert!(app.click(&msg, "greenlight.deny", "U0BOB").await.acked());
    let done = app.decided_message(&msg).await;
    assert!(text_of(&done).contains("*Denied* by <@U0BOB>"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requester_cannot_approve_their_own_request_unless_the_workflow_allows_it() {
    let app = spawn_app().await;
    // By user id.
    let id = create(&app, json!({"title": "My deploy", "requester": "U0FRANK"})).await;
    let msg = app.posted(&id).await;
    assert!(
        app.click(&msg, "greenlight.approve", "U0FRANK")
            .await
            .acked()
    );
    told(&app.sandbox, "U0FRANK", "cannot approve it yourself").await;
    assert_eq!(app.get(&id).await["status"], "pending");

    // By email, resolved with users.lookupByEmail.
    let id2 = create(
        &app,
        json!({"title": "Mail deploy", "requester": "erin@example.com"}),
    )
    .await;
    let msg2 = app.posted(&id2).await;
    assert!(
        app.click(&msg2, "greenlight.approve", "U0ERIN")
            .await
            .acked()
    );
    app.sandbox
        .wait_until(WAIT, |sb| {
            (sb.ephemerals(CHANNEL, "U0ERIN").len() == 1).then_some(())
        })
        .await
        .expect("erin told");
    assert_eq!(app.get(&id2).await["status"], "pending");
    assert!(!app.sandbox.calls_to("users.lookupByEmail").is_empty());
    // Someone else approves normally.
    assert!(
        app.click(&msg2, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    app.decided_message(&msg2).await;

    // The opt-in: the same click now counts.
    let app = app
        .restart(
            |c| deploy(c).allow_self_approval = true,
            std::sync::Arc::new(greenlight::domain::SystemClock),
        )
        .await;
    assert!(
        app.click(&msg, "greenlight.approve", "U0FRANK")
            .await
            .acked()
    );
    let done = app.decided_message(&msg).await;
    assert!(text_of(&done).contains("*Approved* by <@U0FRANK>"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_puts_an_are_you_sure_dialog_on_both_buttons() {
    let app = spawn_app_with(|c| deploy(c).confirm = true).await;
    let id = create(&app, json!({"title": "Drop table users"})).await;
    let msg = app.posted(&id).await;
    let actions = msg
        .blocks
        .iter()
        .find(|b| b["type"] == "actions")
        .expect("buttons");
    for button in actions["elements"].as_array().unwrap() {
        let confirm = &button["confirm"];
        assert!(
            confirm["title"]["text"]
                .as_str()
                .unwrap()
                .ends_with("this request?"),
            "{button}"
        );
        assert!(
            confirm["text"]["text"]
                .as_str()
                .unwrap()
                .contains("Drop table users")
        );
        assert_eq!(confirm["deny"]["text"], "Cancel");
    }
    // Without the key, no dialogs.
    let plain = spawn_app().await;
    let id = create(&plain, json!({"title": "Deploy"})).await;
    assert!(!text_of(&plain.posted(&id).await).contains("\"confirm\""));
    plain.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_may_choose_its_channel_only_where_the_workflow_allows_it() {
    let app = spawn_app().await;
    let (status, body) = app
        .create(json!({"title": "Elsewhere", "channel": "#ops"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "channel_override_not_allowed");
    let app = app
        .restart(
            |c| deploy(c).allow_channel_override = true,
            std::sync::Arc::new(greenlight::domain::SystemClock),
        )
        .await;
    let (status, body) = app
        .create(json!({"title": "Elsewhere", "channel": "#nope nope"}))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_request"))
    );
    let id = create(&app, json!({"title": "Elsewhere", "channel": "#ops"})).await;
    let msg = app
        .sandbox
        .wait_for_message_in("C0OPS", |m| text_of(m).contains(&id), WAIT)
        .await
        .expect("posted in #ops");
    assert!(has_buttons(&msg));
    assert_eq!(app.get(&id).await["channel"], "#ops");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approver_groups_are_loaded_at_start_so_a_slow_slack_never_delays_the_ack() {
    let app = spawn_app_with(|c| {
        deploy(c).approvers = vec!["S0SRE".parse().unwrap()];
    })
    .await;
    app.sandbox
        .wait_until(WAIT, |sb| {
            (!sb.calls_to("usergroups.users.list").is_empty()).then_some(())
        })
        .await
        .expect("the group is looked up at start");
    let id = create(&app, json!({"title": "Deploy while Slack crawls"})).await;
    let msg = app.posted(&id).await;
    for method in ["usergroups.users.list", "chat.update", "chat.postEphemeral"] {
        app.sandbox
            .set_latency(method, std::time::Duration::from_millis(2500));
    }
    let lookups = app.sandbox.calls_to("usergroups.users.list").len();
    let ack = app.click(&msg, "greenlight.approve", "U0CAROL").await;
    assert!(ack.acked());
    assert!(
        ack.latency < std::time::Duration::from_secs(1),
        "the ack waited for Slack: {:?}",
        ack.latency
    );
    assert_eq!(app.get(&id).await["decided_by"], "U0CAROL");
    assert_eq!(
        app.sandbox.calls_to("usergroups.users.list").len(),
        lookups,
        "the click used the cached group"
    );
    app.stop().await;
}
