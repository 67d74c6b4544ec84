//! Reads for SQLite: a few threads, each with its own connection, take closures from one
//! queue. In WAL mode a reader sees the last commit and never waits for the writer.

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
}

impl Readers {
    pub fn start(db: &Database, threads: usize) -> StoreResult<Self> {
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
        Ok(Self { queue, threads })
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
