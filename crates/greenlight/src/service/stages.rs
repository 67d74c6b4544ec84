//! A request's stages as its workflow has them: where each stands and who approves in it, for
//! the API, the message, the thread replies and the ephemeral of a click that counts for none.

use crate::domain::{Approver, Request, StageProgress};
use crate::service::Service;
use crate::slack::render;

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
