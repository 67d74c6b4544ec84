//! Which Slack workspaces' people may vote: the one greenlight is installed in (its Enterprise
//! Grid organization too), read from `auth.test`, and those `[slack] allowed_teams` adds.
//! Slack Connect shares a channel with other organizations, whose people see the buttons.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{Service, ServiceResult};
use crate::domain::{RequestId, Verdict};
use crate::slack::directory::LOOKUP_TIMEOUT;
use crate::store::NewAudit;

/// After `auth.test` failed, clicks from other workspaces are refused without asking again
/// for this long, so an outage of Slack is not asked once per click.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct Workspaces {
    /// `[slack] allowed_teams`.
    allowed: Vec<String>,
    /// The workspace the bot token belongs to, and its organization, once `auth.test` said.
    installed: OnceLock<Vec<String>>,
    /// One `auth.test` at a time, and when the last one failed.
    asking: tokio::sync::Mutex<Option<Instant>>,
}

/// Whether a person's workspace may vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The workspace greenlight is installed in, its organization, or one allowed.
    Allowed,
    /// Another workspace: the click counts for nothing.
    Elsewhere,
    /// greenlight cannot tell yet (`auth.test` has not answered): refused, and asked again.
    Unknown,
}

impl Origin {
    /// Why a click was refused, for the metrics and the audit log.
    pub fn code(self) -> &'static str {
        match self {
            Origin::Allowed => "allowed",
            Origin::Elsewhere => "other_workspace",
            Origin::Unknown => "workspace_unknown",
        }
    }
}

impl Service {
    /// Workspaces and organizations whose people may vote besides the installed one.
    pub fn with_allowed_teams(mut self, teams: Vec<String>) -> Self {
        self.workspaces.allowed = teams;
        self
    }

    /// Asks Slack which workspace greenlight is installed in (`auth.test`), unless it is known
    /// already: at start, and on a click from a workspace not allowed while it is not known.
    /// Returns the ids whose people may vote, or why Slack could not say.
    pub async fn learn_workspace(&self) -> Result<Vec<String>, String> {
        if let Some(known) = self.workspaces.installed.get() {
            return Ok(known.clone());
        }
        let slack = self.slack.as_ref().ok_or("no Slack client")?;
        let asked = tokio::time::timeout(LOOKUP_TIMEOUT, slack.auth_test()).await;
        let teams = match asked {
            Ok(Ok(installed)) => installed.teams(),
            Ok(Err(e)) => return Err(format!("auth.test: {e}")),
            Err(_) => return Err(format!("auth.test: no answer within {LOOKUP_TIMEOUT:?}")),
        };
        if teams.is_empty() {
            return Err("auth.test named no workspace".into());
        }
        tracing::info!(teams = ?teams, "Slack workspace: votes count from it");
        Ok(self.workspaces.installed.get_or_init(|| teams).clone())
    }

    /// Whether people of `team` (a `T…` or `E…` id) may vote.
    pub async fn origin(&self, team: &str) -> Origin {
        let w = &self.workspaces;
        if w.allowed.iter().any(|t| t == team) {
            return Origin::Allowed;
        }
        if let Some(installed) = w.installed.get() {
            return Self::among(installed, team);
        }
        let mut last_failure = w.asking.lock().await;
        if let Some(installed) = w.installed.get() {
            return Self::among(installed, team);
        }
        if last_failure.is_some_and(|at| at.elapsed() < ASK_AGAIN_AFTER) {
            return Origin::Unknown;
        }
        match self.learn_workspace().await {
            Ok(installed) => Self::among(&installed, team),
            Err(e) => {
                tracing::warn!(error = %e, team, "cannot tell which Slack workspace greenlight is installed in; refusing a click from a workspace not in [slack] allowed_teams");
                *last_failure = Some(Instant::now());
                Origin::Unknown
            }
        }
    }

    fn among(installed: &[String], team: &str) -> Origin {
        if installed.iter().any(|t| t == team) {
            Origin::Allowed
        } else {
            Origin::Elsewhere
        }
    }

    /// Audits a vote refused for the voter's workspace (`vote.refused`): it changed nothing.
    pub async fn audit_refused_vote(
        &self,
        user: &str,
        team: &str,
        request: Option<&RequestId>,
        verdict: Verdict,
        origin: Origin,
    ) -> ServiceResult<()> {
        let audit = NewAudit {
            request_id: request.cloned(),
            event: "vote.refused",
            actor: user.to_owned(),
            data: serde_json::json!({
                "why": origin.code(),
                "team": team,
                "verdict": verdict,
            }),
        };
        self.store.record(&[audit], &[], self.now_ms()).await?;
        metrics::counter!("greenlight_votes_refused_total", "why" => origin.code()).increment(1);
        tracing::warn!(
            user,
            team,
            why = origin.code(),
            "refused a vote from a workspace that may not vote"
        );
        Ok(())
    }
}
