//! The timer loop: expires requests and posts reminders when they fall due, and deletes
//! signals past their retention. Time comes from the injected clock, and the loop looks often,
//! so advancing a test clock is all a test needs. It starts with a pass, so a request that
//! expired while the server was down is expired at once; each decision goes through the
//! service's compare-and-set, so it never races a click into two decisions.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::service::Service;

/// How often the store is asked what is due. Expiry and reminders are minute-scale; this only
/// bounds how late they can be.
pub const TICK: Duration = Duration::from_millis(250);

/// How often lapsed signals are looked for (by the service's clock): retention is days-scale.
pub const PURGE_EVERY: Duration = Duration::from_secs(60);

pub struct Scheduler {
    service: Arc<Service>,
}

impl Scheduler {
    pub fn new(service: Arc<Service>) -> Self {
        Self { service }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut next_purge = jiff::Timestamp::MIN;
        let mut timers = crate::store::Retrying::new("look for expired requests");
        loop {
            if self.service.clock().now() >= next_purge {
                match self.service.purge_lapsed_signals().await {
                    // A full batch: more may be lapsed, purge again at the next tick.
                    Ok(n) if n >= crate::service::signals::PURGE_BATCH as usize => {}
                    Ok(_) => next_purge = self.service.clock().now() + PURGE_EVERY,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot delete lapsed signals");
                        next_purge = self.service.clock().now() + PURGE_EVERY;
                    }
                }
            }
            let wait = match self.service.run_timers().await {
                // A full batch: more may be due, look again at once.
                Ok(n) if n >= 100 => {
                    timers.succeeded();
                    continue;
                }
                Ok(_) => {
                    timers.succeeded();
                    TICK
                }
                // The database failing: wait longer each time (capped), log once in a while.
                Err(e) => timers.failed(&e).max(TICK),
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
