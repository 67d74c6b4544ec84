//! How a workflow's votes become a decision: its stages (each a quorum of its own people), the
//! order they open in, and how many denials refuse a request. `request.rs` applies it.

use serde::{Deserialize, Serialize};

/// The name of the one stage a workflow without `[[workflow.stage]]` has.
pub const DEFAULT_STAGE: &str = "approvers";

/// Whether stages open one after the other or all at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StagesOrder {
    /// Only the first stage not yet approved is open.
    #[default]
    Sequential,
    /// Every stage is open from the start.
    Parallel,
}

impl StagesOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            StagesOrder::Sequential => "sequential",
            StagesOrder::Parallel => "parallel",
        }
    }
}

/// One stage as the policy has it: its name and how many of its people must approve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRule {
    pub name: String,
    pub approvals_required: u32,
}

/// Where a stage stands on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    /// Not open yet (an earlier stage is still open), or no longer open: the request was
    /// decided before this stage was met.
    Waiting,
    /// Its people may vote now.
    Open,
    Approved,
    /// It was open when the request was denied.
    Denied,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Waiting => "waiting",
            StageStatus::Open => "open",
            StageStatus::Approved => "approved",
            StageStatus::Denied => "denied",
        }
    }
}

/// The part of a workflow's configuration that decides how votes become a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Never empty: a workflow without stages has one, `DEFAULT_STAGE`.
    pub stages: Vec<StageRule>,
    pub stages_order: StagesOrder,
    /// Denials (from voters of open stages) that deny the request.
    pub denials_required: u32,
    pub allow_self_approval: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self::single(1)
    }
}

impl Policy {
    /// A policy of one stage: N approvals of M, any deny denies (a workflow without stages).
    pub fn single(approvals_required: u32) -> Self {
        Self {
            stages: vec![StageRule {
                name: DEFAULT_STAGE.to_owned(),
                approvals_required,
            }],
            stages_order: StagesOrder::Sequential,
            denials_required: 1,
            allow_self_approval: false,
        }
    }

    /// Which stages are open, given which are met (one flag per stage, in order).
    pub fn open(&self, met: &[bool]) -> Vec<bool> {
        match self.stages_order {
            StagesOrder::Parallel => met.iter().map(|m| !m).collect(),
            StagesOrder::Sequential => {
                let first = met.iter().position(|m| !m);
                (0..met.len()).map(|i| Some(i) == first).collect()
            }
        }
    }

    /// The stage a vote counts for, by index: the first open stage its voter may vote in
    /// (`eligible`), or none.
    pub fn stage_for(&self, met: &[bool], eligible: impl Fn(usize) -> bool) -> Option<usize> {
        self.open(met)
            .into_iter()
            .enumerate()
            .find(|(i, open)| *open && eligible(*i))
            .map(|(i, _)| i)
    }

    /// Where a stage's index is, by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two(order: StagesOrder) -> Policy {
        Policy {
            stages: vec![
                StageRule {
                    name: "owners".into(),
                    approvals_required: 1,
                },
                StageRule {
                    name: "security".into(),
                    approvals_required: 2,
                },
            ],
            stages_order: order,
            ..Policy::default()
        }
    }

    #[test]
    fn sequential_opens_the_first_unmet_stage_and_parallel_every_unmet_one() {
        let seq = two(StagesOrder::Sequential);
        assert_eq!(seq.open(&[false, false]), [true, false]);
        assert_eq!(seq.open(&[true, false]), [false, true]);
        assert_eq!(seq.open(&[true, true]), [false, false]);
        let par = two(StagesOrder::Parallel);
        assert_eq!(par.open(&[false, false]), [true, true]);
        assert_eq!(par.open(&[true, false]), [false, true]);
        assert_eq!(par.stage_for(&[false, false], |i| i == 1), Some(1));
        assert_eq!(seq.stage_for(&[false, false], |i| i == 1), None);
        assert_eq!(seq.stage_for(&[true, false], |_| true), Some(1));
    }
}
