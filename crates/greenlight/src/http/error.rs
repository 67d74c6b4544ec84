//! One error type for the HTTP API: a status, a stable machine-readable code and a message,
//! rendered as `{"error":{"code","message"}}`.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use utoipa::ToSchema;

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

/// What every error looks like: a stable machine-readable `code` and a message for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: `invalid_request`, `invalid_json`, `invalid_query`, `unauthorized`,
    /// `forbidden`, `not_found`, `conflict`, `rate_limited`, `timeout`,
    /// `storage_unavailable`, ...
    #[schema(example = "invalid_request")]
    pub code: String,
    pub message: String,
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

    /// The database cannot take writes for now (a full disk, I/O errors, unreachable): 503
    /// `storage_unavailable` with `Retry-After`; nothing was changed, and the same request may
    /// be sent again.
    pub fn storage_unavailable(err: &dyn std::fmt::Display) -> Self {
        crate::store::log_unavailable(err);
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "the database cannot take writes right now (disk full or failing); nothing was changed: try again later",
        )
        .with_retry_after(STORAGE_RETRY_AFTER_SECS)
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
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<crate::service::intake::Invalid> for ApiError {
    fn from(e: crate::service::intake::Invalid) -> Self {
        ApiError::bad_request(e.code, e.message)
    }
}

/// What a 503 `storage_unavailable` asks the client to wait.
pub const STORAGE_RETRY_AFTER_SECS: u64 = 5;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            return ApiError::storage_unavailable(&e);
        }
        ApiError::internal(&e)
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let msg = e.to_string();
        let code = e.code();
        let status = match &e {
            ServiceError::Store(store) if store.is_unavailable() => {
                return ApiError::storage_unavailable(store);
            }
            ServiceError::Store(_) => return ApiError::internal(&e),
            ServiceError::NotFound(_) | ServiceError::NoSuchSignal(_) => StatusCode::NOT_FOUND,
            ServiceError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ServiceError::Rejected(VoteRejected::NotPending { .. })
            | ServiceError::Rejected(VoteRejected::AlreadyVoted { .. })
            | ServiceError::Rejected(VoteRejected::StageNotOpen { .. }) => StatusCode::CONFLICT,
            ServiceError::Rejected(_)
            | ServiceError::NotYourRequest(_)
            | ServiceError::WorkflowNotAllowed { .. } => StatusCode::FORBIDDEN,
            ServiceError::Lookup(e) => {
                tracing::warn!(error = %e, "Slack lookup failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
            ServiceError::RateLimited { .. }
            | ServiceError::TooManyWaiters(_)
            | ServiceError::TooManySignals(_) => StatusCode::TOO_MANY_REQUESTS,
            ServiceError::UnknownWorkflow(_)
            | ServiceError::WorkflowRequired(_)
            | ServiceError::ChannelOverrideNotAllowed(_)
            | ServiceError::StandingNotAllowed(_)
            | ServiceError::InvalidResponse(_)
            | ServiceError::Editable { .. } => StatusCode::BAD_REQUEST,
        };
        let error = ApiError::new(status, code, msg);
        match e {
            ServiceError::RateLimited {
                retry_after_secs, ..
            } => error.with_retry_after(retry_after_secs),
            ServiceError::TooManyWaiters(_) => error.with_retry_after(1),
            _ => error,
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let (status, code) = match r {
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            JsonRejection::BytesRejection(r) => return r.into(),
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            _ => (StatusCode::BAD_REQUEST, "invalid_request"),
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    /// A body over the size limit is 413 `payload_too_large`; one that could not be read
    /// (the client went away mid-body) is a 400.
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                r.body_text(),
            )
        } else {
            ApiError::bad_request("invalid_request", r.body_text())
        }
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

/// The raw body, whose rejections (413 over the size limit) speak the API's error format.
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Ok(Self(Bytes::from_request(req, state).await?))
    }
}
