//! Direct looks into greenlight's database, SQLite file or PostgreSQL: what is durably there
//! (the durability checks), the fresh PostgreSQL databases of the replica runs, and the bulk
//! seeding of a large SQLite database. The bench does not link the product: it reads the
//! database the way an operator would, so a claim cannot be checked by the code that makes it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor};

use crate::{Error, Result};

/// Rows per INSERT statement (one JSON array bound, expanded by json_each).
const ROWS_PER_STATEMENT: usize = 10_000;
/// Rows per transaction.
const ROWS_PER_TRANSACTION: usize = 100_000;
/// One seeded request in this many is still pending; the rest are decided.
const PENDING_ONE_IN: usize = 20;

/// Where a greenlight instance keeps its data: a SQLite file (one process) or a PostgreSQL
/// database (any number of replicas).
#[derive(Debug, Clone)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(PgDatabase),
}

impl Location {
    /// The URL greenlight is given (`GREENLIGHT_DATABASE_URL`).
    pub fn url(&self) -> String {
        match self {
            Location::Sqlite(path) => format!("sqlite:{}", path.display()),
            Location::Postgres(db) => db.url.clone(),
        }
    }

    /// What it is, for progress lines and notes.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres(db) => format!("PostgreSQL database {}", db.name),
        }
    }
}

/// A PostgreSQL database the bench made for one instance, on the server of `admin`.
#[derive(Debug, Clone)]
pub struct PgDatabase {
    pub admin: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    /// Creates a fresh, empty database `greenlight_bench_<ulid>` next to the admin URL's.
    pub async fn create(admin: &str) -> Result<Self> {
        let name = format!(
            "greenlight_bench_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let url = database_url(admin, &name)?;
        let mut conn = admin_connection(admin).await?;
        // The name is made here of [a-z0-9_]; identifiers cannot be bound.
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await?;
        conn.close().await?;
        Ok(Self {
            admin: admin.to_owned(),
            name,
            url,
        })
    }

    /// Drops it, whoever is still connected (a SIGKILLed replica's backend may linger).
    pub async fn drop_database(&self) -> Result<()> {
        let mut conn = admin_connection(&self.admin).await?;
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .await?;
        conn.close().await?;
        Ok(())
    }
}

async fn admin_connection(admin: &str) -> Result<PgConnection> {
    PgConnection::connect(admin).await.map_err(|e| {
        Error::msg(format!(
            "cannot connect to PostgreSQL at {admin}: {e} (pass --postgres-url, or --skip-postgres)"
        ))
    })
}

/// A PostgreSQL URL without its password, for notes and messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or(user);
            format!("{scheme}://{user}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// The admin URL with its database name replaced by `name` (query string kept).
fn database_url(admin: &str, name: &str) -> Result<String> {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin, None),
    };
    let rest = base
        .strip_prefix("postgres://")
        .or_else(|| base.strip_prefix("postgresql://"))
        .ok_or_else(|| {
            Error::msg(format!(
                "--postgres-url must start with postgres://: {admin}"
            ))
        })?;
    let scheme = &base[..base.len() - rest.len()];
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut url = format!("{scheme}{authority}/{name}");
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    Ok(url)
}

/// A SQLite file as another process sees it (rusqlite, the bundled SQLite); the file must
/// exist, as greenlight made it.
fn open_sqlite(path: &Path) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(30))?;
    Ok(conn)
}

/// A connection to an instance's database, the way an operator would look into it. The SQLite
/// queries are short and run on the caller's thread.
pub enum Db {
    Sqlite(Mutex<Option<rusqlite::Connection>>),
    Postgres(PgPool),
}

impl Db {
    fn sqlite<T>(
        conn: &Mutex<Option<rusqlite::Connection>>,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let guard = conn.lock().unwrap_or_else(|e| e.into_inner());
        let conn = guard
            .as_ref()
            .ok_or_else(|| Error::msg("the database connection is closed"))?;
        Ok(f(conn)?)
    }
}

