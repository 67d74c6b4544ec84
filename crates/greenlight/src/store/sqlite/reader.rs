//! Reads for SQLite: a few threads, each with its own connection, take closures from one
//! queue. In WAL mode a reader sees the last commit and never waits for the writer.
//!
//! Point reads (a row or a few by their key, as a click's request) skip the queue: they run on the
//! caller's thread on one of a few connections kept for that, when one is free. Such a read
//! takes microseconds, less than the two thread switches of a trip through the queue, and the
//! async runtime can afford to block for that long. When every quick connection is busy the
//! read takes the queue like any other.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{Database, StoreError, StoreResult};

type ReadOp = Box<dyn FnOnce(&Connection) + Send>;

enum Msg {
    Read(ReadOp),
    /// Close this thread's connection and stop (one per thread).
    Close(oneshot::Sender<()>),
}

pub struct Readers {
    queue: mpsc::Sender<Msg>,
    threads: usize,
    /// Connections for point reads on the caller's thread; `None` once closed.
    quick: Vec<Mutex<Option<Connection>>>,
}

impl Readers {
    /// `threads` reader threads, and `quick` connections for point reads on callers' threads.
    pub fn start(db: &Database, threads: usize, quick: usize) -> StoreResult<Self> {
        let (queue, rx) = mpsc::channel();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let conn = db.open()?;
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{i}"))
                .spawn(move || run(conn, &rx))
                .map_err(|e| StoreError::Unavailable(format!("cannot start a reader: {e}")))?;
        }
        let quick = (0..quick)
            .map(|_| db.open().map(|c| Mutex::new(Some(c))))
            .collect::<rusqlite::Result<_>>()?;
        Ok(Self {
            queue,
            threads,
            quick,
        })
    }

    /// Runs `f`, a point read (a row or a few by their key), at once on this thread if a quick
    /// connection is free; otherwise as `read` does.
    pub async fn point<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        for slot in &self.quick {
            let Ok(mut guard) = slot.try_lock() else {
                continue;
            };
            let Some(conn) = guard.as_mut() else {
                break;
            };
            return match catch_unwind(AssertUnwindSafe(|| f(conn))) {
                Ok(result) => result,
                Err(_) => {
                    tracing::error!("a database read panicked");
                    Err(StoreError::Unavailable("the read was not answered".into()))
                }
            };
        }
        self.read(f).await
    }

    /// Runs `f` on a reader's connection.
    pub async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Msg::Read(Box::new(move |conn| {
                let _ = tx.send(f(conn));
            })))
            .map_err(|_| StoreError::Unavailable("the database readers have stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the read was not answered".into()))?
    }

    /// Closes every reader's connection; later reads fail.
    pub async fn close(&self) {
        for slot in &self.quick {
            let conn = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(Err((_, e))) = conn.map(Connection::close) {
                tracing::warn!(error = %e, "closing a database reader");
            }
        }
        let mut waiting = Vec::with_capacity(self.threads);
        for _ in 0..self.threads {
            let (tx, rx) = oneshot::channel();
            if self.queue.send(Msg::Close(tx)).is_ok() {
                waiting.push(rx);
            }
        }
        for rx in waiting {
            let _ = rx.await;
        }
    }
}

fn run(conn: Connection, rx: &Mutex<mpsc::Receiver<Msg>>) {
    loop {
        // The lock is held only while waiting for the next message, never while reading.
        let msg = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match msg {
            Ok(Msg::Read(op)) => {
                if catch_unwind(AssertUnwindSafe(|| op(&conn))).is_err() {
                    tracing::error!("a database read panicked");
                }
            }
            Ok(Msg::Close(done)) => {
                if let Err((_, e)) = conn.close() {
                    tracing::warn!(error = %e, "closing a database reader");
                }
                let _ = done.send(());
                return;
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(conn: &Connection) -> StoreResult<i64> {
        Ok(conn.query_row("SELECT 41 + 1", [], |r| r.get(0))?)
    }

    // The guard is held across the read on purpose: the read must go to a reader thread.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn a_point_read_takes_the_queue_when_every_quick_connection_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("readers.db").display());
        let readers = Readers::start(&Database::parse(&url).unwrap(), 1, 1).unwrap();
        assert_eq!(readers.point(one).await.unwrap(), 42);
        {
            // Another caller holds the only quick connection: the read goes to a thread.
            let _busy = readers.quick[0].lock().unwrap();
            let on = readers
                .point(|c| Ok((one(c)?, std::thread::current().name().map(str::to_owned))))
                .await
                .unwrap();
            assert_eq!(on, (42, Some("sqlite-reader-0".to_owned())));
        }
        readers.close().await;
        assert!(readers.point(one).await.is_err());
    }
}
