//! The OpenAPI document: served at `/openapi.json`, generated from the code, and committed as
//! `docs/openapi.json` (this test fails when the two differ; `GREENLIGHT_UPDATE_OPENAPI=1`
//! rewrites the committed copy). tests/e2e/test_openapi.py validates it and runs Schemathesis.

use crate::helpers::*;

fn committed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn the_committed_document_is_what_the_code_generates() {
    let generated = greenlight::http::openapi::document_json();
    let path = committed_path();
    if std::env::var_os("GREENLIGHT_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json differs from what the code generates; rewrite it with \
         GREENLIGHT_UPDATE_OPENAPI=1 cargo test --test it openapi:: and commit it"
    );
}

#[tokio::test]
async fn the_server_serves_the_document_without_a_key() {
    let app = spawn_app().await;
    let res = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let served = res.text().await.unwrap();
    assert_eq!(served, greenlight::http::openapi::document_json());
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn responses_have_the_documented_shape() {
    // A create, a get, a list and an error, checked against the document's own schemas for
    // the fields every client reads (Schemathesis checks every field in tests/e2e).
    let app = spawn_app().await;
    let doc = greenlight::http::openapi::document();
    let schemas = &doc.components.as_ref().unwrap().schemas;
    let view = serde_json::to_value(&schemas["RequestView"]).unwrap();
    let created = app.create_ok("deploy").await;
    for name in ["delivery", "actions"] {
        assert!(view["allOf"].to_string().contains(name), "{view}");
        assert!(created[name].is_array(), "{created}");
    }
    let (status, err) = app
        .call(reqwest::Method::GET, "/v1/requests/nope", None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "not_found");
    let (status, page) = app
        .call(reqwest::Method::GET, "/v1/requests?limit=1", None)
        .await;
    assert_eq!(status, 200);
    assert!(
        page["requests"].is_array() && page.get("next_cursor").is_some(),
        "{page}"
    );
}