impl Db {
    pub async fn open(location: &Location) -> Result<Self> {
        match location {
            Location::Sqlite(path) => Ok(Db::Sqlite(Mutex::new(Some(open_sqlite(path)?)))),
            Location::Postgres(db) => Ok(Db::Postgres(
                PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&db.url)
                    .await?,
            )),
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(conn) => {
                let taken = conn.lock().unwrap_or_else(|e| e.into_inner()).take();
                drop(taken);
            }
            Db::Postgres(pool) => pool.close().await,
        }
    }

    /// `count(*)`-like query with at most one text parameter; both dialects take `$1`.
    async fn count(&self, sql: &'static str, bind: Option<&str>) -> Result<i64> {
        Ok(match self {
            Db::Sqlite(conn) => Db::sqlite(conn, |c| {
                let mut stmt = c.prepare_cached(sql)?;
                match bind {
                    Some(b) => stmt.query_row([b], |r| r.get(0)),
                    None => stmt.query_row([], |r| r.get(0)),
                }
            })?,
            Db::Postgres(pool) => {
                let q = sqlx::query_scalar(sql);
                match bind {
                    Some(b) => q.bind(b),
                    None => q,
                }
                .fetch_one(pool)
                .await?
            }
        })
    }

    pub async fn decided(&self) -> Result<i64> {
        self.count(
            "SELECT count(*) FROM requests WHERE status <> 'pending'",
            None,
        )
        .await
    }

    pub async fn with_status(&self, status: &str) -> Result<i64> {
        self.count(
            "SELECT count(*) FROM requests WHERE status = $1",
            Some(status),
        )
        .await
    }

    /// Whether a job waits in the outbox (a post or update still to send). Whether, not how
    /// many: a count walks every pending job, and this runs ten times a second on the
    /// measured database.
    async fn outbox_waiting(&self) -> Result<bool> {
        let sql =
            "SELECT count(*) FROM (SELECT 1 FROM outbox WHERE state = 'pending' LIMIT 1) AS one";
        Ok(self.count(sql, None).await? > 0)
    }

    /// Waits until the delivery workers have sent everything; false when `timeout` ran out
    /// first.
    pub async fn wait_outbox_drained(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.outbox_waiting().await? {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every pending request whose message is posted, oldest first.
    pub async fn posted(&self) -> Result<Vec<Posted>> {
        const SQL: &str = "SELECT id, slack_channel, slack_ts FROM requests \
             WHERE slack_ts IS NOT NULL AND status = 'pending' ORDER BY id";
        let rows: Vec<(String, String, String)> = match self {
            Db::Sqlite(conn) => Db::sqlite(conn, |c| {
                c.prepare_cached(SQL)?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })?,
            Db::Postgres(pool) => sqlx::query_as(SQL).fetch_all(pool).await?,
        };
        Ok(rows
            .into_iter()
            .map(|(id, channel, ts)| Posted { id, channel, ts })
            .collect())
    }
}

/// A posted request: its id and where its message is.
#[derive(Debug, Clone)]
pub struct Posted {
    pub id: String,
    pub channel: String,
    pub ts: String,
}

/// How the big database was made.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub rows: usize,
    pub pending: usize,
    pub took: Duration,
    pub file_bytes: u64,
}

/// Adds `n` requests by copying two template requests the server itself wrote (one pending,
/// one decided) with fresh ids and timestamps spread over the past year, each with copies of
/// its template's audit entries. Every column the server wrote is copied, so the rows match
/// the schema whatever migrations add. Large transactions, then a WAL checkpoint, so the
/// server starts on a plain database file as a long-running one would have.
pub async fn seed(
    path: &Path,
    pending_template: &str,
    decided_template: &str,
    n: usize,
) -> Result<Seeded> {
    let (path, pending_template, decided_template) = (
        path.to_owned(),
        pending_template.to_owned(),
        decided_template.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        seed_blocking(&path, &pending_template, &decided_template, n)
    })
    .await
    .map_err(|e| Error::msg(format!("seeding: {e}")))?
}

