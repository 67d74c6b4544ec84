//! Slack's pace for chat.postMessage, about one message a second per channel with short
//! bursts, as a token bucket; and the pace of retries and of repeated log lines. Pure
//! arithmetic: where the bucket lives (in memory for one process, in the database for several
//! replicas) is the store's business.

use serde::{Deserialize, Serialize};

use super::Millis;

/// A token bucket: `burst` messages at once, then `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub tokens: f64,
    pub at: Millis,
    /// The next free slot for a waiting post: each waiter gets its own, so a backlog of N posts
    /// is looked at about once each, not N times a second.
    pub next_slot: Millis,
}

/// How fast a bucket refills.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub per_second: f64,
    pub burst: u32,
}

impl Pace {
    fn burst(self) -> f64 {
        f64::from(self.burst.max(1))
    }

    fn per_ms(self) -> f64 {
        self.per_second / 1000.0
    }
}

impl Bucket {
    pub fn full(pace: Pace, now: Millis) -> Self {
        Self {
            tokens: pace.burst(),
            at: now,
            next_slot: now,
        }
    }

    /// Takes a token, or returns the time of this waiter's own slot.
    pub fn take(&mut self, now: Millis, pace: Pace) -> Result<(), Millis> {
        let (burst, per_ms) = (pace.burst(), pace.per_ms());
        let elapsed = (now - self.at).max(0) as f64;
        self.tokens = (self.tokens + elapsed * per_ms).min(burst);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let ready = now + ((1.0 - self.tokens) / per_ms).ceil().max(1.0) as Millis;
        let slot = ready.max(self.next_slot);
        self.next_slot = slot + (1.0 / per_ms).ceil().max(1.0) as Millis;
        Err(slot)
    }
}

/// Waits that double after each failure in a row, from `first` up to `cap`: how a background
/// loop slows down while the database fails, instead of failing hundreds of times a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Millis,
    pub cap: Millis,
}

impl Backoff {
    /// The wait after `failures` failures in a row (the first wait after one).
    pub fn after(self, failures: u32) -> Millis {
        let doublings = failures.saturating_sub(1).min(32);
        self.first
            .max(1)
            .saturating_mul(1_i64 << doublings)
            .min(self.cap.max(self.first))
    }
}

/// At most one report of a repeated event per `every`: the log line of an error that repeats
/// carries how many times it happened since the last line, instead of one line each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Throttle {
    last: Option<Millis>,
    held: u64,
}

impl Throttle {
    pub const fn new() -> Self {
        Self {
            last: None,
            held: 0,
        }
    }

    /// Counts one event at `now`; `Some(n)` when it is time to report, `n` events (this one
    /// included) since the last report.
    pub fn hit(&mut self, now: Millis, every: Millis) -> Option<u64> {
        self.held += 1;
        match self.last {
            Some(last) if now - last < every => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }

    /// Events counted since the last report, and a fresh start.
    pub fn reset(&mut self) -> u64 {
        self.last = None;
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff {
            first: 100,
            cap: 5_000,
        };
        let waits: Vec<Millis> = (1..=8).map(|n| b.after(n)).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
        assert_eq!(b.after(0), 100);
        assert_eq!(b.after(u32::MAX), 5_000, "no overflow");
    }

    #[test]
    fn a_throttle_reports_once_per_period_with_the_count() {
        let mut t = Throttle::default();
        assert_eq!(t.hit(0, 10_000), Some(1), "the first is reported at once");
        let held: Vec<Option<u64>> = (1..=300).map(|i| t.hit(i * 33, 10_000)).collect();
        // 300 events over 9.9 s: none reported; the next after the period carries them all.
        assert!(held.iter().all(Option::is_none));
        assert_eq!(t.hit(10_000, 10_000), Some(301));
        assert_eq!(t.hit(10_001, 10_000), None);
        assert_eq!(t.reset(), 1);
        assert_eq!(
            t.hit(10_002, 10_000),
            Some(1),
            "after a reset the next is reported"
        );
    }

    #[test]
    fn a_burst_then_one_a_second_and_each_waiter_its_own_slot() {
        let pace = Pace {
            per_second: 1.0,
            burst: 3,
        };
        let mut b = Bucket::full(pace, 0);
        assert_eq!(
            (0..3).map(|_| b.take(0, pace)).collect::<Vec<_>>(),
            [Ok(()); 3]
        );
        // Three more posts wait at 1 s, 2 s and 3 s, not all at 1 s.
        let slots: Vec<_> = (0..3).map(|_| b.take(0, pace)).collect();
        assert_eq!(slots, [Err(1000), Err(2000), Err(3000)]);
        assert_eq!(b.take(1000, pace), Ok(()));
    }

    #[test]
    fn a_clock_behind_the_bucket_gains_nothing() {
        let pace = Pace {
            per_second: 1.0,
            burst: 1,
        };
        let mut b = Bucket::full(pace, 5_000);
        assert_eq!(b.take(5_000, pace), Ok(()));
        // Another replica whose clock is a second behind does not refill the bucket.
        assert!(b.take(4_000, pace).is_err());
    }
}
