//! Bad input gets a clear 4xx with a stable code, never a 5xx, and changes nothing.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;
use greenlight::store::Scope;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_stable_error_codes() {
    let app = spawn_app().await;
    let cases = [
        (json!({}), 400, "invalid_request"),
        (json!({"title": "   "}), 400, "invalid_request"),
        (
            json!({"title": "x", "workflow": "nope"}),
            400,
            "unknown_workflow",
        ),
        (
            json!({"title": "x", "workflow": "Not A Name"}),
            400,
            "unknown_workflow",
        ),
        (
            json!({"title": "x", "colour": "red"}),
            400,
            "invalid_request",
        ),
        (
            json!({"title": "x", "expires_in": "soon"}),
            400,
            "invalid_request",
        ),
        (
            json!({"title": "x", "expires_in": 0}),
            400,
            "invalid_request",
        ),
        (
            json!({"title": "x", "params": [1, 2]}),
            400,
            "invalid_request",
        ),
        (
            json!({"title": "x", "callback_url": "ftp://example.com"}),
            400,
            "invalid_request",
        ),
        (json!({"title": "x".repeat(201)}), 400, "invalid_request"),
        (json!("just a string"), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let (got, err) = app.create(body.clone()).await;
        assert_eq!(got, status, "{body}: {err}");
        assert_eq!(err["error"]["code"], code, "{body}: {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let raw = app
        .http
        .post(format!("{}/v1/requests", app.base))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let raw = app
        .http
        .post(format!("{}/v1/requests", app.base))
        .bearer_auth(&app.key)
        .body("title=x")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 415);

    for (path, status, code) in [
        (
            "/v1/requests/req_01JD3K6Z7Q8R9S0T1V2W3X4Y5Z",
            404,
            "not_found",
        ),
        ("/v1/requests/../../etc", 404, "not_found"),
        ("/v1/requests/nonsense", 404, "not_found"),
        ("/v1/requests/nonsense?wait=abc", 400, "invalid_query"),
        ("/v1/requests?status=maybe", 400, "invalid_query"),
        ("/v1/requests?limit=0", 400, "invalid_query"),
        ("/v1/requests?cursor=xyz", 400, "invalid_query"),
        ("/v1/audit?limit=-1", 400, "invalid_query"),
        ("/v2/everything", 404, "not_found"),
    ] {
        let (got, err) = app.call(Method::GET, path, None).await;
        assert_eq!(got, status, "{path}: {err}");
        assert_eq!(err["error"]["code"], code, "{path}");
    }
    let (got, err) = app
        .call(
            Method::POST,
            "/v1/requests/req_01JD3K6Z7Q8R9S0T1V2W3X4Y5Z/decisions",
            Some(json!({"verdict": "maybe"})),
        )
        .await;
    assert_eq!(
        (got, err["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    // A cancel's body reads like every other: a field it does not know is `invalid_request`,
    // JSON cut short is `invalid_json`.
    for (body, code) in [
        (
            "{\"reason\": \"x\", \"colour\": \"red\"}",
            "invalid_request",
        ),
        ("{\"reason\": 5}", "invalid_request"),
        ("[1]", "invalid_request"),
        ("{\"reason\": ", "invalid_json"),
    ] {
        let res = app
            .http
            .post(format!(
                "{}/v1/requests/req_01JD3K6Z7Q8R9S0T1V2W3X4Y5Z/cancel",
                app.base
            ))
            .bearer_auth(&app.key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{body}");
        let err: serde_json::Value = res.json().await.unwrap();
        assert_eq!(err["error"]["code"], code, "{body}: {err}");
    }
    let (status, list) = app.call(Method::GET, "/v1/requests", None).await;
    assert_eq!(status, 200);
    assert!(
        list["requests"].as_array().unwrap().is_empty(),
        "nothing was created"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_checked_and_scoped() {
    let app = spawn_app().await;
    let body = json!({"title": "x"});
    let (status, err) = call(
        &app.http,
        &app.base,
        "gl_wrong",
        Method::POST,
        "/v1/requests",
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let res = app
        .http
        .get(format!("{}/v1/requests", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = app
        .http
        .get(format!("{}/v1/requests", app.base))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let reader = create_key(&app.db_url, "dashboard", &[Scope::Read]).await;
    let (status, err) = call(
        &app.http,
        &app.base,
        &reader,
        Method::POST,
        "/v1/requests",
        Some(body),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, _) = call(
        &app.http,
        &app.base,
        &reader,
        Method::GET,
        "/v1/requests",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &app.http,
        &app.base,
        &reader,
        Method::GET,
        "/v1/audit",
        None,
    )
    .await;
    assert_eq!(status, 403);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    let id = app.create_ok("Metrics").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.posted(&id).await;
    for path in ["/healthz", "/readyz"] {
        let res = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("greenlight_requests_created_total"),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/v1/requests\""), "{metrics}");
    app.stop().await;
}
