//! What a click means, whichever way it arrived (HTTP interactivity or Socket Mode).

use crate::domain::{DecisionKind, RequestId, Verdict, Vote, VoteRejected};
use crate::service::{Service, ServiceError, VoteResult};
use crate::slack::interaction::Interaction;
use crate::slack::render::{self, APPROVE_ACTION, DENY_ACTION};

#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    Decided,
    Counted,
    /// The click changed nothing; the user was told why.
    Refused(&'static str),
    Ignored,
}

#[derive(Debug, thiserror::Error)]
pub enum InteractionError {
    #[error("the payload is missing {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

pub async fn handle(service: &Service, i: &Interaction) -> Result<Handled, InteractionError> {
    if i.kind != "block_actions" {
        return Ok(Handled::Ignored);
    }
    let Some(action) = i.actions.first() else {
        return Err(InteractionError::Malformed("actions"));
    };
    let verdict = match action.action_id.as_str() {
        APPROVE_ACTION => Verdict::Approve,
        DENY_ACTION => Verdict::Deny,
        _ => return Ok(Handled::Ignored),
    };
    let user = i
        .user
        .as_ref()
        .map(|u| u.id.as_str())
        .ok_or(InteractionError::Malformed("user"))?;
    let channel = i
        .channel_id()
        .ok_or(InteractionError::Malformed("channel"))?;
    let id = action
        .value
        .as_deref()
        .and_then(|v| v.parse::<RequestId>().ok());
    let Some(id) = id else {
        tell(
            service,
            channel,
            user,
            "greenlight does not know this request.".into(),
        )
        .await?;
        return Ok(Handled::Refused("unknown_request"));
    };
    let vote = Vote {
        by: user.to_owned(),
        kind: DecisionKind::User,
        verdict,
        reason: None,
    };
    match service.vote(&id, vote).await {
        Ok(VoteResult::Decided(_)) => Ok(Handled::Decided),
        Ok(VoteResult::Counted(_)) => Ok(Handled::Counted),
        Err(ServiceError::NotFound(_)) => {
            tell(
                service,
                channel,
                user,
                "greenlight does not know this request.".into(),
            )
            .await?;
            Ok(Handled::Refused("unknown_request"))
        }
        Err(ServiceError::Rejected(VoteRejected::NotPending { status, decided_by })) => {
            let by = decided_by
                .as_deref()
                .map(|b| format!(" by {}", render::who(b)))
                .unwrap_or_default();
            let text = format!("This request was already {}{by}.", status.as_str());
            tell(service, channel, user, text).await?;
            Ok(Handled::Refused("not_pending"))
        }
        Err(ServiceError::Rejected(VoteRejected::AlreadyVoted { .. })) => {
            tell(
                service,
                channel,
                user,
                "You have already voted on this request.".into(),
            )
            .await?;
            Ok(Handled::Refused("already_voted"))
        }
        Err(e) => Err(e.into()),
    }
}

async fn tell(
    service: &Service,
    channel: &str,
    user: &str,
    text: String,
) -> Result<(), ServiceError> {
    service.notify_user(channel, user, text).await
}
