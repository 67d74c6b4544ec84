//! App Home and `/greenlight`: a person opens greenlight's Home tab and sees what waits for
//! their vote, decides there with the message's own buttons, and their tab (and the message)
//! follow; `/greenlight pending | show | help` answer in an ephemeral. Over HTTP (signed, like
//! clicks) and over Socket Mode, with the sandbox as Slack.

use std::sync::Arc;
use std::time::Duration;

use greenlight::config::{Secret, Workflow};
use greenlight::domain::SystemClock;
use greenlight_sandbox::{
    CommandResponse, HomeClick, Sandbox, SandboxConfig, SandboxHandle, Transport, View,
};
use serde_json::{Value, json};

use crate::helpers::*;

const APPROVE: &str = "greenlight.approve";
const DENY: &str = "greenlight.deny";

fn approvers(list: &[&str]) -> Vec<greenlight::domain::Approver> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

/// The ids on the tab's Approve buttons: what it lists as waiting for its person.
fn waiting(view: &View) -> Vec<String> {
    view.view["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .filter_map(|b| b["elements"][0]["value"].as_str().map(str::to_owned))
        .collect()
}

fn text(view: &View) -> String {
    view.view.to_string()
}

/// Waits until `user`'s published tab satisfies `pred`.
async fn home_where(sandbox: &SandboxHandle, user: &str, pred: impl Fn(&View) -> bool) -> View {
    sandbox
        .wait_until(WAIT, |sb| sb.home_view(user).filter(|v| pred(v)))
        .await
        .unwrap_or_else(|| {
            panic!(
                "{user}'s Home tab as expected: {:?}",
                sandbox.home_view(user)
            )
        })
}

/// What `/greenlight <text>` showed `user`, as text.
async fn command(sandbox: &SandboxHandle, user: &str, text: &str) -> String {
    let ran = sandbox
        .slash_command(user, "#deploy", "/greenlight", text)
        .await
        .expect("command delivered");
    assert!(ran.acked(), "{ran:?}");
    assert!(
        ran.ack.latency < Duration::from_secs(3),
        "acked within Slack's 3 s"
    );
    match ran.response {
        Some(CommandResponse::Ephemeral(e)) => {
            assert_eq!(e.user, user);
            format!("{} {}", e.text, serde_json::to_string(&e.blocks).unwrap())
        }
        other => panic!("an ephemeral answer, got {other:?}"),
    }
}

async fn create(app: &TestApp, body: Value) -> String {
    let (status, req) = app.create(body).await;
    assert_eq!(status, 201, "{req}");
    req["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_opens_home_approves_there_and_the_message_and_tab_follow() {
    let app = spawn_app_with(|c| c.workflows[0].approvers = approvers(&["U0ALICE", "S0SRE"])).await;
    let id = create(
        &app,
        json!({"title": "Deploy api v3 <!channel>", "requester": "U0FRANK"}),
    )
    .await;
    let msg = app.posted(&id).await;

    let opened = app.sandbox.open_home("U0ALICE").await.unwrap();
    assert_eq!(opened.transport, Transport::Http);
    assert!(opened.acked(), "{opened:?}");
    let home = home_where(&app.sandbox, "U0ALICE", |v| waiting(v) == [id.clone()]).await;
    let shown = text(&home);
    for part in [
        "Waiting for you",
        "Your requests",
        "Recently decided",
        "Deploy api v3",
    ] {
        assert!(shown.contains(part), "{part}: {shown}");
    }
    assert!(
        !shown.contains("<!channel>"),
        "requester text is escaped: {shown}"
    );
    // Someone who may not vote on it does not see it.
    app.sandbox.open_home("U0ERIN").await.unwrap();
    let erin = home_where(&app.sandbox, "U0ERIN", |_| true).await;
    assert!(waiting(&erin).is_empty(), "{}", text(&erin));

    let click = app
        .sandbox
        .click_home(HomeClick::new("U0ALICE", APPROVE).with_value(&id))
        .await
        .unwrap();
    assert!(click.acked(), "{click:?}");
    let decided = app.decided_message(&msg).await;
    assert!(
        text_of(&decided).contains("*Approved* by <@U0ALICE>"),
        "{}",
        text_of(&decided)
    );
    let got = app.get(&id).await;
    assert_eq!(
        (got["status"].as_str(), got["decided_by"].as_str()),
        (Some("approved"), Some("U0ALICE"))
    );
    // The tab was published again: nothing waits, the request is under "Recently decided".
    let after = home_where(&app.sandbox, "U0ALICE", |v| {
        waiting(v).is_empty() && text(v).contains(&id)
    })
    .await;
    assert!(text(&after).contains("Approved"), "{}", text(&after));

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("greenlight_home_publishes_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("greenlight_home_opened_total"),
        "{metrics}"
    );
}

/// One decision of "may vote on" for both surfaces: approvers (people and groups) or anyone
/// when the workflow names none; not what you asked for without self-approval; not what you
/// voted on already (N of M).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_lists_what_each_person_may_still_vote_on() {
    let app = spawn_app_with(|c| {
        let deploy = &mut c.workflows[0];
        deploy.approvers = approvers(&["U0ALICE", "S0SRE"]);
        deploy.approvals_required = 2;
        c.workflows.push(Workflow::new(
            "ops".parse().unwrap(),
            "#ops".parse().unwrap(),
        ));
    })
    .await;
    let frank_asks = create(
        &app,
        json!({"workflow": "deploy", "title": "Deploy api", "requester": "U0FRANK"}),
    )
    .await;
    let carol_asks = create(
        &app,
        json!({"workflow": "deploy", "title": "Deploy web", "requester": "U0CAROL"}),
    )
    .await;
    // Asked by email: still Dave's own request.
    let dave_asks = create(
        &app,
        json!({"workflow": "deploy", "title": "Deploy docs", "requester": "dave@example.com"}),
    )
    .await;
    let erin_asks = create(
        &app,
        json!({"workflow": "ops", "title": "Restart db", "requester": "U0ERIN"}),
    )
    .await;
    // Alice's vote counts (1 of 2) but does not decide.
    let msg = app.posted(&frank_asks).await;
    assert!(app.click(&msg, APPROVE, "U0ALICE").await.acked());
    app.sandbox
        .wait_for_message(CHANNEL, &msg.ts, |m| text_of(m).contains("1 of 2"), WAIT)
        .await
        .expect("the vote was counted");

    for (user, sees, not) in [
        (
            "U0DAVE",
            vec![&frank_asks, &carol_asks, &erin_asks],
            vec![&dave_asks],
        ),
        (
            "U0CAROL",
            vec![&frank_asks, &dave_asks, &erin_asks],
            vec![&carol_asks],
        ),
        (
            "U0ALICE",
            vec![&carol_asks, &dave_asks, &erin_asks],
            vec![&frank_asks],
        ),
        (
            "U0FRANK",
            vec![&erin_asks],
            vec![&frank_asks, &carol_asks, &dave_asks],
        ),
        (
            "U0ERIN",
            vec![],
            vec![&frank_asks, &carol_asks, &dave_asks, &erin_asks],
        ),
    ] {
        let answer = command(&app.sandbox, user, "pending").await;
        for id in &sees {
            assert!(answer.contains(id.as_str()), "{user} sees {id}: {answer}");
        }
        for id in &not {
            assert!(
                !answer.contains(id.as_str()),
                "{user} does not see {id}: {answer}"
            );
        }
        if sees.is_empty() {
            assert!(answer.contains("Nothing is waiting"), "{answer}");
        }
        // The Home tab lists exactly the same.
        app.sandbox.open_home(user).await.unwrap();
        let mut want: Vec<String> = sees.iter().map(|s| s.to_string()).collect();
        want.sort();
        home_where(&app.sandbox, user, |v| {
            let mut got = waiting(v);
            got.sort();
            got == want
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_tabs_refresh_on_changes_at_most_about_once_a_second() {
    let app = spawn_app().await;
    app.sandbox.open_home("U0BOB").await.unwrap();
    home_where(&app.sandbox, "U0BOB", |v| {
        text(v).contains("Nothing is waiting")
    })
    .await;
    // A new request for its approvers (anyone, here) shows on a tab that is open.
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create(&app, json!({"title": format!("Deploy #{i}")})).await);
    }
    let mut want = ids.clone();
    want.sort();
    home_where(&app.sandbox, "U0BOB", |v| {
        let mut got = waiting(v);
        got.sort();
        got == want
    })
    .await;
    let publishes: Vec<_> = app
        .sandbox
        .calls_to("views.publish")
        .into_iter()
        .filter(|c| c.args["user_id"] == "U0BOB" && c.ok)
        .collect();
    assert!(
        publishes.len() <= 4,
        "five changes collapse: {}",
        publishes.len()
    );
    for pair in publishes.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(900), "published {gap:?} apart");
    }
}

/// A click on a Home tab that was out of date: no channel to answer in, so the tab is
/// published again with the reason on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_click_on_home_is_explained_on_the_tab() {
    let app = spawn_app().await;
    let id = create(&app, json!({"title": "Deploy api"})).await;
    let msg = app.posted(&id).await;
    assert!(app.click(&msg, APPROVE, "U0BOB").await.acked());
    app.decided_message(&msg).await;

    let payload = json!({
        "type": "block_actions",
        "team": {"id": "T0SANDBOX", "domain": "sandbox"},
        "user": {"id": "U0ALICE", "username": "alice", "team_id": "T0SANDBOX"},
        "api_app_id": "A0GREENLIGHT",
        "trigger_id": "1.2.3",
        "container": {"type": "view", "view_id": "V0STALE"},
        "view": {"id": "V0STALE", "type": "home", "blocks": []},
        "actions": [{"action_id": APPROVE, "block_id": format!("greenlight.home.{id}"),
                     "value": id, "type": "button", "action_ts": "1.2"}]
    });
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    let headers = app.signed_headers(&body, now_unix());
    let (status, _) = app
        .slack_post(&body, "application/x-www-form-urlencoded", &headers)
        .await;
    assert_eq!(status, 200);
    let home = home_where(&app.sandbox, "U0ALICE", |v| {
        text(v).contains("already approved")
    })
    .await;
    assert_eq!(
        home.view["blocks"][0]["type"], "context",
        "the notice is on top"
    );
    assert!(text(&home).contains("<@U0BOB>"), "{}", text(&home));
    assert!(app.sandbox.ephemerals(CHANNEL, "U0ALICE").is_empty());
    assert_eq!(app.get(&id).await["decided_by"], "U0BOB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_from_home_asks_why_in_a_modal() {
    let app = spawn_app_with(|c| c.workflows[0].require_deny_reason = true).await;
    let id = create(&app, json!({"title": "Deploy api", "requester": "U0FRANK"})).await;
    let msg = app.posted(&id).await;
    app.sandbox.open_home("U0BOB").await.unwrap();
    home_where(&app.sandbox, "U0BOB", |v| waiting(v) == [id.clone()]).await;

    let click = app
        .sandbox
        .click_home(HomeClick::new("U0BOB", DENY).with_value(&id))
        .await
        .unwrap();
    assert!(click.acked(), "{click:?}");
    let modal = app
        .sandbox
        .wait_until(WAIT, |sb| {
            sb.views()
                .into_iter()
                .find(|v| v.private_metadata == id && v.view["type"] == "modal")
        })
        .await
        .expect("the deny-reason modal opened from the Home tab");
    let submitted = app
        .sandbox
        .submit_view(&modal.id, "U0BOB", [("greenlight.reason", "Change freeze")])
        .await
        .unwrap();
    assert!(submitted.acked());
    let done = app.decided_message(&msg).await;
    assert!(
        text_of(&done).contains("*Denied* by <@U0BOB>"),
        "{}",
        text_of(&done)
    );
    assert_eq!(app.get(&id).await["reason"], "Change freeze");
    home_where(&app.sandbox, "U0BOB", |v| {
        waiting(v).is_empty() && text(v).contains("Change freeze")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_with_a_bad_signature_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let id = create(&app, json!({"title": "Deploy api"})).await;
    app.posted(&id).await;
    // The post's delivery over (a retried post looks for its earlier copy first), so that
    // nothing the create set off calls Slack after the count below.
    wait_delivery(&app, &id, "slack_post", |d| d[0]["state"] == "done").await;
    let audit_before = app.audit().await.len();
    let calls_before = app.sandbox.calls().len();
    let body = "token=x&team_id=T0SANDBOX&team_domain=sandbox&channel_id=C0DEPLOY&channel_name=deploy&user_id=U0ALICE&user_name=alice&command=%2Fgreenlight&text=pending&response_url=http%3A%2F%2F127.0.0.1%3A9%2Fr&trigger_id=1.2.3";
    let ts = now_unix();
    let post = |headers: Vec<(&'static str, String)>| {
        let mut req = app
            .http
            .post(format!("{}/slack/commands", app.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    let forged = vec![
        ("x-slack-request-timestamp", ts.to_string()),
        ("x-slack-signature", format!("v0={}", "0".repeat(64))),
    ];
    let (status, answer) = post(forged).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("invalid_signature"), "{answer}");
    let (status, _) = post(vec![]).await;
    assert_eq!(status, 401, "no signature at all");
    let stale = app.signed_headers(body, ts - 600);
    assert_eq!(post(stale).await.0, 401, "outside the 5-minute window");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.audit().await.len(), audit_before);
    assert_eq!(app.sandbox.calls().len(), calls_before, "no Slack call");

    // Signed properly it is answered in the ack; the same bytes again are a replay.
    let signed = app.signed_headers(body, ts);
    let (status, answer) = post(signed.clone()).await;
    assert_eq!(status, 200);
    let reply: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(reply["response_type"], "ephemeral");
    assert!(answer.contains(&id), "{answer}");
    let (status, again) = post(signed).await;
    assert_eq!((status, again.as_str()), (200, ""), "a replay does nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_help_and_unknown_subcommands() {
    let app = spawn_app_with(|c| c.workflows[0].approvals_required = 2).await;
    let id = create(
        &app,
        json!({"title": "Refund *1042*", "details": "for <!here>", "requester": "U0FRANK"}),
    )
    .await;
    let msg = app.posted(&id).await;
    assert!(app.click(&msg, APPROVE, "U0ALICE").await.acked());
    app.sandbox
        .wait_for_message(CHANNEL, &msg.ts, |m| text_of(m).contains("1 of 2"), WAIT)
        .await
        .unwrap();

    // Anyone may look: what the message shows, without its buttons.
    let shown = command(&app.sandbox, "U0ERIN", &format!("show {id}")).await;
    assert!(shown.contains("1 of 2 approvals"), "{shown}");
    assert!(
        shown.contains(&id) && shown.contains("<#C0DEPLOY>"),
        "{shown}"
    );
    assert!(!shown.contains(APPROVE), "no buttons: {shown}");
    assert!(!shown.contains("<!here>"), "{shown}");
    let missing = command(
        &app.sandbox,
        "U0ERIN",
        "show req_01ARZ3NDEKTSV4RRFFQ69G5FAV",
    )
    .await;
    assert!(missing.contains("does not know"), "{missing}");
    let junk = command(&app.sandbox, "U0ERIN", "show <!channel>").await;
    assert!(
        junk.contains("does not know") && !junk.contains("<!channel>"),
        "{junk}"
    );

    let help = command(&app.sandbox, "U0ERIN", "help").await;
    for sub in ["pending", "show", "help"] {
        assert!(help.contains(&format!("/greenlight {sub}")), "{help}");
    }
    let bare = command(&app.sandbox, "U0ERIN", "").await;
    assert!(
        bare.contains("/greenlight show") && bare.contains("this list"),
        "{bare}"
    );
    let unknown = command(&app.sandbox, "U0ERIN", "approve everything").await;
    assert!(
        unknown.contains("does not know") && unknown.contains("/greenlight pending"),
        "{unknown}"
    );
}

/// Socket Mode: `events_api` and `slash_commands` envelopes, acked at once like clicks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_and_commands_over_socket_mode() {
    init();
    let sb_config = SandboxConfig::for_tests();
    let app_token = sb_config.app_token.clone().unwrap();
    let sandbox = Sandbox::start(sb_config).await.unwrap();
    // Nothing listens here: a payload that fell back to HTTP would fail.
    sandbox.set_interactivity_url(format!("http://{}/slack/interactions", free_port()));
    let app = boot(
        sandbox.clone(),
        TestDb::sqlite(),
        None,
        |c| {
            c.slack.signing_secret = None;
            c.slack.app_token = Some(Secret::new(app_token));
            c.workflows[0].approvers = approvers(&["S0SRE"]);
        },
        Arc::new(SystemClock),
    )
    .await;
    sandbox
        .wait_until(Duration::from_secs(20), |sb| {
            (sb.open_connections() >= 1).then_some(())
        })
        .await
        .expect("a Socket Mode connection");

    let (status, req) = app.create(json!({"title": "Over the socket"})).await;
    assert_eq!(status, 201, "{req}");
    let id = req["id"].as_str().unwrap().to_owned();
    let msg = posted(&sandbox, &id).await;

    let opened = sandbox.open_home("U0CAROL").await.unwrap();
    assert_eq!(opened.transport, Transport::SocketMode);
    assert!(opened.acked(), "{opened:?}");
    home_where(&sandbox, "U0CAROL", |v| waiting(v) == [id.clone()]).await;

    let ran = sandbox
        .slash_command("U0CAROL", "#deploy", "/greenlight", "pending")
        .await
        .unwrap();
    assert_eq!(ran.ack.transport, Transport::SocketMode);
    assert!(ran.acked(), "{ran:?}");
    match &ran.response {
        Some(CommandResponse::Ephemeral(e)) => {
            assert!(
                serde_json::to_string(&e.blocks).unwrap().contains(&id),
                "{e:?}"
            )
        }
        other => panic!("an ephemeral answer, got {other:?}"),
    }

    let click = sandbox
        .click_home(HomeClick::new("U0CAROL", APPROVE).with_value(&id))
        .await
        .unwrap();
    assert_eq!(click.transport, Transport::SocketMode);
    assert!(click.acked());
    sandbox
        .wait_for_message(CHANNEL, &msg.ts, |m| !has_buttons(m), WAIT)
        .await
        .expect("the message shows the decision");
    home_where(&sandbox, "U0CAROL", |v| {
        waiting(v).is_empty() && text(v).contains(&id)
    })
    .await;

    app.stop().await;
}

/// A Home tab Slack will not take (the app's Home tab is off) is given up at once, audited,
/// and not announced: the person's next visit publishes it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_tab_slack_refuses_is_given_up_quietly() {
    let app = spawn_app_with(|c| c.alerts.channel = Some("C0OPS".parse().unwrap())).await;
    app.sandbox.fail_with("views.publish", "not_enabled", None);
    assert!(app.sandbox.open_home("U0ALICE").await.unwrap().acked());
    let failed = |events: &[Value]| {
        events
            .iter()
            .any(|e| e["event"] == "delivery.failed" && e["data"]["kind"] == "slack_home_refresh")
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while !failed(&app.audit().await) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refresh was given up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.sandbox.messages("C0OPS").is_empty(), "no alert");
    assert_eq!(
        app.sandbox.calls_to("views.publish").len(),
        1,
        "not retried"
    );
}

/// A workflow with stages: a request waits for someone only while one of their stages is open.
async fn home_and_pending_follow_the_open_stage(backend: Backend) {
    init();
    let sandbox = start_sandbox(&random_secret()).await;
    let app = boot(
        sandbox,
        TestDb::of(backend).await,
        None,
        |c| {
            c.workflows[0].stages = vec![
                greenlight::config::Stage {
                    name: "owners".into(),
                    approvers: approvers(&["S0SRE"]),
                    approvals_required: 1,
                },
                greenlight::config::Stage {
                    name: "security".into(),
                    approvers: approvers(&["U0ERIN"]),
                    approvals_required: 1,
                },
            ];
        },
        Arc::new(SystemClock),
    )
    .await;
    let id = create(&app, json!({"title": "Deploy api", "requester": "U0FRANK"})).await;
    let answer = command(&app.sandbox, "U0ERIN", "pending").await;
    assert!(answer.contains("Nothing is waiting"), "{answer}");
    assert!(
        command(&app.sandbox, "U0CAROL", "pending")
            .await
            .contains(&id)
    );
    app.sandbox.open_home("U0ERIN").await.unwrap();
    home_where(&app.sandbox, "U0ERIN", |v| waiting(v).is_empty()).await;

    let msg = app.posted(&id).await;
    assert!(app.click(&msg, APPROVE, "U0CAROL").await.acked());
    // Security is open now: Erin's open tab follows, and so does /greenlight pending.
    home_where(&app.sandbox, "U0ERIN", |v| waiting(v) == [id.clone()]).await;
    assert!(
        command(&app.sandbox, "U0ERIN", "pending")
            .await
            .contains(&id)
    );
    let answer = command(&app.sandbox, "U0DAVE", "pending").await;
    assert!(answer.contains("Nothing is waiting"), "{answer}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_and_pending_follow_the_open_stage_on_sqlite() {
    home_and_pending_follow_the_open_stage(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_and_pending_follow_the_open_stage_on_postgres() {
    home_and_pending_follow_the_open_stage(Backend::Postgres).await
}
