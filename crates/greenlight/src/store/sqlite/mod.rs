//! SQLite: one file, WAL, `synchronous=FULL` so that every commit is on disk before we answer.
//! Writes go through one writer task with group commit (see `writer`): SQLite has one
//! writer anyway, and sharing each fsync among the writes of the same instant is what makes
//! thousands of durable decisions per second possible. Reads use their own connections.

mod writer;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use writer::Writer;

use super::rows::{self, REQUEST_COLUMNS, to_json};
use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    writer: Writer,
    reader: SqlitePool,
    coordination: Arc<LocalCoordination>,
}

impl SqliteStore {
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        {
            let migrations = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await?;
            MIGRATOR.run(&migrations).await?;
            migrations.close().await;
        }
        let writer = Writer::start(options.clone()).await?;
        // Readers never write, so they never wait for the writer (WAL).
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Ok(Self {
            writer,
            reader,
            coordination: Arc::default(),
        })
    }
}

/// One round trip for a whole change: sqlx runs each SQLite statement on the connection's own
/// thread, so every statement costs two thread switches. A change, its audit entries and its
/// outbox jobs are therefore sent as one multi-statement query.
type Statements = QueryBuilder<Sqlite>;

/// Appends ` WHERE EXISTS (...)`: the request carries `token`, i.e. the compare-and-set sent
/// in this same query took effect. (The new version alone would not do: a concurrent write from
/// the same old version reaches the same new version.)
fn push_change_guard(qb: &mut Statements, id: &str, token: &str) -> bool {
    qb.push(" WHERE EXISTS (SELECT 1 FROM requests WHERE id = ")
        .push_bind(id.to_owned())
        .push(" AND change_token = ")
        .push_bind(token.to_owned())
        .push(")");
    true
}

/// Appends one INSERT per audit entry and per effect, each as `INSERT ... SELECT <values>` so
/// that `guard` can add a `WHERE` condition (it says whether it did).
fn push_audit_and_effects(
    qb: &mut Statements,
    now: Millis,
    audit: &[NewAudit],
    effects: &[Effect],
    guard: &dyn Fn(&mut Statements) -> bool,
) -> StoreResult<()> {
    for a in audit {
        qb.push("; INSERT INTO audit (at, request_id, event, actor, data) SELECT ")
            .push_bind(now)
            .push(", ")
            .push_bind(a.request_id.as_ref().map(|id| id.to_string()))
            .push(", ")
            .push_bind(a.event)
            .push(", ")
            .push_bind(a.actor.clone())
            .push(", ")
            .push_bind(to_json(&a.data)?);
        guard(qb);
    }
    for effect in effects {
        let request_id = effect.request_id().map(|id| id.to_string());
        let collapse = effect.collapse_key();
        qb.push(
            "; INSERT INTO outbox (request_id, kind, lane, collapse_key, payload, next_attempt_at, created_at, updated_at) SELECT ",
        )
        .push_bind(request_id)
        .push(", ")
        .push_bind(effect.kind())
        .push(", ")
        .push_bind(effect.lane().as_str())
        .push(", ")
        .push_bind(collapse.clone())
        .push(", ")
        .push_bind(to_json(effect)?)
        .push(", ")
        .push_bind(now + effect.delay_ms())
        .push(", ")
        .push_bind(now)
        .push(", ")
        .push_bind(now);
        let guarded = guard(qb);
        if let Some(key) = collapse {
            // The waiting job renders the latest state when delivered: later changes
            // collapse into it.
            qb.push(if guarded { " AND" } else { " WHERE" })
                .push(" NOT EXISTS (SELECT 1 FROM outbox WHERE collapse_key = ")
                .push_bind(key)
                .push(" AND state = 'pending' AND (leased_until IS NULL OR leased_until < ")
                .push_bind(now)
                .push("))");
        }
    }
    Ok(())
}

fn no_guard(_: &mut Statements) -> bool {
    false
}

