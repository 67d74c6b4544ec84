//! The HTTP adapter. Every route is listed in `router()`.
//! Imports the service and the layers below it; never `mcp` (adapters meet in the service).

pub mod auth;
pub mod error;
mod github;
pub mod openapi;
mod ops;
mod requests;
pub mod serve;
mod signals;
mod slack;
mod standing;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Secret;
use crate::service::Service;

pub use requests::MAX_WAIT_SECS;

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    /// Shared: the state is cloned for every request.
    pub signing_secret: Option<Arc<Secret>>,
    /// `[github] webhook_secret`: `POST /github/webhook` answers only when it is set.
    pub github_webhook_secret: Option<Arc<Secret>>,
    pub metrics: PrometheusHandle,
    /// Longest answer to anything but a wait for a decision (`[limits] request_timeout`);
    /// every body, an MCP call's too, is read within it.
    pub request_timeout: std::time::Duration,
    /// Longest MCP call: a permission prompt waits up to `[mcp] permission_timeout`.
    pub mcp_timeout: std::time::Duration,
}

/// Every route, in one place. `mcp` is the MCP endpoint's service (streamable HTTP), mounted
/// at `/mcp` behind the same API keys as everything else.
pub fn router<M>(state: AppState, mcp: M) -> Router
where
    M: tower::Service<Request, Error = std::convert::Infallible> + Clone + Send + Sync + 'static,
    M::Response: IntoResponse + 'static,
    M::Future: Send + 'static,
{
    let mcp = Router::new()
        .route_service(MCP_ROUTE, mcp)
        .layer(middleware::from_fn_with_state(state.clone(), mcp_body))
        .layer(middleware::from_fn_with_state(state.clone(), mcp_auth));
    let (api, _) = api_routes().split_for_parts();
    api.route("/slack/interactions", post(slack::receive))
        .route("/slack/events", post(slack::receive))
        .route("/slack/commands", post(slack::command))
        .route("/github/webhook", post(github::webhook))
        .merge(mcp)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), time_limit))
        .layer(middleware::from_fn(track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http().on_failure(log_failure))
        .with_state(state)
}

/// A server error, logged once: a 503 says the database or Slack is unavailable, which the
/// code that answered it logs already (a full disk at most once every ten seconds), so
/// tower-http's own line per response would turn a full disk into a flood.
fn log_failure(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: std::time::Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass as Class;
    if matches!(class, Class::StatusCode(code) if code == axum::http::StatusCode::SERVICE_UNAVAILABLE)
    {
        return;
    }
    tracing::error!(classification = %class, latency_ms = latency.as_millis(), "response failed");
}

/// The largest request body any route reads; past it, 413 `payload_too_large`.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// `GET` and `DELETE /v1/signals/{name}`, as axum matches them.
const SIGNAL_ROUTE: &str = "/v1/signals/{*name}";

/// The long-poll, `GET /v1/requests/{id}?wait=N`, as axum matches it.
const LONG_POLL_ROUTE: &str = "/v1/requests/{id}";

const MCP_ROUTE: &str = "/mcp";

/// The documented API: each handler registered with the path and method its
/// `#[utoipa::path]` declares, so the routes and `openapi::document()` cannot disagree.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(requests::create, requests::list))
        .routes(routes!(requests::get))
        .routes(routes!(requests::receipt))
        .routes(routes!(requests::cancel))
        .routes(routes!(requests::decide))
        .routes(routes!(signals::set, signals::list))
        // Signal names hold `/` (`/v1/signals/staging/api`): axum needs a catch-all where
        // OpenAPI has a plain parameter, so these handlers are documented through `ApiDoc`'s
        // `paths` and routed here; `openapi::tests` checks that the two agree.
        .route(SIGNAL_ROUTE, get(signals::get).delete(signals::delete))
        .routes(routes!(standing::list))
        .routes(routes!(standing::revoke))
        .routes(routes!(ops::audit))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::jwks))
        .routes(routes!(ops::metrics))
        .routes(routes!(openapi::serve))
}

async fn not_found() -> Response {
    error::ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        "no such route",
    )
    .into_response()
}

async fn method_not_allowed() -> Response {
    error::ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
    .into_response()
}

/// Refuses an MCP call without a valid API key (401, before any MCP message is read) and
/// hands the key to the tools through the request's extensions.
async fn mcp_auth(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    use axum::extract::FromRequestParts;
    let (mut parts, body) = req.into_parts();
    match auth::Caller::from_request_parts(&mut parts, &state).await {
        Ok(auth::Caller { key, token }) => {
            parts.extensions.insert(key);
            if let Some(token) = token {
                parts.extensions.insert(token);
            }
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) => e.into_response(),
    }
}

/// Reads an MCP call's body before rmcp does, within `request_timeout` (only the wait for a
/// decision may take longer than that) and the API's size limit, and answers input that is not
/// one JSON-RPC message with HTTP 400 and a JSON-RPC parse error (-32700), without an id.
async fn mcp_body(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    use axum::extract::FromRequest;
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let read = error::ApiBytes::from_request(Request::from_parts(parts.clone(), body), &state);
    let body = match tokio::time::timeout(state.request_timeout, read).await {
        Ok(Ok(error::ApiBytes(body))) => body,
        Ok(Err(e)) => return e.into_response(),
        Err(_) => return timed_out(state.request_timeout),
    };
    if let Err(e) = serde_json::from_slice::<rmcp::model::ClientJsonRpcMessage>(&body) {
        let error = rmcp::model::JsonRpcError::new(
            None,
            rmcp::model::ErrorData::parse_error(format!("not one JSON-RPC message: {e}"), None),
        );
        return (axum::http::StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
    }
    next.run(Request::from_parts(parts, body.into())).await
}

/// How long past its `wait` a long-poll may take (reading and answering around the wait).
const LONG_POLL_MARGIN: std::time::Duration = std::time::Duration::from_secs(15);

/// Bounds every request, reading its body included, by `request_timeout`. Only a wait for a
/// decision may take longer: the long-poll gets the wait its handler reads from the query plus
/// a margin, and an MCP call `[mcp] permission_timeout` plus a minute (its body is still read
/// within `request_timeout`, by `mcp_body`). A slow-loris body or a stuck handler gets a 503
/// instead of holding its connection.
async fn time_limit(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let limit = match route {
        Some(MCP_ROUTE) => state.mcp_timeout,
        Some(LONG_POLL_ROUTE) if matches!(*req.method(), Method::GET | Method::HEAD) => {
            requests::long_poll_wait(req.uri())
                .map_or(state.request_timeout, |wait| wait + LONG_POLL_MARGIN)
        }
        _ => state.request_timeout,
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => timed_out(limit),
    }
}

/// The answer to a request that ran past its time limit.
fn timed_out(limit: std::time::Duration) -> Response {
    metrics::counter!("greenlight_http_timeouts_total").increment(1);
    error::ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "timeout",
        format!("the request took longer than {limit:?}"),
    )
    .into_response()
}

/// Counts and times requests by route pattern (not raw path, which would explode the labels).
async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("greenlight_http_request_seconds", "route" => route, "method" => method, "status" => status)
        .record(started.elapsed().as_secs_f64());
    response
}
