//! A request's stages as its workflow has them: where each stands and who approves in it, for
//! the API, the message, the thread replies and the ephemeral of a click that counts for none.

use crate::config::NotifyApprovers;
use crate::domain::{Approver, Request, StageProgress, StageStatus};
use crate::service::{Event, Service};
use crate::slack::render;
use crate::store::{Effect, NewAudit};

/// A stage of a request with the people its workflow lists for it.
#[derive(Debug, Clone)]
pub struct StageView {
    pub progress: StageProgress,
    pub approvers: Vec<Approver>,
}

impl Service {
    /// Every stage of `request` (one, `approvers`, for a workflow without stages), with its
    /// approvers as configured now.
    pub fn stages_of_request(&self, request: &Request) -> Vec<StageView> {
        let workflow = self.workflow_of(request);
        let stages = workflow
            .map(|w| w.stages().into_owned())
            .unwrap_or_default();
        request
            .stages(&self.policy(request))
            .into_iter()
            .map(|progress| StageView {
                approvers: stages
                    .iter()
                    .find(|s| s.name == progress.name)
                    .map(|s| s.approvers.clone())
                    .unwrap_or_default(),
                progress,
            })
            .collect()
    }

    /// "Waiting for *security*: 0 of 2 from …" for the stages open now.
    pub fn waiting_for(&self, request: &Request, mrkdwn: bool) -> String {
        let stages = self.stages_of_request(request);
        let open: Vec<render::StageOf<'_>> = stages
            .iter()
            .filter(|s| s.progress.is_open())
            .map(|s| (&s.progress, s.approvers.as_slice()))
            .collect();
        render::waiting_for(&open, mrkdwn)
    }
}

/// Who acts when a stage opens at creation: greenlight itself.
const SYSTEM_ACTOR: &str = "greenlight";

impl Service {
    /// The approvers of the stages open now (for a workflow without stages, its `approvers`):
    /// whom reminders mention.
    pub(super) fn open_approvers(&self, request: &Request) -> Vec<Approver> {
        let mut out: Vec<Approver> = Vec::new();
        for stage in self.stages_of_request(request) {
            if stage.progress.is_open() {
                for a in stage.approvers {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
        }
        out
    }

    /// What a change of a request's stages sets off, for a workflow written with stages
    /// (one without them behaves as before stages existed): a `stage.approved` audit entry
    /// and callback for each stage met by it, and for each stage it opened a `stage.opened`
    /// entry and a thread reply mentioning that stage's approvers. `before` is the request
    /// as it was (none: it is being created).
    pub(super) fn stage_changes(
        &self,
        before: Option<&Request>,
        after: &Request,
        actor: Option<&str>,
    ) -> (Vec<NewAudit>, Vec<Effect>) {
        let mut audit = Vec::new();
        let mut effects = Vec::new();
        let Some(workflow) = self.workflow_of(after) else {
            return (audit, effects);
        };
        // A workflow without stages tells nobody but as before, unless it asks for copies.
        let staged = workflow.has_stages();
        let copies = workflow.notify_approvers == NotifyApprovers::Dm;
        if !staged && !copies {
            return (audit, effects);
        }
        let was = before.map(|b| self.stages_of_request(b));
        let was_status = |name: &str| {
            was.as_ref().and_then(|was| {
                was.iter()
                    .find(|s| s.progress.name == name)
                    .map(|s| s.progress.status)
            })
        };
        let actor = actor.unwrap_or(SYSTEM_ACTOR);
        for stage in self.stages_of_request(after) {
            let name = stage.progress.name.as_str();
            let then = was_status(name);
            let entry = |event: &'static str| NewAudit {
                request_id: Some(after.id.clone()),
                event,
                actor: actor.to_owned(),
                data: serde_json::json!({
                    "stage": name,
                    "approvals": stage.progress.approvals.len(),
                    "approvals_required": stage.progress.approvals_required,
                }),
            };
            let now = stage.progress.status;
            let became = |status: StageStatus| now == status && then != Some(status);
            if staged && became(StageStatus::Approved) {
                audit.push(entry(Event::StageApproved.as_str()));
                effects.extend(self.callbacks_about(after, Event::StageApproved, Some(name), None));
            }
            if staged && became(StageStatus::Open) {
                audit.push(entry(STAGE_OPENED));
                effects.push(Effect::SlackThreadReply {
                    request_id: after.id.clone(),
                    text: render::stage_opened_text(after, &stage.progress, &stage.approvers),
                });
            }
            if copies && became(StageStatus::Open) {
                effects.extend(dm_copies(after, &stage.approvers));
            }
        }
        (audit, effects)
    }
}

/// The audit event of a stage that opened.
pub const STAGE_OPENED: &str = "stage.opened";

/// A request as the API shows it: the request, each stage of its workflow with its progress,
/// and how many denials deny it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ApiRequest {
    #[serde(flatten)]
    pub request: Request,
    /// Every stage, in order (a workflow without stages has one, named `approvers`).
    pub stages: Vec<ApiStage>,
    /// Denials that deny the request (`denials_required`, default 1).
    pub denials_required: u32,
}

/// A stage of a request: who approves in it, how many must, where it stands, who did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ApiStage {
    pub name: String,
    /// Slack user and user group ids, as configured (empty: anyone in the channel).
    pub approvers: Vec<String>,
    pub approvals_required: u32,
    pub status: StageStatus,
    pub approvals: Vec<ApiStageApproval>,
}

/// An approval counted for a stage.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ApiStageApproval {
    pub by: String,
    pub at: jiff::Timestamp,
}

impl Service {
    /// `request` as the API shows it to `key` (see `visible_to`), with its stages.
    pub fn shown(&self, request: &Request, key: &crate::store::ApiKey) -> ApiRequest {
        let denials_required = self.policy(request).denials_required.max(1);
        let stages = self
            .stages_of_request(request)
            .into_iter()
            .map(|s| ApiStage {
                name: s.progress.name,
                approvers: s.approvers.iter().map(ToString::to_string).collect(),
                approvals_required: s.progress.approvals_required,
                status: s.progress.status,
                approvals: s
                    .progress
                    .approvals
                    .into_iter()
                    .map(|a| ApiStageApproval { by: a.by, at: a.at })
                    .collect(),
            })
            .collect();
        ApiRequest {
            request: super::visible_to(request, key),
            stages,
            denials_required,
        }
    }
}

/// The copies of the message for a stage's approvers (`notify_approvers = "dm"`); none for a
/// stage that names nobody (anyone in the channel).
fn dm_copies(request: &Request, approvers: &[Approver]) -> Option<Effect> {
    (!approvers.is_empty()).then(|| Effect::SlackDmCopies {
        request_id: request.id.clone(),
        approvers: approvers.iter().map(ToString::to_string).collect(),
    })
}
