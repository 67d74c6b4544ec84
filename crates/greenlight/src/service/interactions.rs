//! What a click or a modal submission means, whichever way it arrived (HTTP interactivity or
//! Socket Mode). Both transports ack with `Handled::ack_payload`.

use crate::domain::{DecisionKind, Request, RequestId, Verdict, Vote, VoteRejected};
use crate::service::workspaces::Origin;
use crate::service::{Service, ServiceError, VoteResult};
use crate::slack::interaction::{
    AnswersGiven, Click, DenyReason, Gesture, GestureError, IdentityError, Place, StandingGrant,
};
use crate::slack::render::{self, REASON_BLOCK, STANDING_BLOCK};

#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    Decided,
    Counted,
    /// The click changed nothing; the user was told why.
    Refused(&'static str),
    Ignored,
    /// A Deny click opened the modal asking why; the vote comes with its submission.
    ModalOpened,
    /// The modal stays open showing these errors (the ack body).
    InvalidSubmission(serde_json::Value),
}

impl Handled {
    /// What to answer Slack with: nothing (an empty 200 / plain ack) or a modal response.
    pub fn ack_payload(&self) -> Option<serde_json::Value> {
        match self {
            Handled::InvalidSubmission(v) => Some(v.clone()),
            _ => None,
        }
    }

