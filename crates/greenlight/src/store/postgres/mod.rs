//! PostgreSQL: the store for several replicas. Every change (the request, its audit entries,
//! its outbox jobs, the wake-up of other replicas' waiters) is one statement, so it commits
//! atomically in one round trip. The outbox is claimed with `FOR UPDATE SKIP LOCKED` and leases
//! that run out; what Slack limits per app (pacing, 429 pauses, one writer per message) is kept
//! in tables every replica shares; decisions are announced with NOTIFY.

mod admin;
mod alerts;
mod audit;
mod coordination;
mod digests;
mod history;
mod home;
mod keys;
mod outbox;
mod requests;
mod signals;
mod signing;
mod standing;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder};

use super::rows::to_json;
use super::*;
use crate::domain::RequestId;
use coordination::PgCoordination;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel decisions are announced on.
const DECIDED_CHANNEL: &str = "greenlight_decided";
/// How long `open` keeps trying a database that does not answer yet (it may be starting).
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

pub struct PostgresStore {
    pool: PgPool,
    /// Group commit of the hot writes (votes, creates, the outbox's results).
    writer: writer::GroupCommit,
    coordination: Arc<PgCoordination>,
    /// Decisions to announce to other replicas, sent after their commit (see `announce`).
    decided: tokio::sync::mpsc::Sender<RequestId>,
}

/// Connections committing batches of writes at once (see `writer`).
const WRITERS: usize = 2;

/// Decided requests announced per NOTIFY (its payload holds at most 8000 bytes).
const NOTIFY_BATCH: usize = 200;

type Statement = QueryBuilder<Postgres>;

impl PostgresStore {
    pub async fn open(url: &str, options: DatabaseOptions) -> StoreResult<Self> {
        let timeout_ms = options.statement_timeout.as_millis().to_string();
        let connect = PgConnectOptions::from_str(url)?
            .application_name("greenlight")
            .options([("statement_timeout", timeout_ms.as_str())]);
        let started = tokio::time::Instant::now();
        // A dead connection shows as an error on use (and the pool replaces it), so no ping
        // before every statement: that would be a round trip per statement.
        let pool_options = |n: u32| {
            PgPoolOptions::new()
                .max_connections(n)
                .acquire_timeout(Duration::from_secs(5))
                .test_before_acquire(false)
        };
        let pool = loop {
            let attempt = pool_options(options.max_connections.max(2))
                .connect_with(connect.clone())
                .await;
            match attempt {
                Ok(pool) => break pool,
                Err(e) if started.elapsed() < CONNECT_PATIENCE && is_unreachable(&e) => {
                    tracing::warn!(error = %e, "PostgreSQL does not answer yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        // Several replicas may start at once: the migrator takes an advisory lock.
        MIGRATOR.run(&pool).await?;
        // What replicas tell each other (leases, pacing, pauses, wake-ups) need not wait for
        // the disk: after a crash of the database it is worthless anyway, and it must never
        // queue behind the durable writes.
        let light = pool_options(4)
            .connect_with(connect.options([("synchronous_commit", "off")]))
            .await?;
        let (decided, announcements) = tokio::sync::mpsc::channel(4096);
        tokio::spawn(announce(light.clone(), announcements));
        Ok(Self {
            coordination: Arc::new(PgCoordination::new(light)),
            writer: writer::GroupCommit::start(pool.clone(), WRITERS),
            pool,
            decided,
        })
    }

    /// The pool, for tools that work on the whole database (copy-db, tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Sends the decisions of this replica to the others, many to a NOTIFY, on the connection
/// pool that does not wait for the disk.
async fn announce(pool: PgPool, mut decided: tokio::sync::mpsc::Receiver<RequestId>) {
    let mut batch: Vec<RequestId> = Vec::with_capacity(NOTIFY_BATCH);
    while decided.recv_many(&mut batch, NOTIFY_BATCH).await > 0 {
        let payload = batch
            .iter()
            .map(RequestId::as_str)
            .collect::<Vec<_>>()
            .join(",");
        batch.clear();
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(DECIDED_CHANNEL)
            .bind(&payload)
            .execute(&pool)
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot tell other replicas about decisions; their long-polls look again within 5 s");
        }
    }
}

fn is_unreachable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)
        || matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("57P03"))
}

/// Appends the inserts of a change's audit entries and outbox jobs as data-modifying CTEs that
/// read from `source` (one row when the change happened, none when it did not). Each kind is
/// one multi-row insert in order, so their ids follow the order of the entries.
fn push_audit_and_effects(
    qb: &mut Statement,
    source: &str,
    now: Millis,
    audit: &[NewAudit],
    effects: &[Effect],
) -> StoreResult<()> {
    if !audit.is_empty() {
        qb.push(", audit_rows AS (INSERT INTO audit (at, request_id, event, actor, data) SELECT v.at, v.request_id, v.event, v.actor, v.data FROM ")
            .push(source)
            .push(", (VALUES ");
        for (i, a) in audit.iter().enumerate() {
            if i > 0 {
                qb.push(", ");
            }
            qb.push("(")
                .push_bind(now)
                .push(", ")
                .push_bind(a.request_id.as_ref().map(|id| id.to_string()))
                .push(", ")
                .push_bind(a.event)
                .push(", ")
                .push_bind(a.actor.clone())
                .push(", ")
                .push_bind(to_json(&a.data)?)
                .push(", ")
                .push_bind(i as i64)
                .push(")");
        }
        // Queued for the chainer in the same statement: it chains exactly what greenlight wrote.
        qb.push(
            ") AS v(at, request_id, event, actor, data, ord) ORDER BY v.ord RETURNING id), \
             audit_queued AS (INSERT INTO audit_pending (audit_id) SELECT id FROM audit_rows)",
        );
    }
    if !effects.is_empty() {
        qb.push(", job_rows AS (INSERT INTO outbox (request_id, kind, lane, collapse_key, payload, next_attempt_at, created_at, updated_at) SELECT v.request_id, v.kind, v.lane, v.collapse_key, v.payload, v.due, ")
            .push_bind(now)
            .push(", ")
            .push_bind(now)
            .push(" FROM ")
            .push(source)
            .push(", (VALUES ");
        for (i, effect) in effects.iter().enumerate() {
            if i > 0 {
                qb.push(", ");
            }
            qb.push("(")
                .push_bind(effect.request_id().map(|id| id.to_string()))
                .push(", ")
                .push_bind(effect.kind())
                .push(", ")
                .push_bind(effect.lane().as_str())
                .push(", ")
                .push_bind(effect.collapse_key())
                .push(", ")
                .push_bind(to_json(effect)?)
                .push(", ")
                .push_bind(effect.due(now))
                .push(", ")
                .push_bind(i as i64)
                .push(")");
        }
        // A waiting job renders the latest state when delivered: later changes with its
        // collapse key collapse into it.
        qb.push(
            ") AS v(request_id, kind, lane, collapse_key, payload, due, ord) WHERE v.collapse_key IS NULL \
             OR NOT EXISTS (SELECT 1 FROM outbox o WHERE o.collapse_key = v.collapse_key \
             AND o.state = 'pending' AND (o.leased_until IS NULL OR o.leased_until < ",
        )
        .push_bind(now)
        .push(")) ORDER BY v.ord RETURNING id, payload)");
    }
    Ok(())
}

async fn count_of(qb: &mut Statement, pool: &PgPool) -> StoreResult<i64> {
    Ok(qb.build_query_scalar::<i64>().fetch_one(pool).await?)
}
