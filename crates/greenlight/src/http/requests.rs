//! `/v1/requests`: what machines call.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::domain::{DecisionKind, RequestId, Status, Verdict, Vote};
use crate::service::intake::CreateBody;
use crate::service::{CreateInput, VoteResult};
use crate::store::{ListFilter, Scope};

/// Longest single long-poll; clients loop for longer waits (the CLI does).
pub const MAX_WAIT_SECS: u64 = 120;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_request", message)
}

fn non_empty(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    crate::service::intake::non_empty(field, value, max).map_err(ApiError::from)
}

fn parse_create(body: CreateBody, headers: &HeaderMap) -> Result<CreateInput, ApiError> {
    let header_key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| invalid("Idempotency-Key must be visible ASCII"))?
                .to_owned(),
        ),
        None => None,
    };
    Ok(body.into_input(header_key)?)
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let key = caller.require(Scope::Request)?;
    let input = parse_create(body, &headers)?;
    if let Some(url) = &input.callback_url
        && !state.service.allow_private_targets()
    {
        let parsed = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        crate::delivery::outbound::check_url(&parsed)
            .await
            .map_err(|e| {
                ApiError::bad_request(
                    "callback_url_not_allowed",
                    format!("callback_url is not allowed: {e}"),
                )
            })?;
    }
    let (request, created) = state.service.create(input, key).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(full_view(&state, &request, key).await?)).into_response())
}

use crate::service::visible_to as shown;

/// The request with its deliveries and action results, as GET shows it.
async fn full_view(
    state: &AppState,
    request: &crate::domain::Request,
    key: &crate::store::ApiKey,
) -> Result<serde_json::Value, ApiError> {
    let delivery = state.service.store().deliveries(&request.id).await?;
    let actions = state.service.store().action_results(&request.id).await?;
    let mut body = serde_json::to_value(shown(request, key)).map_err(|e| ApiError::internal(&e))?;
    body["delivery"] = serde_json::to_value(delivery).map_err(|e| ApiError::internal(&e))?;
    body["actions"] = serde_json::to_value(actions).map_err(|e| ApiError::internal(&e))?;
    Ok(body)
}

fn parse_id(raw: &str) -> Result<RequestId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no request {raw:?}"),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    wait: Option<u64>,
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<GetQuery>,
) -> Result<Response, ApiError> {
    let key = caller.require(Scope::Read)?;
    let id = parse_id(&id)?;
    let request = match q.wait.filter(|w| *w > 0) {
        Some(secs) => {
            let wait = Duration::from_secs(secs.min(MAX_WAIT_SECS));
            state.service.wait(&id, wait).await?
        }
        None => state.service.get(&id).await?,
    };
    Ok(Json(full_view(&state, &request, key).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    workflow: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let key = caller.require(Scope::Read)?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            Status::parse(s).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("status must be one of pending, approved, denied, expired, cancelled; got {s:?}"),
                )
            })
        })
        .transpose()?;
    let workflow = q.workflow.as_deref().map(str::parse).transpose().map_err(
        |e: crate::domain::IdError| ApiError::bad_request("invalid_query", e.to_string()),
    )?;
    let before = q
        .cursor
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid_query", "cursor is not a request id"))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be 1-200",
        ));
    }
    let requests = state
        .service
        .store()
        .list_requests(&ListFilter {
            status,
            workflow,
            before,
            limit,
        })
        .await?;
    let next_cursor = (requests.len() == limit as usize)
        .then(|| requests.last().map(|r| r.id.to_string()))
        .flatten();
    let requests: Vec<_> = requests.iter().map(|r| shown(r, key)).collect();
    Ok(Json(serde_json::json!({"requests": requests, "next_cursor": next_cursor})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    reason: Option<String>,
}

pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = caller.require(Scope::Request)?;
    let id = parse_id(&id)?;
    let body: CancelBody = if body.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?
    };
    let reason = non_empty("reason", body.reason, 1000)?;
    let request = state.service.cancel(&id, key, reason).await?;
    Ok(Json(shown(&request, key)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    verdict: String,
    reason: Option<String>,
}

pub async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> Result<Response, ApiError> {
    let key = caller.require(Scope::Decide)?;
    let id = parse_id(&id)?;
    let verdict = Verdict::parse(&body.verdict)
        .ok_or_else(|| invalid("verdict must be \"approve\" or \"deny\""))?;
    let reason = non_empty("reason", body.reason, 1000)?;
    let vote = Vote {
        by: key.name.clone(),
        name: None,
        kind: DecisionKind::Machine,
        verdict,
        reason,
    };
    let request = match state.service.vote(&id, vote).await? {
        VoteResult::Decided(r) | VoteResult::Counted(r) => r,
    };
    Ok(Json(shown(&request, key)).into_response())
}
