//! `/v1/standing`: standing approvals ("Approve for…"), listed and revoked.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiPath, ErrorBody};
use crate::domain::{StandingApproval, StandingId, key_actor};
use crate::store::Scope;

/// `{"standing": [...]}`: the live standing approvals, soonest to expire first.
#[derive(Debug, Serialize, ToSchema)]
pub struct StandingList {
    pub standing: Vec<StandingApproval>,
}

/// `GET /v1/standing`: every live standing approval.
#[utoipa::path(
    get,
    path = "/v1/standing",
    tag = "standing",
    operation_id = "list_standing",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The live standing approvals (at most 1,000), soonest to expire first", body = StandingList),
        (status = 401, description = "No API key or a wrong one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
    ),
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let standing = state.service.live_standing().await?;
    Ok(Json(StandingList { standing }).into_response())
}

/// `POST /v1/standing/{id}/revoke`: ends a standing approval at once (audited).
#[utoipa::path(
    post,
    path = "/v1/standing/{id}/revoke",
    tag = "standing",
    operation_id = "revoke_standing",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The standing approval's id (`std_...`)")),
    responses(
        (status = 200, description = "Revoked: the standing approval as it is now", body = StandingApproval),
        (status = 401, description = "No API key or a wrong one", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 404, description = "No live standing approval with this id (unknown, expired or revoked already)", body = ErrorBody),
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let key = caller.require(Scope::Admin)?;
    let id: StandingId = id.parse().map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("no standing approval {id:?}"),
        )
    })?;
    let revoked = state
        .service
        .revoke_standing(&id, &key_actor(&key.name))
        .await?;
    Ok(Json(revoked).into_response())
}
