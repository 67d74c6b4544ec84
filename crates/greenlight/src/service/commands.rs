//! What `/greenlight` means, whichever way it arrived (a signed POST to `/slack/commands` or a
//! `slash_commands` Socket Mode envelope). Both answer with the returned ack body, an
//! ephemeral message, within Slack's 3 seconds.

use std::time::Duration;

use serde_json::Value;

use crate::domain::{Request, RequestId, SlackUserId};
use crate::service::home::WAITING_LIMIT;
use crate::service::{Service, ServiceError};
use crate::slack::commands::{self, SlashCommand, Subcommand};
use crate::slack::render::Look;

/// The longest a command may take before it is answered with "try again": Slack shows an
/// error past 3 s, and the ack still has to travel.
pub const ANSWER_WITHIN: Duration = Duration::from_millis(2500);

const LOOKUP_FAILED: &str =
    "greenlight cannot check who may decide requests right now; please try again shortly.";
const TOO_SLOW: &str = "greenlight is slow to answer right now; please try again in a moment.";

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("the command has no well-formed user_id (U or W, then capital letters and digits)")]
    User,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

pub async fn handle(service: &Service, cmd: &SlashCommand) -> Result<Value, CommandError> {
    let user = cmd
        .user_id
        .as_deref()
        .filter(|u| SlackUserId::looks_like(u))
        .ok_or(CommandError::User)?;
    let sub = Subcommand::parse(&cmd.text);
    metrics::counter!("greenlight_slash_commands_total", "subcommand" => sub.label()).increment(1);
    match tokio::time::timeout(ANSWER_WITHIN, answer(service, cmd, user, &sub)).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(ServiceError::Lookup(e))) => {
            tracing::warn!(error = %e, "a slash command needed a Slack lookup that failed");
            Ok(commands::text_reply(LOOKUP_FAILED))
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => {
            tracing::warn!(subcommand = sub.label(), "a slash command ran out of time");
            Ok(commands::text_reply(TOO_SLOW))
        }
    }
}

async fn answer(
    service: &Service,
    cmd: &SlashCommand,
    user: &str,
    sub: &Subcommand,
) -> Result<Value, ServiceError> {
    let domain = cmd.team_domain.as_deref();
    match sub {
        Subcommand::Help => Ok(commands::help(cmd.name(), None)),
        Subcommand::Unknown(text) => Ok(commands::help(cmd.name(), Some(text))),
        Subcommand::Pending => {
            let votable = service.votable(user, WAITING_LIMIT).await?;
            let waiting: Vec<(&Request, Look)> = votable
                .requests
                .iter()
                .map(|r| (r, service.look_of(r)))
                .collect();
            let unchecked: Vec<&str> = votable.unchecked.iter().map(|w| w.as_str()).collect();
            Ok(commands::pending(
                &waiting,
                votable.more(),
                votable.total >= crate::store::VOTABLE_COUNT_CAP,
                &unchecked,
                domain,
            ))
        }
        // Anyone in the workspace may look, as anyone in the channel sees the message: the
        // answer shows what the message shows, nothing more.
        Subcommand::Show(id) => {
            let Ok(parsed) = id.parse::<RequestId>() else {
                return Ok(commands::unknown_request(id));
            };
            let request = match service.get(&parsed).await {
                Ok(r) => r,
                Err(ServiceError::NotFound(_)) => return Ok(commands::unknown_request(id)),
                Err(e) => return Err(e),
            };
            let actions = service.store().action_results(&request.id).await?;
            Ok(commands::show(
                &request,
                &service.look_of(&request),
                &actions,
                domain,
            ))
        }
    }
}
