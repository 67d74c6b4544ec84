//! The service's one error type, with the stable code every adapter shows.

use crate::domain::VoteRejected;
use crate::slack::directory::LookupError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no request {0}")]
    NotFound(String),
    #[error("no signal {0}: it was never set")]
    NoSuchSignal(String),
    #[error("unknown workflow {0:?}")]
    UnknownWorkflow(String),
    #[error("several workflows are configured ({0}): say which one with \"workflow\"")]
    WorkflowRequired(String),
    #[error("this Idempotency-Key was used before with a different request body")]
    IdempotencyKeyReused,
    #[error(transparent)]
    Rejected(#[from] VoteRejected),
    #[error("workflow {0:?} does not let a request choose its channel (allow_channel_override)")]
    ChannelOverrideNotAllowed(String),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(
        "request {0} was made with another API key: only that key (or an admin key) may cancel it"
    )]
    NotYourRequest(String),
    #[error(
        "this API key made more than {per_minute} requests a minute; try again in {retry_after_secs} s"
    )]
    RateLimited {
        per_minute: u32,
        retry_after_secs: u64,
    },
    #[error("{0} long-polls are waiting already; try again in a moment")]
    TooManyWaiters(usize),
    #[error(
        "{0} signals are stored already ([limits] max_signals): delete one (DELETE /v1/signals/{{name}}) or let lapsed ones be purged; setting an existing signal still works"
    )]
    TooManySignals(u32),
    #[error(
        "trust {trust:?} does not let its tokens ask in workflow {workflow:?} (its workflows list)"
    )]
    WorkflowNotAllowed { workflow: String, trust: String },
    /// A standing approval cannot be granted as asked (the text says why, for the modal).
    #[error("{0}")]
    StandingNotAllowed(String),
    /// A vote's answers do not fit the request's fields (or it asks none).
    #[error("{0}")]
    InvalidResponse(String),
    /// A request's `editable` names a param it does not have, or one its workflow does not
    /// let approvers edit.
    #[error("{message}")]
    Editable { code: &'static str, message: String },
}

impl ServiceError {
    /// The stable, machine-readable code every adapter shows (HTTP, MCP).
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Store(e) if e.is_unavailable() => "storage_unavailable",
            ServiceError::Store(_) => "internal",
            ServiceError::NotFound(_) | ServiceError::NoSuchSignal(_) => "not_found",
            ServiceError::UnknownWorkflow(_) => "unknown_workflow",
            ServiceError::WorkflowRequired(_) => "workflow_required",
            ServiceError::IdempotencyKeyReused => "idempotency_key_reused",
            ServiceError::Rejected(VoteRejected::NotPending { .. }) => "not_pending",
            ServiceError::Rejected(VoteRejected::AlreadyVoted { .. }) => "already_voted",
            ServiceError::Rejected(VoteRejected::NotAnApprover { .. }) => "not_an_approver",
            ServiceError::Rejected(VoteRejected::SelfApproval) => "self_approval",
            ServiceError::Rejected(VoteRejected::NotYourStage { .. }) => "not_your_stage",
            ServiceError::Rejected(VoteRejected::StageNotOpen { .. }) => "stage_not_open",
            ServiceError::ChannelOverrideNotAllowed(_) => "channel_override_not_allowed",
            ServiceError::Lookup(_) => "slack_unavailable",
            ServiceError::NotYourRequest(_) => "not_request_owner",
            ServiceError::RateLimited { .. } => "rate_limited",
            ServiceError::TooManyWaiters(_) => "too_many_waiters",
            ServiceError::TooManySignals(_) => "too_many_signals",
            ServiceError::WorkflowNotAllowed { .. } => "forbidden",
            ServiceError::StandingNotAllowed(_) => "standing_not_allowed",
            ServiceError::InvalidResponse(_) => "invalid_response",
            ServiceError::Editable { code, .. } => code,
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;
