//! `greenlight copy-db`: moves a whole database to another backend (SQLite to PostgreSQL when a
//! team starts running replicas), table by table with every column and id as it is, so the
//! audit log keeps its order and old buttons keep working. The target must be empty; the copy
//! is one transaction there, so it lands whole or not at all.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, Postgres, QueryBuilder, Row};

use super::sqlite::Database;
use super::{StoreError, StoreResult, is_postgres};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Bool,
}

use Kind::{Bool, Int, Text};

/// Every table that holds state, in an order that keeps references valid, with its columns.
/// What is only coordination between live replicas (leases, pacing, pauses) is not copied, nor
/// who opened the Home tab lately (`home_opened`): it matters only to running servers.
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "api_keys",
        &[
            ("id", Text),
            ("name", Text),
            ("hash", Text),
            ("scopes", Text),
            ("created_at", Int),
            ("revoked_at", Int),
        ],
    ),
    (
        "requests",
        &[
            ("id", Text),
            ("workflow", Text),
            ("title", Text),
            ("details", Text),
            ("params", Text),
            ("requester", Text),
            ("status", Text),
            ("decisions", Text),
            ("decided_by", Text),
            ("reason", Text),
            ("created_at", Int),
            ("decided_at", Int),
            ("expires_at", Int),
            ("channel", Text),
            ("slack_channel", Text),
            ("slack_ts", Text),
            ("callback_url", Text),
            ("api_key_id", Text),
            ("idempotency_key", Text),
            ("idempotency_fingerprint", Text),
            ("version", Int),
            ("reminders", Int),
            ("remind_at", Int),
            ("change_token", Text),
            ("metadata", Text),
            ("tool_call", Text),
            ("digest_key", Text),
            ("slack_copies", Text),
            ("identity", Text),
            ("form", Text),
        ],
    ),
    (
        "audit",
        &[
            ("id", Int),
            ("at", Int),
            ("request_id", Text),
            ("event", Text),
            ("actor", Text),
            ("data", Text),
        ],
    ),
    (
        "outbox",
        &[
            ("id", Int),
            ("request_id", Text),
            ("kind", Text),
            ("lane", Text),
            ("collapse_key", Text),
            ("payload", Text),
            ("state", Text),
            ("attempts", Int),
            ("claims", Int),
            ("next_attempt_at", Int),
            ("last_error", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    ),
    (
        "outbox_attempts",
        &[
            ("id", Int),
            ("job_id", Int),
            ("at", Int),
            ("outcome", Text),
            ("error", Text),
        ],
    ),
    (
        "action_results",
        &[
            ("id", Int),
            ("request_id", Text),
            ("name", Text),
            ("ok", Bool),
            ("summary", Text),
            ("attempts", Int),
            ("at", Int),
        ],
    ),
    (
        "signals",
        &[
            ("name", Text),
            ("value", Text),
            ("since", Int),
            ("updated_at", Int),
            ("set_by", Text),
            ("expires_at", Int),
        ],
    ),
    (
        "digests",
        &[
            ("key", Text),
            ("channel", Text),
            ("window_start", Int),
            ("window_end", Int),
            ("slack_channel", Text),
            ("slack_ts", Text),
        ],
    ),
    (
        "audit_chain",
        &[
            ("seq", Int),
            ("audit_id", Int),
            ("prev_hash", Text),
            ("hash", Text),
        ],
    ),
    ("audit_pending", &[("audit_id", Int)]),
    (
        "signing_keys",
        &[
            ("kid", Text),
            ("created_at", Int),
            ("seed", Text),
            ("public_key", Text),
        ],
    ),
    (
        "standing_approvals",
        &[
            ("id", Text),
            ("workflow", Text),
            ("granted_by", Text),
            ("caller", Text),
            ("caller_name", Text),
            ("match_params", Text),
            ("request_id", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("revoked_at", Int),
            ("revoked_by", Text),
        ],
    ),
    ("meta", &[("key", Text), ("value", Text)]),
];

/// Rows per PostgreSQL INSERT: well under its limit on bound parameters.
const BATCH: usize = 500;

#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
}

/// How many rows each table had in the source and has in the target after the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub table: &'static str,
    pub source: i64,
    pub target: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the target database is not empty ({0}); copy-db only fills an empty database")]
    NotEmpty(String),
    #[error("the source and the target are the same database")]
    SameDatabase,
    /// A row the target cannot hold; nothing was written to the target.
    #[error("{table} row {row}: {problem}; nothing was copied")]
    Row {
        table: &'static str,
        /// The row's key (its first column).
        row: String,
        problem: String,
    },
}

/// Columns that hold JSON as text, which PostgreSQL reads as `jsonb`.
const JSON_COLUMNS: &[&str] = &[
    "params",
    "decisions",
    "metadata",
    "tool_call",
    "slack_copies",
    "identity",
    "match_params",
    "form",
    "data",
    "payload",
    "value",
];

