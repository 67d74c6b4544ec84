//! Group commit for SQLite. Every write is an operation sent to one writer task, which owns the
//! only write connection. The task takes all operations waiting at that moment, runs each
//! inside a savepoint of one `BEGIN IMMEDIATE` transaction, commits once (one fsync for the
//! batch) and only then answers each caller. So each caller still gets "my write is on disk"
//! before it answers its client, at a cost shared by everyone who wrote in the same instant.
//! A failing operation rolls back to its savepoint and fails alone.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use futures::FutureExt;
use sqlx::ConnectOptions;
use sqlx::Sqlite;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::{StoreError, StoreResult};

/// Most operations one commit carries; bounds the time the write lock is held.
const MAX_BATCH: usize = 512;

/// Called once the batch's commit is known: `Ok` when the operation's writes are on disk.
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
type OpFuture = Pin<Box<dyn Future<Output = (SqliteConnection, bool, Completion)> + Send>>;
type Op = Box<dyn FnOnce(SqliteConnection) -> OpFuture + Send>;

/// What the writer task is asked to do.
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
    pub async fn start(options: SqliteConnectOptions) -> StoreResult<Self> {
        let conn = options.connect().await?;
        let (ops, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(conn, options, rx));
        Ok(Self { ops })
    }

    /// Runs `f` with the write connection inside the current batch and returns its result once
    /// the batch is committed. `f` hands the connection back with its result.
    pub async fn write<T, F, Fut>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(SqliteConnection) -> Fut + Send + 'static,
        Fut: Future<Output = (SqliteConnection, StoreResult<T>)> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |conn| {
            Box::pin(async move {
                let (conn, result) = f(conn).await;
                let failed = result.is_err();
                let complete: Completion = Box::new(move |commit| {
                    let _ = tx.send(match (result, commit) {
                        (Err(e), _) => Err(e),
                        (Ok(_), Err(e)) => {
                            Err(StoreError::Unavailable(format!("commit failed: {e}")))
                        }
                        (Ok(v), Ok(())) => Ok(v),
                    });
                });
                (conn, failed, complete)
            })
        });
        self.ops
            .send(Msg::Write(op))
            .await
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        rx.await.map_err(|_| {
            StoreError::Unavailable("the write was not applied (database busy or failing)".into())
        })?
    }
}

impl Writer {
    /// Closes the write connection after the writes already queued; later writes fail.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.ops.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// One statement as one write; returns the number of rows it changed.
    pub async fn execute(
        &self,
        query: Query<'static, Sqlite, SqliteArguments>,
    ) -> StoreResult<u64> {
        self.write(move |mut conn| async move {
            let res = query
                .execute(&mut conn)
                .await
                .map(|done| done.rows_affected())
                .map_err(StoreError::from);
            (conn, res)
        })
        .await
    }
}

async fn run(
    mut conn: SqliteConnection,
    options: SqliteConnectOptions,
    mut rx: mpsc::Receiver<Msg>,
) {
    let mut closing = None;
    while let Some(first) = rx.recv().await {
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
            conn = match run_batch(conn, batch).await {
                Some(conn) => conn,
                None => match reconnect(&options).await {
                    Some(conn) => conn,
                    None => return,
                },
            };
        }
        if let Some(done) = closing.take() {
            rx.close();
            if let Err(e) = sqlx::Connection::close(conn).await {
                tracing::warn!(error = %e, "closing the database writer");
            }
            let _ = done.send(());
            return;
        }
    }
}

async fn reconnect(options: &SqliteConnectOptions) -> Option<SqliteConnection> {
    for attempt in 1..=10u64 {
        match options.connect().await {
            Ok(conn) => return Some(conn),
            Err(e) => {
                tracing::error!(error = %e, attempt, "cannot reopen the database writer");
                tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
            }
        }
    }
    None
}

/// Runs `sql` (one or more statements without parameters) in one round trip to SQLite's thread:
/// each round trip costs two thread switches, so savepoint bookkeeping is folded together.
async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sql).execute(&mut *conn).await.map(|_| ())
}

/// Runs one batch; returns the connection, or `None` when it was lost (an operation panicked).
/// Operations not run are dropped, which answers their callers with an error.
async fn run_batch(mut conn: SqliteConnection, batch: Vec<Op>) -> Option<SqliteConnection> {
    if let Err(e) = exec(&mut conn, "BEGIN IMMEDIATE; SAVEPOINT op").await {
        tracing::error!(error = %e, ops = batch.len(), "cannot begin a write transaction");
        let _ = exec(&mut conn, "ROLLBACK").await;
        return Some(conn);
    }
    let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
    let mut ops = batch.into_iter().peekable();
    let mut commit: Result<(), String> = Err("the batch was aborted".to_owned());
    while let Some(op) = ops.next() {
        match AssertUnwindSafe(op(conn)).catch_unwind().await {
            Ok((c, failed, complete)) => {
                conn = c;
                completions.push(complete);
                let last = ops.peek().is_none();
                // Close this operation's savepoint and open the next one's (or commit).
                let sql = match (failed, last) {
                    (false, false) => "RELEASE op; SAVEPOINT op",
                    (true, false) => "ROLLBACK TO op; RELEASE op; SAVEPOINT op",
                    (false, true) => "RELEASE op; COMMIT",
                    (true, true) => "ROLLBACK TO op; RELEASE op; COMMIT",
                };
                match exec(&mut conn, sql).await {
                    Ok(()) if last => commit = Ok(()),
                    Ok(()) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "a write batch failed; rolling it back");
                        commit = Err(e.to_string());
                        break;
                    }
                }
            }
            Err(_) => {
                tracing::error!("a database write panicked; its batch is rolled back");
                for complete in completions {
                    complete(Err("a write in the same batch failed".into()));
                }
                // Dropping the remaining operations answers their callers with an error; the
                // lost connection rolls the transaction back as it closes.
                return None;
            }
        }
    }
    if commit.is_err() {
        // Operations not run yet are dropped here, which answers their callers.
        drop(ops);
        let _ = exec(&mut conn, "ROLLBACK").await;
    }
    for complete in completions {
        complete(commit.clone());
    }
    Some(conn)
}
