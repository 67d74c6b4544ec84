//! Approval policies with stages: each stage a quorum of its own people, opened one after the
//! other or all at once, each person counted once for one open stage, deny thresholds, and
//! the next approvers told in the thread. On both stores.

use std::sync::Arc;

use serde_json::{Value, json};

use greenlight::config::{Config, Stage, Workflow};
use greenlight::domain::{StagesOrder, SystemClock};
use greenlight_sandbox::{Message, SandboxHandle};

use crate::helpers::*;

fn stage(name: &str, approvers: &[&str], approvals_required: u32) -> Stage {
    Stage {
        name: name.into(),
        approvers: approvers.iter().map(|a| a.parse().unwrap()).collect(),
        approvals_required,
    }
}

fn deploy(c: &mut Config) -> &mut Workflow {
    &mut c.workflows[0]
}

/// Owners (the @sre group: Carol and Dave), then security (two of Erin, Alice and Bob).
fn owners_then_security(c: &mut Config) {
    let w = deploy(c);
    w.stages = vec![
        stage("owners", &["S0SRE"], 1),
        stage("security", &["U0ERIN", "U0ALICE", "U0BOB"], 2),
    ];
}

async fn spawn(backend: Backend, customize: impl FnOnce(&mut Config)) -> TestApp {
    init();
    let sandbox = start_sandbox(&random_secret()).await;
    boot(
        sandbox,
        TestDb::of(backend).await,
        None,
        customize,
        Arc::new(SystemClock),
    )
    .await
}

async fn create(app: &TestApp, title: &str) -> String {
    let (status, req) = app
        .create(json!({"title": title, "requester": "U0FRANK"}))
        .await;
    assert_eq!(status, 201, "{req}");
    req["id"].as_str().unwrap().to_owned()
}

async fn approve(app: &TestApp, msg: &Message, user: &str) {
    assert!(app.click(msg, "greenlight.approve", user).await.acked());
}

/// Waits until the message shows the outcome (no buttons); if it never does, says what the
/// request and its deliveries were at that point.
async fn decided(app: &TestApp, msg: &Message, id: &str) -> Message {
    let done = app
        .sandbox
        .wait_for_message(CHANNEL, &msg.ts, |m| !has_buttons(m), WAIT)
        .await;
    match done {
        Some(m) => m,
        None => {
            let got = app.get(id).await;
            let jobs: Vec<String> = got["delivery"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| {
                    format!(
                        "{} {} {} {}",
                        j["kind"], j["state"], j["attempts"], j["last_error"]
                    )
                })
                .collect();
            panic!(
                "the message of {id} still has buttons: status {}, decisions {}, jobs {jobs:#?}",
                got["status"], got["decisions"]
            )
        }
    }
}

/// The request once it is no longer pending (or as it is when the wait runs out).
async fn settled(app: &TestApp, id: &str) -> Value {
    let (status, got) = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/requests/{id}?wait=10"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{got}");
    got
}

/// Waits for a thread reply under `ts` containing `text`.
async fn replied(sandbox: &SandboxHandle, ts: &str, text: &str) -> String {
    sandbox
        .wait_until(WAIT, |sb| {
            sb.thread_replies(CHANNEL, ts)
                .into_iter()
                .map(|m| m.text)
                .find(|t| t.contains(text))
        })
        .await
        .unwrap_or_else(|| panic!("no thread reply {text:?}"))
}

