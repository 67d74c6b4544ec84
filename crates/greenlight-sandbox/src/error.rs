//! The sandbox's one error type.

use std::net::SocketAddr;

/// Why a sandbox operation failed. Web API errors are not here: those are Slack answers.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("unknown channel {0}")]
    UnknownChannel(String),
    #[error("unknown user {0}")]
    UnknownUser(String),
    #[error("no message {ts} in channel {channel}")]
    MessageNotFound { channel: String, ts: String },
    #[error("message {ts} has no button with action_id {action_id}")]
    ButtonNotFound { ts: String, action_id: String },
    #[error("no open view {0}")]
    ViewNotFound(String),
    #[error("user {0} has no published Home tab")]
    NoHomeView(String),
    #[error("the Home tab of {user} has no button with action_id {action_id} (and that value)")]
    HomeButtonNotFound { user: String, action_id: String },
    #[error("not a slash command: {0:?} (it must look like /name)")]
    InvalidCommand(String),
    #[error("view {view_id} has no input block {block_id}")]
    InputNotFound { view_id: String, block_id: String },
    #[error("input {block_id} of view {view_id} cannot take {value}: {why}")]
    InvalidInput {
        view_id: String,
        block_id: String,
        value: String,
        why: String,
    },
    #[error("delivery to {url} failed: {reason}")]
    Delivery { url: String, reason: String },
}

impl SandboxError {
    /// Stable machine-readable code for the control API.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Bind { .. } => "bind_failed",
            Self::Client(_) => "client_failed",
            Self::UnknownChannel(_) => "unknown_channel",
            Self::UnknownUser(_) => "unknown_user",
            Self::MessageNotFound { .. } => "message_not_found",
            Self::ButtonNotFound { .. } => "button_not_found",
            Self::ViewNotFound(_) => "view_not_found",
            Self::NoHomeView(_) => "home_view_not_found",
            Self::HomeButtonNotFound { .. } => "button_not_found",
            Self::InvalidCommand(_) => "invalid_command",
            Self::InputNotFound { .. } => "input_not_found",
            Self::InvalidInput { .. } => "invalid_input",
            Self::Delivery { .. } => "delivery_failed",
        }
    }
}