/// The first cell PostgreSQL cannot hold, as (row key, problem): NUL in text, or `\u0000` in
/// a JSON string (`jsonb` refuses it). SQLite holds both, so a SQLite file can have them.
fn unstorable_in_postgres(
    table: &'static str,
    columns: &[(&str, Kind)],
    rows: &[Vec<Cell>],
) -> Result<(), CopyError> {
    fn json_has_nul(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(a) => a.iter().any(json_has_nul),
            serde_json::Value::Object(o) => {
                o.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v))
            }
            _ => false,
        }
    }
    for row in rows {
        for ((column, _), cell) in columns.iter().zip(row) {
            let Cell::Text(Some(text)) = cell else {
                continue;
            };
            let problem = if text.contains('\0') {
                Some(format!(
                    "{column} holds a NUL character, which PostgreSQL cannot store"
                ))
            } else if JSON_COLUMNS.contains(column)
                && serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| json_has_nul(&v))
            {
                Some(format!(
                    "{column} holds \\u0000 in its JSON, which PostgreSQL's jsonb cannot read"
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(CopyError::Row {
                    table,
                    row: row_key(row),
                    problem,
                });
            }
        }
    }
    Ok(())
}

/// A row's key as shown in errors: its first column.
fn row_key(row: &[Cell]) -> String {
    match row.first() {
        Some(Cell::Text(Some(t))) => t.clone(),
        Some(Cell::Int(Some(n))) => n.to_string(),
        _ => "?".to_owned(),
    }
}

impl From<sqlx::Error> for CopyError {
    fn from(e: sqlx::Error) -> Self {
        CopyError::Store(e.into())
    }
}

/// `user:password@` shown as `user:***@`, for printing database URLs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Copies every table of `from` into `to`, which must be empty; both are brought up to date
/// with their migrations first.
pub async fn copy_db(from: &str, to: &str) -> Result<Vec<Copied>, CopyError> {
    if from.trim() == to.trim() {
        return Err(CopyError::SameDatabase);
    }
    for url in [from, to] {
        super::connect(url).await?.close().await;
    }
    let rows = match Backend::open(from).await? {
        Backend::Sqlite(db) => blocking(move || sqlite_read_all(&db.open()?)).await?,
        Backend::Postgres(mut c) => pg_read_all(&mut c).await?,
    };
    match Backend::open(to).await? {
        Backend::Sqlite(db) => blocking(move || sqlite_write_all(&mut db.open()?, &rows)).await,
        Backend::Postgres(mut c) => pg_write_all(&mut c, &rows).await,
    }
}

enum Backend {
    Sqlite(Database),
    Postgres(PgConnection),
}

impl Backend {
    async fn open(url: &str) -> StoreResult<Self> {
        if is_postgres(url) {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new().max_connections(1);
            Ok(Backend::Postgres(
                pool.connect_with(options).await?.acquire().await?.detach(),
            ))
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite(Database::parse(url)?))
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }
}

/// SQLite is read and written synchronously, off the async runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CopyError> + Send + 'static,
) -> Result<T, CopyError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("copying: {e}")))?
}

impl From<rusqlite::Error> for CopyError {
    fn from(e: rusqlite::Error) -> Self {
        CopyError::Store(e.into())
    }
}

type Rows = Vec<(&'static str, Vec<Vec<Cell>>)>;

fn select_all(table: &str, columns: &[(&str, Kind)]) -> String {
    let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
    let order = columns[0].0;
    format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", "))
}

fn insert_into(table: &str, columns: &[(&str, Kind)]) -> String {
    let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
    format!("INSERT INTO {table} ({}) ", names.join(", "))
}

fn sqlite_read_all(conn: &rusqlite::Connection) -> Result<Rows, CopyError> {
    let mut all = Vec::new();
    for (table, columns) in TABLES {
        let mut stmt = conn.prepare(&select_all(table, columns))?;
        let mut found = stmt.query([])?;
        let mut rows = Vec::new();
        while let Some(row) = found.next()? {
            let mut cells = Vec::with_capacity(columns.len());
            for (i, (_, kind)) in columns.iter().enumerate() {
                cells.push(match kind {
                    Text => Cell::Text(row.get(i)?),
                    Int => Cell::Int(row.get(i)?),
                    Bool => Cell::Bool(row.get(i)?),
                });
            }
            rows.push(cells);
        }
        all.push((*table, rows));
    }
    Ok(all)
}

fn sqlite_count(conn: &rusqlite::Connection, table: &str) -> Result<i64, CopyError> {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    Ok(conn.query_row(&sql, [], |r| r.get(0))?)
}

