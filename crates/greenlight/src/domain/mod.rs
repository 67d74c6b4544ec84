//! The approval domain: requests, votes and the state machine that turns votes into exactly one
//! decision. Nothing here does I/O or knows about HTTP, SQL or Slack.
//! Imports nothing of the crate: every other module may import it.

mod answers;
mod audit;
mod clock;
mod duration;
pub mod github;
mod identity;
mod ids;
mod pacing;
mod receipt;
mod request;
mod signal;
mod stages;
mod standing;

pub use answers::{
    Answers, Buttons, CHECKED, Field, FieldProblem, FieldSpec, FieldType, MAX_EDITABLE_INPUT_KEYS,
    MAX_FIELDS, RawAnswer, TOOL_INPUT_PREFIX, answer_all, answer_text, changes, check_answers,
    check_edit, check_fields, editable_param, is_editable_value, number_text,
};
pub use audit::{AuditContent, GENESIS, entry_hash};
pub use clock::{Clock, SystemClock};
pub use duration::{DurationSpec, ParseDurationError};
pub use identity::Identity;
pub use ids::{
    ApiKeyId, Approver, ChannelRef, IdError, RequestId, SlackGroupId, SlackUserId, WorkflowName,
    is_slack_team_id, key_actor, key_name_problem,
};
pub use pacing::{Backoff, Bucket, Pace, Throttle};
pub use receipt::{ReceiptClaims, params_sha256};
pub use request::{
    Decision, DecisionKind, NewRequest, Notify, OnExpiry, Params, Request, SlackRef, StageApproval,
    StageProgress, StageSet, Standing, Status, TIMEOUT_ACTOR, ToolCall, Verdict, Vote, VoteOutcome,
    VoteRejected, requester_as_stored,
};
pub use signal::{Signal, SignalName};
pub use stages::{DEFAULT_STAGE, Policy, StageRule, StageStatus, StagesOrder};
pub use standing::{StandingApproval, StandingId};

/// Unix time in milliseconds; the one time type the domain stores.
pub type Millis = i64;
