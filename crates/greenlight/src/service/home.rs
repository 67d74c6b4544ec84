//! App Home and `/greenlight pending`: what a person may vote on (one decision for both), what
//! they asked for, what was decided lately, and whose open Home tab a change concerns.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Workflow;
use crate::delivery::HomeTabs;
use crate::domain::{
    Approver, DecisionKind, Request, SlackUserId, WorkflowName, requester_as_stored,
};
use crate::service::{Service, ServiceError, ServiceResult};
use crate::slack::home::HomeTab;
use crate::slack::interaction::EventCallback;
use crate::slack::render::Look;
use crate::store::{Effect, VotableFilter};

/// A Home tab opened within this long is refreshed when something it shows changes; Slack
/// sends `app_home_opened` again whenever the person comes back to it.
pub const HOME_WINDOW: Duration = Duration::from_secs(3600);
/// Openings older than this are removed from the store as new ones are written.
const HOME_FORGET: Duration = Duration::from_secs(24 * 3600);
/// The most people a change refreshes: the latest to open the tab.
const MAX_VIEWERS: u32 = 200;
/// How long the list of people with an open tab is reused before it is read again.
const VIEWERS_FRESH: Duration = Duration::from_secs(1);
/// Requests shown under "Waiting for you" and by `/greenlight pending` (the newest).
pub const WAITING_LIMIT: u32 = 20;
const MINE_LIMIT: u32 = 10;
const DECIDED_LIMIT: u32 = 10;
const DECIDED_WITHIN: Duration = Duration::from_secs(7 * 24 * 3600);

/// Who opened the Home tab lately, as last read from the store.
#[derive(Default)]
pub(super) struct Viewers {
    cached: Mutex<Option<(Instant, Arc<Vec<String>>)>>,
}

/// Pending requests someone may vote on: the newest `requests`, `total` in all.
#[derive(Debug, Clone, Default)]
pub struct Votable {
    pub requests: Vec<Request>,
    /// How many match in all (counted up to `store::VOTABLE_COUNT_CAP`).
    pub total: u32,
    /// The workflows they may vote in.
    pub workflows: Vec<WorkflowName>,
    /// Workflows Slack could not be asked about just now (their user groups); left out.
    pub unchecked: Vec<WorkflowName>,
}

impl Votable {
    /// How many more match than are listed.
    pub fn more(&self) -> u32 {
        self.total
            .saturating_sub(u32::try_from(self.requests.len()).unwrap_or(u32::MAX))
    }
}

