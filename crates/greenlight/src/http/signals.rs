//! `/v1/signals`: facts machines report (`staging/api` is green) for rules to read.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::domain::{DurationSpec, SignalName};
use crate::service::signals::{SetSignal, SignalView};
use crate::store::Scope;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalBody {
    name: SignalName,
    /// Any JSON but null (at most 4 KB as JSON): `"green"`, `0.002`, `true`, `{...}`.
    #[serde(default)]
    #[schema(schema_with = any_but_null, required = true)]
    value: serde_json::Value,
    /// Unknown after this long unless set again ("10m").
    ttl: Option<DurationSpec>,
}

/// A signal after a set, and whether its value changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignalSet {
    #[serde(flatten)]
    pub signal: SignalView,
    /// False when the set only refreshed the same value (and its ttl).
    pub changed: bool,
}

/// A page of signals, by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignalList {
    pub signals: Vec<SignalView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<SignalName>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1-200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = r"^[a-z0-9_./:-]{1,100}$")]
    cursor: Option<String>,
}

/// A signal's value in the document: any JSON type but null.
fn any_but_null() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([
            Type::String,
            Type::Number,
            Type::Integer,
            Type::Boolean,
            Type::Array,
            Type::Object,
        ]))
        .build()
}

/// `POST /v1/signals {name, value, ttl?}`: sets a signal (the `signal` scope).
#[utoipa::path(
    post,
    path = "/v1/signals",
    tag = "signals",
    operation_id = "set_signal",
    security(("api_key" = [])),
    request_body = SignalBody,
    responses(
        (status = 200, description = "Set; `changed` says whether the value changed", body = SignalSet),
        (status = 400, description = "Invalid name, value or ttl", body = ErrorBody),
        (status = 401, description = "No API key or a wrong one", body = ErrorBody),
        (status = 403, description = "The key lacks the `signal` scope", body = ErrorBody),
        (status = 429, description = "Over the key's rate limit (`rate_limited`, see `Retry-After`), or a new name when `[limits] max_signals` are stored (`too_many_signals`)", body = ErrorBody),
    ),
)]
pub async fn set(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<SignalBody>,
) -> Result<Response, ApiError> {
    let key = caller.require(Scope::Signal)?;
    let input = SetSignal::new(body.name, body.value, body.ttl)
        .map_err(|m| ApiError::bad_request("invalid_request", m))?;
    let (signal, changed) = state.service.set_signal(input, key).await?;
    Ok(Json(SignalSet { signal, changed }).into_response())
}

/// `GET /v1/signals`: signals by name, with whether each is live, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/signals",
    tag = "signals",
    operation_id = "list_signals",
    security(("api_key" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of signals, by name", body = SignalList),
        (status = 400, description = "An invalid limit or cursor", body = ErrorBody),
        (status = 401, description = "No API key or a wrong one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let after: Option<SignalName> = q
        .cursor
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid_query", "cursor is not a signal name"))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be 1-200",
        ));
    }
    let signals = state.service.signals(after.as_ref(), limit).await?;
    let next_cursor = (signals.len() == limit as usize)
        .then(|| signals.last().map(|s| s.signal.name.clone()))
        .flatten();
    Ok(Json(SignalList {
        signals,
        next_cursor,
    })
    .into_response())
}

/// `GET /v1/signals/{name}` (names may hold `/`: `/v1/signals/staging/api`).
#[utoipa::path(
    get,
    path = "/v1/signals/{name}",
    tag = "signals",
    operation_id = "get_signal",
    security(("api_key" = [])),
    params(("name" = String, Path, pattern = r"^[a-z0-9_./:-]{1,100}$", description = "The signal's name; it may hold `/` as is (`staging/api`)")),
    responses(
        (status = 200, description = "The signal", body = SignalView),
        (status = 400, description = "Not a valid signal name", body = ErrorBody),
        (status = 401, description = "No API key or a wrong one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 404, description = "No such signal", body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let name = parse_name(&name)?;
    let view = state.service.signal(&name).await?;
    Ok(Json(view).into_response())
}

/// `DELETE /v1/signals/{name}`: deletes a signal (the `signal` scope), audited.
#[utoipa::path(
    delete,
    path = "/v1/signals/{name}",
    tag = "signals",
    operation_id = "delete_signal",
    security(("api_key" = [])),
    params(("name" = String, Path, pattern = r"^[a-z0-9_./:-]{1,100}$", description = "The signal's name; it may hold `/` as is (`staging/api`)")),
    responses(
        (status = 200, description = "Deleted: the signal as it was", body = SignalView),
        (status = 400, description = "Not a valid signal name", body = ErrorBody),
        (status = 401, description = "No API key or a wrong one", body = ErrorBody),
        (status = 403, description = "The key lacks the `signal` scope", body = ErrorBody),
        (status = 404, description = "No such signal", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let key = caller.require(Scope::Signal)?;
    let name = parse_name(&name)?;
    let view = state.service.delete_signal(&name, key).await?;
    Ok(Json(view).into_response())
}

fn parse_name(name: &str) -> Result<SignalName, ApiError> {
    name.parse().map_err(|e: crate::domain::IdError| {
        ApiError::bad_request("invalid_request", e.to_string())
    })
}
