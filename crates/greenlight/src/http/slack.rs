//! `POST /slack/interactions` and `/slack/events`: verify, decide, ack. Nothing here calls
//! Slack: the message update and any notice go through the outbox after the 200.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::AppState;
use super::error::ApiError;
use crate::interactions::{self, InteractionError};
use crate::slack::interaction::{Inbound, decode};
use crate::slack::signature;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let started = std::time::Instant::now();
    let response = handle(&state, &headers, &body)
        .await
        .unwrap_or_else(|e| e.into_response());
    metrics::histogram!("greenlight_slack_ack_seconds").record(started.elapsed().as_secs_f64());
    response
}

async fn handle(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let Some(secret) = &state.signing_secret else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            "HTTP interactivity is off: SLACK_SIGNING_SECRET is not set",
        ));
    };
    let now = state.service.clock().now().as_second();
    signature::verify(
        secret.expose().as_bytes(),
        header(headers, "x-slack-request-timestamp"),
        header(headers, "x-slack-signature"),
        body,
        now,
    )
    .map_err(|e| {
        metrics::counter!("greenlight_slack_rejected_total", "reason" => e.code()).increment(1);
        tracing::warn!(reason = e.code(), "rejected a Slack request");
        ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    })?;
    let inbound = decode(header(headers, header::CONTENT_TYPE.as_str()), body)
        .map_err(|e| ApiError::bad_request("invalid_payload", e.to_string()))?;
    match inbound {
        Inbound::UrlVerification { challenge } => {
            Ok(Json(serde_json::json!({ "challenge": challenge })).into_response())
        }
        Inbound::Other(kind) => {
            tracing::debug!(kind, "ignored a Slack payload");
            Ok(StatusCode::OK.into_response())
        }
        Inbound::Interaction(i) => {
            let handled = interactions::handle(&state.service, &i)
                .await
                .map_err(|e| match e {
                    InteractionError::Malformed(_) => {
                        ApiError::bad_request("invalid_payload", e.to_string())
                    }
                    InteractionError::Identity(id) => {
                        metrics::counter!("greenlight_slack_rejected_total", "reason" => id.code())
                            .increment(1);
                        ApiError::bad_request(id.code(), e.to_string())
                    }
                    InteractionError::Service(e) => e.into(),
                })?;
            metrics::counter!("greenlight_interactions_total", "outcome" => handled.outcome())
                .increment(1);
            Ok(match handled.ack_payload() {
                Some(body) => Json(body).into_response(),
                None => StatusCode::OK.into_response(),
            })
        }
    }
}
