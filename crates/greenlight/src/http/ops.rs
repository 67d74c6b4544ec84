//! Health, readiness, metrics and the audit log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiQuery};
use crate::store::Scope;

pub async fn healthz() -> &'static str {
    "ok"
}

/// How long the database gets to answer a readiness probe: load balancers probe with short
/// timeouts of their own, and a hung database must read as not ready, not as no answer.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Ready when the database answers.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let probe = tokio::time::timeout(READY_TIMEOUT, state.service.store().next_job_due()).await;
    match probe {
        Ok(Ok(_)) => (StatusCode::OK, "ready").into_response(),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

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
    Ok(Json(serde_json::json!({"events": events, "next_after": next_after})).into_response())
}