/// What someone's Home tab shows.
#[derive(Debug, Clone, Default)]
pub struct HomePage {
    pub waiting: Votable,
    pub mine: Vec<Request>,
    pub decided: Vec<Request>,
    /// The live standing approvals this person granted, each with a Revoke button.
    pub standing: Vec<crate::domain::StandingApproval>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Service {
    /// The stages of `workflow` whose approvers include `user` (directly or through a user
    /// group); a workflow naming no approvers lets anyone vote. What the vote itself checks.
    pub(super) async fn stages_of(
        &self,
        workflow: &Workflow,
        user: &str,
    ) -> ServiceResult<Vec<String>> {
        let mut named = Vec::new();
        for stage in workflow.stages().iter() {
            let listed = match &self.directory {
                Some(d) => d.is_approver(&stage.approvers, user).await?,
                None => listed_directly(&stage.approvers, user),
            };
            if listed {
                named.push(stage.name.clone());
            }
        }
        Ok(named)
    }

    /// Whether the Slack user `user` asked for `request` (the requester may be an email). A
    /// request made by an earlier build may keep its requester as written (`<@U0ALICE>`): it
    /// is read as the person it names.
    pub(super) async fn asked_by(&self, request: &Request, user: &str) -> ServiceResult<bool> {
        let Some(requester) = request.requester.as_deref().map(requester_as_stored) else {
            return Ok(false);
        };
        Ok(match &self.directory {
            Some(d) => d.user_id(&requester).await?.as_deref() == Some(user),
            None => requester == user,
        })
    }

    /// The pending requests `user` may vote on now, newest first, at most `limit`: those of
    /// workflows they approve in (or that name no approvers), minus the ones they asked for
    /// where self-approval is off, minus the ones they voted on already, minus those of a
    /// workflow with stages where none of their stages is open. The Home tab and
    /// `/greenlight pending` both list this; a vote is checked the same way when it comes.
    pub async fn votable(&self, user: &str, limit: u32) -> ServiceResult<Votable> {
        let mut workflows = Vec::new();
        let mut not_own_in = Vec::new();
        let mut unchecked = Vec::new();
        // The stages they approve in, for the workflows written with stages.
        let mut staged: Vec<(&WorkflowName, Vec<String>)> = Vec::new();
        for w in &self.workflows {
            match self.stages_of(w, user).await {
                Ok(stages) if !stages.is_empty() => {
                    workflows.push(w.name.clone());
                    if !w.allow_self_approval {
                        not_own_in.push(w.name.clone());
                    }
                    if w.has_stages() {
                        staged.push((&w.name, stages));
                    }
                }
                Ok(_) => {}
                Err(ServiceError::Lookup(e)) => {
                    tracing::warn!(workflow = %w.name, error = %e, "cannot tell who approves in this workflow");
                    unchecked.push(w.name.clone());
                }
                Err(e) => return Err(e),
            }
        }
        let page = self
            .store
            .votable_requests(&VotableFilter {
                workflows: workflows.clone(),
                voter: user.to_owned(),
                not_own_in: not_own_in.clone(),
                limit,
            })
            .await?;
        // The store leaves out requests whose requester is this user id; one asked for by
        // email is found out here (cached lookups).
        let mut requests = Vec::with_capacity(page.requests.len());
        let mut total = page.total;
        for r in page.requests {
            let own = r.requester.as_deref().is_some_and(|q| q.contains('@'))
                && not_own_in.contains(&r.workflow)
                && self.asked_by(&r, user).await.unwrap_or(false);
            // In a workflow with stages, only while one of their stages is open.
            let not_their_turn = staged.iter().any(|(w, theirs)| {
                **w == r.workflow
                    && !r
                        .open_stages(&self.policy(&r))
                        .iter()
                        .any(|open| theirs.contains(open))
            });
            if own || not_their_turn {
                total = total.saturating_sub(1);
            } else {
                requests.push(r);
            }
        }
        Ok(Votable {
            requests,
            total,
            workflows,
            unchecked,
        })
    }

    /// Everything `user`'s Home tab shows.
    pub async fn home_page(&self, user: &str) -> ServiceResult<HomePage> {
        let waiting = self.votable(user, WAITING_LIMIT).await?;
        let mine = self.store.requests_by(user, MINE_LIMIT).await?;
        let since = self.now_ms() - ms(DECIDED_WITHIN);
        let decided = self
            .store
            .recently_decided(&waiting.workflows, user, since, DECIDED_LIMIT)
            .await?;
        let standing = self
            .store
            .live_standing_granted_by(user, self.now_ms())
            .await?;
        Ok(HomePage {
            waiting,
            mine,
            decided,
            standing,
        })
    }

    /// How a request's workflow renders it.
    pub fn look_of(&self, request: &Request) -> Look {
        self.workflow_of(request).map(Look::of).unwrap_or_default()
    }

    /// `user` opened the Home tab (or clicked in it): remember it, so changes refresh it for
    /// the next hour, and publish it now (`notice` on top), through the outbox.
    pub async fn home_opened(&self, user: &str, notice: Option<String>) -> ServiceResult<()> {
        let now = self.now_ms();
        let refresh = Effect::SlackHomeRefresh {
            user: user.to_owned(),
            notice,
        };
        self.store
            .record_home_opened(user, now, now - ms(HOME_FORGET), &[refresh])
            .await?;
        self.remember_viewer(user);
        self.outbox.notify_one();
        Ok(())
    }

    fn remember_viewer(&self, user: &str) {
        let mut cached = self
            .viewers
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((_, list)) = cached.as_mut()
            && !list.iter().any(|v| v == user)
        {
            Arc::make_mut(list).insert(0, user.to_owned());
        }
    }

    /// Who opened the Home tab within `HOME_WINDOW` (read at most once a second).
    async fn recent_viewers(&self) -> Arc<Vec<String>> {
        {
            let cached = self
                .viewers
                .cached
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some((at, list)) = cached.as_ref()
                && at.elapsed() < VIEWERS_FRESH
            {
                return list.clone();
            }
        }
        let since = self.now_ms() - ms(HOME_WINDOW);
        match self.store.home_viewers(since, MAX_VIEWERS).await {
            Ok(found) => {
                let list = Arc::new(found);
                *self
                    .viewers
                    .cached
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), list.clone()));
                list
            }
            Err(e) => {
                // A missed refresh is corrected by the next opening; the change goes on.
                tracing::warn!(error = %e, "cannot read who has the Home tab open");
                Arc::default()
            }
        }
    }

    /// Refreshes of the open Home tabs a change of `request` concerns: its requester's, its
    /// voters', and those of the people who may vote on it. Decided from caches only, since it
    /// runs before the change is written (a group not looked up yet counts as concerned).
    pub(super) async fn home_refreshes(&self, request: &Request) -> Vec<Effect> {
        let viewers = self.recent_viewers().await;
        if viewers.is_empty() {
            return Vec::new();
        }
        let workflow = self.workflow_of(request);
        viewers
            .iter()
            .filter(|v| {
                request.requester.as_deref() == Some(v.as_str())
                    || request
                        .decisions
                        .iter()
                        .any(|d| d.kind == DecisionKind::User && d.by == **v)
                    || workflow.is_some_and(|w| self.may_vote_cached(w, v))
            })
            .map(|v| Effect::SlackHomeRefresh {
                user: v.clone(),
                notice: None,
            })
            .collect()
    }

    /// A refresh of `user`'s Home tab when they looked at it within the hour.
    pub(super) async fn home_refresh_of(&self, user: &str) -> Option<Effect> {
        self.recent_viewers()
            .await
            .iter()
            .any(|v| v == user)
            .then(|| Effect::SlackHomeRefresh {
                user: user.to_owned(),
                notice: None,
            })
    }

    fn may_vote_cached(&self, workflow: &Workflow, user: &str) -> bool {
        workflow.stages().iter().any(|stage| match &self.directory {
            Some(d) => d.is_approver_cached(&stage.approvers, user).unwrap_or(true),
            None => listed_directly(&stage.approvers, user),
        })
    }
}

