//! SQLite: one file, WAL, `synchronous=FULL` so that every commit is on disk before we answer.
//! The store drives SQLite synchronously (rusqlite) on threads it owns: one writer thread with
//! group commit (see `writer`), since SQLite has one writer anyway and sharing each fsync among
//! the writes of the same instant is what makes thousands of durable decisions per second
//! possible; and a few reader threads with their own connections (see `reader`). Async callers
//! hand each thread a closure and await its answer: one thread switch per operation, however
//! many statements it runs.

mod admin;
mod alerts;
mod audit;
mod digests;
mod history;
mod home;
mod keys;
mod migrate;
mod outbox;
mod reader;
mod requests;
mod rows;
mod signals;
mod signing;
mod standing;
mod writer;

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, params_from_iter};

use reader::Readers;
use writer::Writer;

use super::rows::to_json;
use super::*;
use crate::domain::RequestId;

/// Reader threads: reads are short, and the machine has few cores.
const READERS: usize = 4;

pub struct SqliteStore {
    writer: Writer,
    readers: Readers,
    coordination: Arc<LocalCoordination>,
    /// Whether writes fail for want of storage, as the writer last found.
    health: Arc<WriteHealth>,
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
        let health = Arc::new(WriteHealth::default());
        let writer = Writer::start(db.clone(), health.clone())?;
        // Readers never write, so they never wait for the writer (WAL).
        let quick = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
        let readers = Readers::start(&db, READERS, quick)?;
        Ok(Self {
            writer,
            readers,
            coordination: Arc::default(),
            health,
        })
    }
}

/// A statement whose text joins a shared column list, built once.
macro_rules! sql {
    ($vis:vis $name:ident = $($arg:tt)*) => {
        $vis static $name: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| format!($($arg)*));
    };
}
// For the role files, which `use super::*`.
use sql;

/// The shared SQL (`$1`, `$2`, ...) with SQLite's numbered parameters (`?1`, `?2`, ...), which
/// bind by number wherever they appear.
fn sqlite_params(sql: &str) -> String {
    sql.replace('$', "?")
}

/// The shared statements, in SQLite's spelling, built once.
macro_rules! shared_sql {
    ($($name:ident = $sql:expr;)*) => {$(
        static $name: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| sqlite_params($sql));
    )*};
}
// For the role files, which `use super::*`.
use shared_sql;

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

/// An audit entry's columns, ready to write and to hash.
struct AuditValues {
    at: i64,
    request_id: Option<String>,
    event: &'static str,
    actor: String,
    data: String,
}

/// Audit entries and outbox jobs to write in the transaction of the change that caused them.
struct Entries {
    audit: Vec<AuditValues>,
    /// Whether the job collapses into a waiting one, and its row.
    jobs: Vec<(bool, Values)>,
}

impl Entries {
    fn of(now: Millis, audit: &[NewAudit], effects: &[Effect]) -> StoreResult<Self> {
        let audit = audit
            .iter()
            .map(|a| {
                Ok(AuditValues {
                    at: now,
                    request_id: a.request_id.as_ref().map(|id| id.as_str().to_owned()),
                    event: a.event,
                    actor: a.actor.clone(),
                    data: to_json(&a.data)?,
                })
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
                        Value::Integer(effect.due(now)),
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
    /// into a job already waiting). Each audit entry gets its place in the hash chain in the
    /// same transaction: the chain holds exactly what greenlight wrote.
    fn write_jobs(&self, conn: &Connection) -> StoreResult<Vec<Option<i64>>> {
        if !self.audit.is_empty() {
            let mut insert = conn.prepare_cached(INSERT_AUDIT)?;
            let mut written = Vec::with_capacity(self.audit.len());
            for a in &self.audit {
                insert.execute(rusqlite::params![
                    a.at,
                    a.request_id,
                    a.event,
                    a.actor,
                    a.data
                ])?;
                written.push(crate::domain::AuditContent {
                    id: conn.last_insert_rowid(),
                    at_ms: a.at,
                    request_id: a.request_id.as_deref(),
                    event: a.event,
                    actor: &a.actor,
                    data_json: &a.data,
                });
            }
            audit::chain_written(conn, &written)?;
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

#[cfg(test)]
mod tests {
    use super::outbox::{CLAIM_LANE, DELIVERIES, NEXT_DUE_IN_LANE};
    use super::requests::{GET_REQUEST, REQUESTS_BY};
    use super::signals::{LAPSED_SIGNALS, PAGE_OF_SIGNALS};
    use super::{Database, INSERT_COLLAPSING_JOB, migrate};

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
                PAGE_OF_SIGNALS.clone(),
                "USING INDEX sqlite_autoindex_signals_1 (name>?)",
            ),
            (
                LAPSED_SIGNALS.clone(),
                "USING INDEX signals_expires (expires_at<?)",
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
