//! Group commit for SQLite. Every write is an operation sent to one writer thread, which owns
//! the only write connection. The thread takes all operations waiting at that moment, and those
//! that arrive while they run (up to `MAX_BATCH`), runs them in one `BEGIN IMMEDIATE`
//! transaction, commits once when its queue is empty (one fsync for the batch) and only then
//! answers each caller. So each caller still gets "my write is on disk" before it answers its
//! client, at a cost shared by everyone who wrote in the same instant. When an operation fails,
//! the batch runs again with each operation in a savepoint, and the failing one fails alone.
//!
//! The thread drives SQLite synchronously: a statement is a function call, not a round trip
//! to another thread, so an operation may run as many statements as it needs.

use std::panic::{AssertUnwindSafe, catch_unwind};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use std::sync::Arc;

use super::{Database, LogThrottle, StoreError, StoreResult, WriteHealth, exec};

/// Most operations one commit carries; bounds the time the write lock is held.
const MAX_BATCH: usize = 512;

/// A write queued for the writer thread: run inside the batch's transaction (twice if another
/// operation of its batch failed, see `run_batch`), then answered once the commit is known.
trait Operation: Send {
    /// Runs on the write connection; true if it failed, so its writes must not land.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: `commit` says whether the batch's commit is on disk. True if the
    /// answer is a failure for want of storage (`StoreError::is_unavailable`).
    fn complete(self: Box<Self>, commit: Result<(), String>) -> bool;
}

type Op = Box<dyn Operation>;

/// A closure and its caller, and what the closure's last run returned.
struct Write<T, F> {
    f: F,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Operation for Write<T, F>
where
    T: Send,
    F: FnMut(&Connection) -> StoreResult<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = (self.f)(conn);
        let failed = result.is_err();
        self.result = Some(result);
        failed
    }

    fn complete(self: Box<Self>, commit: Result<(), String>) -> bool {
        let answer = match (self.result, commit) {
            (None, _) => Err(not_applied()),
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(_)), Err(e)) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
            (Some(Ok(v)), Ok(())) => Ok(v),
        };
        let storage = answer.as_ref().is_err_and(StoreError::is_unavailable);
        let _ = self.reply.send(answer);
        storage
    }
}

