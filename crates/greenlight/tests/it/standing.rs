//! Standing approvals ("Approve for…", issue 27 items 4-5): a person approves a request for a
//! while in the sandbox's modal; later requests from the same caller in the same workflow with
//! the matched params are approved at creation in their name (kind `standing`), others are not;
//! deny rules win; it expires, and is revoked over the API; everything is audited.

use std::time::Duration;

use greenlight::config::Config;
use greenlight::domain::Verdict;
use greenlight::store::Scope;
use serde_json::{Value, json};

use crate::helpers::*;

fn standing_workflow(c: &mut Config) {
    let w = &mut c.workflows[0];
    w.allow_standing = Some("8h".parse().unwrap());
    w.standing_match = Some(vec!["tool_name".into()]);
    let w = c.workflows.remove(0).with_rule(
        "never-wipe",
        r#"params.command == "rm -rf /""#,
        Verdict::Deny,
    );
    c.workflows.push(w);
}

async fn create(app: &TestApp, key: &str, params: Value) -> Value {
    let (status, body) = call(
        &app.http,
        &app.base,
        key,
        reqwest::Method::POST,
        "/v1/requests",
        Some(json!({"title": "Run a tool", "requester": "U0FRANK", "params": params})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

/// Clicks "Approve for…" on `id`'s message as `user`; the modal that opens.
async fn open_modal(app: &TestApp, id: &str, user: &str) -> greenlight_sandbox::View {
    let msg = app.posted(id).await;
    assert!(
        app.click(&msg, "greenlight.approve_for", user)
            .await
            .acked()
    );
    app.sandbox
        .wait_until(WAIT, |sb| {
            sb.views().into_iter().find(|v| v.private_metadata == id)
        })
        .await
        .expect("the modal opened")
}

/// Alice approves a new request asking `params` for `duration` in the sandbox's modal; the
/// request's id and the standing approval's.
async fn grant(app: &TestApp, params: Value, duration: &str) -> (String, String) {
    let first = create(app, &app.key, params).await;
    let id = first["id"].as_str().unwrap().to_owned();
    let view = open_modal(app, &id, "U0ALICE").await;
    app.sandbox
        .submit_view(&view.id, "U0ALICE", [("greenlight.standing", duration)])
        .await
        .unwrap();
    let (_, list) = app.call(reqwest::Method::GET, "/v1/standing", None).await;
    let standing = list["standing"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("granted with {id}: {list}"));
    (id, standing["id"].as_str().unwrap().to_owned())
}

/// Waits until no standing approval is live; then a Bash request waits for a person, and the
/// revocation was audited as `user`'s.
async fn assert_revoked_by(app: &TestApp, user: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, now) = app.call(reqwest::Method::GET, "/v1/standing", None).await;
        if now["standing"] == json!([]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "revoked: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = create(app, &app.key, json!({"tool_name": "Bash"})).await;
    assert_eq!(after["status"], "pending");
    let revoked = app
        .audit()
        .await
        .into_iter()
        .find(|e| e["event"] == "standing.revoked")
        .expect("audited");
    assert_eq!(revoked["actor"], user);
}

async fn events(app: &TestApp) -> Vec<String> {
    app.audit()
        .await
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_for_a_while_approves_the_next_matching_request_until_it_ends() {
    let clock = TestClock::new();
    let app = spawn_app_clocked(standing_workflow, clock.clone()).await;
    let first = create(
        &app,
        &app.key,
        json!({"tool_name": "Bash", "command": "ls"}),
    )
    .await;
    let id = first["id"].as_str().unwrap().to_owned();
    let msg = app.posted(&id).await;
    let shown = serde_json::to_string(&msg.blocks).unwrap();
    assert!(shown.contains("greenlight.approve_for"), "{shown}");

    // The click opens the modal and decides nothing yet.
    let view = open_modal(&app, &id, "U0ALICE").await;
    assert_eq!(view.callback_id, "greenlight.standing");
    assert_eq!(app.get(&id).await["status"], "pending");
    // Not a duration, or longer than allow_standing: the modal stays open and says why.
    for (typed, says) in [("soon", "30m"), ("9h", "up to 8h")] {
        let ack = app
            .sandbox
            .submit_view(&view.id, "U0ALICE", [("greenlight.standing", typed)])
            .await
            .unwrap();
        let body = ack.json().expect("an errors ack");
        assert_eq!(body["response_action"], "errors", "{body}");
        let error = body["errors"]["greenlight.standing"].as_str().unwrap();
        assert!(error.contains(says), "{typed}: {error}");
        assert_eq!(app.get(&id).await["status"], "pending");
    }
    let ack = app
        .sandbox
        .submit_view(&view.id, "U0ALICE", [("greenlight.standing", "2h")])
        .await
        .unwrap();
    assert!(ack.body.is_empty(), "closes the modal: {}", ack.body);
    let granted = app.get(&id).await;
    assert_eq!(granted["status"], "approved");
    assert_eq!(granted["decided_by"], "U0ALICE");

    let (status, list) = app.call(reqwest::Method::GET, "/v1/standing", None).await;
    assert_eq!(status, 200, "{list}");
    let standing = list["standing"].as_array().unwrap();
    assert_eq!(standing.len(), 1, "{list}");
    assert_eq!(standing[0]["granted_by"], "U0ALICE");
    assert_eq!(standing[0]["caller_name"], "ci");
    assert_eq!(standing[0]["match"], json!({"tool_name": "Bash"}));
    assert_eq!(standing[0]["request_id"], id.as_str());
    let standing_id = standing[0]["id"].as_str().unwrap().to_owned();

    // The same caller, the same tool: approved at creation in Alice's name.
    let next = create(
        &app,
        &app.key,
        json!({"tool_name": "Bash", "command": "make test"}),
    )
    .await;
    assert_eq!(next["status"], "approved", "{next}");
    assert_eq!(next["decided_by"], "U0ALICE");
    assert_eq!(next["decisions"][0]["kind"], "standing");
    let decided = app
        .decided_message(&app.posted(next["id"].as_str().unwrap()).await)
        .await;
    assert!(
        text_of(&decided).contains("standing approval"),
        "{}",
        text_of(&decided)
    );
    // Another tool, another caller: not covered.
    let edit = create(
        &app,
        &app.key,
        json!({"tool_name": "Edit", "command": "ls"}),
    )
    .await;
    assert_eq!(edit["status"], "pending");
    let other_key = create_key(&app.db_url, "other-agent", &[Scope::Request]).await;
    let other = create(
        &app,
        &other_key,
        json!({"tool_name": "Bash", "command": "ls"}),
    )
    .await;
    assert_eq!(other["status"], "pending");
    // A deny rule still wins.
    let wipe = create(
        &app,
        &app.key,
        json!({"tool_name": "Bash", "command": "rm -rf /"}),
    )
    .await;
    assert_eq!(wipe["status"], "denied");
    assert_eq!(wipe["decided_by"], "never-wipe");

    // Two hours later it has run out.
    clock.advance(Duration::from_secs(2 * 3600 + 1));
    let late = create(
        &app,
        &app.key,
        json!({"tool_name": "Bash", "command": "ls"}),
    )
    .await;
    assert_eq!(late["status"], "pending");
    let (_, list) = app.call(reqwest::Method::GET, "/v1/standing", None).await;
    assert_eq!(list["standing"], json!([]));
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/standing/{standing_id}/revoke"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );

    let seen = events(&app).await;
    for event in ["standing.granted", "standing.used"] {
        assert!(seen.iter().any(|e| e == event), "{event} in {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_standing_approval_approves_nothing_more() {
    let app = spawn_app_with(standing_workflow).await;
    let (_, standing_id) = grant(&app, json!({"tool_name": "Bash"}), "1h").await;
    // A read key may list but not revoke.
    let reader = create_key(&app.db_url, "reader", &[Scope::Read]).await;
    let (status, _) = call(
        &app.http,
        &app.base,
        &reader,
        reqwest::Method::POST,
        &format!("/v1/standing/{standing_id}/revoke"),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, revoked) = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/standing/{standing_id}/revoke"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["revoked_by"], "key:ci");
    let after = create(&app, &app.key, json!({"tool_name": "Bash"})).await;
    assert_eq!(after["status"], "pending");
    // Revoking again changes nothing.
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/standing/{standing_id}/revoke"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert!(events(&app).await.iter().any(|e| e == "standing.revoked"));
    let (status, body) = app
        .call(reqwest::Method::POST, "/v1/standing/nope/revoke", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_allow_standing_there_is_no_third_button_and_no_grant() {
    let app = spawn_app().await;
    let req = app.create_ok("plain").await;
    let msg = app.posted(req["id"].as_str().unwrap()).await;
    let shown = serde_json::to_string(&msg.blocks).unwrap();
    assert!(!shown.contains("greenlight.approve_for"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_for_approves_editable_params_as_asked_and_is_not_offered_for_answers() {
    let app = spawn_app_with(|c| {
        standing_workflow(c);
        c.workflows[0].editable = vec!["params.replicas".into()];
    })
    .await;
    let first = create(&app, &app.key, json!({"tool_name": "scale", "replicas": 3})).await;
    let id = first["id"].as_str().unwrap().to_owned();
    let view = open_modal(&app, &id, "U0ALICE").await;
    app.sandbox
        .submit_view(&view.id, "U0ALICE", [("greenlight.standing", "1h")])
        .await
        .unwrap();
    let granted = app.get(&id).await;
    assert_eq!(granted["status"], "approved", "{granted}");
    assert_eq!(
        granted["approved_params"],
        json!({"tool_name": "scale", "replicas": 3})
    );
    let next = create(&app, &app.key, json!({"tool_name": "scale", "replicas": 5})).await;
    assert_eq!(next["status"], "approved", "{next}");
    assert_eq!(
        next["approved_params"],
        json!({"tool_name": "scale", "replicas": 5})
    );

    // A request asking for answers gets no Approve for…, and is never approved in advance.
    let (status, asked) = app
        .create(json!({
            "title": "Which replicas?",
            "requester": "U0FRANK",
            "params": {"tool_name": "scale"},
            "fields": [{"name": "why", "label": "Why", "type": "text"}],
        }))
        .await;
    assert_eq!(status, 201, "{asked}");
    assert_eq!(asked["status"], "pending");
    let msg = app.posted(asked["id"].as_str().unwrap()).await;
    let shown = serde_json::to_string(&msg.blocks).unwrap();
    assert!(!shown.contains("greenlight.approve_for"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_granter_revokes_from_the_home_tab_and_nobody_else_can() {
    let app = spawn_app_with(standing_workflow).await;
    let (_, standing_id) = grant(&app, json!({"tool_name": "Bash"}), "1h").await;

    // Alice's tab lists it with a Revoke button.
    assert!(app.sandbox.open_home("U0ALICE").await.unwrap().acked());
    let home = app
        .sandbox
        .wait_until(WAIT, |sb| {
            sb.home_view("U0ALICE")
                .filter(|v| v.view.to_string().contains(&standing_id))
        })
        .await
        .expect("Alice's tab lists her standing approval");
    assert!(home.view.to_string().contains("greenlight.revoke_standing"));

    // Bob's click on a Revoke naming it (a crafted payload) changes nothing.
    let bob = app
        .sandbox
        .click_home(
            greenlight_sandbox::HomeClick::new("U0BOB", "greenlight.revoke_standing")
                .with_value(&standing_id),
        )
        .await;
    // The sandbox only clicks buttons shown on Bob's own tab; without one there is no click.
    assert!(bob.is_err() || bob.unwrap().acked());
    let (_, still) = app.call(reqwest::Method::GET, "/v1/standing", None).await;
    assert_eq!(still["standing"].as_array().unwrap().len(), 1, "{still}");

    let click = app
        .sandbox
        .click_home(
            greenlight_sandbox::HomeClick::new("U0ALICE", "greenlight.revoke_standing")
                .with_value(&standing_id),
        )
        .await
        .unwrap();
    assert!(click.acked(), "{click:?}");
    assert_revoked_by(&app, "U0ALICE").await;
    // The refreshed tab no longer lists it.
    app.sandbox
        .wait_until(WAIT, |sb| {
            sb.home_view("U0ALICE")
                .filter(|v| !v.view.to_string().contains("greenlight.revoke_standing"))
        })
        .await
        .expect("the tab was refreshed without it");
}

/// Waits until the message at `ts` satisfies `pred`.
async fn message_where(
    app: &TestApp,
    ts: &str,
    pred: impl Fn(&str) -> bool,
) -> greenlight_sandbox::Message {
    app.sandbox
        .wait_for_message(CHANNEL, ts, |m| pred(&text_of(m)), WAIT)
        .await
        .expect("the message was rewritten")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_granting_message_shows_the_standing_approval_with_revoke_until_it_ends() {
    let clock = TestClock::new();
    let app = spawn_app_clocked(standing_workflow, clock.clone()).await;
    let (id, standing_id) = grant(&app, json!({"tool_name": "Bash"}), "1h").await;
    let msg = app.posted(&id).await;

    // The approved message shows what was granted, with a Revoke button naming it.
    let shown = message_where(&app, &msg.ts, |t| {
        t.contains("greenlight.revoke_standing") && t.contains("Approved")
    })
    .await;
    let text = text_of(&shown);
    assert!(text.contains(&standing_id), "{text}");
    assert!(text.contains("Standing approval"), "{text}");
    assert!(text.contains("tool_name=Bash"), "{text}");
    assert!(
        !text.contains("greenlight.approve\""),
        "no vote buttons: {text}"
    );

    // Bob's click changes nothing and he is told why.
    assert!(
        app.click(&shown, "greenlight.revoke_standing", "U0BOB")
            .await
            .acked()
    );
    told(&app.sandbox, "U0BOB", "Only the person who granted").await;
    let (_, still) = app.call(reqwest::Method::GET, "/v1/standing", None).await;
    assert_eq!(still["standing"].as_array().unwrap().len(), 1, "{still}");

    // Alice's click ends it; the message says so and loses the button.
    assert!(
        app.click(&shown, "greenlight.revoke_standing", "U0ALICE")
            .await
            .acked()
    );
    let revoked = message_where(&app, &msg.ts, |t| t.contains("revoked by")).await;
    let text = text_of(&revoked);
    assert!(!text.contains("greenlight.revoke_standing"), "{text}");
    assert!(text.contains("<@U0ALICE>"), "{text}");
    assert_revoked_by(&app, "U0ALICE").await;
    // A second click on a stale copy of the message says it had already ended.
    let status = app
        .stale_click(
            &shown,
            "greenlight.revoke_standing",
            "U0ALICE",
            &standing_id,
        )
        .await;
    assert_eq!(status, 200);
    told(&app.sandbox, "U0ALICE", "already ended").await;

    // Another grant runs out: its message is rewritten when it does, without the button.
    let (second_id, _) = grant(&app, json!({"tool_name": "Edit"}), "30m").await;
    let second_msg = app.posted(&second_id).await;
    message_where(&app, &second_msg.ts, |t| {
        t.contains("greenlight.revoke_standing")
    })
    .await;
    clock.advance(Duration::from_secs(30 * 60 + 1));
    let ended = message_where(&app, &second_msg.ts, |t| t.contains("ran out")).await;
    assert!(
        !text_of(&ended).contains("greenlight.revoke_standing"),
        "{}",
        text_of(&ended)
    );
}
