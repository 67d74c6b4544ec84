//! Group commit for SQLite. Every write is an operation sent to one writer thread, which owns
//! the only write connection. The thread takes all operations waiting at that moment, runs each
//! inside a savepoint of one `BEGIN IMMEDIATE` transaction, commits once (one fsync for the
//! batch) and only then answers each caller. So each caller still gets "my write is on disk"
//! before it answers its client, at a cost shared by everyone who wrote in the same instant.
//! A failing operation rolls back to its savepoint and fails alone.
//!
//! The thread drives SQLite synchronously: a statement is a function call, not a round trip
//! to another thread, so an operation may run as many statements as it needs.

use std::panic::{AssertUnwindSafe, catch_unwind};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{Database, StoreError, StoreResult, exec};

/// Most operations one commit carries; bounds the time the write lock is held.
const MAX_BATCH: usize = 512;

/// Called once the batch's commit is known: `Ok` when the operation's writes are on disk.
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
/// Runs inside the batch's transaction; says whether it failed, and how to answer its caller.
type Op = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

/// What the writer thread is asked to do.
enum Msg {
    Write(Op),
    /// Finish what is queued, close the connection (so SQLite checkpoints the WAL) and stop.
    Close(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Writer {
    ops: mpsc::Sender<Msg>,
}

impl Writer {
    pub fn start(db: Database) -> StoreResult<Self> {
        let conn = db.open()?;
        let (ops, rx) = mpsc::channel(4 * MAX_BATCH);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, &db, rx))
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the database writer: {e}"))
            })?;
        Ok(Self { ops })
    }

    /// Runs `f` on the write connection inside the current batch and returns its result once
    /// the batch is committed.
    pub async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |conn| {
            let result = f(conn);
            let failed = result.is_err();
            let complete: Completion = Box::new(move |commit| {
                let _ = tx.send(match (result, commit) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
                    (Ok(v), Ok(())) => Ok(v),
                });
            });
            (failed, complete)
        });
        self.ops
            .send(Msg::Write(op))
            .await
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        rx.await.map_err(|_| {
            StoreError::Unavailable("the write was not applied (database busy or failing)".into())
        })?
    }

    /// One statement as one write; returns the number of rows it changed.
    pub async fn execute<P>(&self, sql: &'static str, params: P) -> StoreResult<u64>
    where
        P: rusqlite::Params + Send + 'static,
    {
        self.write(move |conn| {
            let changed = conn.prepare_cached(sql)?.execute(params)?;
            Ok(changed as u64)
        })
        .await
    }

    /// Closes the write connection after the writes already queued; later writes fail.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.ops.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

fn run(mut conn: Connection, db: &Database, mut rx: mpsc::Receiver<Msg>) {
    let mut closing = None;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::with_capacity(16);
        match first {
            Msg::Write(op) => batch.push(op),
            Msg::Close(done) => closing = Some(done),
        }
        while batch.len() < MAX_BATCH && closing.is_none() {
            match rx.try_recv() {
                Ok(Msg::Write(op)) => batch.push(op),
                Ok(Msg::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            metrics::histogram!("greenlight_sqlite_batch_size").record(batch.len() as f64);
            run_batch(&conn, batch);
            if !conn.is_autocommit() {
                // A transaction the batch could not end: start over on a fresh connection.
                conn = match reopen(db) {
                    Some(c) => c,
                    None => return,
                };
            }
        }
        if let Some(done) = closing.take() {
            rx.close();
            if let Err((_, e)) = conn.close() {
                tracing::warn!(error = %e, "closing the database writer");
            }
            let _ = done.send(());
            return;
        }
    }
}

fn reopen(db: &Database) -> Option<Connection> {
    for attempt in 1..=10u64 {
        match db.open() {
            Ok(conn) => return Some(conn),
            Err(e) => {
                tracing::error!(error = %e, attempt, "cannot reopen the database writer");
                std::thread::sleep(std::time::Duration::from_millis(100 * attempt));
            }
        }
    }
    None
}

/// Runs one batch. Operations not run are dropped, which answers their callers with an error.
fn run_batch(conn: &Connection, batch: Vec<Op>) {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        tracing::error!(error = %e, ops = batch.len(), "cannot begin a write transaction");
        return;
    }
    let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
    let mut commit: Result<(), String> = Ok(());
    for op in batch {
        if let Err(e) = exec(conn, "SAVEPOINT op") {
            commit = Err(e.to_string());
            break;
        }
        match catch_unwind(AssertUnwindSafe(|| op(conn))) {
            Ok((failed, complete)) => {
                completions.push(complete);
                let ended = if failed {
                    exec(conn, "ROLLBACK TO op").and_then(|()| exec(conn, "RELEASE op"))
                } else {
                    exec(conn, "RELEASE op")
                };
                if let Err(e) = ended {
                    commit = Err(e.to_string());
                    break;
                }
            }
            Err(_) => {
                tracing::error!("a database write panicked; its batch is rolled back");
                commit = Err("a write in the same batch failed".into());
                break;
            }
        }
    }
    if commit.is_ok() {
        commit = exec(conn, "COMMIT").map_err(|e| e.to_string());
    }
    if let Err(e) = &commit {
        tracing::error!(error = %e, "a write batch failed; rolling it back");
        let _ = exec(conn, "ROLLBACK");
    }
    for complete in completions {
        complete(commit.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("writer.db").display());
        (dir, Database::parse(&url).unwrap())
    }

    async fn count(w: &Writer) -> i64 {
        w.write(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_write_that_fails_after_writing_leaves_nothing_and_its_batch_lands() {
        let (_dir, db) = database();
        let w = Writer::start(db).unwrap();
        w.execute("CREATE TABLE t (x INTEGER)", ()).await.unwrap();
        let writes = (0..50).map(|i| {
            let w = w.clone();
            async move {
                w.write(move |c| {
                    c.execute("INSERT INTO t VALUES (?1)", [i])?;
                    if i == 7 {
                        return Err(StoreError::Corrupt("refused".into()));
                    }
                    Ok(())
                })
                .await
            }
        });
        let results = futures::future::join_all(writes).await;
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        assert!(results[7].is_err());
        assert_eq!(count(&w).await, 49);
    }

    #[tokio::test]
    async fn a_panicking_write_fails_and_the_writer_goes_on() {
        let (_dir, db) = database();
        let w = Writer::start(db).unwrap();
        w.execute("CREATE TABLE t (x INTEGER)", ()).await.unwrap();
        let panicked = w.write(|_| -> StoreResult<()> { panic!("a bug in a write") });
        assert!(panicked.await.is_err());
        assert_eq!(w.execute("INSERT INTO t VALUES (1)", ()).await.unwrap(), 1);
        assert_eq!(count(&w).await, 1);
        w.close().await;
        assert!(w.execute("INSERT INTO t VALUES (2)", ()).await.is_err());
    }
}