fn not_applied() -> StoreError {
    StoreError::Unavailable("the write was not applied (database busy or failing)".into())
}

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
    pub fn start(db: Database, health: Arc<WriteHealth>) -> StoreResult<Self> {
        let conn = db.open()?;
        let (ops, rx) = mpsc::channel(4 * MAX_BATCH);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, &db, rx, &health))
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the database writer: {e}"))
            })?;
        Ok(Self { ops })
    }

    /// Runs `f` on the write connection inside the current batch and returns its result once
    /// the batch is committed. `f` may run twice (when another write of its batch failed, the
    /// batch runs again with each write in a savepoint), so it must act through `conn` only.
    pub async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let op: Op = Box::new(Write {
            f,
            result: None,
            reply,
        });
        self.ops
            .send(Msg::Write(op))
            .await
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        rx.await.map_err(|_| not_applied())?
    }

    /// One statement as one write; returns the number of rows it changed.
    pub async fn execute<P>(&self, sql: &'static str, params: P) -> StoreResult<u64>
    where
        P: rusqlite::Params + Clone + Send + 'static,
    {
        self.write(move |conn| {
            let changed = conn.prepare_cached(sql)?.execute(params.clone())?;
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

fn run(mut conn: Connection, db: &Database, mut rx: mpsc::Receiver<Msg>, health: &WriteHealth) {
    let mut closing = None;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::with_capacity(16);
        match first {
            Msg::Write(op) => batch.push(op),
            Msg::Close(done) => closing = Some(done),
        }
        if !batch.is_empty() {
            // Writes that arrive while the batch runs join it, up to MAX_BATCH: the commit
            // waits for the queue to be empty, not for the next batch.
            let mut more = || match closing.is_none().then(|| rx.try_recv()) {
                Some(Ok(Msg::Write(op))) => Some(op),
                Some(Ok(Msg::Close(done))) => {
                    closing = Some(done);
                    None
                }
                _ => None,
            };
            let changes = conn.total_changes();
            let (ops, storage_failed) = run_batch(&conn, batch, &mut more);
            metrics::histogram!("greenlight_sqlite_batch_size").record(ops as f64);
            if storage_failed {
                if health.failed() {
                    tracing::error!(
                        "writes to the database fail (disk full or failing): answering 503 storage_unavailable and /readyz red until a write lands"
                    );
                }
            } else if conn.total_changes() > changes
                && let Some(failures) = health.succeeded()
            {
                recovered(&conn, failures);
            }
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

/// Logs a batch that failed, at most once every ten seconds with how many failed meanwhile:
/// on a full disk every batch fails, hundreds a second under load.
fn batch_failed(e: &dyn std::fmt::Display, what: &str) {
    static THROTTLE: LogThrottle = LogThrottle::new();
    if let Some(times) = THROTTLE.hit() {
        tracing::error!(error = %e, times, "{what} (logged at most once every 10 s)");
    }
}

/// Writes land again: the write-ahead log, which grew while checkpoints could not write the
/// database file, is folded back and truncated, returning its space to the disk.
fn recovered(conn: &Connection, failures: u64) {
    let checkpoint = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
    });
    match checkpoint {
        Ok((0, _)) => tracing::warn!(
            failures,
            "writes to the database land again; the write-ahead log is checkpointed and truncated"
        ),
        Ok((_, frames)) => tracing::warn!(
            failures,
            frames,
            "writes to the database land again; the write-ahead log could not be truncated yet (readers busy)"
        ),
        Err(e) => tracing::warn!(
            failures,
            error = %e,
            "writes to the database land again; checkpointing the write-ahead log failed"
        ),
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

/// Runs one batch in one transaction, taking from `more` the writes that arrive meanwhile
/// (up to `MAX_BATCH`); returns how many it ran. First every operation runs straight in the
/// transaction, which is the common case and the cheap one: a savepoint per operation would
/// copy each page it touches into the statement journal first. If one fails, the transaction
/// is rolled back and the batch runs again with each operation in a savepoint, so that only the
/// failing one fails. Operations not run are answered with an error.
/// Also says whether any operation failed for want of storage.
fn run_batch(
    conn: &Connection,
    mut batch: Vec<Op>,
    more: &mut dyn FnMut() -> Option<Op>,
) -> (usize, bool) {
    let commit = match run_plain(conn, &mut batch, more) {
        Plain::Done(commit) => commit,
        Plain::OneFailed => {
            let _ = exec(conn, "ROLLBACK");
            run_isolated(conn, &mut batch)
        }
    };
    let ops = batch.len();
    let mut storage_failed = false;
    for op in batch {
        storage_failed |= op.complete(commit.clone());
    }
    (ops, storage_failed)
}

enum Plain {
    /// The batch ran (or could not run) as a whole: whether it committed.
    Done(Result<(), String>),
    /// An operation failed; the transaction is still open.
    OneFailed,
}

fn run_plain(
    conn: &Connection,
    batch: &mut Vec<Op>,
    more: &mut dyn FnMut() -> Option<Op>,
) -> Plain {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        batch_failed(&e, "cannot begin a write transaction");
        return Plain::Done(Err(e.to_string()));
    }
    let mut next = 0;
    loop {
        if next == batch.len() {
            match (batch.len() < MAX_BATCH).then(&mut *more).flatten() {
                Some(op) => batch.push(op),
                None => break,
            }
        }
        let op = &mut batch[next];
        next += 1;
        match catch_unwind(AssertUnwindSafe(|| op.run(conn))) {
            Ok(false) => {}
            Ok(true) => return Plain::OneFailed,
            Err(_) => {
                tracing::error!("a database write panicked; its batch is rolled back");
                let _ = exec(conn, "ROLLBACK");
                return Plain::Done(Err("a write in the same batch failed".into()));
            }
        }
    }
    Plain::Done(end(conn))
}

/// The batch again, each operation in a savepoint.
fn run_isolated(conn: &Connection, batch: &mut [Op]) -> Result<(), String> {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        batch_failed(&e, "cannot begin a write transaction");
        return Err(e.to_string());
    }
    for op in batch.iter_mut() {
        let ran = exec(conn, "SAVEPOINT op")
            .map_err(|e| e.to_string())
            .and_then(|()| {
                catch_unwind(AssertUnwindSafe(|| op.run(conn)))
                    .map_err(|_| "a write in the same batch failed".to_owned())
            });
        let ended = match ran {
            Ok(true) => exec(conn, "ROLLBACK TO op").and_then(|()| exec(conn, "RELEASE op")),
            Ok(false) => exec(conn, "RELEASE op"),
            Err(e) => {
                batch_failed(&e, "a write batch failed; rolling it back");
                let _ = exec(conn, "ROLLBACK");
                return Err(e);
            }
        };
        if let Err(e) = ended {
            batch_failed(&e, "a write batch failed; rolling it back");
            let _ = exec(conn, "ROLLBACK");
            return Err(e.to_string());
        }
    }
    end(conn)
}

/// Commits the open transaction (rolls it back if the commit fails).
fn end(conn: &Connection) -> Result<(), String> {
    let commit = exec(conn, "COMMIT").map_err(|e| e.to_string());
    if let Err(e) = &commit {
        batch_failed(&e, "a write batch failed; rolling it back");
        let _ = exec(conn, "ROLLBACK");
    }
    commit
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
        let w = Writer::start(db, Arc::default()).unwrap();
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
    async fn writes_that_arrive_while_a_batch_runs_join_its_transaction() {
        let (_dir, db) = database();
        let w = Writer::start(db.clone(), Arc::default()).unwrap();
        w.execute("CREATE TABLE t (x INTEGER)", ()).await.unwrap();
        // The first write holds the batch open until the others are queued behind it.
        let (running, is_running) = std::sync::mpsc::channel();
        let (go, may_go) = std::sync::mpsc::channel::<()>();
        let first = tokio::spawn({
            let w = w.clone();
            async move {
                w.write(move |c| {
                    c.execute("INSERT INTO t VALUES (0)", [])?;
                    let _ = running.send(());
                    let _ = may_go.recv_timeout(std::time::Duration::from_secs(10));
                    Ok(())
                })
                .await
            }
        });
        tokio::task::spawn_blocking(move || is_running.recv().unwrap())
            .await
            .unwrap();
        // Each later write counts, from a connection of its own, the rows already committed:
        // none if it runs in the first write's transaction.
        let later: Vec<_> = (1..=20)
            .map(|i| {
                let w = w.clone();
                let outside = db.open().unwrap();
                tokio::spawn(async move {
                    w.write(move |c| {
                        c.execute("INSERT INTO t VALUES (?1)", [i])?;
                        Ok(outside
                            .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))?)
                    })
                    .await
                })
            })
            .collect();
        tokio::task::yield_now().await; // each spawned write is queued
        go.send(()).unwrap();
        first.await.unwrap().unwrap();
        for write in later {
            assert_eq!(
                write.await.unwrap().unwrap(),
                0,
                "a later write ran after a commit"
            );
        }
        assert_eq!(count(&w).await, 21);
    }

    #[tokio::test]
    async fn a_panicking_write_fails_and_the_writer_goes_on() {
        let (_dir, db) = database();
        let w = Writer::start(db, Arc::default()).unwrap();
        w.execute("CREATE TABLE t (x INTEGER)", ()).await.unwrap();
        let panicked = w.write(|_| -> StoreResult<()> { panic!("a bug in a write") });
        assert!(panicked.await.is_err());
        assert_eq!(w.execute("INSERT INTO t VALUES (1)", ()).await.unwrap(), 1);
        assert_eq!(count(&w).await, 1);
        w.close().await;
        assert!(w.execute("INSERT INTO t VALUES (2)", ()).await.is_err());
    }
}
