//! SQLite: one file, WAL, `synchronous=FULL` so that every commit is on disk before we answer.
//! The store drives SQLite synchronously (rusqlite) on threads it owns: one writer thread with
//! group commit (see `writer`), since SQLite has one writer anyway and sharing each fsync among
//! the writes of the same instant is what makes thousands of durable decisions per second
//! possible; and a few reader threads with their own connections (see `reader`). Async callers
//! hand each thread a closure and await its answer: one thread switch per operation, however
//! many statements it runs.

mod migrate;
mod reader;
mod rows;
mod writer;

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::config::DbConfig;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, params, params_from_iter};

use reader::Readers;
use rows::{all, first, one};
use writer::Writer;

use super::rows::{self as shared, REQUEST_COLUMNS, to_json};
use super::*;

/// Reader threads: reads are short, and the machine has few cores.
const READERS: usize = 4;

pub struct SqliteStore {
    writer: Writer,
    readers: Readers,
    coordination: Arc<LocalCoordination>,
}

/// Where the file is, and how every connection to it is set up.
#[derive(Debug, Clone)]
pub(crate) struct Database {
    path: PathBuf,
}

impl Database {
    /// `sqlite:PATH` (or `sqlite://PATH`); `?mode=rwc` is accepted, as the file is created
    /// when missing anyway.
    pub(crate) fn parse(url: &str) -> StoreResult<Self> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| StoreError::UnsupportedUrl(url.to_owned()))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let in_memory = path.is_empty() || path == ":memory:";
        if in_memory || query.is_some_and(|q| q != "mode=rwc") {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        Ok(Self { path: path.into() })
    }

    pub(crate) fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(128);
        // Plans must not depend on the values bound: without this, SQLite plans `LIMIT ?` with
        // its value and compiles the statement again each time it is bound anew, which undoes
        // the statement cache for the outbox claim on every delivery.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(conn)
    }
}

/// Runs one statement without parameters from the statement cache.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

