//! In-process wake-ups for long-polls: a waiter parks on its request's `Notify`, a decision
//! wakes it. No sleep-polling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use crate::domain::RequestId;

#[derive(Clone, Default)]
pub struct Waiters {
    inner: Arc<Mutex<HashMap<RequestId, Weak<Notify>>>>,
}

impl Waiters {
    /// The notifier for `id`, shared by everyone waiting on it. Hold the `Arc` while waiting;
    /// entries die with their last waiter.
    pub fn watch(&self, id: &RequestId) -> Arc<Notify> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get(id).and_then(Weak::upgrade) {
            return n;
        }
        if map.len() >= 1024 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let n = Arc::new(Notify::new());
        map.insert(id.clone(), Arc::downgrade(&n));
        n
    }

    pub fn wake(&self, id: &RequestId) {
        let n = {
            let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(id).and_then(|w| w.upgrade())
        };
        if let Some(n) = n {
            n.notify_waiters();
        }
    }

    /// Wakes everyone: some wake-ups may have been missed (another replica's notices).
    pub fn wake_all(&self) {
        let all: Vec<Arc<Notify>> = {
            let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            map.values().filter_map(Weak::upgrade).collect()
        };
        for n in all {
            n.notify_waiters();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|m| m.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_every_waiter_of_that_request_only() {
        let w = Waiters::default();
        let a = RequestId::generate();
        let b = RequestId::generate();
        let na = w.watch(&a);
        let nb = w.watch(&b);
        let fa = na.notified();
        tokio::pin!(fa);
        fa.as_mut().enable();
        {
            let fb = nb.notified();
            tokio::pin!(fb);
            fb.as_mut().enable();
            w.wake(&a);
            tokio::time::timeout(Duration::from_secs(1), fa)
                .await
                .unwrap();
            assert!(
                tokio::time::timeout(Duration::from_millis(50), fb)
                    .await
                    .is_err()
            );
        }
        drop(nb);
        w.wake(&b);
        assert_eq!(w.len(), 0);
    }
}