/// What an insert found instead of creating a request.
enum Found {
    Existing(RequestId),
    KeyReused,
}

async fn create_in(
    conn: &mut SqliteConnection,
    r: &Request,
    idempotency: Option<&Idempotency>,
    audit: &[NewAudit],
    effects: &[Effect],
    now: Millis,
) -> StoreResult<Option<Found>> {
    if let Some(idem) = idempotency {
        let row = sqlx::query(
            "SELECT idempotency_fingerprint, id FROM requests \
             WHERE api_key_id = $1 AND idempotency_key = $2",
        )
        .bind(idem.api_key.as_str())
        .bind(&idem.key)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = row {
            let fingerprint: Option<String> = row.try_get(0)?;
            let id: String = row.try_get(1)?;
            if fingerprint.as_deref() != Some(idem.fingerprint.as_str()) {
                return Ok(Some(Found::KeyReused));
            }
            let id = id
                .parse()
                .map_err(|e: crate::domain::IdError| StoreError::Corrupt(e.to_string()))?;
            return Ok(Some(Found::Existing(id)));
        }
    }
    let mut qb = Statements::new(
        "INSERT INTO requests (id, workflow, title, details, params, requester, status, \
         decisions, decided_by, reason, created_at, decided_at, expires_at, channel, \
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
    push_audit_and_effects(&mut qb, now, audit, effects, &no_guard)?;
    qb.build().execute(&mut *conn).await?;
    Ok(None)
}

async fn save_in(
    conn: &mut SqliteConnection,
    r: &Request,
    expected_version: i64,
    audit: &[NewAudit],
    effects: &[Effect],
    now: Millis,
) -> StoreResult<bool> {
    let id = r.id.to_string();
    let token = ulid::Ulid::new().to_string();
    let mut qb = Statements::new("UPDATE requests SET status = ");
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
        .push(", change_token = ")
        .push_bind(token.clone())
        .push(" WHERE id = ")
        .push_bind(id.clone())
        .push(" AND version = ")
        .push_bind(expected_version);
    // The inserts land only if the compare-and-set did; nothing at all changes otherwise.
    push_audit_and_effects(&mut qb, now, audit, effects, &|qb| {
        push_change_guard(qb, &id, &token)
    })?;
    let done = qb.build().execute(&mut *conn).await?;
    Ok(done.rows_affected() > 0)
}

async fn finish_in(
    conn: &mut SqliteConnection,
    id: i64,
    now: Millis,
    report: &JobReport,
) -> StoreResult<()> {
    let rows::Finish {
        state,
        next,
        error,
        counts,
        outcome,
    } = rows::Finish::of(&report.result);
    sqlx::query(
        "UPDATE outbox SET state = $1, next_attempt_at = COALESCE($2, next_attempt_at), \
         last_error = COALESCE($3, last_error), attempts = attempts + $4, leased_until = NULL, \
         updated_at = $5 WHERE id = $6",
    )
    .bind(state.as_str())
    .bind(next)
    .bind(error)
    .bind(i64::from(counts && report.attempted))
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if report.attempted {
        sqlx::query(
            "INSERT INTO outbox_attempts (job_id, at, outcome, error) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(now)
        .bind(outcome)
        .bind(error)
        .execute(&mut *conn)
        .await?;
    }
    if let Some(a) = &report.action {
        sqlx::query(
            "INSERT INTO action_results (request_id, name, ok, summary, attempts, at) \
             SELECT request_id, $2, $3, $4, $5, $6 FROM outbox WHERE id = $1",
        )
        .bind(id)
        .bind(&a.name)
        .bind(a.ok)
        .bind(&a.summary)
        .bind(i64::from(a.attempts))
        .bind(millis(a.at))
        .execute(&mut *conn)
        .await?;
    }
    if !report.audit.is_empty() || !report.effects.is_empty() {
        let mut qb = Statements::new("SELECT 1");
        push_audit_and_effects(&mut qb, now, &report.audit, &report.effects, &no_guard)?;
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Chains the next entries. One writer commits in id order, so nothing below the last chained
/// id can still appear.
async fn chain_in(conn: &mut SqliteConnection, limit: u32) -> StoreResult<u32> {
    let last: Option<(i64, String, i64)> =
        sqlx::query_as("SELECT seq, hash, audit_id FROM audit_chain ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let after = last.as_ref().map_or(0, |l| l.2);
    let found: Vec<rows::AuditRow> = sqlx::query_as(rows::UNCHAINED_AFTER)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
    if found.is_empty() {
        return Ok(0);
    }
    let entries = found
        .into_iter()
        .map(AuditEvent::try_from)
        .collect::<StoreResult<Vec<_>>>()?;
    let links = rows::link(last.map(|(seq, hash, _)| (seq, hash)), &entries);
    let mut qb = Statements::new("INSERT INTO audit_chain (seq, audit_id, prev_hash, hash) ");
    qb.push_values(&links, |mut row, (seq, id, prev, hash)| {
        row.push_bind(*seq)
            .push_bind(*id)
            .push_bind(prev.clone())
            .push_bind(hash.clone());
    });
    qb.build().execute(&mut *conn).await?;
    Ok(u32::try_from(links.len()).unwrap_or(u32::MAX))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_request(
        &self,
        request: &Request,
        idempotency: Option<&Idempotency>,
        audit: &[NewAudit],
        effects: &[Effect],
        now: Millis,
    ) -> StoreResult<CreateOutcome> {
        let (r, idem, audit, effects) = (
            request.clone(),
            idempotency.cloned(),
            audit.to_vec(),
            effects.to_vec(),
        );
        let found = self
            .writer
            .write(move |mut conn| async move {
                let res = create_in(&mut conn, &r, idem.as_ref(), &audit, &effects, now).await;
                (conn, res)
            })
            .await?;
        match found {
            None => Ok(CreateOutcome::Created),
            Some(Found::KeyReused) => Ok(CreateOutcome::KeyReused),
            Some(Found::Existing(id)) => {
                let existing = self
                    .get_request(&id)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt(format!("request {id} vanished")))?;
                Ok(CreateOutcome::Existing(Box::new(existing)))
            }
        }
    }

    async fn get_request(&self, id: &RequestId) -> StoreResult<Option<Request>> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE id = $1");
        let row: Option<rows::RequestRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?;
        row.map(Request::try_from).transpose()
    }

    async fn list_requests(&self, filter: &ListFilter) -> StoreResult<Vec<Request>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests \
             WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR workflow = $2) \
             AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        );
        let found = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(filter.status.map(Status::as_str))
            .bind(filter.workflow.as_ref().map(|w| w.as_str()))
            .bind(filter.before.as_ref().map(|b| b.as_str()))
            .bind(i64::from(filter.limit))
            .fetch_all(&self.reader)
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
        let (r, audit, effects) = (r.clone(), audit.to_vec(), effects.to_vec());
        self.writer
            .write(move |mut conn| async move {
                let res = save_in(&mut conn, &r, expected_version, &audit, &effects, now).await;
                (conn, res)
            })
            .await
    }

    async fn record(&self, audit: &[NewAudit], effects: &[Effect], now: Millis) -> StoreResult<()> {
        let (audit, effects) = (audit.to_vec(), effects.to_vec());
        self.writer
            .write(move |mut conn| async move {
                let res = async {
                    let mut qb = Statements::new("SELECT 1");
                    push_audit_and_effects(&mut qb, now, &audit, &effects, &no_guard)?;
                    qb.build().execute(&mut conn).await?;
                    Ok(())
                }
                .await;
                (conn, res)
            })
            .await
    }

    async fn due_requests(&self, now: Millis, limit: u32) -> StoreResult<Vec<RequestId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM requests WHERE status = 'pending' AND expires_at <= $1 \
             UNION SELECT id FROM requests WHERE status = 'pending' AND remind_at <= $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows::request_ids(ids)
    }

    async fn votable_requests(&self, f: &VotableFilter) -> StoreResult<Page> {
        if f.workflows.is_empty() {
            return Ok(Page::default());
        }
        let names = |w: &[WorkflowName]| {
            serde_json::to_string(&w.iter().map(|w| w.as_str()).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let (workflows, not_own_in) = (names(&f.workflows), names(&f.not_own_in));
        let matching = "FROM requests WHERE status = 'pending' \
             AND workflow IN (SELECT value FROM json_each($1)) \
             AND NOT (requester IS NOT NULL AND requester = $2 \
                      AND workflow IN (SELECT value FROM json_each($3))) \
             AND NOT EXISTS (SELECT 1 FROM json_each(requests.decisions) d \
                             WHERE json_extract(d.value, '$.by') = $2)";
        let sql = format!("SELECT {REQUEST_COLUMNS} {matching} ORDER BY id DESC LIMIT $4");
        let found = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&workflows)
            .bind(&f.voter)
            .bind(&not_own_in)
            .bind(i64::from(f.limit))
            .fetch_all(&self.reader)
            .await?;
        let sql = format!("SELECT count(*) FROM (SELECT 1 {matching} LIMIT $4)");
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(&workflows)
            .bind(&f.voter)
            .bind(&not_own_in)
            .bind(i64::from(VOTABLE_COUNT_CAP))
            .fetch_one(&self.reader)
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
            .fetch_all(&self.reader)
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
        let names: Vec<&str> = workflows.iter().map(|w| w.as_str()).collect();
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE status <> 'pending' AND decided_at >= $3 \
             AND (workflow IN (SELECT value FROM json_each($1)) OR requester = $2) \
             ORDER BY decided_at DESC, id DESC LIMIT $4"
        );
        let found = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(serde_json::to_string(&names).unwrap_or_default())
            .bind(requester)
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
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
        let (user, effects) = (user.to_owned(), effects.to_vec());
        self.writer
            .write(move |mut conn| async move {
                let res = async {
                    let mut qb =
                        Statements::new("INSERT INTO home_opened (user_id, opened_at) VALUES (");
                    qb.push_bind(user)
                        .push(", ")
                        .push_bind(now)
                        .push(
                            ") ON CONFLICT (user_id) DO UPDATE SET opened_at = excluded.opened_at; \
                             DELETE FROM home_opened WHERE opened_at < ",
                        )
                        .push_bind(forget_before);
                    push_audit_and_effects(&mut qb, now, &[], &effects, &no_guard)?;
                    qb.build().execute(&mut conn).await?;
                    Ok(())
                }
                .await;
                (conn, res)
            })
            .await
    }

    async fn home_viewers(&self, since: Millis, limit: u32) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM home_opened WHERE opened_at >= $1 \
             ORDER BY opened_at DESC, user_id LIMIT $2",
        )
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?)
    }

    async fn set_slack_message(&self, id: &RequestId, channel: &str, ts: &str) -> StoreResult<()> {
        let query =
            sqlx::query("UPDATE requests SET slack_channel = $1, slack_ts = $2 WHERE id = $3")
                .bind(channel.to_owned())
                .bind(ts.to_owned())
                .bind(id.to_string());
        self.writer.execute(query).await.map(|_| ())
    }

    async fn list_audit(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let sql = format!(
            "{} WHERE a.id > $1 ORDER BY a.id LIMIT $2",
            rows::AUDIT_SELECT
        );
        let found: Vec<rows::AuditRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        found.into_iter().map(AuditEvent::try_from).collect()
    }

    async fn chain_audit(&self, limit: u32) -> StoreResult<u32> {
        self.writer
            .write(move |mut conn| async move {
                let res = chain_in(&mut conn, limit).await;
                (conn, res)
            })
            .await
    }

    async fn audit_chain(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<ChainLink>> {
        let sql = format!(
            "{} WHERE c.seq > $1 ORDER BY c.seq LIMIT $2",
            rows::CHAIN_SELECT
        );
        let found: Vec<rows::ChainRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        found.into_iter().map(ChainLink::try_from).collect()
    }

    async fn unchained_audit(&self, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let found: Vec<rows::AuditRow> = sqlx::query_as(rows::UNCHAINED_AFTER)
            .bind(0_i64)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        found.into_iter().map(AuditEvent::try_from).collect()
    }

    async fn claim_jobs(
        &self,
        _owner: &str,
        lanes: &[(Lane, u32)],
        now: Millis,
        lease_ms: Millis,
    ) -> StoreResult<Vec<Job>> {
        let lanes: Vec<(Lane, u32)> = lanes.iter().copied().filter(|(_, n)| *n > 0).collect();
        if lanes.is_empty() {
            return Ok(Vec::new());
        }
        let found = self
            .writer
            .write(move |mut conn| async move {
                let mut qb = Statements::new("UPDATE outbox SET leased_until = ");
                qb.push_bind(now + lease_ms)
                    .push(", claims = claims + 1 WHERE id IN (");
                for (i, (lane, limit)) in lanes.iter().enumerate() {
                    if i > 0 {
                        qb.push(" UNION ALL ");
                    }
                    qb.push(
                        "SELECT id FROM (SELECT id FROM outbox WHERE state = 'pending' AND lane = ",
                    )
                    .push_bind(lane.as_str())
                    .push(" AND next_attempt_at <= ")
                    .push_bind(now)
                    .push(" AND (leased_until IS NULL OR leased_until < ")
                    .push_bind(now)
                    .push(") ORDER BY next_attempt_at, id LIMIT ")
                    .push_bind(i64::from(*limit))
                    .push(")");
                }
                qb.push(") RETURNING id, payload, attempts, claims, created_at");
                let res = qb
                    .build_query_as()
                    .fetch_all(&mut conn)
                    .await
                    .map_err(StoreError::from);
                (conn, res)
            })
            .await?;
        rows::jobs(found)
    }

    async fn recover_leases(&self) -> StoreResult<u64> {
        self.writer
            .execute(sqlx::query(
                "UPDATE outbox SET leased_until = NULL WHERE state = 'pending' AND leased_until IS NOT NULL",
            ))
            .await
    }

    async fn release_leases(&self, _owner: &str) -> StoreResult<u64> {
        // One process per file: every lease is this process's own.
        self.recover_leases().await
    }

    async fn finish_job(&self, id: i64, now: Millis, report: &JobReport) -> StoreResult<()> {
        let report = report.clone();
        self.writer
            .write(move |mut conn| async move {
                let res = finish_in(&mut conn, id, now, &report).await;
                (conn, res)
            })
            .await
    }

    async fn next_job_due(&self) -> StoreResult<Option<Millis>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(MAX(next_attempt_at, COALESCE(leased_until, 0))) FROM outbox WHERE state = 'pending'",
        )
        .fetch_one(&self.reader)
        .await?)
    }

    async fn deliveries(&self, request_id: &RequestId) -> StoreResult<Vec<Delivery>> {
        let sql = format!(
            "SELECT {} FROM outbox WHERE request_id = $1 ORDER BY id",
            rows::DELIVERY_COLUMNS
        );
        let jobs = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(request_id.as_str())
            .fetch_all(&self.reader)
            .await?;
        let attempts = sqlx::query_as(
            "SELECT a.job_id, a.at, a.outcome, a.error FROM outbox_attempts a \
             JOIN outbox o ON o.id = a.job_id WHERE o.request_id = $1 ORDER BY a.id DESC",
        )
        .bind(request_id.as_str())
        .fetch_all(&self.reader)
        .await?;
        rows::deliveries(jobs, attempts)
    }

    async fn action_results(&self, request_id: &RequestId) -> StoreResult<Vec<ActionResult>> {
        let found: Vec<rows::ActionRow> = sqlx::query_as(
            "SELECT name, ok, summary, attempts, at FROM action_results WHERE request_id = $1 ORDER BY id",
        )
        .bind(request_id.as_str())
        .fetch_all(&self.reader)
        .await?;
        found.into_iter().map(ActionResult::try_from).collect()
    }

    async fn meta_get_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.writer
            .write(move |mut conn| async move {
                let res = async {
                    sqlx::query(
                        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                    )
                    .bind(&key)
                    .bind(&value)
                    .execute(&mut conn)
                    .await?;
                    let stored: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                        .bind(&key)
                        .fetch_one(&mut conn)
                        .await?;
                    Ok(stored)
                }
                .await;
                (conn, res)
            })
            .await
    }

    async fn insert_api_key(&self, key: &ApiKey, hash: &str) -> StoreResult<()> {
        let query = sqlx::query(
            "INSERT INTO api_keys (id, name, hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(key.id.to_string())
        .bind(key.name.clone())
        .bind(hash.to_owned())
        .bind(rows::scopes_text(key))
        .bind(millis(key.created_at));
        self.writer.execute(query).await.map(|_| ())
    }

    async fn find_api_key(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        let sql = format!(
            "SELECT {} FROM api_keys WHERE hash = $1",
            rows::API_KEY_COLUMNS
        );
        let row: Option<rows::ApiKeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(hash)
            .fetch_optional(&self.reader)
            .await?;
        row.map(ApiKey::try_from).transpose()
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        let sql = format!("SELECT {} FROM api_keys ORDER BY id", rows::API_KEY_COLUMNS);
        let found: Vec<rows::ApiKeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.reader)
            .await?;
        found.into_iter().map(ApiKey::try_from).collect()
    }

    async fn revoke_api_key(&self, id: &ApiKeyId, now: Timestamp) -> StoreResult<bool> {
        let query =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(millis(now))
                .bind(id.to_string());
        Ok(self.writer.execute(query).await? == 1)
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    fn coordination(&self) -> Arc<dyn Coordination> {
        self.coordination.clone()
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn backup(&self, path: &std::path::Path) -> StoreResult<()> {
        // A reader's snapshot, written out whole: consistent, and the writer goes on meanwhile.
        let target = path.to_str().ok_or_else(|| {
            StoreError::Unavailable(format!("{} is not a UTF-8 path", path.display()))
        })?;
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(&self.reader)
            .await?;
        Ok(())
    }

    async fn signal(&self, name: &SignalName) -> StoreResult<Option<Signal>> {
        let sql = format!(
            "SELECT {} FROM signals WHERE name = $1",
            rows::SIGNAL_COLUMNS
        );
        let row: Option<rows::SignalRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(name.as_str())
            .fetch_optional(&self.reader)
            .await?;
        row.map(Signal::try_from).transpose()
    }

    async fn signals(&self) -> StoreResult<Vec<Signal>> {
        let sql = format!("SELECT {} FROM signals ORDER BY name", rows::SIGNAL_COLUMNS);
        let found: Vec<rows::SignalRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.reader)
            .await?;
        found.into_iter().map(Signal::try_from).collect()
    }

    async fn count_created(&self, workflow: &str, since: Millis) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(rows::COUNT_CREATED)
            .bind(workflow)
            .bind(rows::first_id_at(since))
            .fetch_one(&self.reader)
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
            .fetch_all(&self.reader)
            .await?)
    }

    async fn count_denied(&self, workflow: &str, since: Millis) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(rows::COUNT_DENIED)
            .bind(workflow)
            .bind(since)
            .fetch_one(&self.reader)
            .await?)
    }

    async fn count_decided_by(&self, rule: &str, since: Millis) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(rows::COUNT_DECIDED_BY)
            .bind(rule)
            .bind(since)
            .fetch_one(&self.reader)
            .await?)
    }

    async fn digest_summary(&self, key: &str) -> StoreResult<DigestSummary> {
        let by_rule: Vec<(String, String, i64)> = sqlx::query_as(rows::DIGEST_BY_RULE)
            .bind(key)
            .fetch_all(&self.reader)
            .await?;
        let by_requester: Vec<(Option<String>, i64)> = sqlx::query_as(rows::DIGEST_BY_REQUESTER)
            .bind(key)
            .fetch_all(&self.reader)
            .await?;
        let recent: Vec<DigestEntry> = sqlx::query_as(rows::DIGEST_RECENT)
            .bind(key)
            .fetch_all(&self.reader)
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
            .fetch_optional(&self.reader)
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
        let (signal, audit) = (signal.clone(), audit.to_vec());
        self.writer
            .write(move |mut conn| async move {
                let res = async {
                    let written = put_signal_in(&mut conn, &signal, expected).await?;
                    if written && !audit.is_empty() {
                        let mut qb = Statements::new("SELECT 1");
                        push_audit_and_effects(&mut qb, now, &audit, &[], &no_guard)?;
                        qb.build().execute(&mut conn).await?;
                    }
                    Ok(written)
                }
                .await;
                (conn, res)
            })
            .await
    }

    async fn approved_with(
        &self,
        workflow: &str,
        param: &str,
        value: &serde_json::Value,
    ) -> StoreResult<bool> {
        if param.contains('"') {
            return Ok(false);
        }
        // The param as SQLite reads it from each request, against the value read the same way.
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM requests WHERE workflow = $1 AND status = 'approved' \
             AND json_extract(params, $2) = json_extract($3, '$'))",
        )
        .bind(workflow)
        .bind(format!("$.\"{param}\""))
        .bind(value.to_string())
        .fetch_one(&self.reader)
        .await?)
    }

    async fn set_digest_message(
        &self,
        digest: &DigestWindow,
        channel: &str,
        ts: &str,
    ) -> StoreResult<()> {
        let query = sqlx::query(
            "INSERT INTO digests (key, channel, window_start, window_end, slack_channel, slack_ts) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO UPDATE SET \
             slack_channel = excluded.slack_channel, slack_ts = excluded.slack_ts",
        )
        .bind(digest.key.clone())
        .bind(digest.channel.clone())
        .bind(digest.start)
        .bind(digest.end)
        .bind(channel.to_owned())
        .bind(ts.to_owned());
        self.writer.execute(query).await.map(|_| ())
    }

    async fn claim_alert(
        &self,
        key: &str,
        now: Millis,
        window_ms: Millis,
        audit: &[NewAudit],
        effects: &[Effect],
    ) -> StoreResult<bool> {
        let (key, audit, effects) = (key.to_owned(), audit.to_vec(), effects.to_vec());
        self.writer
            .write(move |mut conn| async move {
                let res = async {
                    let done = sqlx::query(
                        "INSERT INTO alert_state (key, fired_at) VALUES ($1, $2) ON CONFLICT (key) \
                         DO UPDATE SET fired_at = excluded.fired_at WHERE alert_state.fired_at <= $3",
                    )
                    .bind(key)
                    .bind(now)
                    .bind(now - window_ms)
                    .execute(&mut conn)
                    .await?;
                    let fired = done.rows_affected() == 1;
                    if fired && !(audit.is_empty() && effects.is_empty()) {
                        let mut qb = Statements::new("SELECT 1");
                        push_audit_and_effects(&mut qb, now, &audit, &effects, &no_guard)?;
                        qb.build().execute(&mut conn).await?;
                    }
                    Ok(fired)
                }
                .await;
                (conn, res)
            })
            .await
    }
}

/// The compare-and-set of a signal: insert when there was none, else update if it was last
/// set at `expected`.
async fn put_signal_in<'c, E>(conn: E, s: &Signal, expected: Option<Millis>) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
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
