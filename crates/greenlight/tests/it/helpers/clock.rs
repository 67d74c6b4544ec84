//! `TestClock`: real time plus an offset the test moves forward.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use greenlight::domain::Clock;

/// A clock that runs with real time plus an offset the test moves forward, so nothing waits
/// for minutes and everything that merely needs time to pass still sees it pass.
#[derive(Default)]
pub struct TestClock {
    offset_ms: AtomicI64,
}

impl TestClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap();
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> jiff::Timestamp {
        let ms = self.offset_ms.load(Ordering::SeqCst);
        jiff::Timestamp::from_millisecond(jiff::Timestamp::now().as_millisecond() + ms)
            .expect("test time in range")
    }
}
