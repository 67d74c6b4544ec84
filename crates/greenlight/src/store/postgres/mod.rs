//! PostgreSQL: the store for several replicas. Every change (the request, its audit entries,
//! its outbox jobs, the wake-up of other replicas' waiters) is one statement, so it commits
//! atomically in one round trip. The outbox is claimed with `FOR UPDATE SKIP LOCKED` and leases
//! that run out; what Slack limits per app (pacing, 429 pauses, one writer per message) is kept
//! in tables every replica shares; decisions are announced with NOTIFY.

mod coordination;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder};
use tokio_util::sync::CancellationToken;

use super::rows::{self, REQUEST_COLUMNS, to_json};
use super::*;
use coordination::PgCoordination;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel decisions are announced on.
const DECIDED_CHANNEL: &str = "greenlight_decided";
/// How long a replica looks after a due request's timers before another may.
const TIMER_LEASE_MS: Millis = 30_000;
/// The advisory lock of the audit chainer ("glaudt").
const CHAIN_LOCK: i64 = 0x676c_6175_6474;
/// How far below the highest chained id the chainer looks for entries committed late.
const CHAIN_LOOKBACK: i64 = 100_000;
/// How long `open` keeps trying a database that does not answer yet (it may be starting).
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

pub struct PostgresStore {
    pool: PgPool,
    coordination: Arc<PgCoordination>,
    /// Decisions to announce to other replicas, sent after their commit (see `announce`).
    decided: tokio::sync::mpsc::Sender<RequestId>,
}

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
        qb.push(") AS v(at, request_id, event, actor, data, ord) ORDER BY v.ord)");
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
                .push_bind(now + effect.delay_ms())
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

/// Each effect's job id, from the jobs a statement wrote (`None`: it collapsed into a job
/// already waiting), matched by payload: equal payloads are the same job to whoever reads it.
fn job_ids(
    effects: &[Effect],
    ids: Vec<i64>,
    payloads: Vec<String>,
) -> StoreResult<Vec<Option<i64>>> {
    let mut written: Vec<Option<(i64, String)>> = ids.into_iter().zip(payloads).map(Some).collect();
    effects
        .iter()
        .map(|effect| {
            let payload = to_json(effect)?;
            Ok(written
                .iter_mut()
                .find(|w| w.as_ref().is_some_and(|(_, p)| *p == payload))
                .and_then(Option::take)
                .map(|(id, _)| id))
        })
        .collect()
}

