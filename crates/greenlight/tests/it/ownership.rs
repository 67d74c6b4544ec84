//! What one API key may do to another's requests: read them (without the credentials their
//! callback URL may carry), not cancel them. And what a caller keeps with its request.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;
use crate::receiver::Receiver;
use greenlight::store::Scope;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_creating_key_or_an_admin_cancels_a_request() {
    let app = spawn_app().await;
    let alice = create_key(&app.db_url, "pipeline-a", &[Scope::Request, Scope::Read]).await;
    let mallory = create_key(&app.db_url, "pipeline-b", &[Scope::Request, Scope::Read]).await;
    let as_key = |key: &str, method: Method, path: String, body| {
        let (http, base, key) = (app.http.clone(), app.base.clone(), key.to_owned());
        async move { call(&http, &base, &key, method, &path, body).await }
    };
    let (status, created) = as_key(
        &alice,
        Method::POST,
        "/v1/requests".into(),
        Some(json!({"title": "Deploy"})),
    )
    .await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap().to_owned();
    let cancel = format!("/v1/requests/{id}/cancel");

    let (status, body) = as_key(&mallory, Method::POST, cancel.clone(), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("not_request_owner")),
        "{body}"
    );
    assert_eq!(
        app.get(&id).await["status"],
        "pending",
        "a refused cancel changes nothing"
    );

    let (status, body) = as_key(&alice, Method::POST, cancel.clone(), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["decided_by"], "key:pipeline-a");

    // An admin key cancels anyone's.
    let (_, other) = as_key(
        &alice,
        Method::POST,
        "/v1/requests".into(),
        Some(json!({"title": "Deploy 2"})),
    )
    .await;
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/requests/{}/cancel", other["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_urls_are_shown_whole_only_to_the_key_that_gave_them() {
    let hook = Receiver::start(&[], 200).await;
    let app = spawn_app_with(|c| {
        c.delivery.allow_private_targets = true;
        c.workflows[0].webhooks = vec![hook.url("/audit-sink")];
    })
    .await;
    let owner = create_key(&app.db_url, "pipeline", &[Scope::Request, Scope::Read]).await;
    let reader = create_key(&app.db_url, "dashboard", &[Scope::Read]).await;
    let secret_url = format!("http://deployer:hunter2@{}/done?token=s3cret", hook.addr);
    let (status, created) = call(
        &app.http,
        &app.base,
        &owner,
        Method::POST,
        "/v1/requests",
        Some(json!({"title": "Deploy", "callback_url": secret_url})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["callback_url"],
        secret_url.as_str(),
        "the creator sees its own URL"
    );
    let id = created["id"].as_str().unwrap();
    let (_, seen) = call(
        &app.http,
        &app.base,
        &reader,
        Method::GET,
        &format!("/v1/requests/{id}"),
        None,
    )
    .await;
    let shown = format!("http://{}/done", hook.addr);
    assert_eq!(seen["callback_url"], shown.as_str());
    let (_, listed) = call(
        &app.http,
        &app.base,
        &reader,
        Method::GET,
        "/v1/requests",
        None,
    )
    .await;
    assert_eq!(listed["requests"][0]["callback_url"], shown.as_str());
    // The workflow's webhook gets the request without the secret, too.
    let got = hook
        .wait_for(WAIT, |r| r.iter().any(|c| c.uri.path() == "/audit-sink"))
        .await;
    let sink = got.iter().find(|c| c.uri.path() == "/audit-sink").unwrap();
    assert!(
        !sink.body.contains("hunter2") && !sink.body.contains("s3cret"),
        "{}",
        sink.body
    );
    assert_eq!(sink.json()["data"]["callback_url"], shown.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_kept_returned_and_never_shown_in_slack() {
    let app = spawn_app().await;
    let metadata = json!({"run_id": "run-42", "tool_use_id": "toolu_01", "nested": {"n": 1}});
    let (status, created) = app
        .create(json!({"title": "Send the invoice email", "metadata": metadata}))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["metadata"], metadata);
    // The answer to a create is the request as GET shows it.
    let id = created["id"].as_str().unwrap();
    let got = app.get(id).await;
    assert_eq!(got["metadata"], metadata);
    assert_eq!(
        got["created_at"], created["created_at"],
        "the same instant both times"
    );
    assert!(created["delivery"].is_array() && created["actions"].is_array());
    let msg = app.posted(id).await;
    assert!(
        !text_of(&msg).contains("run-42"),
        "metadata is not rendered"
    );

    for (body, why) in [
        (json!({"title": "x", "metadata": "run-42"}), "a string"),
        (json!({"title": "x", "metadata": [1, 2]}), "a list"),
        (
            json!({"title": "x", "metadata": {"big": "x".repeat(17_000)}}),
            "too big",
        ),
    ] {
        let (status, answer) = app.create(body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{why}: {answer}"
        );
    }
}
