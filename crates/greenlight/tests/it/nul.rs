//! NUL in text: PostgreSQL's `text` and `jsonb` cannot hold it, so it is refused at the edge
//! with the same 400 on both stores (it was a 500 on PostgreSQL and a silent 201 on SQLite),
//! and nothing is written.

use std::sync::Arc;

use greenlight::domain::SystemClock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

const NUL: &str = "a\u{0}b";

/// Asserts a 400 `invalid_request` whose message names `field`.
fn refused(what: &str, field: &str, (status, body): (u16, Value)) {
    assert_eq!(status, 400, "{what}: {body}");
    assert_eq!(body["error"]["code"], "invalid_request", "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(field) && message.contains("NUL"),
        "{what}: the message names neither {field} nor NUL: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_with_nul_is_refused_with_400_naming_the_field_on_both_stores() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        init();
        let sandbox = start_sandbox(&random_secret()).await;
        let db = TestDb::of(backend).await;
        let app = boot(sandbox, db, None, |_| {}, Arc::new(SystemClock)).await;

        let creates = [
            ("title", json!({"title": NUL})),
            ("details", json!({"title": "t", "details": NUL})),
            ("requester", json!({"title": "t", "requester": NUL})),
            (
                "callback_url",
                json!({"title": "t", "callback_url": format!("https://example.com/{NUL}")}),
            ),
            (
                "idempotency key",
                json!({"title": "t", "idempotency_key": NUL}),
            ),
            ("param", json!({"title": "t", "params": {"v": NUL}})),
            (
                "param",
                json!({"title": "t", "params": {"v": {"deep": [NUL]}}}),
            ),
            ("param name", json!({"title": "t", "params": {NUL: 1}})),
            ("metadata", json!({"title": "t", "metadata": {"k": NUL}})),
            (
                "tool_call.input",
                json!({"title": "t", "tool_call": {"name": "Bash", "input": {"command": NUL}}}),
            ),
        ];
        for (field, body) in creates {
            let what = format!("{backend:?} create {body}");
            refused(&what, field, app.create(body).await);
        }
        let (status, list) = app.call(Method::GET, "/v1/requests", None).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(
            list["requests"].as_array().map(Vec::len),
            Some(0),
            "{backend:?}: a refused create wrote something: {list}"
        );

        let id = app.create_ok("Deploy api v3").await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let cancel = app
            .call(
                Method::POST,
                &format!("/v1/requests/{id}/cancel"),
                Some(json!({"reason": NUL})),
            )
            .await;
        refused(&format!("{backend:?} cancel"), "reason", cancel);
        let decide = app
            .call(
                Method::POST,
                &format!("/v1/requests/{id}/decisions"),
                Some(json!({"verdict": "deny", "reason": NUL})),
            )
            .await;
        refused(&format!("{backend:?} decision"), "reason", decide);
        assert_eq!(app.get(&id).await["status"], "pending", "{backend:?}");

        let signal = app
            .call(
                Method::POST,
                "/v1/signals",
                Some(json!({"name": "staging/api", "value": {"state": NUL}})),
            )
            .await;
        refused(&format!("{backend:?} signal"), "value", signal);
        let (status, _) = app.call(Method::GET, "/v1/signals/staging/api", None).await;
        assert_eq!(status, 404, "{backend:?}: the refused signal was stored");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_reason_with_nul_keeps_the_modal_open_and_decides_nothing() {
    let app = spawn_app_with(|c| c.workflows[0].require_deny_reason = true).await;
    let id = app.create_ok("Deploy api v4").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = app.posted(&id).await;
    assert!(app.click(&msg, "greenlight.deny", "U0BOB").await.acked());
    let view = app
        .sandbox
        .wait_until(WAIT, |sb| {
            sb.views().into_iter().find(|v| v.private_metadata == id)
        })
        .await
        .expect("the modal opened");
    let ack = app
        .sandbox
        .submit_view(&view.id, "U0BOB", [("greenlight.reason", NUL)])
        .await
        .unwrap();
    assert!(ack.acked(), "{ack:?}");
    let body = ack.json().expect("an errors ack");
    assert_eq!(body["response_action"], "errors", "{body}");
    assert!(
        body["errors"]["greenlight.reason"]
            .as_str()
            .is_some_and(|m| m.contains("NUL")),
        "{body}"
    );
    assert_eq!(app.get(&id).await["status"], "pending");
}