async fn count_of(qb: &mut Statement, pool: &PgPool) -> StoreResult<i64> {
    Ok(qb.build_query_scalar::<i64>().fetch_one(pool).await?)
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_request(
        &self,
        r: &Request,
        idempotency: Option<&Idempotency>,
        audit: &[NewAudit],
        effects: &[Effect],
        now: Millis,
    ) -> StoreResult<CreateOutcome> {
        let mut qb = Statement::new(
            "WITH src AS (INSERT INTO requests (id, workflow, title, details, params, requester, \
             status, decisions, decided_by, reason, created_at, decided_at, expires_at, channel, \
             callback_url, api_key_id, idempotency_key, idempotency_fingerprint, version, \
             reminders, remind_at, metadata, tool_call, digest_key) ",
        );
        qb.push_values([r], |mut row, r| {
            row.push_bind(r.id.to_string())
                .push_bind(r.workflow.to_string())
                .push_bind(r.title.clone())
                .push_bind(r.details.clone())
                .push_bind(serde_json::to_string(&r.params).unwrap_or_default())
                .push_bind(r.requester.clone())
                .push_bind(r.status.as_str())
                .push_bind(serde_json::to_string(&r.decisions).unwrap_or_default())
                .push_bind(r.decided_by.clone())
                .push_bind(r.reason.clone())
                .push_bind(millis(r.created_at))
                .push_bind(r.decided_at.map(millis))
                .push_bind(r.expires_at.map(millis))
                .push_bind(r.channel.to_string())
                .push_bind(r.callback_url.clone())
                .push_bind(
                    r.created_by
                        .as_ref()
                        .or(idempotency.map(|i| &i.api_key))
                        .map(|k| k.to_string()),
                )
                .push_bind(idempotency.map(|i| i.key.clone()))
                .push_bind(idempotency.map(|i| i.fingerprint.clone()))
                .push_bind(r.version)
                .push_bind(i64::from(r.reminders))
                .push_bind(r.remind_at.map(millis))
                .push_bind(
                    r.metadata
                        .as_ref()
                        .map(|m| serde_json::Value::Object(m.clone()).to_string()),
                )
                .push_bind(
                    r.tool_call
                        .as_ref()
                        .map(|t| serde_json::to_string(t).unwrap_or_default()),
                )
                .push_bind(r.digest_key.clone());
        });
        // A repeated idempotency key conflicts; nothing is written and the earlier request is
        // looked up below (also when the two creates raced on different replicas).
        qb.push(" ON CONFLICT DO NOTHING RETURNING id)");
        push_audit_and_effects(&mut qb, "src", now, audit, effects)?;
        if effects.is_empty() {
            qb.push(" SELECT count(*), ARRAY[]::bigint[], ARRAY[]::text[] FROM src");
        } else {
            qb.push(
                " SELECT (SELECT count(*) FROM src), \
                 ARRAY(SELECT id FROM job_rows ORDER BY id), \
                 ARRAY(SELECT payload FROM job_rows ORDER BY id)",
            );
        }
        let (created, ids, payloads): (i64, Vec<i64>, Vec<String>) =
            qb.build_query_as().fetch_one(&self.pool).await?;
        if created == 1 {
            let ids = job_ids(effects, ids, payloads)?;
            return Ok(CreateOutcome::Created(Delivery::written_for(
                &r.id, effects, &ids, now,
            )?));
        }
        let Some(idem) = idempotency else {
            return Err(StoreError::Corrupt(format!("request id {} exists", r.id)));
        };
        let found: Option<(Option<String>, String)> = sqlx::query_as(
            "SELECT idempotency_fingerprint, id FROM requests \
             WHERE api_key_id = $1 AND idempotency_key = $2",
        )
        .bind(idem.api_key.as_str())
        .bind(&idem.key)
        .fetch_optional(&self.pool)
        .await?;
        let Some((fingerprint, id)) = found else {
            return Err(StoreError::Corrupt(format!("request id {} exists", r.id)));
        };
        if fingerprint.as_deref() != Some(idem.fingerprint.as_str()) {
            return Ok(CreateOutcome::KeyReused);
        }
        let id: RequestId = id
            .parse()
            .map_err(|e: crate::domain::IdError| StoreError::Corrupt(e.to_string()))?;
        let existing = self
            .get_request(&id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("request {id} vanished")))?;
        Ok(CreateOutcome::Existing(Box::new(existing)))
    }

    async fn get_request(&self, id: &RequestId) -> StoreResult<Option<Request>> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE id = $1");
        let row: Option<rows::RequestRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(Request::try_from).transpose()
    }

    async fn list_requests(&self, filter: &ListFilter) -> StoreResult<Vec<Request>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests \
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR workflow = $2) \
             AND ($3::text IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        );
        let found = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(filter.status.map(Status::as_str))
            .bind(filter.workflow.as_ref().map(|w| w.as_str()))
            .bind(filter.before.as_ref().map(|b| b.as_str()))
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        rows::requests(found)
    }

    async fn save_transition(
        &self,
        r: &Request,
        expected_version: i64,
        audit: &[NewAudit],
        effects: &[Effect],
        now: Millis,
    ) -> StoreResult<bool> {
        let mut qb = Statement::new("WITH src AS (UPDATE requests SET status = ");
        qb.push_bind(r.status.as_str())
            .push(", decisions = ")
            .push_bind(to_json(&r.decisions)?)
            .push(", decided_by = ")
            .push_bind(r.decided_by.clone())
            .push(", reason = ")
            .push_bind(r.reason.clone())
            .push(", decided_at = ")
            .push_bind(r.decided_at.map(millis))
            .push(", version = ")
            .push_bind(r.version)
            .push(", reminders = ")
            .push_bind(i64::from(r.reminders))
            .push(", remind_at = ")
            .push_bind(r.remind_at.map(millis))
            .push(" WHERE id = ")
            .push_bind(r.id.to_string())
            .push(" AND version = ")
            .push_bind(expected_version)
            .push(" RETURNING id)");
        push_audit_and_effects(&mut qb, "src", now, audit, effects)?;
        qb.push(" SELECT count(*) FROM src");
        let saved = count_of(&mut qb, &self.pool).await? == 1;
        if saved && r.status.is_final() {
            // Told to other replicas after the commit, not in it: a NOTIFY in the deciding
            // transaction would hold PostgreSQL's one notification lock through its fsync and
            // so commit every decision one at a time. A notice lost here only delays a
            // long-poll on another replica until its next look (every 5 s).
            let _ = self.decided.try_send(r.id.clone());
        }
        Ok(saved)
    }

    async fn record(&self, audit: &[NewAudit], effects: &[Effect], now: Millis) -> StoreResult<()> {
        if audit.is_empty() && effects.is_empty() {
            return Ok(());
        }
        let mut qb = Statement::new("WITH src AS (SELECT 1 AS one)");
        push_audit_and_effects(&mut qb, "src", now, audit, effects)?;
        qb.push(" SELECT count(*) FROM src");
        count_of(&mut qb, &self.pool).await.map(|_| ())
    }

    async fn due_requests(&self, now: Millis, limit: u32) -> StoreResult<Vec<RequestId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            // Each half reads its own partial index (expiry, reminders), so a tick costs what
            // is due, not every pending request.
            "WITH expiring AS (SELECT id FROM requests WHERE status = 'pending' \
                 AND expires_at <= $1 AND (timer_lease_until IS NULL OR timer_lease_until < $1) \
                 ORDER BY expires_at LIMIT $3 FOR UPDATE SKIP LOCKED), \
             reminding AS (SELECT id FROM requests WHERE status = 'pending' \
                 AND remind_at <= $1 AND (timer_lease_until IS NULL OR timer_lease_until < $1) \
                 ORDER BY remind_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE requests SET timer_lease_until = $2 \
             WHERE id IN (SELECT id FROM expiring UNION SELECT id FROM reminding) \
             RETURNING id",
        )
        .bind(now)
        .bind(now + TIMER_LEASE_MS)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut ids = rows::request_ids(ids)?;
        ids.sort();
        Ok(ids)
    }

    async fn votable_requests(&self, f: &VotableFilter) -> StoreResult<Page> {
        if f.workflows.is_empty() {
            return Ok(Page::default());
        }
        let names = |w: &[WorkflowName]| w.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let (workflows, not_own_in) = (names(&f.workflows), names(&f.not_own_in));
        let matching = "FROM requests WHERE status = 'pending' AND workflow = ANY($1) \
             AND NOT (requester IS NOT NULL AND requester = $2 AND workflow = ANY($3)) \
             AND NOT decisions::jsonb @> jsonb_build_array(jsonb_build_object('by', $2::text))";
        let sql = format!("SELECT {REQUEST_COLUMNS} {matching} ORDER BY id DESC LIMIT $4");
        let found = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&workflows)
            .bind(&f.voter)
            .bind(&not_own_in)
            .bind(i64::from(f.limit))
            .fetch_all(&self.pool)
            .await?;
        let sql = format!("SELECT count(*) FROM (SELECT 1 {matching} LIMIT $4) AS m");
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(&workflows)
            .bind(&f.voter)
            .bind(&not_own_in)
            .bind(i64::from(VOTABLE_COUNT_CAP))
            .fetch_one(&self.pool)
            .await?;
        Ok(Page {
            requests: rows::requests(found)?,
            total: u32::try_from(total).unwrap_or(VOTABLE_COUNT_CAP),
        })
    }

    async fn requests_by(&self, requester: &str, limit: u32) -> StoreResult<Vec<Request>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE requester = $1 ORDER BY id DESC LIMIT $2"
        );
        let found = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(requester)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows::requests(found)
    }

    async fn recently_decided(
        &self,
        workflows: &[WorkflowName],
        requester: &str,
        since: Millis,
        limit: u32,
    ) -> StoreResult<Vec<Request>> {
        let names: Vec<String> = workflows.iter().map(|w| w.to_string()).collect();
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE status <> 'pending' AND decided_at >= $3 \
             AND (workflow = ANY($1) OR requester = $2) \
             ORDER BY decided_at DESC, id DESC LIMIT $4"
        );
        let found = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&names)
            .bind(requester)
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows::requests(found)
    }

    async fn record_home_opened(
        &self,
        user: &str,
        now: Millis,
        forget_before: Millis,
        effects: &[Effect],
    ) -> StoreResult<()> {
        let mut qb =
            Statement::new("WITH src AS (INSERT INTO home_opened (user_id, opened_at) VALUES (");
        qb.push_bind(user.to_owned())
            .push(", ")
            .push_bind(now)
            .push(
                ") ON CONFLICT (user_id) DO UPDATE SET opened_at = GREATEST(home_opened.opened_at, EXCLUDED.opened_at) \
                 RETURNING 1), forgotten AS (DELETE FROM home_opened WHERE opened_at < ",
            )
            .push_bind(forget_before)
            .push(")");
        push_audit_and_effects(&mut qb, "src", now, &[], effects)?;
        qb.push(" SELECT count(*) FROM src");
        count_of(&mut qb, &self.pool).await.map(|_| ())
    }

    async fn home_viewers(&self, since: Millis, limit: u32) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM home_opened WHERE opened_at >= $1 \
             ORDER BY opened_at DESC, user_id LIMIT $2",
        )
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn set_slack_message(&self, id: &RequestId, channel: &str, ts: &str) -> StoreResult<()> {
        sqlx::query("UPDATE requests SET slack_channel = $1, slack_ts = $2 WHERE id = $3")
            .bind(channel)
            .bind(ts)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_audit(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let sql = format!(
            "{} WHERE a.id > $1 ORDER BY a.id LIMIT $2",
            rows::AUDIT_SELECT
        );
        let found: Vec<rows::AuditRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        found.into_iter().map(AuditEvent::try_from).collect()
    }

    async fn chain_audit(&self, limit: u32) -> StoreResult<u32> {
        let mut tx = self.pool.begin().await?;
        // One chainer at a time across replicas; the others find the work done.
        let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !ours {
            return Ok(0);
        }
        let last: Option<(i64, String, i64)> = sqlx::query_as(
            "SELECT seq, hash, (SELECT MAX(audit_id) FROM audit_chain) FROM audit_chain \
             ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        // Ids are handed out before commit, so an entry can commit after a later one was
        // chained: look back a window below the highest chained id.
        let after = last.as_ref().map_or(0, |l| (l.2 - CHAIN_LOOKBACK).max(0));
        let found: Vec<rows::AuditRow> = sqlx::query_as(rows::UNCHAINED_AFTER)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        if found.is_empty() {
            return Ok(0);
        }
        let entries = found
            .into_iter()
            .map(AuditEvent::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        let links = rows::link(last.map(|(seq, hash, _)| (seq, hash)), &entries);
        let mut qb = Statement::new("INSERT INTO audit_chain (seq, audit_id, prev_hash, hash) ");
        qb.push_values(&links, |mut row, (seq, id, prev, hash)| {
            row.push_bind(*seq)
                .push_bind(*id)
                .push_bind(prev.clone())
                .push_bind(hash.clone());
        });
        qb.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(u32::try_from(links.len()).unwrap_or(u32::MAX))
    }

    async fn audit_chain(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<ChainLink>> {
        let sql = format!(
            "{} WHERE c.seq > $1 ORDER BY c.seq LIMIT $2",
            rows::CHAIN_SELECT
        );
        let found: Vec<rows::ChainRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        found.into_iter().map(ChainLink::try_from).collect()
    }

    async fn unchained_audit(&self, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let found: Vec<rows::AuditRow> = sqlx::query_as(rows::UNCHAINED_AFTER)
            .bind(0_i64)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        found.into_iter().map(AuditEvent::try_from).collect()
    }

    async fn claim_jobs(
        &self,
        owner: &str,
        lanes: &[(Lane, u32)],
        now: Millis,
        lease_ms: Millis,
    ) -> StoreResult<Vec<Job>> {
        let lanes: Vec<(Lane, u32)> = lanes.iter().copied().filter(|(_, n)| *n > 0).collect();
        if lanes.is_empty() {
            return Ok(Vec::new());
        }
        // One CTE per lane: each takes its own share, skipping rows other replicas hold.
        let mut qb = Statement::new("WITH ");
        for (i, (lane, limit)) in lanes.iter().enumerate() {
            if i > 0 {
                qb.push(", ");
            }
            qb.push(format!(
                "lane{i} AS (SELECT id FROM outbox WHERE state = 'pending' AND lane = "
            ))
            .push_bind(lane.as_str())
            .push(" AND next_attempt_at <= ")
            .push_bind(now)
            .push(" AND (leased_until IS NULL OR leased_until < ")
            .push_bind(now)
            .push(") ORDER BY next_attempt_at, id LIMIT ")
            .push_bind(i64::from(*limit))
            .push(" FOR UPDATE SKIP LOCKED)");
        }
        qb.push(" UPDATE outbox SET leased_until = ")
            .push_bind(now + lease_ms)
            .push(", lease_owner = ")
            .push_bind(owner.to_owned())
            .push(", claims = claims + 1 WHERE id IN (");
        for i in 0..lanes.len() {
            if i > 0 {
                qb.push(" UNION ALL ");
            }
            qb.push(format!("SELECT id FROM lane{i}"));
        }
        qb.push(") RETURNING id, payload, attempts, claims, created_at");
        let found = qb.build_query_as().fetch_all(&self.pool).await?;
        rows::jobs(found)
    }

    async fn recover_leases(&self) -> StoreResult<u64> {
        // Other replicas hold their leases; a dead one's run out by themselves.
        Ok(0)
    }

    async fn release_leases(&self, owner: &str) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE outbox SET leased_until = NULL, lease_owner = NULL \
             WHERE state = 'pending' AND lease_owner = $1",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM message_leases WHERE left(owner, length($1)) = $1")
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn finish_job(&self, id: i64, now: Millis, report: &JobReport) -> StoreResult<()> {
        let rows::Finish {
            state,
            next,
            error,
            counts,
            outcome,
        } = rows::Finish::of(&report.result);
        let mut qb = Statement::new("WITH src AS (UPDATE outbox SET state = ");
        qb.push_bind(state.as_str())
            .push(", next_attempt_at = COALESCE(")
            .push_bind(next)
            .push(", next_attempt_at), last_error = COALESCE(")
            .push_bind(error.map(str::to_owned))
            .push(", last_error), attempts = attempts + ")
            .push_bind(i64::from(counts && report.attempted))
            .push(", leased_until = NULL, lease_owner = NULL, updated_at = ")
            .push_bind(now)
            .push(" WHERE id = ")
            .push_bind(id)
            .push(" RETURNING id, request_id)");
        if report.attempted {
            qb.push(", attempt_rows AS (INSERT INTO outbox_attempts (job_id, at, outcome, error) SELECT id, ")
                .push_bind(now)
                .push(", ")
                .push_bind(outcome)
                .push(", ")
                .push_bind(error.map(str::to_owned))
                .push(" FROM src)");
        }
        if let Some(m) = &report.posted {
            qb.push(", posted_rows AS (UPDATE requests SET slack_channel = ")
                .push_bind(m.channel.clone())
                .push(", slack_ts = ")
                .push_bind(m.ts.clone())
                .push(" FROM src WHERE requests.id = src.request_id)");
        }
        if let Some(a) = &report.action {
            qb.push(", action_rows AS (INSERT INTO action_results (request_id, name, ok, summary, attempts, at) SELECT request_id, ")
                .push_bind(a.name.clone())
                .push(", ")
                .push_bind(a.ok)
                .push(", ")
                .push_bind(a.summary.clone())
                .push(", ")
                .push_bind(i64::from(a.attempts))
                .push(", ")
                .push_bind(millis(a.at))
                .push(" FROM src)");
        }
        push_audit_and_effects(&mut qb, "src", now, &report.audit, &report.effects)?;
        qb.push(" SELECT count(*) FROM src");
        count_of(&mut qb, &self.pool).await.map(|_| ())
    }

    async fn next_job_due(&self, lanes: &[Lane], now: Millis) -> StoreResult<Option<Millis>> {
        // One index walk per lane (outbox_lane_due), past the jobs in flight.
        let names: Vec<&str> = lanes.iter().map(|l| l.as_str()).collect();
        Ok(sqlx::query_scalar(
            "SELECT MIN(( \
                 SELECT next_attempt_at FROM outbox \
                 WHERE state = 'pending' AND lane = l \
                   AND (leased_until IS NULL OR leased_until < $2) \
                 ORDER BY next_attempt_at LIMIT 1)) \
             FROM unnest($1::text[]) AS l",
        )
        .bind(&names)
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn deliveries(&self, request_id: &RequestId) -> StoreResult<Vec<Delivery>> {
        let sql = format!(
            "SELECT {} FROM outbox WHERE request_id = $1 ORDER BY id",
            rows::DELIVERY_COLUMNS
        );
        let jobs = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(request_id.as_str())
            .fetch_all(&self.pool)
            .await?;
        let attempts = sqlx::query_as(
            "SELECT a.job_id, a.at, a.outcome, a.error FROM outbox_attempts a \
             JOIN outbox o ON o.id = a.job_id WHERE o.request_id = $1 ORDER BY a.id DESC",
        )
        .bind(request_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows::deliveries(jobs, attempts)
    }

    async fn action_results(&self, request_id: &RequestId) -> StoreResult<Vec<ActionResult>> {
        let found: Vec<rows::ActionRow> = sqlx::query_as(
            "SELECT name, ok, summary, attempts, at FROM action_results WHERE request_id = $1 ORDER BY id",
        )
        .bind(request_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        found.into_iter().map(ActionResult::try_from).collect()
    }

    async fn meta_get_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        // Two statements, two snapshots: the SELECT sees a row another replica inserted first.
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn insert_api_key(&self, key: &ApiKey, hash: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(key.id.as_str())
        .bind(&key.name)
        .bind(hash)
        .bind(rows::scopes_text(key))
        .bind(millis(key.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn find_api_key(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        let sql = format!(
            "SELECT {} FROM api_keys WHERE hash = $1",
            rows::API_KEY_COLUMNS
        );
        let row: Option<rows::ApiKeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(ApiKey::try_from).transpose()
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        let sql = format!("SELECT {} FROM api_keys ORDER BY id", rows::API_KEY_COLUMNS);
        let found: Vec<rows::ApiKeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        found.into_iter().map(ApiKey::try_from).collect()
    }

    async fn revoke_api_key(&self, id: &ApiKeyId, now: Timestamp) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(millis(now))
                .bind(id.as_str())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn close(&self) {
        self.pool.close().await;
        self.coordination.close().await;
    }

    fn coordination(&self) -> Arc<dyn Coordination> {
        self.coordination.clone()
    }

    async fn follow_decisions(&self, feed: DecisionFeed, stop: CancellationToken) {
        let mut first = true;
        while !stop.is_cancelled() {
            let listener = async {
                let mut l = PgListener::connect_with(&self.pool).await?;
                l.listen(DECIDED_CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            let mut listener = match listener.await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for decisions; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if !std::mem::take(&mut first) {
                // Decisions made while the listener was away were not heard: look again.
                feed(None);
            }
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    n = listener.try_recv() => n,
                };
                match next {
                    Ok(Some(n)) => {
                        for id in n.payload().split(',') {
                            match id.parse() {
                                Ok(id) => feed(Some(id)),
                                Err(_) => tracing::warn!(payload = id, "odd decision notice"),
                            }
                        }
                    }
                    // The connection was lost; the next call reconnects and listens again.
                    Ok(None) => {
                        tracing::warn!("lost the decision listener's connection; reconnecting");
                        feed(None);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "decision listener failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn backup(&self, _path: &std::path::Path) -> StoreResult<()> {
        Err(StoreError::Unsupported(
            "greenlight backup copies SQLite databases; back up PostgreSQL with pg_dump (see docs/operations.md)",
        ))
    }

    async fn signal(&self, name: &SignalName) -> StoreResult<Option<Signal>> {
        let sql = format!(
            "SELECT {} FROM signals WHERE name = $1",
            rows::SIGNAL_COLUMNS
        );
        let row: Option<rows::SignalRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(Signal::try_from).transpose()
    }

    async fn signals(&self) -> StoreResult<Vec<Signal>> {
        let sql = format!("SELECT {} FROM signals ORDER BY name", rows::SIGNAL_COLUMNS);
        let found: Vec<rows::SignalRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        found.into_iter().map(Signal::try_from).collect()
    }

    async fn count_created(&self, workflow: &str, since: Millis) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(rows::COUNT_CREATED)
            .bind(workflow)
            .bind(rows::first_id_at(since))
            .fetch_one(&self.pool)
            .await?)
    }

    async fn count_created_by_requester(
        &self,
        workflow: &str,
        since: Millis,
    ) -> StoreResult<Vec<(Option<String>, i64)>> {
        Ok(sqlx::query_as(rows::COUNT_CREATED_BY_REQUESTER)
            .bind(workflow)
            .bind(rows::first_id_at(since))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn count_denied(&self, workflow: &str, since: Millis) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(rows::COUNT_DENIED)
            .bind(workflow)
            .bind(since)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn count_decided_by(&self, rule: &str, since: Millis) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(rows::COUNT_DECIDED_BY)
            .bind(rule)
            .bind(since)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn digest_summary(&self, key: &str) -> StoreResult<DigestSummary> {
        let by_rule: Vec<(String, String, i64)> = sqlx::query_as(rows::DIGEST_BY_RULE)
            .bind(key)
            .fetch_all(&self.pool)
            .await?;
        let by_requester: Vec<(Option<String>, i64)> = sqlx::query_as(rows::DIGEST_BY_REQUESTER)
            .bind(key)
            .fetch_all(&self.pool)
            .await?;
        let recent: Vec<DigestEntry> = sqlx::query_as(rows::DIGEST_RECENT)
            .bind(key)
            .fetch_all(&self.pool)
            .await?;
        Ok(DigestSummary {
            total: by_rule.iter().map(|(_, _, n)| n).sum(),
            by_rule,
            by_requester,
            recent,
        })
    }

    async fn digest_message(&self, key: &str) -> StoreResult<Option<SlackMessageRef>> {
        let row: Option<(String, String)> = sqlx::query_as(rows::DIGEST_MESSAGE)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(channel, ts)| SlackMessageRef { channel, ts }))
    }

    async fn put_signal(
        &self,
        signal: &Signal,
        expected: Option<Millis>,
        audit: &[NewAudit],
        now: Millis,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let written = put_signal_in(&mut *tx, signal, expected).await?;
        if written && !audit.is_empty() {
            let mut qb = Statement::new("WITH src AS (SELECT 1 AS one)");
            push_audit_and_effects(&mut qb, "src", now, audit, &[])?;
            qb.push(" SELECT count(*) FROM src");
            qb.build_query_scalar::<i64>().fetch_one(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    async fn approved_with(
        &self,
        workflow: &str,
        param: &str,
        value: &serde_json::Value,
    ) -> StoreResult<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM requests WHERE workflow = $1 AND status = 'approved' \
             AND (params::jsonb -> $2) = $3::jsonb)",
        )
        .bind(workflow)
        .bind(param)
        .bind(value.to_string())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn set_digest_message(
        &self,
        digest: &DigestWindow,
        channel: &str,
        ts: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO digests (key, channel, window_start, window_end, slack_channel, slack_ts) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO UPDATE SET \
             slack_channel = EXCLUDED.slack_channel, slack_ts = EXCLUDED.slack_ts",
        )
        .bind(&digest.key)
        .bind(&digest.channel)
        .bind(digest.start)
        .bind(digest.end)
        .bind(channel)
        .bind(ts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim_alert(
        &self,
        key: &str,
        now: Millis,
        window_ms: Millis,
        audit: &[NewAudit],
        effects: &[Effect],
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "INSERT INTO alert_state (key, fired_at) VALUES ($1, $2) ON CONFLICT (key) \
             DO UPDATE SET fired_at = EXCLUDED.fired_at WHERE alert_state.fired_at <= $3",
        )
        .bind(key)
        .bind(now)
        .bind(now - window_ms)
        .execute(&mut *tx)
        .await?;
        let fired = done.rows_affected() == 1;
        if fired && !(audit.is_empty() && effects.is_empty()) {
            let mut qb = Statement::new("WITH src AS (SELECT 1 AS one)");
            push_audit_and_effects(&mut qb, "src", now, audit, effects)?;
            qb.push(" SELECT count(*) FROM src");
            qb.build_query_scalar::<i64>().fetch_one(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(fired)
    }
}

/// The compare-and-set of a signal: insert when there was none, else update if it was last
/// set at `expected`.
async fn put_signal_in<'c, E>(conn: E, s: &Signal, expected: Option<Millis>) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let done = match expected {
        None => sqlx::query(
            "INSERT INTO signals (name, value, since, updated_at, set_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
        ),
        Some(_) => sqlx::query(
            "UPDATE signals SET value = $2, since = $3, updated_at = $4, set_by = $5, \
             expires_at = $6 WHERE name = $1 AND updated_at = $7",
        ),
    }
    .bind(s.name.as_str().to_owned())
    .bind(s.value.to_string())
    .bind(millis(s.since))
    .bind(millis(s.updated_at))
    .bind(s.set_by.clone())
    .bind(s.expires_at.map(millis))
    .bind(expected.unwrap_or_default())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
