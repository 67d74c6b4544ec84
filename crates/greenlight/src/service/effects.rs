//! What a change to a request sets off: the Slack post or update, reminders, signed callbacks
//! and action hooks, planned here and written in the change's own transaction.

use super::Service;
use crate::domain::github::{GithubLink, ReviewState};
use crate::domain::{DecisionKind, Request, SlackUserId, Status};
use crate::slack::render;
use crate::store::Effect;

/// A change to a request: its audit event name and what it sets off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Created,
    /// A vote was counted but did not decide (N of M).
    VoteRecorded,
    Decided(Status),
    Cancelled,
    /// A reminder (its number) was posted in the thread.
    Reminded(u32),
    /// The workflow no longer sends reminders.
    RemindersStopped,
    /// A stage of a workflow with stages got its approvals (callbacks only; the vote that
    /// did it is `VoteRecorded` or `Decided`).
    StageApproved,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Created => "request.created",
            Event::VoteRecorded => "vote.recorded",
            Event::Decided(status) => status_event(status),
            Event::Cancelled => "request.cancelled",
            Event::Reminded(_) => "request.reminded",
            Event::RemindersStopped => "request.reminders_stopped",
            Event::StageApproved => "stage.approved",
        }
    }
}

impl Service {
    /// `effects_for`, plus refreshes of the open Home tabs the change shows on.
    pub(super) async fn effects_of(&self, request: &Request, event: Event) -> Vec<Effect> {
        let mut effects = self.effects_for(request, event).await;
        if matches!(
            event,
            Event::VoteRecorded | Event::Decided(_) | Event::Cancelled
        ) {
            effects.extend(self.home_refreshes(request).await);
        }
        effects
    }

    /// Everything a change sets off, in one place. Written in the same transaction as the
    /// change, delivered by the outbox worker.
    pub(super) async fn effects_for(&self, request: &Request, event: Event) -> Vec<Effect> {
        let request_id = request.id.clone();
        let mut effects = Vec::new();
        match event {
            Event::Created => effects.push(Effect::SlackPost { request_id }),
            Event::VoteRecorded | Event::Decided(_) | Event::Cancelled => {
                effects.push(Effect::SlackUpdate { request_id })
            }
            Event::RemindersStopped => return effects,
            Event::StageApproved => return self.callbacks_for(request, event).await,
            Event::Reminded(n) => {
                let workflow = self.workflow_of(request);
                effects.push(Effect::SlackThreadReply {
                    request_id,
                    text: render::reminder_text(
                        request,
                        &self.open_approvers(request),
                        workflow.and_then(|w| w.escalate_to.as_ref()),
                        n,
                        self.now(),
                    ),
                });
                return effects;
            }
        }
        effects.extend(self.callbacks_for(request, event).await);
        if let Event::Decided(_) = event {
            effects.extend(self.requester_told(request));
        }
        effects.extend(github_review(request, event));
        effects
    }

    /// The requester's direct message with the outcome (`notify_requester`), when a person, a
    /// machine or the clock decided; a rule's decision is told as its workflow's `notify` says.
    fn requester_told(&self, request: &Request) -> Option<Effect> {
        let workflow = self.workflow_of(request)?;
        let requester = request.requester.as_deref()?;
        let by_rule = request
            .decisions
            .last()
            .is_some_and(|d| d.kind == DecisionKind::Policy);
        let reachable = SlackUserId::looks_like(requester) || requester.contains('@');
        (workflow.tells_requester() && !by_rule && reachable).then(|| Effect::SlackDirectMessage {
            request_id: request.id.clone(),
            to: requester.to_owned(),
            text: render::requester_outcome(request),
        })
    }

    /// The signed callbacks (`callback_url`, the workflow's `webhooks`) and, on a decision,
    /// the workflow's action hooks.
    pub(super) async fn callbacks_for(&self, request: &Request, event: Event) -> Vec<Effect> {
        let workflow = self.workflows.iter().find(|w| w.name == request.workflow);
        if request.callback_url.is_none() && workflow.is_none_or(|w| w.webhooks.is_empty()) {
            // No callback to send: no receipt to sign (an Ed25519 signature per decision).
            return self.callbacks_about(request, event, None, None);
        }
        // A decision's callback carries its signed receipt (none while pending).
        let receipt = match self.receipt(request).await {
            Ok(receipt) => receipt,
            Err(e) => {
                tracing::warn!(request = %request.id, error = %e, "cannot sign the receipt; the callback goes without it (GET /v1/requests/{{id}}/receipt has it)");
                None
            }
        };
        self.callbacks_about(request, event, None, receipt.as_deref())
    }

    /// `callbacks_for`, with the stage the event is about and the receipt in the body.
    pub(super) fn callbacks_about(
        &self,
        request: &Request,
        event: Event,
        stage: Option<&str>,
        receipt: Option<&str>,
    ) -> Vec<Effect> {
        let workflow = self.workflows.iter().find(|w| w.name == request.workflow);
        let callback = request.callback_url.iter().map(|u| (u, true));
        let configured = workflow
            .into_iter()
            .flat_map(|w| w.webhooks.iter().map(|u| (u, false)));
        let targets: Vec<(&String, bool)> = callback.chain(configured).collect();
        // The body (the whole request as JSON) only when someone is to receive it: most
        // changes have no callback, and this runs on every vote.
        let (body, webhook_id) = if targets.is_empty() {
            Default::default()
        } else {
            (
                crate::policy::webhook::payload_of_stage(
                    event.as_str(),
                    stage,
                    request,
                    self.now(),
                    receipt,
                ),
                crate::policy::webhook::new_message_id(),
            )
        };
        let mut effects: Vec<Effect> = targets
            .into_iter()
            .map(|(url, guarded)| Effect::Webhook {
                request_id: request.id.clone(),
                url: url.clone(),
                guarded,
                event: event.as_str().to_owned(),
                webhook_id: webhook_id.clone(),
                body: body.clone(),
            })
            .collect();
        let hooks = match (event, workflow) {
            (Event::Decided(Status::Approved), Some(w)) => w.on_approve.as_slice(),
            (Event::Decided(Status::Denied), Some(w)) => w.on_deny.as_slice(),
            _ => &[],
        };
        effects.extend(hooks.iter().map(|hook| Effect::ActionHook {
            request_id: request.id.clone(),
            hook: hook.clone(),
        }));
        effects
    }
}

/// A request the GitHub webhook made tells GitHub: one status report when it is created
/// pending, the review when it is decided, cancelled or expired.
fn github_review(request: &Request, event: Event) -> Option<Effect> {
    let state = match event {
        Event::Created if request.status == Status::Pending => None,
        Event::Decided(_) | Event::Cancelled => Some(ReviewState::for_status(request.status)?),
        _ => return None,
    };
    GithubLink::of(request)?;
    Some(Effect::GithubReview {
        request_id: request.id.clone(),
        state,
    })
}

fn status_event(status: Status) -> &'static str {
    match status {
        Status::Pending => "vote.recorded",
        Status::Approved => "request.approved",
        Status::Denied => "request.denied",
        Status::Expired => "request.expired",
        Status::Cancelled => "request.cancelled",
    }
}