fn sqlite_write_all(
    conn: &mut rusqlite::Connection,
    rows: &Rows,
) -> Result<Vec<Copied>, CopyError> {
    let filled = TABLES
        .iter()
        .map(|(table, _)| Ok((table, sqlite_count(conn, table)?)))
        .collect::<Result<Vec<_>, CopyError>>()?;
    not_empty(filled)?;
    let tx = conn.transaction()?;
    for ((table, columns), (_, table_rows)) in TABLES.iter().zip(rows) {
        let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "{}VALUES ({})",
            insert_into(table, columns),
            marks.join(", ")
        );
        let mut insert = tx.prepare(&sql)?;
        for row in table_rows {
            let values = row.iter().map(|cell| match cell {
                Cell::Text(v) => rusqlite::types::Value::from(v.clone()),
                Cell::Int(v) => rusqlite::types::Value::from(*v),
                Cell::Bool(v) => rusqlite::types::Value::from(*v),
            });
            insert
                .execute(rusqlite::params_from_iter(values))
                .map_err(|e| CopyError::Row {
                    table,
                    row: row_key(row),
                    problem: e.to_string(),
                })?;
        }
    }
    tx.commit()?;
    let mut copied = Vec::new();
    for (table, table_rows) in rows {
        copied.push(Copied {
            table,
            source: i64::try_from(table_rows.len()).unwrap_or(i64::MAX),
            target: sqlite_count(conn, table)?,
        });
    }
    Ok(copied)
}

fn not_empty(counts: Vec<(&&str, i64)>) -> Result<(), CopyError> {
    let filled: Vec<String> = counts
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(table, n)| format!("{table}: {n} rows"))
        .collect();
    if filled.is_empty() {
        Ok(())
    } else {
        Err(CopyError::NotEmpty(filled.join(", ")))
    }
}

async fn pg_read_all(conn: &mut PgConnection) -> Result<Rows, CopyError> {
    let mut all = Vec::new();
    for (table, columns) in TABLES {
        let found = sqlx::query(sqlx::AssertSqlSafe(select_all(table, columns)))
            .fetch_all(&mut *conn)
            .await?;
        let mut rows = Vec::with_capacity(found.len());
        for row in &found {
            let mut cells = Vec::with_capacity(columns.len());
            for (i, (_, kind)) in columns.iter().enumerate() {
                cells.push(match kind {
                    Text => Cell::Text(row.try_get(i)?),
                    Int => Cell::Int(row.try_get(i)?),
                    Bool => Cell::Bool(row.try_get(i)?),
                });
            }
            rows.push(cells);
        }
        all.push((*table, rows));
    }
    Ok(all)
}

async fn pg_count(conn: &mut PgConnection, table: &str) -> Result<i64, CopyError> {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *conn)
        .await?;
    Ok(n)
}

async fn pg_write_all(conn: &mut PgConnection, rows: &Rows) -> Result<Vec<Copied>, CopyError> {
    let mut counts = Vec::new();
    for (table, _) in TABLES {
        counts.push((table, pg_count(conn, table).await?));
    }
    not_empty(counts)?;
    for ((table, columns), (_, table_rows)) in TABLES.iter().zip(rows) {
        unstorable_in_postgres(table, columns, table_rows)?;
    }
    let mut tx = conn.begin().await?;
    for ((table, columns), (_, table_rows)) in TABLES.iter().zip(rows) {
        for chunk in table_rows.chunks(BATCH) {
            let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(insert_into(table, columns));
            qb.push_values(chunk, |mut b, row| {
                for cell in row {
                    match cell {
                        Cell::Text(v) => b.push_bind(v.clone()),
                        Cell::Int(v) => b.push_bind(*v),
                        Cell::Bool(v) => b.push_bind(*v),
                    };
                }
            });
            qb.build()
                .execute(&mut *tx)
                .await
                .map_err(|e| CopyError::Row {
                    table,
                    row: format!(
                        "{} to {}",
                        row_key(chunk.first().map_or(&[][..], |r| r)),
                        row_key(chunk.last().map_or(&[][..], |r| r))
                    ),
                    problem: e.to_string(),
                })?;
        }
        if columns[0] == ("id", Int) {
            // Identity columns continue after the copied ids.
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    let mut copied = Vec::new();
    for (table, table_rows) in rows {
        copied.push(Copied {
            table,
            source: i64::try_from(table_rows.len()).unwrap_or(i64::MAX),
            target: pg_count(conn, table).await?,
        });
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_do_not_print() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/greenlight"),
            "postgres://app:***@db:5432/greenlight"
        );
        assert_eq!(
            redact("postgres://app@db/greenlight"),
            "postgres://app@db/greenlight"
        );
        assert_eq!(redact("sqlite:greenlight.db"), "sqlite:greenlight.db");
    }
}
