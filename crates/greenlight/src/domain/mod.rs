//! The approval domain: requests, votes and the state machine that turns votes into exactly one
//! decision. Nothing here does I/O or knows about HTTP, SQL or Slack.

mod clock;
mod duration;
mod ids;
mod request;

pub use clock::{Clock, SystemClock};
pub use duration::{DurationSpec, ParseDurationError};
pub use ids::{ApiKeyId, ChannelRef, IdError, RequestId, SlackUserId, WorkflowName};
pub use request::{
    Decision, DecisionKind, NewRequest, Params, Policy, Request, SlackRef, Status, Verdict, Vote,
    VoteOutcome, VoteRejected,
};

/// Unix time in milliseconds; the one time type the domain stores.
pub type Millis = i64;
