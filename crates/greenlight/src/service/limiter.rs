//! The per-key limit on creates (a token bucket per API key), the cap on long-polls at once,
//! and how many signals there may be and how long lapsed ones are kept.

use std::sync::Arc;

use super::{Service, ServiceError, ServiceResult};
use crate::store::ApiKey;

/// Per-key pace of creates, the long-polls allowed at once, and the signals' bounds.
pub(super) struct Limits {
    pub(super) per_minute: u32,
    pub(super) buckets:
        std::sync::Mutex<std::collections::HashMap<crate::domain::ApiKeyId, crate::domain::Bucket>>,
    pub(super) waiters: Arc<tokio::sync::Semaphore>,
    pub(super) max_waiters: usize,
    /// Signals stored at most (`[limits] max_signals`).
    pub(super) max_signals: u32,
    /// How long a lapsed signal is kept (`[limits] signal_retention`).
    pub(super) signal_retention: crate::domain::DurationSpec,
}

impl Limits {
    pub(super) fn new(per_minute: u32, max_waiters: usize) -> Self {
        Self {
            per_minute,
            buckets: Default::default(),
            waiters: Arc::new(tokio::sync::Semaphore::new(max_waiters)),
            max_waiters,
            max_signals: 10_000,
            signal_retention: crate::domain::DurationSpec::from_secs(7 * 24 * 3600)
                .unwrap_or_else(|_| unreachable!()),
        }
    }

    fn pace(&self) -> crate::domain::Pace {
        crate::domain::Pace {
            per_second: f64::from(self.per_minute) / 60.0,
            burst: self.per_minute,
        }
    }
}

impl Service {
    /// Takes one create from the key's allowance, or says how long until there is one.
    pub(super) fn take_create(&self, key: &ApiKey) -> ServiceResult<()> {
        let pace = self.limits.pace();
        let now = self.now_ms();
        let mut buckets = self
            .limits
            .buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let bucket = buckets
            .entry(key.id.clone())
            .or_insert_with(|| crate::domain::Bucket::full(pace, now));
        // The waiting slot a refused call would get is not kept: it did not wait.
        let next_slot = bucket.next_slot;
        match bucket.take(now, pace) {
            Ok(()) => Ok(()),
            Err(at) => {
                bucket.next_slot = next_slot;
                metrics::counter!("greenlight_rate_limited_total").increment(1);
                let wait_ms = (at - now).max(1);
                Err(ServiceError::RateLimited {
                    per_minute: self.limits.per_minute,
                    retry_after_secs: u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1),
                })
            }
        }
    }
}