/// Whether `approvers` lets `user` vote without asking Slack: it names them, or nobody.
fn listed_directly(approvers: &[Approver], user: &str) -> bool {
    approvers.is_empty()
        || approvers
            .iter()
            .any(|a| matches!(a, Approver::User(u) if u.as_str() == user))
}

/// Why an event was not taken.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the event has no well-formed user (U or W, then capital letters and digits)")]
    User,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// An Events API callback, over HTTP or Socket Mode: `app_home_opened` on the Home tab
/// publishes it; every other event is ignored. Returns whether it was taken.
pub async fn on_event(service: &Service, callback: &EventCallback) -> Result<bool, EventError> {
    let Some(event) = &callback.event else {
        return Ok(false);
    };
    // The Messages tab (`tab: "messages"`) opens the app's DM, not the Home tab.
    if event.kind != "app_home_opened" || event.tab.as_deref().is_some_and(|t| t != "home") {
        return Ok(false);
    }
    let user = event
        .user
        .as_deref()
        .filter(|u| SlackUserId::looks_like(u))
        .ok_or(EventError::User)?;
    metrics::counter!("greenlight_home_opened_total").increment(1);
    service.home_opened(user, None).await?;
    Ok(true)
}

#[async_trait::async_trait]
impl HomeTabs for Service {
    async fn home_view(
        &self,
        user: &str,
        notice: Option<&str>,
    ) -> Result<slack_morphism::prelude::SlackView, String> {
        let page = self.home_page(user).await.map_err(|e| e.to_string())?;
        let waiting: Vec<(&Request, Look)> = page
            .waiting
            .requests
            .iter()
            .map(|r| (r, self.look_of(r)))
            .collect();
        let unchecked: Vec<&str> = page.waiting.unchecked.iter().map(|w| w.as_str()).collect();
        Ok(crate::slack::home::view(&HomeTab {
            waiting: &waiting,
            more_waiting: page.waiting.more(),
            more_at_least: page.waiting.total >= crate::store::VOTABLE_COUNT_CAP,
            unchecked: &unchecked,
            mine: &page.mine,
            decided: &page.decided,
            standing: &page.standing,
            notice,
        }))
    }
}
