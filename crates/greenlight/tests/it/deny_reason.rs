//! `require_deny_reason`: Deny opens a modal asking why; an empty answer keeps it open; the
//! reason is recorded, shown on the message and in the API.

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_asks_why_refuses_an_empty_reason_and_records_a_real_one() {
    let app = spawn_app_with(|c| c.workflows[0].require_deny_reason = true).await;
    let (status, req) = app
        .create(json!({"title": "Deploy api v2", "requester": "U0FRANK"}))
        .await;
    assert_eq!(status, 201, "{req}");
    let id = req["id"].as_str().unwrap().to_owned();
    let msg = app.posted(&id).await;

    let ack = app.click(&msg, "greenlight.deny", "U0BOB").await;
    assert!(ack.acked(), "{ack:?}");
    let view = app
        .sandbox
        .wait_until(WAIT, |sb| {
            sb.views().into_iter().find(|v| v.private_metadata == id)
        })
        .await
        .expect("the modal opened for bob");
    assert_eq!(view.user, "U0BOB");
    assert_eq!(view.callback_id, "greenlight.deny_reason");
    // The click alone decided nothing.
    assert_eq!(app.get(&id).await["status"], "pending");

    let empty = app
        .sandbox
        .submit_view(&view.id, "U0BOB", [("greenlight.reason", "   ")])
        .await
        .unwrap();
    assert!(empty.acked());
    let body = empty.json().expect("an errors ack");
    assert_eq!(body["response_action"], "errors");
    assert!(
        body["errors"]["greenlight.reason"]
            .as_str()
            .unwrap()
            .contains("why")
    );
    let still_open = app
        .sandbox
        .views()
        .into_iter()
        .find(|v| v.id == view.id)
        .unwrap();
    assert!(still_open.open);
    assert_eq!(app.get(&id).await["status"], "pending");

    let real = app
        .sandbox
        .submit_view(
            &view.id,
            "U0BOB",
            [("greenlight.reason", "Change freeze until Monday <!channel>")],
        )
        .await
        .unwrap();
    assert!(real.acked());
    assert!(
        real.body.is_empty(),
        "an empty ack closes the modal: {}",
        real.body
    );

    let done = app.decided_message(&msg).await;
    let text = text_of(&done);
    assert!(text.contains("*Denied* by <@U0BOB>"), "{text}");
    assert!(
        text.contains("Change freeze until Monday &lt;!channel&gt;"),
        "{text}"
    );
    let got = app.get(&id).await;
    assert_eq!(got["status"], "denied");
    assert_eq!(got["reason"], "Change freeze until Monday <!channel>");
    assert_eq!(got["decisions"][0]["reason"], got["reason"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_modal_for_someone_whose_deny_would_not_count() {
    let app = spawn_app_with(|c| {
        c.workflows[0].require_deny_reason = true;
        c.workflows[0].approvers = vec!["U0ALICE".parse().unwrap()];
    })
    .await;
    let (_, req) = app.create(json!({"title": "Deploy"})).await;
    let id = req["id"].as_str().unwrap().to_owned();
    let msg = app.posted(&id).await;
    assert!(app.click(&msg, "greenlight.deny", "U0BOB").await.acked());
    app.sandbox
        .wait_until(WAIT, |sb| {
            sb.ephemerals(CHANNEL, "U0BOB")
                .into_iter()
                .find(|e| e.text.contains("not an approver"))
        })
        .await
        .expect("bob told");
    assert!(app.sandbox.views().is_empty());
    assert!(app.sandbox.calls_to("views.open").is_empty());
    app.stop().await;
}
