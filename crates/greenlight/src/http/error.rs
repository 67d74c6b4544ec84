//! One error type for the HTTP API: a status, a stable machine-readable code and a message,
//! rendered as `{"error":{"code","message"}}`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::domain::VoteRejected;
use crate::service::ServiceError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429s).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn internal(err: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(&e)
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let msg = e.to_string();
        match e {
            ServiceError::Store(e) => e.into(),
            ServiceError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", msg),
            ServiceError::UnknownWorkflow(_) => ApiError::bad_request("unknown_workflow", msg),
            ServiceError::WorkflowRequired(_) => ApiError::bad_request("workflow_required", msg),
            ServiceError::IdempotencyKeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                msg,
            ),
            ServiceError::Rejected(VoteRejected::NotPending { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "not_pending", msg)
            }
            ServiceError::Rejected(VoteRejected::AlreadyVoted { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "already_voted", msg)
            }
            ServiceError::Rejected(VoteRejected::NotAnApprover { .. }) => {
                ApiError::new(StatusCode::FORBIDDEN, "not_an_approver", msg)
            }
            ServiceError::Rejected(VoteRejected::SelfApproval) => {
                ApiError::new(StatusCode::FORBIDDEN, "self_approval", msg)
            }
            ServiceError::ChannelOverrideNotAllowed(_) => {
                ApiError::bad_request("channel_override_not_allowed", msg)
            }
            ServiceError::Lookup(e) => {
                tracing::warn!(error = %e, "Slack lookup failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "slack_unavailable", msg)
            }
            ServiceError::NotYourRequest(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "not_request_owner", msg)
            }
            ServiceError::RateLimited {
                retry_after_secs, ..
            } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", msg)
                .with_retry_after(retry_after_secs),
            ServiceError::TooManyWaiters(_) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_waiters", msg)
                    .with_retry_after(1)
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let code = match r {
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::JsonSyntaxError(_) => "invalid_json",
            _ => "invalid_request",
        };
        let status = if code == "unsupported_media_type" {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        } else {
            StatusCode::BAD_REQUEST
        };
        // A body over the size limit is 413, not a client's syntax error.
        let status = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            status
        };
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            code
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", r.body_text())
    }
}

/// `Json` whose rejections speak the API's error format.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `Path` whose rejections speak the API's error format.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `Query` whose rejections speak the API's error format.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);