impl SqliteStore {
    pub async fn open(url: &str) -> StoreResult<Self> {
        let db = Database::parse(url)?;
        tokio::task::spawn_blocking(move || Self::open_blocking(db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening the database: {e}")))?
    }

    fn open_blocking(db: Database) -> StoreResult<Self> {
        {
            let mut conn = db.open()?;
            migrate::run(&mut conn)?;
        }
        let writer = Writer::start(db.clone())?;
        // Readers never write, so they never wait for the writer (WAL).
        let quick = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
        let readers = Readers::start(&db, READERS, quick)?;
        Ok(Self {
            writer,
            readers,
            coordination: Arc::default(),
        })
    }
}

/// A statement whose text joins a shared column list, built once.
macro_rules! sql {
    ($name:ident = $($arg:tt)*) => {
        static $name: LazyLock<String> = LazyLock::new(|| format!($($arg)*));
    };
}

sql!(GET_REQUEST = "SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ?1");
sql!(
    LIST_REQUESTS = "SELECT {REQUEST_COLUMNS} FROM requests \
     WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow = ?2) \
     AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
);
const VOTABLE_MATCHING: &str = "FROM requests WHERE status = 'pending' \
     AND workflow IN (SELECT value FROM json_each(?1)) \
     AND NOT (requester IS NOT NULL AND requester = ?2 \
              AND workflow IN (SELECT value FROM json_each(?3))) \
     AND NOT EXISTS (SELECT 1 FROM json_each(requests.decisions) d \
                     WHERE json_extract(d.value, '$.by') = ?2)";
sql!(VOTABLE = "SELECT {REQUEST_COLUMNS} {VOTABLE_MATCHING} ORDER BY id DESC LIMIT ?4");
sql!(VOTABLE_COUNT = "SELECT count(*) FROM (SELECT 1 {VOTABLE_MATCHING} LIMIT ?4)");
sql!(
    REQUESTS_BY = "SELECT {REQUEST_COLUMNS} FROM requests WHERE requester = ?1 \
     ORDER BY id DESC LIMIT ?2"
);
sql!(
    RECENTLY_DECIDED = "SELECT {REQUEST_COLUMNS} FROM requests \
     WHERE status <> 'pending' AND decided_at >= ?3 \
     AND (workflow IN (SELECT value FROM json_each(?1)) OR requester = ?2) \
     ORDER BY decided_at DESC, id DESC LIMIT ?4"
);
sql!(
    LIST_AUDIT = "{} WHERE a.id > ?1 ORDER BY a.id LIMIT ?2",
    shared::AUDIT_SELECT
);
sql!(
    AUDIT_CHAIN = "{} WHERE c.seq > ?1 ORDER BY c.seq LIMIT ?2",
    shared::CHAIN_SELECT
);
sql!(
    DELIVERIES = "SELECT {} FROM outbox WHERE request_id = ?1 ORDER BY id",
    shared::DELIVERY_COLUMNS
);
sql!(
    FIND_API_KEY = "SELECT {} FROM api_keys WHERE hash = ?1",
    shared::API_KEY_COLUMNS
);
sql!(
    LIST_API_KEYS = "SELECT {} FROM api_keys ORDER BY id",
    shared::API_KEY_COLUMNS
);
sql!(
    GET_SIGNAL = "SELECT {} FROM signals WHERE name = ?1",
    shared::SIGNAL_COLUMNS
);
sql!(
    LIST_SIGNALS = "SELECT {} FROM signals ORDER BY name",
    shared::SIGNAL_COLUMNS
);

const INSERT_AUDIT: &str =
    "INSERT INTO audit (at, request_id, event, actor, data) VALUES (?1, ?2, ?3, ?4, ?5)";
const INSERT_JOB: &str = "INSERT INTO outbox (request_id, kind, lane, collapse_key, payload, \
     next_attempt_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)";
/// The waiting job renders the latest state when delivered: later changes collapse into it.
const INSERT_COLLAPSING_JOB: &str = "INSERT INTO outbox (request_id, kind, lane, collapse_key, \
     payload, next_attempt_at, created_at, updated_at) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7 \
     WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE collapse_key = ?4 AND state = 'pending' \
     AND (leased_until IS NULL OR leased_until < ?7))";

/// A statement's parameters, computed on the caller's thread (the JSON too), so that the
/// writer thread, which every write waits for, only binds and steps.
type Values = Vec<Value>;

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

fn opt_text(s: Option<impl Into<String>>) -> Value {
    s.map_or(Value::Null, text)
}

fn opt_int(n: Option<i64>) -> Value {
    n.map_or(Value::Null, Value::Integer)
}

/// Audit entries and outbox jobs to write in the transaction of the change that caused them.
struct Entries {
    audit: Vec<Values>,
    /// Whether the job collapses into a waiting one, and its row.
    jobs: Vec<(bool, Values)>,
}

impl Entries {
    fn of(now: Millis, audit: &[NewAudit], effects: &[Effect]) -> StoreResult<Self> {
        let audit = audit
            .iter()
            .map(|a| {
                Ok(vec![
                    Value::Integer(now),
                    opt_text(a.request_id.as_ref().map(RequestId::as_str)),
                    text(a.event),
                    text(a.actor.as_str()),
                    text(to_json(&a.data)?),
                ])
            })
            .collect::<StoreResult<_>>()?;
        let jobs = effects
            .iter()
            .map(|effect| {
                let collapse = effect.collapse_key();
                Ok((
                    collapse.is_some(),
                    vec![
                        opt_text(effect.request_id().map(RequestId::as_str)),
                        text(effect.kind()),
                        text(effect.lane().as_str()),
                        opt_text(collapse),
                        text(to_json(effect)?),
                        Value::Integer(now + effect.delay_ms()),
                        Value::Integer(now),
                    ],
                ))
            })
            .collect::<StoreResult<_>>()?;
        Ok(Self { audit, jobs })
    }

    fn write(&self, conn: &Connection) -> StoreResult<()> {
        self.write_jobs(conn).map(drop)
    }

    /// Writes them, and gives each job's id in the order of the effects (`None`: it collapsed
    /// into a job already waiting).
    fn write_jobs(&self, conn: &Connection) -> StoreResult<Vec<Option<i64>>> {
        if !self.audit.is_empty() {
            let mut insert = conn.prepare_cached(INSERT_AUDIT)?;
            for row in &self.audit {
                insert.execute(params_from_iter(row))?;
            }
        }
        let mut ids = Vec::with_capacity(self.jobs.len());
        for (collapsing, row) in &self.jobs {
            let sql = if *collapsing {
                INSERT_COLLAPSING_JOB
            } else {
                INSERT_JOB
            };
            let written = conn.prepare_cached(sql)?.execute(params_from_iter(row))?;
            ids.push((written == 1).then(|| conn.last_insert_rowid()));
        }
        Ok(ids)
    }
}

fn read_request(conn: &Connection, id: &str) -> StoreResult<Option<Request>> {
    first::<shared::RequestRow>(conn, &GET_REQUEST, [id])?
        .map(Request::try_from)
        .transpose()
}

const INSERT_REQUEST: &str = "INSERT INTO requests (id, workflow, title, details, params, \
     requester, status, decisions, decided_by, reason, created_at, decided_at, expires_at, \
     channel, callback_url, api_key_id, idempotency_key, idempotency_fingerprint, version, \
     reminders, remind_at, metadata, tool_call, digest_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, \
     ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)";

/// The row `INSERT_REQUEST` writes.
fn request_row(r: &Request, idempotency: Option<&Idempotency>) -> Values {
    vec![
        text(r.id.as_str()),
        text(r.workflow.as_str()),
        text(r.title.as_str()),
        opt_text(r.details.as_deref()),
        text(serde_json::to_string(&r.params).unwrap_or_default()),
        opt_text(r.requester.as_deref()),
        text(r.status.as_str()),
        text(serde_json::to_string(&r.decisions).unwrap_or_default()),
        opt_text(r.decided_by.as_deref()),
        opt_text(r.reason.as_deref()),
        Value::Integer(millis(r.created_at)),
        opt_int(r.decided_at.map(millis)),
        opt_int(r.expires_at.map(millis)),
        text(r.channel.to_string()),
        opt_text(r.callback_url.as_deref()),
        opt_text(
            r.created_by
                .as_ref()
                .or(idempotency.map(|i| &i.api_key))
                .map(|k| k.as_str()),
        ),
        opt_text(idempotency.map(|i| i.key.as_str())),
        opt_text(idempotency.map(|i| i.fingerprint.as_str())),
        Value::Integer(r.version),
        Value::Integer(i64::from(r.reminders)),
        opt_int(r.remind_at.map(millis)),
        opt_text(
            r.metadata
                .as_ref()
                .map(|m| serde_json::Value::Object(m.clone()).to_string()),
        ),
        opt_text(
            r.tool_call
                .as_ref()
                .map(|t| serde_json::to_string(t).unwrap_or_default()),
        ),
        opt_text(r.digest_key.as_deref()),
    ]
}

/// Who created a request under which key, and with what body (see `Idempotency`).
struct IdempotencyKey {
    api_key: String,
    key: String,
    fingerprint: String,
}

fn create_in(
    conn: &Connection,
    row: &Values,
    idempotency: Option<&IdempotencyKey>,
    entries: &Entries,
) -> StoreResult<Created> {
    if let Some(idem) = idempotency {
        let found: Option<(Option<String>, String)> = first(
            conn,
            "SELECT idempotency_fingerprint, id FROM requests \
             WHERE api_key_id = ?1 AND idempotency_key = ?2",
            params![idem.api_key, idem.key],
        )?;
        if let Some((fingerprint, id)) = found {
            if fingerprint.as_deref() != Some(idem.fingerprint.as_str()) {
                return Ok(Created::Not(CreateOutcome::KeyReused));
            }
            // Read back here, in the writer: what the caller gets is what was committed.
            let existing = read_request(conn, &id)?
                .ok_or_else(|| StoreError::Corrupt(format!("request {id} vanished")))?;
            return Ok(Created::Not(CreateOutcome::Existing(Box::new(existing))));
        }
    }
    conn.prepare_cached(INSERT_REQUEST)?
        .execute(params_from_iter(row))?;
    Ok(Created::Written(entries.write_jobs(conn)?))
}

/// What `create_in` did: the job ids it wrote (the deliveries are made from them on the
/// caller's thread, off the writer's), or another outcome.
enum Created {
    Written(Vec<Option<i64>>),
    Not(CreateOutcome),
}

const SAVE_REQUEST: &str = "UPDATE requests SET status = ?1, decisions = ?2, decided_by = ?3, \
     reason = ?4, decided_at = ?5, version = ?6, reminders = ?7, remind_at = ?8 \
     WHERE id = ?9 AND version = ?10";

/// The parameters of `SAVE_REQUEST`.
fn transition_row(r: &Request, expected_version: i64) -> StoreResult<Values> {
    Ok(vec![
        text(r.status.as_str()),
        text(to_json(&r.decisions)?),
        opt_text(r.decided_by.as_deref()),
        opt_text(r.reason.as_deref()),
        opt_int(r.decided_at.map(millis)),
        Value::Integer(r.version),
        Value::Integer(i64::from(r.reminders)),
        opt_int(r.remind_at.map(millis)),
        text(r.id.as_str()),
        Value::Integer(expected_version),
    ])
}

fn save_in(conn: &Connection, row: &Values, entries: &Entries) -> StoreResult<bool> {
    let changed = conn
        .prepare_cached(SAVE_REQUEST)?
        .execute(params_from_iter(row))?;
    // The writer runs one operation at a time: the audit and jobs land only if the
    // compare-and-set did, and nothing at all changes otherwise.
    if changed == 0 {
        return Ok(false);
    }
    entries.write(conn)?;
    Ok(true)
}

fn finish_in(
    conn: &Connection,
    id: i64,
    now: Millis,
    report: &JobReport,
    entries: &Entries,
) -> StoreResult<()> {
    let shared::Finish {
        state,
        next,
        error,
        counts,
        outcome,
    } = shared::Finish::of(&report.result);
    conn.prepare_cached(
        "UPDATE outbox SET state = ?1, next_attempt_at = COALESCE(?2, next_attempt_at), \
         last_error = COALESCE(?3, last_error), attempts = attempts + ?4, leased_until = NULL, \
         updated_at = ?5 WHERE id = ?6",
    )?
    .execute(params![
        state.as_str(),
        next,
        error,
        i64::from(counts && report.attempted),
        now,
        id
    ])?;
    if report.attempted {
        conn.prepare_cached(
            "INSERT INTO outbox_attempts (job_id, at, outcome, error) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![id, now, outcome, error])?;
    }
    if let Some(m) = &report.posted {
        conn.prepare_cached(
            "UPDATE requests SET slack_channel = ?1, slack_ts = ?2 \
             WHERE id = (SELECT request_id FROM outbox WHERE id = ?3)",
        )?
        .execute(params![m.channel, m.ts, id])?;
    }
    if let Some(a) = &report.action {
        conn.prepare_cached(
            "INSERT INTO action_results (request_id, name, ok, summary, attempts, at) \
             SELECT request_id, ?2, ?3, ?4, ?5, ?6 FROM outbox WHERE id = ?1",
        )?
        .execute(params![
            id,
            a.name,
            a.ok,
            a.summary,
            i64::from(a.attempts),
            millis(a.at)
        ])?;
    }
    entries.write(conn)
}

/// Chains the next entries. One writer commits in id order, so nothing below the last chained
/// id can still appear.
fn chain_in(conn: &Connection, limit: u32) -> StoreResult<u32> {
    let last: Option<(i64, String, i64)> = first(
        conn,
        "SELECT seq, hash, audit_id FROM audit_chain ORDER BY seq DESC LIMIT 1",
        [],
    )?;
    let after = last.as_ref().map_or(0, |l| l.2);
    let found: Vec<shared::AuditRow> = all(conn, &UNCHAINED, params![after, i64::from(limit)])?;
    if found.is_empty() {
        return Ok(0);
    }
    let entries = found
        .into_iter()
        .map(AuditEvent::try_from)
        .collect::<StoreResult<Vec<_>>>()?;
    let links = shared::link(last.map(|(seq, hash, _)| (seq, hash)), &entries);
    let mut insert = conn.prepare_cached(
        "INSERT INTO audit_chain (seq, audit_id, prev_hash, hash) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (seq, id, prev, hash) in &links {
        insert.execute(params![seq, id, prev, hash])?;
    }
    Ok(u32::try_from(links.len()).unwrap_or(u32::MAX))
}

/// The shared SQL (`$1`, `$2`, ...) with SQLite's numbered parameters (`?1`, `?2`, ...), which
/// bind by number wherever they appear.
fn sqlite_params(sql: &str) -> String {
    sql.replace('$', "?")
}

/// The shared statements, in SQLite's spelling, built once.
macro_rules! shared_sql {
    ($($name:ident = $sql:expr;)*) => {$(
        static $name: LazyLock<String> = LazyLock::new(|| sqlite_params($sql));
    )*};
}

shared_sql! {
    UNCHAINED = shared::UNCHAINED_AFTER;
    COUNT_CREATED = shared::COUNT_CREATED;
    COUNT_CREATED_BY_REQUESTER = shared::COUNT_CREATED_BY_REQUESTER;
    COUNT_DENIED = shared::COUNT_DENIED;
    COUNT_DECIDED_BY = shared::COUNT_DECIDED_BY;
    DIGEST_MESSAGE = shared::DIGEST_MESSAGE;
    DIGEST_BY_RULE = shared::DIGEST_BY_RULE;
    DIGEST_BY_REQUESTER = shared::DIGEST_BY_REQUESTER;
    DIGEST_RECENT = shared::DIGEST_RECENT;
}

/// The compare-and-set of a signal: insert when there was none, else update if it was last
/// set at `expected`.
fn put_signal_in(conn: &Connection, s: &Signal, expected: Option<Millis>) -> StoreResult<bool> {
    let value = s.value.to_string();
    let changed = match expected {
        None => conn
            .prepare_cached(
                "INSERT INTO signals (name, value, since, updated_at, set_by, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING",
            )?
            .execute(params![
                s.name.as_str(),
                value,
                millis(s.since),
                millis(s.updated_at),
                s.set_by,
                s.expires_at.map(millis),
            ])?,
        Some(expected) => conn
            .prepare_cached(
                "UPDATE signals SET value = ?2, since = ?3, updated_at = ?4, set_by = ?5, \
                 expires_at = ?6 WHERE name = ?1 AND updated_at = ?7",
            )?
            .execute(params![
                s.name.as_str(),
                value,
                millis(s.since),
                millis(s.updated_at),
                s.set_by,
                s.expires_at.map(millis),
                expected,
            ])?,
    };
    Ok(changed == 1)
}

/// Leases up to `limit` due jobs of one lane.
const CLAIM_LANE: &str = "UPDATE outbox SET leased_until = ?1, claims = claims + 1 \
     WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND lane = ?2 \
     AND next_attempt_at <= ?3 AND (leased_until IS NULL OR leased_until < ?3) \
     ORDER BY next_attempt_at, id LIMIT ?4) \
     RETURNING id, payload, attempts, claims, created_at";

/// The first job of a lane that nobody holds, by the lane's due index: it walks past the
/// leased jobs (those in flight) and stops at the first free one.
const NEXT_DUE_IN_LANE: &str = "SELECT next_attempt_at FROM outbox \
     WHERE state = 'pending' AND lane = ?1 AND (leased_until IS NULL OR leased_until < ?2) \
     ORDER BY next_attempt_at LIMIT 1";

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
        let row = request_row(request, idempotency);
        let idem = idempotency.map(|i| IdempotencyKey {
            api_key: i.api_key.to_string(),
            key: i.key.clone(),
            fingerprint: i.fingerprint.clone(),
        });
        let entries = Entries::of(now, audit, effects)?;
        let created = self
            .writer
            .write(move |conn| create_in(conn, &row, idem.as_ref(), &entries))
            .await?;
        Ok(match created {
            Created::Written(ids) => {
                CreateOutcome::Created(Delivery::written_for(&request.id, effects, &ids, now)?)
            }
            Created::Not(outcome) => outcome,
        })
    }

    async fn get_request(&self, id: &RequestId) -> StoreResult<Option<Request>> {
        let id = id.clone();
        self.readers
            .point(move |conn| read_request(conn, id.as_str()))
            .await
    }

    async fn list_requests(&self, filter: &ListFilter) -> StoreResult<Vec<Request>> {
        let f = filter.clone();
        self.readers
            .read(move |conn| {
                let found = all(
                    conn,
                    &LIST_REQUESTS,
                    params![
                        f.status.map(Status::as_str),
                        f.workflow.as_ref().map(|w| w.as_str()),
                        f.before.as_ref().map(|b| b.as_str()),
                        i64::from(f.limit),
                    ],
                )?;
                shared::requests(found)
            })
            .await
    }

    async fn save_transition(
        &self,
        r: &Request,
        expected_version: i64,
        audit: &[NewAudit],
        effects: &[Effect],
        now: Millis,
    ) -> StoreResult<bool> {
        let row = transition_row(r, expected_version)?;
        let entries = Entries::of(now, audit, effects)?;
        self.writer
            .write(move |conn| save_in(conn, &row, &entries))
            .await
    }

    async fn record(&self, audit: &[NewAudit], effects: &[Effect], now: Millis) -> StoreResult<()> {
        let entries = Entries::of(now, audit, effects)?;
        self.writer.write(move |conn| entries.write(conn)).await
    }

    async fn due_requests(&self, now: Millis, limit: u32) -> StoreResult<Vec<RequestId>> {
        self.readers
            .read(move |conn| {
                let ids: Vec<String> = all(
                    conn,
                    // The partial indexes by name: left to itself, SQLite walked
                    // requests_status for the ORDER BY, reading every pending request's row
                    // (37 ms with 33,000 pending) four times a second.
                    "SELECT id FROM ( \
                     SELECT id FROM requests INDEXED BY requests_expiry \
                     WHERE status = 'pending' AND expires_at <= ?1 \
                     UNION SELECT id FROM requests INDEXED BY requests_remind \
                     WHERE status = 'pending' AND remind_at <= ?1) \
                     ORDER BY id LIMIT ?2",
                    params![now, i64::from(limit)],
                )?;
                shared::request_ids(ids)
            })
            .await
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
        let (voter, limit) = (f.voter.clone(), i64::from(f.limit));
        self.readers
            .read(move |conn| {
                let found = all(conn, &VOTABLE, params![workflows, voter, not_own_in, limit])?;
                let total: i64 = one(
                    conn,
                    &VOTABLE_COUNT,
                    params![workflows, voter, not_own_in, i64::from(VOTABLE_COUNT_CAP)],
                )?;
                Ok(Page {
                    requests: shared::requests(found)?,
                    total: u32::try_from(total).unwrap_or(VOTABLE_COUNT_CAP),
                })
            })
            .await
    }

    async fn requests_by(&self, requester: &str, limit: u32) -> StoreResult<Vec<Request>> {
        let requester = requester.to_owned();
        self.readers
            .read(move |conn| {
                let found = all(conn, &REQUESTS_BY, params![requester, i64::from(limit)])?;
                shared::requests(found)
            })
            .await
    }

    async fn recently_decided(
        &self,
        workflows: &[WorkflowName],
        requester: &str,
        since: Millis,
        limit: u32,
    ) -> StoreResult<Vec<Request>> {
        let names: Vec<&str> = workflows.iter().map(|w| w.as_str()).collect();
        let names = serde_json::to_string(&names).unwrap_or_default();
        let requester = requester.to_owned();
        self.readers
            .read(move |conn| {
                let found = all(
                    conn,
                    &RECENTLY_DECIDED,
                    params![names, requester, since, i64::from(limit)],
                )?;
                shared::requests(found)
            })
            .await
    }

    async fn record_home_opened(
        &self,
        user: &str,
        now: Millis,
        forget_before: Millis,
        effects: &[Effect],
    ) -> StoreResult<()> {
        let (user, entries) = (user.to_owned(), Entries::of(now, &[], effects)?);
        self.writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO home_opened (user_id, opened_at) VALUES (?1, ?2) \
                     ON CONFLICT (user_id) DO UPDATE SET opened_at = excluded.opened_at",
                )?
                .execute(params![user, now])?;
                conn.prepare_cached("DELETE FROM home_opened WHERE opened_at < ?1")?
                    .execute([forget_before])?;
                entries.write(conn)
            })
            .await
    }

    async fn home_viewers(&self, since: Millis, limit: u32) -> StoreResult<Vec<String>> {
        self.readers
            .read(move |conn| {
                all(
                    conn,
                    "SELECT user_id FROM home_opened WHERE opened_at >= ?1 \
                     ORDER BY opened_at DESC, user_id LIMIT ?2",
                    params![since, i64::from(limit)],
                )
            })
            .await
    }

    async fn set_slack_message(&self, id: &RequestId, channel: &str, ts: &str) -> StoreResult<()> {
        self.writer
            .execute(
                "UPDATE requests SET slack_channel = ?1, slack_ts = ?2 WHERE id = ?3",
                (channel.to_owned(), ts.to_owned(), id.to_string()),
            )
            .await
            .map(|_| ())
    }

    async fn list_audit(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        self.readers
            .read(move |conn| {
                let found: Vec<shared::AuditRow> =
                    all(conn, &LIST_AUDIT, params![after, i64::from(limit)])?;
                found.into_iter().map(AuditEvent::try_from).collect()
            })
            .await
    }

    async fn chain_audit(&self, limit: u32) -> StoreResult<u32> {
        self.writer.write(move |conn| chain_in(conn, limit)).await
    }

    async fn audit_chain(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<ChainLink>> {
        self.readers
            .read(move |conn| {
                let found: Vec<shared::ChainRow> =
                    all(conn, &AUDIT_CHAIN, params![after_seq, i64::from(limit)])?;
                found.into_iter().map(ChainLink::try_from).collect()
            })
            .await
    }

    async fn unchained_audit(&self, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        self.readers
            .read(move |conn| {
                let found: Vec<shared::AuditRow> =
                    all(conn, &UNCHAINED, params![0_i64, i64::from(limit)])?;
                found.into_iter().map(AuditEvent::try_from).collect()
            })
            .await
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
            .write(move |conn| {
                let mut found: Vec<shared::JobRow> = Vec::new();
                for (lane, limit) in &lanes {
                    found.extend(all::<shared::JobRow>(
                        conn,
                        CLAIM_LANE,
                        params![now + lease_ms, lane.as_str(), now, i64::from(*limit)],
                    )?);
                }
                Ok(found)
            })
            .await?;
        shared::jobs(found)
    }

    async fn recover_leases(&self) -> StoreResult<u64> {
        self.writer
            .execute(
                "UPDATE outbox SET leased_until = NULL WHERE state = 'pending' AND leased_until IS NOT NULL",
                (),
            )
            .await
    }

    async fn release_leases(&self, _owner: &str) -> StoreResult<u64> {
        // One process per file: every lease is this process's own.
        self.recover_leases().await
    }

    async fn finish_job(&self, id: i64, now: Millis, report: &JobReport) -> StoreResult<()> {
        let entries = Entries::of(now, &report.audit, &report.effects)?;
        // What finish_in reads; the audit and effects travel as `entries`.
        let report = JobReport {
            action: report.action.clone(),
            posted: report.posted.clone(),
            ..JobReport::new(report.result.clone(), report.attempted)
        };
        self.writer
            .write(move |conn| finish_in(conn, id, now, &report, &entries))
            .await
    }

    async fn next_job_due(&self, lanes: &[Lane], now: Millis) -> StoreResult<Option<Millis>> {
        let lanes = lanes.to_vec();
        self.readers
            .read(move |conn| {
                let mut next: Option<Millis> = None;
                for lane in &lanes {
                    let due: Option<i64> =
                        first(conn, NEXT_DUE_IN_LANE, params![lane.as_str(), now])?;
                    next = match (next, due) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                Ok(next)
            })
            .await
    }

    async fn deliveries(&self, request_id: &RequestId) -> StoreResult<Vec<Delivery>> {
        let id = request_id.clone();
        self.readers
            .read(move |conn| {
                let jobs = all(conn, &DELIVERIES, [id.as_str()])?;
                let attempts = all(
                    conn,
                    "SELECT a.job_id, a.at, a.outcome, a.error FROM outbox_attempts a \
                     JOIN outbox o ON o.id = a.job_id WHERE o.request_id = ?1 ORDER BY a.id DESC",
                    [id.as_str()],
                )?;
                shared::deliveries(jobs, attempts)
            })
            .await
    }

    async fn action_results(&self, request_id: &RequestId) -> StoreResult<Vec<ActionResult>> {
        let id = request_id.clone();
        // A few rows by the request's key, read for every message rendered: a point read.
        self.readers
            .point(move |conn| {
                let found: Vec<shared::ActionRow> = all(
                    conn,
                    "SELECT name, ok, summary, attempts, at FROM action_results \
                     WHERE request_id = ?1 ORDER BY id",
                    [id.as_str()],
                )?;
                found.into_iter().map(ActionResult::try_from).collect()
            })
            .await
    }

    async fn meta_get_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.writer
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                )?
                .execute(params![key, value])?;
                one(conn, "SELECT value FROM meta WHERE key = ?1", [&key])
            })
            .await
    }

    async fn insert_api_key(&self, key: &ApiKey, hash: &str) -> StoreResult<()> {
        self.writer
            .execute(
                "INSERT INTO api_keys (id, name, hash, scopes, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                (
                    key.id.to_string(),
                    key.name.clone(),
                    hash.to_owned(),
                    shared::scopes_text(key),
                    millis(key.created_at),
                ),
            )
            .await
            .map(|_| ())
    }

    async fn find_api_key(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        let hash = hash.to_owned();
        self.readers
            .point(move |conn| {
                first::<shared::ApiKeyRow>(conn, &FIND_API_KEY, [hash])?
                    .map(ApiKey::try_from)
                    .transpose()
            })
            .await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.readers
            .read(|conn| {
                let found: Vec<shared::ApiKeyRow> = all(conn, &LIST_API_KEYS, [])?;
                found.into_iter().map(ApiKey::try_from).collect()
            })
            .await
    }

    async fn revoke_api_key(&self, id: &ApiKeyId, now: Timestamp) -> StoreResult<bool> {
        let changed = self
            .writer
            .execute(
                "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                (millis(now), id.to_string()),
            )
            .await?;
        Ok(changed == 1)
    }

    async fn close(&self) {
        self.readers.close().await;
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
        let target = path
            .to_str()
            .ok_or_else(|| {
                StoreError::Unavailable(format!("{} is not a UTF-8 path", path.display()))
            })?
            .to_owned();
        self.readers
            .read(move |conn| {
                conn.execute("VACUUM INTO ?1", [target])?;
                Ok(())
            })
            .await
    }

    async fn signal(&self, name: &SignalName) -> StoreResult<Option<Signal>> {
        let name = name.clone();
        self.readers
            .point(move |conn| {
                first::<shared::SignalRow>(conn, &GET_SIGNAL, [name.as_str()])?
                    .map(Signal::try_from)
                    .transpose()
            })
            .await
    }

    async fn signals(&self) -> StoreResult<Vec<Signal>> {
        self.readers
            .read(|conn| {
                let found: Vec<shared::SignalRow> = all(conn, &LIST_SIGNALS, [])?;
                found.into_iter().map(Signal::try_from).collect()
            })
            .await
    }

    async fn count_created(&self, workflow: &str, since: Millis) -> StoreResult<i64> {
        let workflow = workflow.to_owned();
        self.readers
            .read(move |conn| {
                one(
                    conn,
                    &COUNT_CREATED,
                    params![workflow, shared::first_id_at(since)],
                )
            })
            .await
    }

    async fn count_created_by_requester(
        &self,
        workflow: &str,
        since: Millis,
    ) -> StoreResult<Vec<(Option<String>, i64)>> {
        let workflow = workflow.to_owned();
        self.readers
            .read(move |conn| {
                all(
                    conn,
                    &COUNT_CREATED_BY_REQUESTER,
                    params![workflow, shared::first_id_at(since)],
                )
            })
            .await
    }

    async fn count_denied(&self, workflow: &str, since: Millis) -> StoreResult<i64> {
        let workflow = workflow.to_owned();
        self.readers
            .read(move |conn| one(conn, &COUNT_DENIED, params![workflow, since]))
            .await
    }

    async fn count_decided_by(&self, rule: &str, since: Millis) -> StoreResult<i64> {
        let rule = rule.to_owned();
        self.readers
            .read(move |conn| one(conn, &COUNT_DECIDED_BY, params![rule, since]))
            .await
    }

    async fn digest_summary(&self, key: &str) -> StoreResult<DigestSummary> {
        let key = key.to_owned();
        self.readers
            .read(move |conn| {
                let by_rule: Vec<(String, String, i64)> = all(conn, &DIGEST_BY_RULE, [&key])?;
                let by_requester: Vec<(Option<String>, i64)> =
                    all(conn, &DIGEST_BY_REQUESTER, [&key])?;
                let recent: Vec<DigestEntry> = all(conn, &DIGEST_RECENT, [&key])?;
                Ok(DigestSummary {
                    total: by_rule.iter().map(|(_, _, n)| n).sum(),
                    by_rule,
                    by_requester,
                    recent,
                })
            })
            .await
    }

    async fn digest_message(&self, key: &str) -> StoreResult<Option<SlackMessageRef>> {
        let key = key.to_owned();
        self.readers
            .read(move |conn| {
                let row: Option<(String, String)> = first(conn, &DIGEST_MESSAGE, [key])?;
                Ok(row.map(|(channel, ts)| SlackMessageRef { channel, ts }))
            })
            .await
    }

    async fn put_signal(
        &self,
        signal: &Signal,
        expected: Option<Millis>,
        audit: &[NewAudit],
        now: Millis,
    ) -> StoreResult<bool> {
        let (signal, entries) = (signal.clone(), Entries::of(now, audit, &[])?);
        self.writer
            .write(move |conn| {
                let written = put_signal_in(conn, &signal, expected)?;
                if written {
                    entries.write(conn)?;
                }
                Ok(written)
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
        let (workflow, path, value) = (
            workflow.to_owned(),
            format!("$.\"{param}\""),
            value.to_string(),
        );
        // The param as SQLite reads it from each request, against the value read the same way.
        self.readers
            .read(move |conn| {
                one(
                    conn,
                    "SELECT EXISTS (SELECT 1 FROM requests WHERE workflow = ?1 \
                     AND status = 'approved' AND json_extract(params, ?2) = json_extract(?3, '$'))",
                    params![workflow, path, value],
                )
            })
            .await
    }

    async fn set_digest_message(
        &self,
        digest: &DigestWindow,
        channel: &str,
        ts: &str,
    ) -> StoreResult<()> {
        self.writer
            .execute(
                "INSERT INTO digests (key, channel, window_start, window_end, slack_channel, slack_ts) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (key) DO UPDATE SET \
                 slack_channel = excluded.slack_channel, slack_ts = excluded.slack_ts",
                (
                    digest.key.clone(),
                    digest.channel.clone(),
                    digest.start,
                    digest.end,
                    channel.to_owned(),
                    ts.to_owned(),
                ),
            )
            .await
            .map(|_| ())
    }

    async fn claim_alert(
        &self,
        key: &str,
        now: Millis,
        window_ms: Millis,
        audit: &[NewAudit],
        effects: &[Effect],
    ) -> StoreResult<bool> {
        let (key, entries) = (key.to_owned(), Entries::of(now, audit, effects)?);
        self.writer
            .write(move |conn| {
                let changed = conn
                    .prepare_cached(
                        "INSERT INTO alert_state (key, fired_at) VALUES (?1, ?2) ON CONFLICT (key) \
                         DO UPDATE SET fired_at = excluded.fired_at WHERE alert_state.fired_at <= ?3",
                    )?
                    .execute(params![key, now, now - window_ms])?;
                let fired = changed == 1;
                if fired {
                    entries.write(conn)?;
                }
                Ok(fired)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::{
        CLAIM_LANE, DELIVERIES, Database, GET_REQUEST, INSERT_COLLAPSING_JOB, NEXT_DUE_IN_LANE,
        REQUESTS_BY, migrate,
    };

    /// A migrated database file, opened as the store opens every connection.
    fn migrated() -> (tempfile::TempDir, rusqlite::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database {
            path: dir.path().join("gl.db"),
        };
        let mut conn = db.open().unwrap();
        migrate::run(&mut conn).unwrap();
        (dir, conn)
    }

    /// SQLite plans `LIMIT ?` (and a few other clauses) with the value bound to it, and then
    /// marks the statement expired whenever that parameter is bound again: every execution of
    /// a cached statement would be compiled anew. The connections turn that off (QPSG).
    #[test]
    fn cached_statements_are_not_compiled_again_when_their_parameters_change() {
        let (_dir, conn) = migrated();
        for limit in 1..=4_i64 {
            let mut claim = conn.prepare_cached(CLAIM_LANE).unwrap();
            let mut rows = claim
                .query(rusqlite::params![limit, "slack", 0_i64, limit])
                .unwrap();
            while rows.next().unwrap().is_some() {}
        }
        let claim = conn.prepare_cached(CLAIM_LANE).unwrap();
        assert_eq!(
            claim.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "the claim was compiled again for new parameters"
        );
    }

    /// With plans independent of bound values (QPSG), the statements the hot path and the
    /// history checks run must still find their rows through their indexes.
    #[test]
    fn the_hot_statements_use_their_indexes() {
        use crate::store::rows as shared;
        let (_dir, conn) = migrated();
        let sqlite = |sql: &str| sql.replace('$', "?");
        let cases: Vec<(String, &str)> = vec![
            (
                GET_REQUEST.clone(),
                "USING INDEX sqlite_autoindex_requests_1 (id=?)",
            ),
            (
                REQUESTS_BY.clone(),
                "USING INDEX requests_requester (requester=?)",
            ),
            (
                CLAIM_LANE.into(),
                "USING INDEX outbox_lane_due (lane=? AND next_attempt_at<?)",
            ),
            (
                NEXT_DUE_IN_LANE.into(),
                "USING INDEX outbox_lane_due (lane=?)",
            ),
            (
                INSERT_COLLAPSING_JOB.into(),
                "USING INDEX outbox_collapse (collapse_key=?)",
            ),
            (
                DELIVERIES.clone(),
                "USING INDEX outbox_request (request_id=?)",
            ),
            (
                sqlite(shared::COUNT_CREATED),
                "USING COVERING INDEX requests_workflow (workflow=? AND id>?)",
            ),
            (
                sqlite(shared::COUNT_DENIED),
                "USING INDEX requests_workflow_decided (workflow=? AND decided_at>?)",
            ),
            (
                sqlite(shared::COUNT_DECIDED_BY),
                "USING INDEX requests_decider (decided_by=? AND decided_at>?)",
            ),
            (
                sqlite(shared::DIGEST_BY_RULE),
                "USING COVERING INDEX requests_digest_counts (digest_key=?)",
            ),
        ];
        for (sql, index) in cases {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            // Unbound parameters are NULL: the plan must not depend on them anyway.
            let mut rows = stmt.raw_query();
            let mut plan = Vec::new();
            while let Some(row) = rows.next().unwrap() {
                plan.push(row.get::<_, String>(3).unwrap());
            }
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{sql}\nplan: {plan:?}\nexpected: {index}"
            );
        }
    }

    #[test]
    fn urls_name_a_file() {
        assert_eq!(
            Database::parse("sqlite:greenlight.db").unwrap().path,
            std::path::Path::new("greenlight.db")
        );
        assert_eq!(
            Database::parse("sqlite:///var/lib/gl.db?mode=rwc")
                .unwrap()
                .path,
            std::path::Path::new("/var/lib/gl.db")
        );
        assert!(Database::parse("sqlite::memory:").is_err());
        assert!(Database::parse("sqlite:x.db?cache=shared").is_err());
        assert!(Database::parse("postgres://x").is_err());
    }
}