    pub fn outcome(&self) -> &'static str {
        match self {
            Handled::Decided => "decided",
            Handled::Counted => "counted",
            Handled::Refused(why) => why,
            Handled::Ignored => "ignored",
            Handled::ModalOpened => "modal_opened",
            Handled::InvalidSubmission(_) => "invalid_submission",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InteractionError {
    #[error("the payload is missing {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<GestureError> for InteractionError {
    fn from(e: GestureError) -> Self {
        match e {
            GestureError::Malformed(what) => InteractionError::Malformed(what),
            GestureError::Identity(id) => InteractionError::Identity(id),
        }
    }
}

/// Acts on what a person did in Slack, read from the payload by the adapter
/// (`Interaction::gesture`). A click or a deny reason from a workspace that may not vote
/// counts for nothing: the person is told, and the refusal is audited.
pub async fn handle(service: &Service, gesture: Gesture) -> Result<Handled, InteractionError> {
    match gesture {
        Gesture::Click(c) => match service.origin(&c.actor.team).await {
            Origin::Allowed => click(service, c).await,
            refused => refuse_elsewhere(service, &c, refused).await,
        },
        Gesture::DenyReason(d) => match service.origin(&d.actor.team).await {
            Origin::Allowed => submission(service, d).await,
            refused => {
                let (user, team) = (&d.actor.user, &d.actor.team);
                service
                    .audit_refused_vote(user, team, Some(&d.request), Verdict::Deny, refused)
                    .await?;
                Ok(modal_error(elsewhere_text(refused)))
            }
        },
        Gesture::ApproveFor(c) => match service.origin(&c.actor.team).await {
            Origin::Allowed => approve_for(service, c).await,
            refused => refuse_elsewhere(service, &c, refused).await,
        },
        Gesture::StandingGrant(g) => match service.origin(&g.actor.team).await {
            Origin::Allowed => standing_submission(service, g).await,
            refused => {
                let (user, team) = (&g.actor.user, &g.actor.team);
                service
                    .audit_refused_vote(user, team, Some(&g.request), Verdict::Approve, refused)
                    .await?;
                Ok(modal_error_at(STANDING_BLOCK, elsewhere_text(refused)))
            }
        },
        Gesture::Answers(a) => match service.origin(&a.actor.team).await {
            Origin::Allowed => answered(service, a).await,
            refused => {
                let (user, team) = (&a.actor.user, &a.actor.team);
                service
                    .audit_refused_vote(user, team, Some(&a.request), Verdict::Approve, refused)
                    .await?;
                let block = first_field_block(service, &a.request).await;
                Ok(modal_error_at(&block, elsewhere_text(refused)))
            }
        },
        Gesture::RevokeStanding {
            actor,
            standing,
            place,
        } => revoke_standing(service, &actor.user, &standing, &place).await,
        Gesture::Other => Ok(Handled::Ignored),
    }
}

/// A Revoke button of a standing approval (the Home tab's, or the granting message's): only
/// the person who granted it ends it this way (an admin key may too, over the API). The tab
/// and the message are refreshed by the revocation; a refusal is told where the click was.
async fn revoke_standing(
    service: &Service,
    user: &str,
    standing: &str,
    place: &Place,
) -> Result<Handled, InteractionError> {
    let found = match standing.parse::<crate::domain::StandingId>() {
        Ok(id) => service.standing_approval(&id).await?,
        Err(_) => None,
    };
    let notice = match found {
        Some(s) if s.granted_by == user => match service.revoke_standing(&s.id, user).await {
            Ok(_) => None,
            Err(ServiceError::NotFound(_)) => {
                Some("That standing approval had already ended.".to_owned())
            }
            Err(e) => return Err(e.into()),
        },
        Some(_) => {
            Some("Only the person who granted a standing approval can revoke it here.".to_owned())
        }
        None => Some("greenlight does not know that standing approval.".to_owned()),
    };
    let refused = notice.is_some();
    match (place, notice) {
        (Place::Home, notice) => service.home_opened(user, notice).await?,
        (at, Some(text)) => tell(service, at, user, text).await?,
        (_, None) => {}
    }
    Ok(if refused {
        Handled::Refused("standing_not_revoked")
    } else {
        Handled::Decided
    })
}

/// "Approve for…": if this person's approval would count, opens the modal asking how long
/// (the vote comes with its submission).
async fn approve_for(service: &Service, c: Click) -> Result<Handled, InteractionError> {
    let user = c.actor.user.clone();
    let Some(id) = c.request.clone() else {
        tell(service, &c.place, &user, UNKNOWN.into()).await?;
        return Ok(Handled::Refused("unknown_request"));
    };
    let vote = person_vote(&c);
    let request = match counting(service, &c.place, &id, &vote).await? {
        Ok(request) => request,
        Err(refused) => return Ok(refused),
    };
    let Some(bound) = service.workflow_of(&request).and_then(|w| w.allow_standing) else {
        tell(
            service,
            &c.place,
            &user,
            "This workflow does not allow standing approvals any more; use Approve.".into(),
        )
        .await?;
        return Ok(Handled::Refused("standing_not_allowed"));
    };
    open_now(
        service,
        c.trigger_id,
        render::standing_modal(&request, bound),
        "standing-approval",
    )
}

/// The "Approve for…" modal was submitted: a duration that is not one, or over the
/// workflow's `allow_standing`, keeps it open; otherwise the approval is cast and, when it
/// decides the request, the standing approval is granted.
async fn standing_submission(
    service: &Service,
    g: StandingGrant,
) -> Result<Handled, InteractionError> {
    let error = |text: &str| Ok(modal_error_at(STANDING_BLOCK, text));
    let Ok(duration) = g.duration.parse::<crate::domain::DurationSpec>() else {
        return error("Give a duration such as 30m, 2h or 1d.");
    };
    let vote = Vote {
        by: g.actor.user,
        name: g.actor.handle,
        kind: DecisionKind::User,
        verdict: Verdict::Approve,
        reason: None,
        stage: None,
        response: None,
        edits: None,
    };
    match service.approve_for(&g.request, vote, duration).await {
        Ok(VoteResult::Decided(_)) => Ok(Handled::Decided),
        Ok(VoteResult::Counted(_)) => Ok(Handled::Counted),
        Err(ServiceError::NotFound(_)) => error(UNKNOWN),
        Err(ServiceError::StandingNotAllowed(why)) => error(&why),
        Err(ServiceError::Rejected(r)) => {
            let waiting = waiting(service, &g.request, &r, false).await;
            error(&refusal_text(&r, waiting, false))
        }
        Err(e) => Err(e.into()),
    }
}

/// A click from a workspace that may not vote: audited, and the person told.
async fn refuse_elsewhere(
    service: &Service,
    c: &Click,
    refused: Origin,
) -> Result<Handled, InteractionError> {
    let (user, team) = (&c.actor.user, &c.actor.team);
    service
        .audit_refused_vote(user, team, c.request.as_ref(), c.verdict, refused)
        .await?;
    tell(service, &c.place, user, elsewhere_text(refused).into()).await?;
    Ok(Handled::Refused(refused.code()))
}

/// Why a click from a workspace that may not vote did not count.
fn elsewhere_text(origin: Origin) -> &'static str {
    match origin {
        Origin::Unknown => {
            "greenlight cannot tell right now which Slack workspace may vote; your click did not count. Please try again shortly."
        }
        _ => {
            "Only people of the Slack workspace greenlight is installed in may vote; your click from another workspace did not count."
        }
    }
}

/// The clicker's vote, as the button says (an "Approve for…" click is an approval).
fn person_vote(c: &Click) -> Vote {
    Vote {
        by: c.actor.user.clone(),
        name: c.actor.handle.clone(),
        kind: DecisionKind::User,
        verdict: c.verdict,
        reason: None,
        stage: None,
        response: None,
        edits: None,
    }
}

async fn click(service: &Service, c: Click) -> Result<Handled, InteractionError> {
    let user = c.actor.user.as_str();
    let Some(id) = c.request.clone() else {
        tell(service, &c.place, user, UNKNOWN.into()).await?;
        return Ok(Handled::Refused("unknown_request"));
    };
    let vote = person_vote(&c);
    let request = match service.get(&id).await {
        Ok(request) => Some(request),
        Err(ServiceError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    match request
        .as_ref()
        .and_then(|r| modal_for(service, r, c.verdict))
    {
        Some(Modal::Reason) => return ask_why(service, c.trigger_id, &c.place, &id, vote).await,
        Some(Modal::Answers) => {
            return ask_answers(service, c.trigger_id, &c.place, &id, vote).await;
        }
        None => {}
    }
    // The vote starts from the request just read (and reads it again only if it changed).
    let voted = match request {
        Some(request) => service.vote_on(request, vote).await,
        None => service.vote(&id, vote).await,
    };
    let handled = match voted {
        Ok(VoteResult::Decided(_)) => Handled::Decided,
        Ok(VoteResult::Counted(_)) => Handled::Counted,
        Err(e) => return refuse(service, &c.place, user, &id, e).await,
    };
    if c.place == Place::Home {
        // The tab is open (the click came from it): refresh it even if it was opened long
        // ago; this collapses with the refresh the vote queued when it was recent.
        service.home_opened(user, None).await?;
    }
    Ok(handled)
}

const UNKNOWN: &str = "greenlight does not know this request.";

/// A modal a click opens before its vote is cast.
enum Modal {
    /// Deny, where the workflow wants a reason.
    Reason,
    /// Approve (or Answer) on a request with fields.
    Answers,
}

fn modal_for(service: &Service, request: &Request, verdict: Verdict) -> Option<Modal> {
    match verdict {
        Verdict::Deny
            if service
                .workflow_of(request)
                .is_some_and(|w| w.require_deny_reason) =>
        {
            Some(Modal::Reason)
        }
        Verdict::Approve
            if !request.fields.is_empty() || render::editable_params(request).next().is_some() =>
        {
            Some(Modal::Answers)
        }
        _ => None,
    }
}

/// The request `vote` is about, if that vote would count; otherwise the voter is told why,
/// and the refusal is what the click came to.
async fn counting(
    service: &Service,
    at: &Place,
    id: &RequestId,
    vote: &Vote,
) -> Result<Result<Request, Handled>, InteractionError> {
    match service.check_vote(id, vote).await {
        Ok(request) => Ok(Ok(request)),
        Err(e) => Ok(Err(refuse(service, at, &vote.by, id, e).await?)),
    }
}

/// Opens the modal asking the request's fields, if this approval would count (see `ask_why`).
async fn ask_answers(
    service: &Service,
    trigger: Option<String>,
    at: &Place,
    id: &RequestId,
    vote: Vote,
) -> Result<Handled, InteractionError> {
    let request = match counting(service, at, id, &vote).await? {
        Ok(request) => request,
        Err(refused) => return Ok(refused),
    };
    open_now(service, trigger, render::answers_modal(&request), "answers")
}

/// The answers modal was submitted: each answer is checked against its field (a bad one keeps
/// the modal open with the error under that field); then the approval is cast with them.
async fn answered(service: &Service, a: AnswersGiven) -> Result<Handled, InteractionError> {
    let request = match service.get(&a.request).await {
        Ok(r) => r,
        Err(ServiceError::NotFound(_)) => {
            return Ok(modal_error_at(REASON_BLOCK, UNKNOWN));
        }
        Err(e) => return Err(e.into()),
    };
    let block = request
        .fields
        .first()
        .map(|f| render::field_block(&f.name))
        .or_else(|| {
            render::editable_params(&request)
                .next()
                .map(|(p, _)| render::edit_block(p))
        })
        .unwrap_or_else(|| REASON_BLOCK.to_owned());
    let mut given = a.answers;
    let checked = crate::domain::answer_all(&request.fields, |f| {
        f.read(
            given
                .remove(&f.name)
                .unwrap_or(crate::domain::RawAnswer::Text(None)),
        )
    });
    // Each editable param keeps its type; one left out of the state keeps its value.
    let mut errors: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    let mut edits = crate::domain::Params::new();
    for (param, old) in render::editable_params(&request) {
        let Some(raw) = a.edits.get(param) else {
            continue;
        };
        match crate::domain::check_edit(old, raw.clone()) {
            Ok(new) => {
                edits.insert(param.to_owned(), new);
            }
            Err(why) => {
                errors.insert(render::edit_block(param), why.into());
            }
        }
    }
    if let Err(bad) = &checked {
        for (name, why) in bad {
            errors.insert(render::field_block(name), why.clone().into());
        }
    }
    if !errors.is_empty() {
        return Ok(Handled::InvalidSubmission(serde_json::json!({
            "response_action": "errors",
            "errors": errors,
        })));
    }
    let response = checked.ok().filter(|r| !r.is_empty());
    let vote = Vote {
        by: a.actor.user,
        name: a.actor.handle,
        kind: DecisionKind::User,
        verdict: Verdict::Approve,
        reason: None,
        stage: None,
        response,
        edits: (!edits.is_empty()).then_some(edits),
    };
    match service.vote(&a.request, vote).await {
        Ok(VoteResult::Decided(_)) => Ok(Handled::Decided),
        Ok(VoteResult::Counted(_)) => Ok(Handled::Counted),
        Err(ServiceError::Rejected(r)) => {
            let waiting = waiting(service, &a.request, &r, false).await;
            Ok(modal_error_at(&block, &refusal_text(&r, waiting, false)))
        }
        Err(ServiceError::Lookup(_)) => Ok(modal_error_at(&block, LOOKUP_FAILED)),
        Err(ServiceError::InvalidResponse(why)) => Ok(modal_error_at(&block, &why)),
        Err(e) => Err(e.into()),
    }
}

/// The block id of the first input of a request's answers modal (where a refusal is shown).
async fn first_field_block(service: &Service, id: &RequestId) -> String {
    service
        .get(id)
        .await
        .ok()
        .and_then(|r| r.fields.first().map(|f| render::field_block(&f.name)))
        .unwrap_or_else(|| REASON_BLOCK.to_owned())
}

/// Opens `view` with the click's trigger. The trigger lives 3 seconds, so views.open runs now,
/// beside the ack rather than after an outbox round trip; the caller acks at once whatever
/// happens to it.
fn open_now(
    service: &Service,
    trigger: Option<String>,
    view: slack_morphism::prelude::SlackView,
    what: &'static str,
) -> Result<Handled, InteractionError> {
    let trigger = trigger.ok_or(InteractionError::Malformed("trigger_id"))?;
    let Some(slack) = service.slack().cloned() else {
        tracing::warn!(modal = what, "no Slack client to open the modal with");
        return Ok(Handled::Ignored);
    };
    tokio::spawn(async move {
        if let Err(e) = slack.open_view(&trigger, view).await {
            tracing::warn!(error = %e, modal = what, "cannot open the modal");
        }
    });
    Ok(Handled::ModalOpened)
}

/// Opens the modal asking why, if this deny would count (see `open_now`).
async fn ask_why(
    service: &Service,
    trigger: Option<String>,
    at: &Place,
    id: &RequestId,
    vote: Vote,
) -> Result<Handled, InteractionError> {
    let request = match counting(service, at, id, &vote).await? {
        Ok(request) => request,
        Err(refused) => return Ok(refused),
    };
    open_now(
        service,
        trigger,
        render::deny_reason_modal(&request),
        "deny-reason",
    )
}

/// The deny-reason modal was submitted: an empty reason keeps it open; otherwise the deny is
/// cast with its reason.
async fn submission(service: &Service, d: DenyReason) -> Result<Handled, InteractionError> {
    if d.reason.is_empty() {
        return Ok(modal_error("Please say why you deny this request."));
    }
    if let Err(e) = super::intake::storable("the reason", &d.reason) {
        return Ok(modal_error(&e.message));
    }
    let reason: String = d.reason.chars().take(1000).collect();
    let vote = Vote {
        by: d.actor.user,
        name: d.actor.handle,
        kind: DecisionKind::User,
        verdict: Verdict::Deny,
        reason: Some(reason),
        stage: None,
        response: None,
        edits: None,
    };
    match service.vote(&d.request, vote).await {
        Ok(VoteResult::Decided(_)) => Ok(Handled::Decided),
        Ok(VoteResult::Counted(_)) => Ok(Handled::Counted),
        Err(ServiceError::NotFound(_)) => Ok(modal_error(UNKNOWN)),
        Err(ServiceError::Rejected(r)) => {
            let waiting = waiting(service, &d.request, &r, false).await;
            Ok(modal_error(&refusal_text(&r, waiting, false)))
        }
        Err(ServiceError::Lookup(_)) => Ok(modal_error(LOOKUP_FAILED)),
        Err(e) => Err(e.into()),
    }
}

fn modal_error(text: &str) -> Handled {
    modal_error_at(REASON_BLOCK, text)
}

/// The modal stays open with `text` under its input block `block`.
fn modal_error_at(block: &str, text: &str) -> Handled {
    Handled::InvalidSubmission(serde_json::json!({
        "response_action": "errors",
        "errors": { block: text },
    }))
}

const LOOKUP_FAILED: &str =
    "greenlight cannot check who may decide this request right now; please try again shortly.";

/// Whom the request waits for, when a vote was refused for being in no open stage of a
/// workflow with stages (none otherwise, or when the request cannot be read).
async fn waiting(
    service: &Service,
    id: &RequestId,
    r: &VoteRejected,
    mrkdwn: bool,
) -> Option<String> {
    if !matches!(
        r,
        VoteRejected::NotYourStage { .. } | VoteRejected::NotAnApprover { .. }
    ) {
        return None;
    }
    let request = service.get(id).await.ok()?;
    service
        .workflow_of(&request)
        .filter(|w| w.has_stages())
        .map(|_| service.waiting_for(&request, mrkdwn))
}

/// Why a vote did not count, in words for the voter (`mrkdwn`: mentions allowed); `waiting`
/// names the open stages of a workflow with stages.
fn refusal_text(r: &VoteRejected, waiting: Option<String>, mrkdwn: bool) -> String {
    if let Some(waiting) = waiting {
        return format!(
            "{waiting}. You are not an approver of an open stage, so your click did not count."
        );
    }
    match r {
        VoteRejected::NotPending { status, decided_by } => {
            let by = decided_by
                .as_deref()
                .map(|b| {
                    if mrkdwn {
                        format!(" by {}", render::who(b))
                    } else {
                        format!(" by {b}")
                    }
                })
                .unwrap_or_default();
            format!("This request was already {}{by}.", status.as_str())
        }
        VoteRejected::AlreadyVoted { .. } => "You have already voted on this request.".into(),
        VoteRejected::NotAnApprover { workflow, .. } => {
            format!("You are not an approver for {workflow}; your click did not count.")
        }
        VoteRejected::SelfApproval => {
            "You asked for this request, so you cannot approve it yourself.".into()
        }
        VoteRejected::NotYourStage { open, .. } => format!(
            "This request waits for {}; your click did not count.",
            open.join(", ")
        ),
        VoteRejected::StageNotOpen { stage, .. } => {
            format!("Stage {stage} is not open; your click did not count.")
        }
    }
}

async fn refuse(
    service: &Service,
    at: &Place,
    user: &str,
    id: &RequestId,
    e: ServiceError,
) -> Result<Handled, InteractionError> {
    let (text, why) = match &e {
        ServiceError::NotFound(_) => (UNKNOWN.to_owned(), "unknown_request"),
        ServiceError::Rejected(r) => (
            refusal_text(r, waiting(service, id, r, true).await, true),
            e.code(),
        ),
        ServiceError::Lookup(_) => (LOOKUP_FAILED.to_owned(), "lookup_failed"),
        _ => return Err(e.into()),
    };
    tell(service, at, user, text).await?;
    Ok(Handled::Refused(why))
}

async fn tell(service: &Service, at: &Place, user: &str, text: String) -> Result<(), ServiceError> {
    match at {
        Place::Channel(channel) => service.notify_user(channel, user, text).await,
        // Published with the tab as it is now, which also shows why (decided, voted).
        Place::Home => service.home_opened(user, Some(text)).await,
    }
}