fn seed_blocking(
    path: &Path,
    pending_template: &str,
    decided_template: &str,
    n: usize,
) -> Result<Seeded> {
    let started = Instant::now();
    let mut conn = open_sqlite(path)?;
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('requests')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let select: Vec<String> = columns
        .iter()
        .map(|c| match c.as_str() {
            "id" => "json_extract(j.value, '$[0]')".to_owned(),
            "created_at" => "json_extract(j.value, '$[1]')".to_owned(),
            "decided_at" => {
                "CASE WHEN t.decided_at IS NULL THEN NULL ELSE json_extract(j.value, '$[1]') + 60000 END"
                    .to_owned()
            }
            "slack_ts" => "CASE WHEN t.slack_ts IS NULL THEN NULL ELSE \
                 printf('%d.%06d', json_extract(j.value, '$[1]') / 1000, (json_extract(j.value, '$[1]') % 1000) * 1000 + j.key % 1000) END"
                .to_owned(),
            "idempotency_key" | "idempotency_fingerprint" => "NULL".to_owned(),
            other => format!("t.\"{other}\""),
        })
        .collect();
    let insert_requests = format!(
        "INSERT INTO requests ({}) SELECT {} FROM json_each(?1) j, requests t WHERE t.id = ?2",
        columns
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", "),
        select.join(", ")
    );
    let insert_audit = "INSERT INTO audit (at, request_id, event, actor, data) \
         SELECT json_extract(j.value, '$[1]') + (a.at - t.created_at), json_extract(j.value, '$[0]'), \
                a.event, a.actor, a.data \
         FROM json_each(?1) j, requests t JOIN audit a ON a.request_id = t.id WHERE t.id = ?2 ORDER BY j.key, a.id";

    let now_ms = jiff::Timestamp::now().as_millisecond();
    let year_ms: i64 = 365 * 24 * 3600 * 1000;
    let mut rng = rand::rng();
    let mut pending = 0;
    let mut done = 0;
    while done < n {
        let tx = conn.transaction()?;
        let end_tx = (done + ROWS_PER_TRANSACTION).min(n);
        while done < end_tx {
            let end = (done + ROWS_PER_STATEMENT).min(end_tx);
            let (mut p, mut d) = (Vec::new(), Vec::new());
            for i in done..end {
                // Oldest first, so ids (ULIDs) sort like creation times as they do in life.
                let created = now_ms - year_ms + (year_ms * i as i64) / n as i64;
                let ulid = ulid::Ulid::from_parts(created as u64, rng.random::<u128>());
                let row = serde_json::json!([format!("req_{ulid}"), created]);
                if i.is_multiple_of(PENDING_ONE_IN) {
                    p.push(row);
                } else {
                    d.push(row);
                }
            }
            pending += p.len();
            for (rows, template) in [(p, pending_template), (d, decided_template)] {
                if rows.is_empty() {
                    continue;
                }
                let json = serde_json::Value::Array(rows).to_string();
                // The statement text is built from the table's own column names above.
                for sql in [insert_requests.as_str(), insert_audit] {
                    tx.prepare_cached(sql)?.execute([json.as_str(), template])?;
                }
            }
            done = end;
        }
        tx.commit()?;
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    drop(conn);
    let file_bytes = std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    Ok(Seeded {
        rows: n,
        pending,
        took: started.elapsed(),
        file_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_database_sits_beside_the_admin_one() {
        assert_eq!(
            database_url(
                "postgres://postgres@127.0.0.1:5432/postgres",
                "greenlight_bench_x"
            )
            .unwrap(),
            "postgres://postgres@127.0.0.1:5432/greenlight_bench_x"
        );
        assert_eq!(
            database_url("postgresql://u:p@db:5432?sslmode=disable", "b").unwrap(),
            "postgresql://u:p@db:5432/b?sslmode=disable"
        );
        assert!(database_url("sqlite:x.db", "b").is_err());
    }

    #[test]
    fn passwords_stay_out_of_the_notes() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/postgres"),
            "postgres://u@db:5432/postgres"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
    }
}
