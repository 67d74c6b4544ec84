//! Slack's pace for chat.postMessage, about one message a second per channel with short
//! bursts, as a token bucket. Pure arithmetic: where the bucket lives (in memory for one
//! process, in the database for several replicas) is the store's business.

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

#[cfg(test)]
mod tests {
    use super::*;

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
