//! Answers beyond yes and no (issue 27): fields on a request, asked in a Slack modal that
//! Approve (or Answer) opens, checked there (a bad value keeps the modal open with the error
//! under its field), kept typed with the vote and returned as the request's `response`.

use serde_json::{Value, json};

use crate::helpers::*;

/// Waits for the modal `user` opened on request `id`.
async fn modal(app: &TestApp, id: &str, user: &str) -> greenlight_sandbox::View {
    app.sandbox
        .wait_until(WAIT, |sb| {
            sb.views()
                .into_iter()
                .find(|v| v.private_metadata == id && v.user == user && v.open)
        })
        .await
        .expect("the answers modal opened")
}

fn element<'a>(view: &'a greenlight_sandbox::View, field: &str) -> &'a Value {
    view.view["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["block_id"] == format!("greenlight.field.{field}"))
        .map(|b| &b["element"])
        .unwrap_or_else(|| panic!("no input for {field}: {}", view.view))
}

fn deploy_fields() -> Value {
    json!([
        {"name": "env", "label": "Environment", "type": "select", "options": ["staging", "production"]},
        {"name": "replicas", "label": "Replicas", "type": "number", "min": 1, "max": 10, "default": 2},
        {"name": "ticket", "label": "Ticket", "type": "text", "required": false, "max_length": 20},
        {"name": "notes", "label": "Notes", "type": "textarea", "default": "ship it"},
        {"name": "dry_run", "label": "Dry run first", "type": "boolean"}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_field_type_is_answered_in_the_modal_checked_and_kept_typed() {
    let app = spawn_app().await;
    let (status, req) = app
        .create(json!({"title": "Deploy api", "requester": "U0FRANK", "fields": deploy_fields()}))
        .await;
    assert_eq!(status, 201, "{req}");
    let id = req["id"].as_str().unwrap().to_owned();
    assert_eq!(req["fields"][1]["type"], "number");
    assert_eq!(req["fields"][1]["required"], true);
    assert_eq!(req["fields"][4]["required"], false);
    let msg = app.posted(&id).await;

    assert!(app.click(&msg, "greenlight.approve", "U0BOB").await.acked());
    let view = modal(&app, &id, "U0BOB").await;
    assert_eq!(view.callback_id, "greenlight.answers");
    assert_eq!(
        app.get(&id).await["status"],
        "pending",
        "a click alone approves nothing"
    );
    // Each type is its Block Kit element, starting at the field's default.
    assert_eq!(element(&view, "env")["type"], "static_select");
    assert_eq!(element(&view, "env")["options"][1]["value"], "production");
    assert_eq!(element(&view, "replicas")["type"], "number_input");
    assert_eq!(element(&view, "replicas")["initial_value"], "2");
    assert_eq!(element(&view, "replicas")["min_value"], "1");
    assert_eq!(element(&view, "ticket")["type"], "plain_text_input");
    assert_eq!(element(&view, "ticket")["max_length"], 20);
    assert_eq!(element(&view, "notes")["multiline"], true);
    assert_eq!(element(&view, "notes")["initial_value"], "ship it");
    assert_eq!(element(&view, "dry_run")["type"], "checkboxes");

    // A bad number and a missing choice keep the modal open, each error under its field.
    let bad = app
        .sandbox
        .submit_view_values(
            &view.id,
            "U0BOB",
            [
                ("greenlight.field.replicas", json!("eleven")),
                ("greenlight.field.env", json!("")),
            ],
        )
        .await
        .unwrap();
    let body = bad.json().expect("an errors ack");
    assert_eq!(body["response_action"], "errors", "{body}");
    assert!(
        body["errors"]["greenlight.field.replicas"]
            .as_str()
            .unwrap()
            .contains("number"),
        "{body}"
    );
    assert!(body["errors"]["greenlight.field.env"].is_string(), "{body}");
    assert!(body["errors"].get("greenlight.field.notes").is_none());
    let open = app
        .sandbox
        .views()
        .into_iter()
        .find(|v| v.id == view.id)
        .unwrap();
    assert!(open.open, "the modal stays open");
    assert!(open.errors["greenlight.field.replicas"].is_string());
    let out_of_bounds = app
        .sandbox
        .submit_view_values(
            &view.id,
            "U0BOB",
            [
                ("greenlight.field.replicas", json!("50")),
                ("greenlight.field.env", json!("staging")),
            ],
        )
        .await
        .unwrap();
    let body = out_of_bounds.json().unwrap();
    assert_eq!(
        body["errors"]["greenlight.field.replicas"],
        "Please enter a number from 1 to 10."
    );
    assert_eq!(app.get(&id).await["status"], "pending");

    let good = app
        .sandbox
        .submit_view_values(
            &view.id,
            "U0BOB",
            [
                ("greenlight.field.replicas", json!("3")),
                ("greenlight.field.env", json!("production")),
                ("greenlight.field.dry_run", json!(["true"])),
            ],
        )
        .await
        .unwrap();
    assert!(good.acked() && good.body.is_empty(), "{}", good.body);

    let expected = json!({
        "env": "production", "replicas": 3, "ticket": null, "notes": "ship it", "dry_run": true
    });
    let got = app.get(&id).await;
    assert_eq!(got["status"], "approved");
    assert_eq!(got["decided_by"], "U0BOB");
    assert_eq!(got["decisions"][0]["kind"], "user");
    assert_eq!(got["response"], expected);
    assert_eq!(got["decisions"][0]["response"], expected);

    let done = app.decided_message(&msg).await;
    let text = text_of(&done);
    assert!(text.contains(r"*Environment*\nproduction"), "{text}");
    assert!(text.contains(r"*Replicas*\n3"), "{text}");
    assert!(text.contains(r"*Dry run first*\nyes"), "{text}");

    let audit = app.audit().await;
    let decided = audit
        .iter()
        .find(|e| e["event"] == "request.approved" && e["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no approval entry: {audit:?}"));
    assert_eq!(decided["data"]["response"], expected);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_has_one_answer_button_and_answering_approves_it() {
    let machine = crate::receiver::Receiver::start(&[], 200).await;
    let app = spawn_app_with(|c| c.delivery.allow_private_targets = true).await;
    let (status, req) = app
        .create(json!({
            "title": "Which environment should the agent use?",
            "buttons": "answer",
            "fields": [{"name": "answer", "type": "textarea"}],
            "callback_url": machine.url("/answers")
        }))
        .await;
    assert_eq!(status, 201, "{req}");
    assert_eq!(req["buttons"], "answer");
    let id = req["id"].as_str().unwrap().to_owned();
    let msg = app.posted(&id).await;
    let buttons: Vec<&Value> = msg
        .blocks
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().unwrap())
        .collect();
    assert_eq!(buttons.len(), 1, "{:?}", msg.blocks);
    assert_eq!(buttons[0]["text"]["text"], "Answer");

    assert!(
        app.click(&msg, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    let view = modal(&app, &id, "U0ALICE").await;
    assert_eq!(view.view["submit"]["text"], "Answer");
    let empty = app
        .sandbox
        .submit_view(&view.id, "U0ALICE", [("greenlight.field.answer", "")])
        .await
        .unwrap();
    assert_eq!(
        empty.json().unwrap()["errors"]["greenlight.field.answer"],
        "Please fill this in."
    );
    app.sandbox
        .submit_view(
            &view.id,
            "U0ALICE",
            [("greenlight.field.answer", "staging, please")],
        )
        .await
        .unwrap();
    let got = app.get(&id).await;
    assert_eq!(got["status"], "approved");
    assert_eq!(got["decisions"][0]["kind"], "user");
    assert_eq!(got["response"], json!({"answer": "staging, please"}));
    let text = text_of(&app.decided_message(&msg).await);
    assert!(text.contains("*Answered* by <@U0ALICE>"), "{text}");
    assert!(text.contains("staging, please"), "{text}");
    // The waiting machine's callback carries the answers.
    let got = machine
        .wait_for(WAIT, |r| {
            r.iter().any(|r| r.json()["type"] == "request.approved")
        })
        .await;
    let approved = got
        .iter()
        .map(|r| r.json())
        .find(|e| e["type"] == "request.approved")
        .unwrap();
    assert_eq!(
        approved["data"]["response"],
        json!({"answer": "staging, please"})
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_approvals_each_answers_and_the_completing_vote_is_the_response() {
    let app = spawn_app_with(|c| c.workflows[0].approvals_required = 2).await;
    let (_, req) = app
        .create(json!({"title": "Scale", "fields": [{"name": "n", "type": "number"}]}))
        .await;
    let id = req["id"].as_str().unwrap().to_owned();
    let msg = app.posted(&id).await;
    for (user, n) in [("U0ALICE", "4"), ("U0BOB", "5")] {
        assert!(app.click(&msg, "greenlight.approve", user).await.acked());
        let view = modal(&app, &id, user).await;
        let ack = app
            .sandbox
            .submit_view(&view.id, user, [("greenlight.field.n", n)])
            .await
            .unwrap();
        assert!(ack.body.is_empty(), "{}", ack.body);
    }
    let got = app.get(&id).await;
    assert_eq!(got["status"], "approved");
    assert_eq!(got["response"], json!({"n": 5}));
    assert_eq!(got["decisions"][0]["response"], json!({"n": 4}));
    assert_eq!(got["decisions"][1]["response"], json!({"n": 5}));
    // A modal submitted again after the decision changes nothing.
    let views = app.sandbox.views();
    assert!(views.iter().all(|v| !v.open));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_modals_submitted_at_once_decide_once() {
    let app = spawn_app().await;
    let (_, req) = app
        .create(json!({"title": "Race", "fields": [{"name": "why", "type": "text"}]}))
        .await;
    let id = req["id"].as_str().unwrap().to_owned();
    let msg = app.posted(&id).await;
    let mut views = Vec::new();
    for user in ["U0ALICE", "U0BOB"] {
        assert!(app.click(&msg, "greenlight.approve", user).await.acked());
        views.push((user, modal(&app, &id, user).await.id));
    }
    let (a, b) = tokio::join!(
        app.sandbox
            .submit_view(&views[0].1, views[0].0, [("greenlight.field.why", "a")]),
        app.sandbox
            .submit_view(&views[1].1, views[1].0, [("greenlight.field.why", "b")]),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    // One closed its modal; the other was told, under its field, that it came too late.
    let refused: Vec<&greenlight_sandbox::ClickOutcome> = [&a, &b]
        .into_iter()
        .filter(|o| !o.body.is_empty())
        .collect();
    assert_eq!(refused.len(), 1, "{} / {}", a.body, b.body);
    assert!(
        refused[0].json().unwrap()["errors"]["greenlight.field.why"]
            .as_str()
            .unwrap()
            .contains("already approved")
    );
    let got = app.get(&id).await;
    assert_eq!(got["decisions"].as_array().unwrap().len(), 1);
    assert_eq!(got["response"], got["decisions"][0]["response"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_approves_with_a_response_checked_like_a_persons() {
    let app = spawn_app().await;
    let (_, req) = app
        .create(json!({"title": "Pick", "fields": [
            {"name": "env", "type": "select", "options": ["a", "b"]},
            {"name": "ok", "type": "boolean", "required": true}
        ]}))
        .await;
    let id = req["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/requests/{id}/decisions");
    for (body, why) in [
        (json!({"verdict": "approve"}), "asks for answers"),
        (
            json!({"verdict": "approve", "response": {"env": "c", "ok": true}}),
            "env",
        ),
        (
            json!({"verdict": "approve", "response": {"env": "a", "ok": false}}),
            "ok",
        ),
        (
            json!({"verdict": "approve", "response": {"env": "a", "ok": true, "x": 1}}),
            "no field",
        ),
        (
            json!({"verdict": "approve", "response": {"env": 1, "ok": true}}),
            "string",
        ),
        (
            json!({"verdict": "deny", "response": {"env": "a", "ok": true}}),
            "deny",
        ),
    ] {
        let (status, err) = app.call(reqwest::Method::POST, &path, Some(body)).await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["error"]["code"], "invalid_response");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(why),
            "{err}"
        );
    }
    assert_eq!(app.get(&id).await["status"], "pending");
    let (status, got) = app
        .call(
            reqwest::Method::POST,
            &path,
            Some(json!({"verdict": "approve", "response": {"env": "b", "ok": true}})),
        )
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["response"], json!({"env": "b", "ok": true}));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fields_get_a_400_with_a_stable_code_and_create_nothing() {
    let app = spawn_app().await;
    let many: Vec<Value> = (0..11)
        .map(|i| json!({"name": format!("f{i}"), "type": "text"}))
        .collect();
    for (body, code) in [
        (
            json!({"fields": [{"name": "a", "type": "date"}]}),
            "invalid_field_type",
        ),
        (
            json!({"fields": [{"name": "a", "type": "select"}]}),
            "select_without_options",
        ),
        (
            json!({"fields": [{"name": "a", "type": "text"}, {"name": "a", "type": "number"}]}),
            "duplicate_field",
        ),
        (json!({"fields": many}), "too_many_fields"),
        (
            json!({"fields": [{"name": "a", "type": "text", "label": "x".repeat(2001)}]}),
            "field_too_long",
        ),
        (
            json!({"fields": [{"name": "a", "type": "select", "options": ["o".repeat(76)]}]}),
            "field_too_long",
        ),
        (
            json!({"fields": [{"name": "a", "type": "number", "min": 3, "max": 1}]}),
            "invalid_field",
        ),
        (json!({"buttons": "answer"}), "invalid_buttons"),
        (
            json!({"buttons": "maybe", "fields": [{"name": "a", "type": "text"}]}),
            "invalid_buttons",
        ),
    ] {
        let mut body = body;
        body["title"] = json!("Bad");
        let (status, err) = app.create(body.clone()).await;
        assert_eq!(status, 400, "{body} -> {err}");
        assert_eq!(err["error"]["code"], code, "{body} -> {err}");
    }
    let (_, list) = app.call(reqwest::Method::GET, "/v1/requests", None).await;
    assert_eq!(list["requests"].as_array().unwrap().len(), 0);
    app.stop().await;
}

/// Edit then approve (item 2): the workflow lets approvers edit `replicas`; Approve opens a
/// modal pre-filled with it, a bad edit is refused there, and the edited value is what the
/// request is approved with, what the message and audit say changed, and what the hook gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_edits_a_number_param_and_the_hook_runs_with_the_edit() {
    let jenkins = crate::receiver::Receiver::start(&[], 201).await;
    let url = jenkins.url("/job/deploy?REPLICAS={{params.replicas}}");
    let app = spawn_app_with(move |c| {
        c.delivery.allow_private_targets = true;
        c.workflows[0].editable = vec!["params.replicas".into(), "params.command".into()];
        c.workflows[0].on_approve = vec![greenlight::policy::hooks::ActionHook {
            name: "Deployment".into(),
            method: "POST".into(),
            url,
            headers: Default::default(),
            body: Some(r#"{"replicas": {{params.replicas}}}"#.into()),
        }];
    })
    .await;
    // A request's own editable list stays within the workflow's, naming params it has.
    for (editable, code) in [
        (json!(["params.version"]), "editable_not_allowed"),
        (json!(["params.command"]), "invalid_editable"),
        (json!(["replicas"]), "invalid_editable"),
    ] {
        let (status, err) = app
            .create(json!({"title": "x", "params": {"replicas": 10, "version": "1"}, "editable": editable}))
            .await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["error"]["code"], code, "{err}");
    }

    let (status, req) = app
        .create(json!({"title": "Scale api", "params": {"replicas": 10, "service": "api"}}))
        .await;
    assert_eq!(status, 201, "{req}");
    assert_eq!(
        req["editable"],
        json!(["params.replicas"]),
        "only params it has"
    );
    let id = req["id"].as_str().unwrap().to_owned();
    let msg = app.posted(&id).await;
    assert!(app.click(&msg, "greenlight.approve", "U0BOB").await.acked());
    let view = modal(&app, &id, "U0BOB").await;
    let input = view.view["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["block_id"] == "greenlight.edit.replicas")
        .unwrap_or_else(|| panic!("{}", view.view));
    assert_eq!(input["element"]["type"], "number_input");
    assert_eq!(input["element"]["initial_value"], "10");

    let bad = app
        .sandbox
        .submit_view(&view.id, "U0BOB", [("greenlight.edit.replicas", "three")])
        .await
        .unwrap();
    assert_eq!(
        bad.json().unwrap()["errors"]["greenlight.edit.replicas"],
        "Please enter a number."
    );
    assert_eq!(app.get(&id).await["status"], "pending");
    let good = app
        .sandbox
        .submit_view(&view.id, "U0BOB", [("greenlight.edit.replicas", "3")])
        .await
        .unwrap();
    assert!(good.body.is_empty(), "{}", good.body);

    let got = app.get(&id).await;
    assert_eq!(got["status"], "approved");
    assert_eq!(
        got["params"],
        json!({"replicas": 10, "service": "api"}),
        "kept as asked"
    );
    assert_eq!(
        got["approved_params"],
        json!({"replicas": 3, "service": "api"})
    );
    assert_eq!(got["decisions"][0]["edits"], json!({"replicas": 3}));
    let text = text_of(&app.decided_message(&msg).await);
    assert!(text.contains("*Edited:* replicas: 10 → 3"), "{text}");
    let audit = app.audit().await;
    let decided = audit
        .iter()
        .find(|e| e["event"] == "request.approved" && e["request_id"] == id.as_str())
        .unwrap();
    assert_eq!(decided["data"]["changes"], json!(["replicas: 10 → 3"]));
    let hooked = jenkins.wait_for(WAIT, |r| !r.is_empty()).await;
    assert_eq!(hooked[0].uri.query(), Some("REPLICAS=3"));
    assert_eq!(hooked[0].body, r#"{"replicas": 3}"#);

    // Approved without a change: approved_params equals params.
    let (_, req) = app
        .create(json!({"title": "Scale web", "params": {"replicas": 4}}))
        .await;
    let id = req["id"].as_str().unwrap().to_owned();
    let msg = app.posted(&id).await;
    assert!(app.click(&msg, "greenlight.approve", "U0BOB").await.acked());
    let view = modal(&app, &id, "U0BOB").await;
    let ack = app
        .sandbox
        .submit_view(&view.id, "U0BOB", Vec::<(String, String)>::new())
        .await
        .unwrap();
    assert!(ack.body.is_empty(), "{}", ack.body);
    let got = app.get(&id).await;
    assert_eq!(got["approved_params"], got["params"]);
    assert!(got["decisions"][0].get("edits").is_none());
    app.stop().await;
}
