//! `POST /github/webhook`: GitHub's webhooks for greenlight's GitHub App. The signature
//! (`X-Hub-Signature-256`) is checked over the raw body before anything is read; a
//! `deployment_protection_rule` becomes a request (once, however often GitHub redelivers it),
//! `ping` is answered, and other events are acknowledged and left alone. The review goes
//! through the outbox after the answer.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiBytes, ApiError};
use crate::service::ServiceError;
use crate::service::github::{DeploymentOutcome, DeploymentRefused, ProtectionRuleEvent};

fn count(event: &str, outcome: &'static str) {
    // GitHub's event names are a known, small set; anything else is one label.
    let event = match event {
        "ping"
        | "deployment_protection_rule"
        | "installation"
        | "installation_repositories"
        | "github_app_authorization"
        | "deployment"
        | "deployment_status"
        | "workflow_run"
        | "workflow_job" => event.to_owned(),
        _ => "other".to_owned(),
    };
    metrics::counter!("greenlight_github_webhooks_total", "event" => event, "outcome" => outcome)
        .increment(1);
}

pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Response {
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let Some(secret) = &state.github_webhook_secret else {
        count(&event, "not_configured");
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "github_not_configured",
            "[github] is not configured on this server",
        )
        .into_response();
    };
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if let Err(e) =
        crate::policy::github::verify_signature(secret.expose().as_bytes(), signature, &body)
    {
        count(&event, "bad_signature");
        tracing::warn!(error = %e, event = %event, "GitHub webhook refused");
        return ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", e.to_string())
            .into_response();
    }
    match event.as_str() {
        "ping" => {
            count(&event, "pong");
            (StatusCode::OK, Json(serde_json::json!({"ok": true}))).into_response()
        }
        "deployment_protection_rule" => {
            let parsed: ProtectionRuleEvent = match serde_json::from_slice(&body) {
                Ok(p) => p,
                Err(e) => {
                    count(&event, "invalid");
                    return ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_payload",
                        format!("not a deployment_protection_rule payload: {e}"),
                    )
                    .into_response();
                }
            };
            match state.service.github_deployment(parsed).await {
                Ok(outcome) => {
                    count(&event, outcome.as_str());
                    let request = match &outcome {
                        DeploymentOutcome::Created(id) | DeploymentOutcome::Existing(id) => {
                            Some(id.to_string())
                        }
                        _ => None,
                    };
                    (
                        StatusCode::OK,
                        Json(serde_json::json!({"outcome": outcome.as_str(), "request": request})),
                    )
                        .into_response()
                }
                Err(DeploymentRefused::Service(ServiceError::IdempotencyKeyReused)) => {
                    // Another delivery for the same run and environment, with other details
                    // (a re-run): its request exists already and decides.
                    count(&event, "redelivered");
                    (
                        StatusCode::OK,
                        Json(serde_json::json!({"outcome": "redelivered", "request": null})),
                    )
                        .into_response()
                }
                Err(DeploymentRefused::Service(e)) => {
                    count(&event, "error");
                    ApiError::from(e).into_response()
                }
                Err(e) => {
                    count(&event, "refused");
                    let status = match e {
                        DeploymentRefused::NotConfigured => StatusCode::NOT_FOUND,
                        DeploymentRefused::CallbackNotAllowed(_) => {
                            StatusCode::UNPROCESSABLE_ENTITY
                        }
                        _ => StatusCode::BAD_REQUEST,
                    };
                    ApiError::new(status, e.code(), e.to_string()).into_response()
                }
            }
        }
        _ => {
            count(&event, "ignored");
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({"outcome": "ignored"})),
            )
                .into_response()
        }
    }
}
