//! Health, readiness, metrics and the audit log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiQuery, ErrorBody};
use crate::store::{Lane, Scope};

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Up", body = String, content_type = "text/plain", example = "ok")),
)]
pub async fn healthz() -> &'static str {
    "ok"
}

/// A page of the audit log, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<crate::store::AuditEvent>,
    /// Pass as `after` for the next page; null when the page is empty.
    pub next_after: Option<i64>,
}

/// How long the database gets to answer a readiness probe: load balancers probe with short
/// timeouts of their own, and a hung database must read as not ready, not as no answer.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Ready when the database answers and takes writes.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: the database answers and takes writes", body = String, content_type = "text/plain", example = "ready"),
        (status = 503, description = "The database does not answer, or writes to it fail (a full disk) and the probe's write did not land either", body = String, content_type = "text/plain", example = "database unavailable"),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let store = state.service.store();
    // While writes fail (the writer saw a full disk), only a write that lands makes this
    // process ready again: a read would answer from what is already there.
    let probe = if store.writes_failing() {
        let now = state.service.clock().now().as_millisecond();
        tokio::time::timeout(READY_TIMEOUT, store.probe_write(now)).await
    } else {
        tokio::time::timeout(READY_TIMEOUT, async {
            store.next_job_due(&Lane::ALL, 0).await.map(drop)
        })
        .await
    };
    match probe {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(e)) if e.is_unavailable() && store.writes_failing() => {
            crate::store::log_unavailable(&e);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable: writes to the database fail (disk full or failing)",
            )
                .into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
        Err(_) => {
            tracing::warn!("not ready: the database did not answer in time");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

/// `GET /.well-known/jwks.json`: the public keys decision receipts are signed with (no key
/// needed): the current one, and older ones for as long as receipts they signed may live.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "operations",
    responses(
        (status = 200, description = "A JWK Set of Ed25519 public keys (`kty` OKP, `crv` Ed25519, `alg` EdDSA)", body = Object, content_type = "application/json"),
    ),
)]
pub async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let keys = state.service.jwks().await?;
    Ok((
        [(axum::http::header::CACHE_CONTROL, "public, max-age=60")],
        axum::Json(keys),
    )
        .into_response())
}

/// `GET /metrics`: Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4")),
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries after this id (the previous page's `next_after`).
    after: Option<i64>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// `GET /v1/audit`: the audit log, oldest first, with each entry's hash chain (the `admin`
/// scope).
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    operation_id = "list_audit",
    security(("api_key" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of audit entries", body = AuditPage),
        (status = 400, description = "An invalid limit", body = ErrorBody),
        (status = 401, description = "No API key or a wrong one", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
    ),
)]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be 1-1000",
        ));
    }
    let events = state
        .service
        .store()
        .list_audit(q.after.unwrap_or(0), limit)
        .await?;
    let next_after = events.last().map(|e| e.id);
    Ok(Json(AuditPage { events, next_after }).into_response())
}
