//! The OpenAPI 3.1 document (`GET /openapi.json`). It is generated from the handlers' own
//! `#[utoipa::path]` attributes and the types they read and write, and `router()` registers
//! those same handlers through `utoipa_axum`, so a route and its documentation come from one
//! place. `docs/openapi.json` is the committed copy; a test fails when it differs.
//!
//! Slack's routes (`/slack/*`) and MCP (`/mcp`) speak Slack's and MCP's own protocols and are
//! documented by them, not here.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "greenlight",
        description = "An approval gateway: machines ask, people decide in Slack, machines \
            are told. Authenticate with an API key (`greenlight keys create`) as a Bearer \
            token. Every error is `{\"error\": {\"code\", \"message\"}}` with a stable code. \
            Slack's routes (`/slack/*`) and MCP (`/mcp`) follow those protocols and are not \
            described here.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "requests", description = "Approval requests: create, wait for, list, decide, cancel"),
        (name = "signals", description = "Facts machines report for rules to read"),
        (name = "standing", description = "Standing approvals: \"Approve for…\" in Slack approves later matching requests for a while"),
        (name = "audit", description = "The tamper-evident audit log"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    ),
    paths(super::signals::get, super::signals::delete),
    components(schemas(ErrorBody)),
    modifiers(&Security),
)]
struct ApiDoc;

/// The document, generated from the routes `router()` serves.
pub fn document() -> Document {
    let mut doc = super::api_routes().split_for_parts().1;
    errors_by_default(&mut doc);
    doc
}

/// The document as the committed `docs/openapi.json` holds it (pretty, with a final newline).
pub fn document_json() -> String {
    let mut text = document()
        .to_pretty_json()
        .expect("the OpenAPI document is plain data and always serialises");
    text.push('\n');
    text
}

pub(super) fn base() -> Document {
    ApiDoc::openapi()
}

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from `greenlight keys create NAME --scopes ...`, or a workload token (an OIDC JWT from GitHub Actions, GitLab or Kubernetes) that a `[[trust]]` policy accepts. A refused token is answered 401 `invalid_token` naming the check that failed.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every operation may answer an error not listed on it (a malformed query, an oversized
/// body, a timeout): a `default` response on each says what it looks like.
fn errors_by_default(doc: &mut Document) {
    let error = ResponseBuilder::new()
        .description("An error: `{\"error\": {\"code\", \"message\"}}`")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "ErrorBody",
                ))))
                .build(),
        )
        .build();
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            if !op.responses.responses.contains_key("default") {
                op.responses
                    .responses
                    .insert("default".into(), RefOr::T(error.clone()));
            }
        }
    }
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")),
)]
pub async fn serve() -> axum::response::Response {
    use axum::response::IntoResponse;
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = DOC.get_or_init(document_json);
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text.as_str(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_api_route() {
        let doc: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for p in [
            "/v1/requests",
            "/v1/requests/{id}",
            "/v1/requests/{id}/cancel",
            "/v1/requests/{id}/decisions",
            "/v1/signals",
            "/v1/signals/{name}",
            "/v1/audit",
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(paths.contains(&p), "{p} is not documented: {paths:?}");
        }
        // Every operation says what its errors look like.
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                assert!(
                    op["responses"].get("default").is_some(),
                    "{method} {path} has no default response"
                );
            }
        }
    }

    #[test]
    fn the_signal_route_is_the_documented_path() {
        use utoipa::Path;
        let route = super::super::SIGNAL_ROUTE.replace("{*", "{");
        assert_eq!(super::super::signals::__path_get::path(), route);
        assert_eq!(super::super::signals::__path_delete::path(), route);
    }

    #[test]
    fn every_reference_resolves() {
        let text = document_json();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("\"#/components/schemas/") {
            rest = &rest[at + 22..];
            let name = &rest[..rest.find('"').unwrap()];
            assert!(schemas.contains_key(name), "no schema {name}");
        }
    }
}
