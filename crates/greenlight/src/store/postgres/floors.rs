//! Where a replica's claims start reading the outbox's due index.
//!
//! A job leaves the due index (`outbox_lane_due`, partial on `state = 'pending'`) when it is
//! delivered, but its entry stays in the index until VACUUM removes it, and autovacuum comes
//! by once a minute at best. Those entries sit at the front of the index (the oldest due
//! times), so a claim reading the index from its start walks every job delivered since the
//! last VACUUM: 80,000 entries, about 2 ms, after ten seconds at 2,000 decisions a second.
//!
//! So a claim starts at a floor: the oldest due time it took last time (less a margin), since
//! what it took was the oldest claimable job then, and what becomes due later has a later due
//! time. Two kinds of job can appear below the floor: a job committed more than the margin
//! after its due time was set (a write that waited long), and a job whose lease was released
//! or ran out (a replica stopped or died). Every `FULL_CLAIM_EVERY` a claim reads the whole
//! index, so such a job waits at most that long: nothing is left behind, and the walk past the
//! delivered entries is paid once a second instead of at every claim.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::Millis;
use crate::store::Lane;

/// A claim reads the whole due index at least this often (milliseconds).
pub(super) const FULL_CLAIM_EVERY: Millis = 1_000;
/// How far below the oldest job it took a claim starts next time (milliseconds): room for
/// writes committed after the due time they were given.
pub(super) const MARGIN: Millis = 500;

#[derive(Default)]
pub(super) struct ClaimFloors {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Per lane, where the next claim starts (`None`: at the start).
    floors: HashMap<&'static str, Millis>,
    /// When a claim last read the whole index.
    last_full: Option<Millis>,
}

impl ClaimFloors {
    /// The floor of each lane for a claim at `now` (`None`: from the start of the index); every
    /// `FULL_CLAIM_EVERY`, none.
    pub(super) fn floors(&self, lanes: &[(Lane, u32)], now: Millis) -> Vec<Option<Millis>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .last_full
            .is_none_or(|at| now.saturating_sub(at) >= FULL_CLAIM_EVERY || now < at)
        {
            state.last_full = Some(now);
            return vec![None; lanes.len()];
        }
        lanes
            .iter()
            .map(|(lane, _)| state.floors.get(lane.as_str()).copied())
            .collect()
    }

    /// A claim at `now` of `lanes` took jobs of these lanes with these due times: the next
    /// claim of a lane starts `MARGIN` below the oldest it took, or below `now` when it took
    /// none (nothing was claimable: whatever becomes due later is due after `now`).
    pub(super) fn claimed<'a>(
        &self,
        lanes: &[(Lane, u32)],
        taken: impl Iterator<Item = (&'a str, Millis)>,
        now: Millis,
    ) {
        let mut oldest: HashMap<&str, Millis> = HashMap::new();
        for (lane, due) in taken {
            let at = oldest.entry(lane).or_insert(due);
            *at = (*at).min(due);
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (lane, _) in lanes {
            let from = oldest.get(lane.as_str()).copied().unwrap_or(now);
            state
                .floors
                .insert(lane.as_str(), from.saturating_sub(MARGIN));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLACK: [(Lane, u32); 2] = [(Lane::Slack, 10), (Lane::Hooks, 10)];

    #[test]
    fn the_first_claim_and_one_a_second_read_the_whole_index() {
        let f = ClaimFloors::default();
        assert_eq!(f.floors(&SLACK, 10_000), [None, None]);
        f.claimed(&SLACK, [("slack", 9_000)].into_iter(), 10_000);
        assert_eq!(f.floors(&SLACK, 10_100), [Some(8_500), Some(9_500)]);
        assert_eq!(f.floors(&SLACK, 10_999), [Some(8_500), Some(9_500)]);
        assert_eq!(f.floors(&SLACK, 11_000), [None, None]);
        // A clock that went back reads everything rather than trusting old floors.
        assert_eq!(f.floors(&SLACK, 10_500), [None, None]);
    }

    #[test]
    fn a_floor_follows_the_oldest_job_taken_and_now_when_none_was() {
        let f = ClaimFloors::default();
        f.floors(&SLACK, 1_000);
        f.claimed(
            &SLACK,
            [("slack", 700), ("slack", 650), ("hooks", 900)].into_iter(),
            1_000,
        );
        assert_eq!(f.floors(&SLACK, 1_001), [Some(150), Some(400)]);
        f.claimed(&SLACK, std::iter::empty(), 1_200);
        assert_eq!(f.floors(&SLACK, 1_201), [Some(700), Some(700)]);
        // A lane not in the claim keeps its floor.
        f.claimed(&[(Lane::Hooks, 1)], std::iter::empty(), 1_300);
        assert_eq!(f.floors(&SLACK, 1_301), [Some(700), Some(800)]);
    }
}
