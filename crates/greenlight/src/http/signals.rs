//! `/v1/signals`: facts machines report (`staging/api` is green) for rules to read.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiPath};
use crate::domain::{DurationSpec, SignalName};
use crate::service::signals::SetSignal;
use crate::store::Scope;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalBody {
    name: SignalName,
    #[serde(default)]
    value: serde_json::Value,
    /// Unknown after this long unless set again ("10m").
    ttl: Option<DurationSpec>,
}

/// `POST /v1/signals {name, value, ttl?}`: sets a signal (the `signal` scope).
pub async fn set(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<SignalBody>,
) -> Result<Response, ApiError> {
    let key = caller.require(Scope::Signal)?;
    let input = SetSignal::new(body.name, body.value, body.ttl)
        .map_err(|m| ApiError::bad_request("invalid_request", m))?;
    let (view, changed) = state.service.set_signal(input, key).await?;
    let mut shown = serde_json::to_value(&view).unwrap_or_default();
    if let Some(o) = shown.as_object_mut() {
        o.insert("changed".into(), changed.into());
    }
    Ok(Json(shown).into_response())
}

/// `GET /v1/signals`: every signal, with whether it is live.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let signals = state.service.signals().await?;
    Ok(Json(serde_json::json!({ "signals": signals })).into_response())
}

/// `GET /v1/signals/{name}` (names may hold `/`: `/v1/signals/staging/api`).
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let name: SignalName = name.parse().map_err(|e: crate::domain::IdError| {
        ApiError::bad_request("invalid_request", e.to_string())
    })?;
    let view = state.service.signal(&name).await?;
    Ok(Json(view).into_response())
}