fn statuses(request: &Value) -> Vec<(String, String)> {
    request["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

on_both_stores!(
    sequential_stages_are_clicked_in_order_and_an_early_click_is_told_whom_it_waits_for,
    parallel_sre_and_security_a_person_in_both_satisfies_one,
    two_denials_deny_when_denials_required_is_two,
    a_machine_names_an_open_stage_or_is_refused,
    the_requester_is_told_the_outcome_in_a_direct_message,
    dm_copies_decide_like_the_message_and_all_show_the_outcome,
);

async fn sequential_stages_are_clicked_in_order_and_an_early_click_is_told_whom_it_waits_for(
    backend: Backend,
) {
    let app = spawn(backend, owners_then_security).await;
    let id = create(&app, "Deploy api").await;
    let msg = app.posted(&id).await;
    let got = app.get(&id).await;
    assert_eq!(
        statuses(&got),
        pairs(&[("owners", "open"), ("security", "waiting")])
    );
    assert_eq!(got["denials_required"], 1);
    assert_eq!(got["stages"][1]["approvals_required"], 2);
    assert_eq!(
        got["stages"][1]["approvers"],
        json!(["U0ERIN", "U0ALICE", "U0BOB"])
    );
    // The owners are told it is their turn, in the thread.
    let text = text_of(&msg);
    assert!(
        text.contains(":hourglass_flowing_sand: *owners* 0/1: waiting for <!subteam^S0SRE>")
            && text.contains("*security* 0/2: opens when *owners* is approved"),
        "{text}"
    );
    let reply = replied(&app.sandbox, &msg.ts, "Stage *owners* is open").await;
    assert!(reply.contains("<!subteam^S0SRE>"), "{reply}");

    // Erin is in security, which is not open yet: told whom it waits for; nothing counts.
    approve(&app, &msg, "U0ERIN").await;
    let note = told(
        &app.sandbox,
        "U0ERIN",
        "Waiting for *owners*: 0 of 1 from <!subteam^S0SRE>",
    )
    .await;
    assert!(note.contains("did not count"), "{note}");
    assert_eq!(app.get(&id).await["decisions"], json!([]));

    // Carol (in @sre) meets the owners stage; security opens and is told.
    approve(&app, &msg, "U0CAROL").await;
    let reply = replied(&app.sandbox, &msg.ts, "Stage *security* is open").await;
    assert!(
        reply.contains("<@U0ERIN> <@U0ALICE> <@U0BOB>") && reply.contains("2 approvals"),
        "{reply}"
    );
    let got = app.get(&id).await;
    assert_eq!(got["status"], "pending");
    assert_eq!(
        statuses(&got),
        pairs(&[("owners", "approved"), ("security", "open")])
    );
    // The message shows every stage with its progress.
    let shown = app
        .sandbox
        .wait_for_message(
            CHANNEL,
            &msg.ts,
            |m| text_of(m).contains("*owners* 1/1"),
            WAIT,
        )
        .await
        .expect("the message shows the owners' approval");
    let text = text_of(&shown);
    assert!(
        text.contains(":white_check_mark: *owners* 1/1: <@U0CAROL>")
            && text.contains(
                ":hourglass_flowing_sand: *security* 0/2: waiting for <@U0ERIN>, <@U0ALICE>, <@U0BOB>"
            ),
        "{text}"
    );
    assert!(has_buttons(&shown));
    assert_eq!(got["stages"][0]["approvals"][0]["by"], "U0CAROL");
    // Dave, the other owner, is in no open stage now.
    approve(&app, &msg, "U0DAVE").await;
    told(&app.sandbox, "U0DAVE", "Waiting for *security*: 0 of 2").await;

    approve(&app, &msg, "U0ERIN").await;
    approve(&app, &msg, "U0ALICE").await;
    let done = decided(&app, &msg, &id).await;
    assert!(
        text_of(&done).contains("*Approved* by <@U0ALICE>"),
        "{}",
        text_of(&done)
    );
    let got = app.get(&id).await;
    assert_eq!(got["status"], "approved");
    assert_eq!(
        statuses(&got),
        pairs(&[("owners", "approved"), ("security", "approved")])
    );
    let stages: Vec<&str> = got["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["owners", "security", "security"]);

    let audit = app.audit().await;
    let stage_events: Vec<(String, String)> = audit
        .iter()
        .filter(|e| e["request_id"] == id.as_str())
        .filter(|e| e["event"].as_str().unwrap().starts_with("stage."))
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["data"]["stage"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        stage_events,
        pairs(&[
            ("stage.opened", "owners"),
            ("stage.approved", "owners"),
            ("stage.opened", "security"),
            ("stage.approved", "security"),
        ])
    );
    app.stop().await;
}

async fn parallel_sre_and_security_a_person_in_both_satisfies_one(backend: Backend) {
    let app = spawn(backend, |c| {
        let w = deploy(c);
        w.stages_order = StagesOrder::Parallel;
        // Carol is in @sre and listed in security too.
        w.stages = vec![
            stage("sre", &["S0SRE"], 1),
            stage("security", &["U0CAROL", "U0ERIN", "U0ALICE"], 1),
        ];
    })
    .await;
    let id = create(&app, "Open the firewall").await;
    let msg = app.posted(&id).await;
    assert_eq!(
        statuses(&app.get(&id).await),
        pairs(&[("sre", "open"), ("security", "open")])
    );
    replied(&app.sandbox, &msg.ts, "Stage *sre* is open").await;
    replied(&app.sandbox, &msg.ts, "Stage *security* is open").await;

    // Carol's one vote counts for the first open stage that lists her, and only for it.
    approve(&app, &msg, "U0CAROL").await;
    approve(&app, &msg, "U0CAROL").await;
    told(&app.sandbox, "U0CAROL", "already voted").await;
    let got = app.get(&id).await;
    assert_eq!(got["status"], "pending");
    assert_eq!(
        statuses(&got),
        pairs(&[("sre", "approved"), ("security", "open")])
    );

    approve(&app, &msg, "U0ERIN").await;
    decided(&app, &msg, &id).await;
    let got = app.get(&id).await;
    assert_eq!(got["status"], "approved");
    assert_eq!(got["stages"][0]["approvals"][0]["by"], "U0CAROL");
    assert_eq!(got["stages"][1]["approvals"][0]["by"], "U0ERIN");

    // Two people of the two stages clicking at once both count, exactly once each.
    let id = create(&app, "Rotate the certificates").await;
    let msg = app.posted(&id).await;
    let (a, b) = tokio::join!(
        app.click(&msg, "greenlight.approve", "U0DAVE"),
        app.click(&msg, "greenlight.approve", "U0ALICE"),
    );
    assert!(a.acked() && b.acked());
    // The votes are what this checks, in the store; the message's rewrite after two commits
    // at once can lag on PostgreSQL (a known race of the outbox's collapsing, see the report).
    let got = settled(&app, &id).await;
    assert_eq!(got["status"], "approved", "{got}");
    assert_eq!(got["decisions"].as_array().unwrap().len(), 2, "{got}");

    // Two clicks that would each meet the last stage: one decision, the other told.
    let id = create(&app, "Rotate the keys").await;
    let msg = app.posted(&id).await;
    approve(&app, &msg, "U0DAVE").await;
    let (a, b) = tokio::join!(
        app.click(&msg, "greenlight.approve", "U0ERIN"),
        app.click(&msg, "greenlight.approve", "U0ALICE"),
    );
    assert!(a.acked() && b.acked());
    let got = settled(&app, &id).await;
    assert_eq!(got["status"], "approved", "{got}");
    let decisions = got["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 2, "{got}");
    let late = if got["decided_by"] == "U0ERIN" {
        "U0ALICE"
    } else {
        "U0ERIN"
    };
    told(&app.sandbox, late, "already approved").await;
    app.stop().await;
}

async fn two_denials_deny_when_denials_required_is_two(backend: Backend) {
    let app = spawn(backend, |c| {
        let w = deploy(c);
        w.approvals_required = 3;
        w.denials_required = 2;
    })
    .await;
    let id = create(&app, "Drop the old tables").await;
    let msg = app.posted(&id).await;
    let got = app.get(&id).await;
    // A workflow without stages has one, named "approvers".
    assert_eq!(statuses(&got), pairs(&[("approvers", "open")]));
    assert_eq!(got["denials_required"], 2);
    assert_eq!(got["stages"][0]["approvers"], json!([]));

    assert!(app.click(&msg, "greenlight.deny", "U0BOB").await.acked());
    app.sandbox
        .wait_until(WAIT, |sb| {
            sb.calls_to("chat.update").into_iter().next().map(|_| ())
        })
        .await
        .expect("the message shows the deny");
    assert_eq!(app.get(&id).await["status"], "pending");
    assert!(app.click(&msg, "greenlight.deny", "U0ALICE").await.acked());
    let done = decided(&app, &msg, &id).await;
    assert!(
        text_of(&done).contains("*Denied* by <@U0ALICE>"),
        "{}",
        text_of(&done)
    );
    let got = app.get(&id).await;
    assert_eq!(got["status"], "denied");
    assert_eq!(statuses(&got), pairs(&[("approvers", "denied")]));
    // No stage events for a workflow without stages: it behaves as before.
    assert!(
        !app.audit()
            .await
            .iter()
            .any(|e| e["event"].as_str().unwrap().starts_with("stage."))
    );
    app.stop().await;
}

async fn a_machine_names_an_open_stage_or_is_refused(backend: Backend) {
    let machine = crate::receiver::Receiver::start(&[], 200).await;
    let hook = machine.url("/greenlight");
    let app = spawn(backend, |c| {
        owners_then_security(c);
        c.delivery.allow_private_targets = true;
        deploy(c).webhooks = vec![hook];
    })
    .await;
    let id = create(&app, "Ship it").await;
    let path = format!("/v1/requests/{id}/decisions");
    let vote_for = |stage: &'static str| {
        app.call(
            reqwest::Method::POST,
            &path,
            Some(json!({"verdict": "approve", "stage": stage})),
        )
    };
    let (status, body) = vote_for("security").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "stage_not_open");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("open: owners"), "{body}");
    let (status, body) = vote_for("owners").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        statuses(&body),
        pairs(&[("owners", "approved"), ("security", "open")])
    );
    // Callbacks hear of the stage met, naming it, beside the vote's own event.
    let got = machine
        .wait_for(WAIT, |r| {
            r.iter().any(|r| r.json()["type"] == "stage.approved")
        })
        .await;
    let types: Vec<String> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(types.contains(&"vote.recorded".to_owned()), "{types:?}");
    let stage = got
        .iter()
        .map(|r| r.json())
        .find(|b| b["type"] == "stage.approved")
        .unwrap();
    assert_eq!(stage["stage"], "owners");
    assert_eq!(stage["data"]["id"], id.as_str());
    assert_eq!(stage["data"]["status"], "pending");
    // One vote per key per request, whatever stage it names.
    let (status, body) = vote_for("security").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "already_voted");
    // Without a stage, a key's vote counts for the first open one.
    let other = create_key(
        &app.db_url,
        "release-bot",
        &[greenlight::store::Scope::Decide],
    )
    .await;
    let (status, body) = call(
        &reqwest::Client::new(),
        &app.base,
        &other,
        reqwest::Method::POST,
        &path,
        Some(json!({"verdict": "approve"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stages"][1]["approvals"][0]["by"], "key:release-bot");
    assert_eq!(body["status"], "pending");
    app.stop().await;
}

/// The requester (a user id, or an email Slack knows) of a workflow with stages is told how
/// their request ended, who decided and why, in the app's direct message with them; a
/// workflow without stages does so only with `notify_requester = true`.
async fn the_requester_is_told_the_outcome_in_a_direct_message(backend: Backend) {
    let app = spawn(backend, |c| {
        deploy(c).stages = vec![stage("reviewers", &["U0BOB", "U0ALICE"], 1)];
        let quiet = Workflow::new("quiet".parse().unwrap(), "#deploy".parse().unwrap());
        let mut told = Workflow::new("told".parse().unwrap(), "#deploy".parse().unwrap());
        told.notify_requester = Some(true);
        c.workflows.extend([quiet, told]);
    })
    .await;
    let frank = app.sandbox.dm_channel("U0FRANK");
    let (status, req) = app
        .create(json!({"workflow": "deploy", "title": "Deploy api", "requester": "U0FRANK"}))
        .await;
    assert_eq!(status, 201, "{req}");
    let id = req["id"].as_str().unwrap().to_owned();
    let msg = app.posted(&id).await;
    approve(&app, &msg, "U0BOB").await;
    let told = app
        .sandbox
        .wait_until(WAIT, |sb| sb.messages(&frank).into_iter().next())
        .await
        .expect("Frank is told in a direct message");
    assert!(
        told.text.contains("*Deploy api*") && told.text.contains("*Approved* by <@U0BOB>"),
        "{}",
        told.text
    );
    assert!(!app.sandbox.calls_to("conversations.open").is_empty());

    // Asked by email, denied with a reason: the email is looked up, the reason quoted.
    let (status, req) = app
        .create(json!({"workflow": "deploy", "title": "Drop <tables>", "requester": "dave@example.com"}))
        .await;
    assert_eq!(status, 201, "{req}");
    let id = req["id"].as_str().unwrap();
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/requests/{id}/decisions"),
            Some(json!({"verdict": "deny", "reason": "not *today*"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let dave = app.sandbox.dm_channel("U0DAVE");
    let told = app
        .sandbox
        .wait_until(WAIT, |sb| sb.messages(&dave).into_iter().next())
        .await
        .expect("Dave is told in a direct message");
    assert!(
        told.text.contains("Drop &lt;tables&gt;") && told.text.contains("*Denied* by key:"),
        "{}",
        told.text
    );
    assert!(
        told.text.contains("\n>") && told.text.contains("today"),
        "{}",
        told.text
    );

    // A workflow without stages tells only when it says so.
    let (status, req) = app
        .create(json!({"workflow": "told", "title": "Reboot", "requester": "U0CAROL"}))
        .await;
    assert_eq!(status, 201, "{req}");
    let msg = app.posted(req["id"].as_str().unwrap()).await;
    approve(&app, &msg, "U0BOB").await;
    let carol = app.sandbox.dm_channel("U0CAROL");
    app.sandbox
        .wait_until(WAIT, |sb| sb.messages(&carol).into_iter().next())
        .await
        .expect("Carol is told in a direct message");
    // One that does not say so keeps today's behaviour: nothing in Erin's direct message.
    let (status, req) = app
        .create(json!({"workflow": "quiet", "title": "Restart", "requester": "U0ERIN"}))
        .await;
    assert_eq!(status, 201, "{req}");
    let id = req["id"].as_str().unwrap().to_owned();
    let msg = app.posted(&id).await;
    approve(&app, &msg, "U0BOB").await;
    decided(&app, &msg, &id).await;
    wait_delivery(&app, &id, "slack_update", |d| {
        d.iter().all(|j| j["state"] == "done")
    })
    .await;
    assert!(
        app.sandbox
            .messages(&app.sandbox.dm_channel("U0ERIN"))
            .is_empty()
    );
    assert!(
        delivery_of(&app, &id, "slack_direct_message")
            .await
            .is_empty()
    );
    app.stop().await;
}

/// Waits for a message with buttons in `user`'s direct message with the app.
async fn dm_copy(sandbox: &SandboxHandle, user: &str) -> Message {
    let dm = sandbox.dm_channel(user);
    sandbox
        .wait_until(WAIT, |sb| sb.messages(&dm).into_iter().find(has_buttons))
        .await
        .unwrap_or_else(|| panic!("{user} got a copy with buttons"))
}

/// `notify_approvers = "dm"`: each approver of the stage that opens (groups expanded) gets the
/// message with its own buttons; a click there counts as one on the channel's message, and
/// every copy ends showing the outcome.
async fn dm_copies_decide_like_the_message_and_all_show_the_outcome(backend: Backend) {
    let app = spawn(backend, |c| {
        let w = deploy(c);
        w.notify_approvers = greenlight::config::NotifyApprovers::Dm;
        w.stages = vec![
            stage("owners", &["S0SRE"], 1),
            stage("security", &["U0ERIN"], 1),
        ];
    })
    .await;
    let id = create(&app, "Deploy api").await;
    let msg = app.posted(&id).await;
    let carol = dm_copy(&app.sandbox, "U0CAROL").await;
    let dave = dm_copy(&app.sandbox, "U0DAVE").await;
    assert!(
        text_of(&carol).contains("Deploy api"),
        "{}",
        text_of(&carol)
    );
    // Security is not open yet: Erin has no copy.
    assert!(
        app.sandbox
            .messages(&app.sandbox.dm_channel("U0ERIN"))
            .is_empty()
    );

    // Carol approves in her direct message: it counts, and security's turn comes.
    let clicked = app
        .sandbox
        .click(greenlight_sandbox::Click::new(
            &carol.channel,
            &carol.ts,
            "greenlight.approve",
            "U0CAROL",
        ))
        .await
        .expect("click delivered");
    assert!(clicked.acked());
    let erin = dm_copy(&app.sandbox, "U0ERIN").await;
    let got = app.get(&id).await;
    assert_eq!(got["stages"][0]["approvals"][0]["by"], "U0CAROL");
    // Dave's copy follows the message too.
    app.sandbox
        .wait_for_message(
            &dave.channel,
            &dave.ts,
            |m| text_of(m).contains("*owners* 1/1"),
            WAIT,
        )
        .await
        .expect("Dave's copy shows Carol's approval");

    let clicked = app
        .sandbox
        .click(greenlight_sandbox::Click::new(
            &erin.channel,
            &erin.ts,
            "greenlight.approve",
            "U0ERIN",
        ))
        .await
        .expect("click delivered");
    assert!(clicked.acked());
    let done = decided(&app, &msg, &id).await;
    assert!(
        text_of(&done).contains("*Approved* by <@U0ERIN>"),
        "{}",
        text_of(&done)
    );
    for copy in [&carol, &dave, &erin] {
        let shown = app
            .sandbox
            .wait_for_message(&copy.channel, &copy.ts, |m| !has_buttons(m), WAIT)
            .await
            .unwrap_or_else(|| panic!("the copy in {} shows the outcome", copy.channel));
        assert!(text_of(&shown).contains("*Approved* by <@U0ERIN>"));
    }
    assert_eq!(app.get(&id).await["status"], "approved");
    app.stop().await;
}
