//! PostgreSQL group commit: the durable writes of one replica (votes, creates, the outbox's
//! results) join a batch while another batch commits, and a batch is one
//! transaction: one commit, one WAL flush, for up to `MAX_BATCH` callers. Each caller is
//! answered only after that commit. Every write stays the one statement it was (the change, its
//! audit entries, its jobs), so its compare-and-set and its atomicity are unchanged; the
//! statements of a batch run one after the other on one connection, in arrival order.
//!
//! A statement that fails fails alone: the batch is rolled back and run again with each
//! statement in a savepoint, so that the failing one is rolled back to its savepoint and
//! answered with its error while the others commit (the SQLite writer does the same).
//!
//! A single waiting write runs on its own, without BEGIN and COMMIT: at low load a write costs
//! what it cost before, one round trip.

use std::sync::Arc;

use sqlx::Acquire;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::Statement;
use crate::store::{StoreError, StoreResult};

/// Most statements one transaction takes.
const MAX_BATCH: usize = 256;
/// Writes waiting for a writer, at most; past that, callers wait to queue (backpressure, the
/// bound on memory a burst can take).
const QUEUE: usize = 4096;

/// Builds a write's statement; called again when its batch is run again (see the module).
pub(super) type Build = Box<dyn Fn() -> StoreResult<Statement> + Send>;

struct Op {
    build: Build,
    reply: oneshot::Sender<StoreResult<Vec<PgRow>>>,
}

/// The group-commit writers of one replica.
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Op>,
}

impl GroupCommit {
    /// Starts `writers` tasks, each committing batches on a connection of `pool`.
    pub(super) fn start(pool: PgPool, writers: usize) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..writers.max(1) {
            tokio::spawn(write_batches(pool.clone(), waiting.clone()));
        }
        Self { queue }
    }

    /// Runs the statement `build` makes in the next batch; its rows once that batch committed.
    pub(super) async fn write(
        &self,
        build: impl Fn() -> StoreResult<Statement> + Send + 'static,
    ) -> StoreResult<Vec<PgRow>> {
        let (reply, answer) = oneshot::channel();
        let op = Op {
            build: Box::new(build),
            reply,
        };
        self.queue
            .send(op)
            .await
            .map_err(|_| StoreError::Unavailable("the PostgreSQL writer has stopped".into()))?;
        answer.await.map_err(|_| {
            StoreError::Unavailable("the PostgreSQL writer stopped before answering".into())
        })?
    }

    /// `write`, for a statement that returns one row.
    pub(super) async fn write_one(
        &self,
        build: impl Fn() -> StoreResult<Statement> + Send + 'static,
    ) -> StoreResult<PgRow> {
        self.write(build)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Corrupt("a write returned no row".into()))
    }
}

/// One writer: takes what waits (up to `MAX_BATCH`), commits it, answers, again.
async fn write_batches(pool: PgPool, waiting: Arc<Mutex<mpsc::Receiver<Op>>>) {
    let mut batch: Vec<Op> = Vec::with_capacity(MAX_BATCH);
    loop {
        let got = waiting.lock().await.recv_many(&mut batch, MAX_BATCH).await;
        if got == 0 {
            return;
        }
        metrics::histogram!("greenlight_pg_batch_size").record(batch.len() as f64);
        commit(&pool, std::mem::take(&mut batch)).await;
        batch = Vec::with_capacity(MAX_BATCH);
    }
}

/// A batch's statements, built; a write whose statement cannot be built is answered at once.
fn built(ops: Vec<Op>) -> Vec<(Op, Statement)> {
    ops.into_iter()
        .filter_map(|op| match (op.build)() {
            Ok(statement) => Some((op, statement)),
            Err(e) => {
                let _ = op.reply.send(Err(e));
                None
            }
        })
        .collect()
}

async fn commit(pool: &PgPool, ops: Vec<Op>) {
    let mut ops = built(ops);
    if ops.is_empty() {
        return;
    }
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => return fail_all(ops, &e, "nothing was written"),
    };
    if ops.len() == 1 {
        // Alone: its own transaction, in one round trip.
        let (op, mut statement) = ops.pop().expect("one");
        let rows = statement.build().fetch_all(&mut *conn).await;
        let _ = op.reply.send(rows.map_err(StoreError::from));
        return;
    }
    match all_or_nothing(&mut conn, &mut ops).await {
        Ok(rows) => {
            for ((op, _), rows) in ops.into_iter().zip(rows) {
                let _ = op.reply.send(Ok(rows));
            }
        }
        Err(Failed::Commit(e)) => fail_all(ops, &e, UNKNOWN),
        Err(Failed::Statement(e)) => {
            tracing::debug!(error = %e, "a statement of a batch failed; running each in a savepoint");
            // Built again: a statement's arguments are taken by running it.
            let ops = built(ops.into_iter().map(|(op, _)| op).collect());
            one_by_one(&mut conn, ops).await;
        }
    }
}

enum Failed {
    /// A statement failed: the transaction was rolled back, nothing of the batch is written.
    Statement(sqlx::Error),
    /// BEGIN or COMMIT failed: whether the batch is written is unknown (as for any statement
    /// whose answer was lost), and every caller is told so.
    Commit(sqlx::Error),
}

async fn all_or_nothing(
    conn: &mut PgConnection,
    ops: &mut [(Op, Statement)],
) -> Result<Vec<Vec<PgRow>>, Failed> {
    let mut tx = conn.begin().await.map_err(Failed::Commit)?;
    let mut rows = Vec::with_capacity(ops.len());
    for (_, statement) in ops.iter_mut() {
        match statement.build().fetch_all(&mut *tx).await {
            Ok(r) => rows.push(r),
            Err(e) => {
                // Dropping the transaction rolls it back.
                drop(tx);
                return Err(Failed::Statement(e));
            }
        }
    }
    tx.commit().await.map_err(Failed::Commit)?;
    Ok(rows)
}

/// The retry path: each statement in a savepoint, so that a failing one alone is undone.
async fn one_by_one(conn: &mut PgConnection, mut ops: Vec<(Op, Statement)>) {
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(e) => return fail_all(ops, &e, "nothing was written"),
    };
    let mut outcomes: Vec<Result<Vec<PgRow>, sqlx::Error>> = Vec::with_capacity(ops.len());
    for (_, statement) in ops.iter_mut() {
        let outcome = match tx.begin().await {
            Ok(mut savepoint) => match statement.build().fetch_all(&mut *savepoint).await {
                Ok(rows) => savepoint.commit().await.map(|()| rows),
                // Dropping the savepoint rolls back to it.
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        outcomes.push(outcome);
    }
    match tx.commit().await {
        Ok(()) => {
            for ((op, _), outcome) in ops.into_iter().zip(outcomes) {
                let _ = op.reply.send(outcome.map_err(StoreError::from));
            }
        }
        Err(e) => fail_all(ops, &e, UNKNOWN),
    }
}

const UNKNOWN: &str = "whether the write was committed is unknown";

/// Answers every write of a batch that could not run or commit.
fn fail_all(ops: Vec<(Op, Statement)>, e: &sqlx::Error, what: &str) {
    for (op, _) in ops {
        let _ = op.reply.send(Err(StoreError::Unavailable(format!(
            "PostgreSQL: {e} ({what})"
        ))));
    }
}
