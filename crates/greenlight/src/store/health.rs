//! How the database is doing, for `/readyz` and for the loops that keep writing to it: whether
//! writes fail for want of storage, and how a loop backs off and logs while they do.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::domain::{Backoff, Millis, Throttle};

use super::StoreError;

/// A repeated error is logged at most this often, with how many times it happened.
pub const LOG_EVERY: Millis = 10_000;
/// A background loop's waits while the database fails: doubling from a quarter second to
/// half a minute.
pub const BACKOFF: Backoff = Backoff {
    first: 250,
    cap: 30_000,
};

/// Whether the last writes failed for want of storage (a full disk, an I/O error, a file that
/// cannot be opened) and none has succeeded since. The store records every write's outcome.
#[derive(Debug, Default)]
pub struct WriteHealth {
    failing: AtomicBool,
    failures: AtomicU64,
}

impl WriteHealth {
    /// Records a write that failed; true when writes were fine until now.
    pub fn failed(&self) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        !self.failing.swap(true, Ordering::AcqRel)
    }

    /// Records a write that landed; `Some(failures)` when writes were failing until now.
    pub fn succeeded(&self) -> Option<u64> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        self.failing
            .swap(false, Ordering::AcqRel)
            .then(|| self.failures.swap(0, Ordering::Relaxed))
    }

    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }
}

/// A background loop's handling of its store errors: the wait before the next try (doubling,
/// capped) and the log (one line per `LOG_EVERY`, with a count, and one when it recovers).
#[derive(Debug)]
pub struct Retrying {
    what: &'static str,
    failures: u32,
    throttle: Throttle,
    started: Instant,
}

impl Retrying {
    /// `what` completes "cannot ...", as in "cannot claim outbox jobs".
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            failures: 0,
            throttle: Throttle::default(),
            started: Instant::now(),
        }
    }

    fn now(&self) -> Millis {
        Millis::try_from(self.started.elapsed().as_millis()).unwrap_or(Millis::MAX)
    }

    /// Counts a failure, logs it if its period has passed, and says how long to wait.
    pub fn failed(&mut self, e: &dyn std::fmt::Display) -> Duration {
        self.failures = self.failures.saturating_add(1);
        if let Some(times) = self.throttle.hit(self.now(), LOG_EVERY) {
            tracing::error!(
                error = %e,
                times,
                failures_in_a_row = self.failures,
                "cannot {}; backing off (this error is logged at most once every {} s)",
                self.what,
                LOG_EVERY / 1000
            );
        }
        Duration::from_millis(u64::try_from(BACKOFF.after(self.failures)).unwrap_or(0))
    }

    /// A try that worked: back to full speed.
    pub fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                failures = self.failures,
                "{} works again after failing",
                self.what
            );
            self.failures = 0;
            self.throttle.reset();
        }
    }
}

/// A repeated log line's throttle, shared by every caller: `hit` says when to log.
pub struct LogThrottle(Mutex<Throttle>);

impl LogThrottle {
    pub const fn new() -> Self {
        Self(Mutex::new(Throttle::new()))
    }

    /// Counts one occurrence; `Some(times)` when it is time to log, with how many occurred
    /// since the last line (this one included).
    pub fn hit(&self) -> Option<u64> {
        static START: LazyLock<Instant> = LazyLock::new(Instant::now);
        let now = Millis::try_from(START.elapsed().as_millis()).unwrap_or(Millis::MAX);
        self.0.lock().ok()?.hit(now, LOG_EVERY)
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new()
    }
}

/// Logs a request's storage failure, at most once per `LOG_EVERY` for the whole process, with
/// how many requests failed so since the last line: a full disk under load is one line every
/// ten seconds, not one per request.
pub fn log_unavailable(e: &dyn std::fmt::Display) {
    static THROTTLE: LogThrottle = LogThrottle::new();
    if let Some(times) = THROTTLE.hit() {
        tracing::error!(
            error = %e,
            times,
            "the database cannot take writes; answering 503 storage_unavailable (logged at most once every {} s)",
            LOG_EVERY / 1000
        );
    }
}

impl StoreError {
    /// The database cannot take writes (or answer) for now: its disk is full, it fails I/O, it
    /// cannot be opened or reached, or it is busy past the timeout. A caller may try again
    /// later; nothing about the request itself is wrong. Everything else (a constraint, data
    /// that cannot be read) is not this.
    pub fn is_unavailable(&self) -> bool {
        use rusqlite::ErrorCode as C;
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                C::DiskFull
                    | C::SystemIoFailure
                    | C::CannotOpen
                    | C::ReadOnly
                    | C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::OutOfMemory
            ),
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
                // Class 53: insufficient resources (53100 disk full); 08: connection
                // exceptions; 57P0x: the server is shutting down or starting.
                sqlx::Error::Database(d) => d.code().is_some_and(|c| {
                    c.starts_with("53") || c.starts_with("08") || c.starts_with("57P0")
                }),
                _ => false,
            },
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_turns_on_the_first_failure_and_off_on_the_first_success() {
        let h = WriteHealth::default();
        assert_eq!(h.succeeded(), None);
        assert!(h.failed());
        assert!(!h.failed());
        assert!(h.failing());
        assert_eq!(h.succeeded(), Some(2));
        assert!(!h.failing());
        assert_eq!(h.succeeded(), None);
    }

    #[test]
    fn a_full_disk_is_unavailable_and_a_constraint_is_not() {
        let failure = |code| {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        assert!(failure(rusqlite::ffi::SQLITE_FULL).is_unavailable());
        assert!(failure(rusqlite::ffi::SQLITE_IOERR_WRITE).is_unavailable());
        assert!(!failure(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE).is_unavailable());
        assert!(!StoreError::Corrupt("x".into()).is_unavailable());
        assert!(StoreError::Unavailable("commit failed".into()).is_unavailable());
    }

    #[test]
    fn a_failing_loop_waits_longer_each_time_and_not_after_a_success() {
        let mut r = Retrying::new("test");
        let waits: Vec<Duration> = (0..4).map(|_| r.failed(&"disk full")).collect();
        assert_eq!(
            waits,
            [250, 500, 1000, 2000].map(Duration::from_millis).to_vec()
        );
        r.succeeded();
        assert_eq!(
            r.failed(&"disk full"),
            Duration::from_millis(250),
            "from the start"
        );
    }
}
