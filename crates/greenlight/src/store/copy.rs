//! `greenlight copy-db`: moves a whole database to another backend (SQLite to PostgreSQL when a
//! team starts running replicas), table by table with every column and id as it is, so the
//! audit log keeps its order and old buttons keep working. The target must be empty; the copy
//! is one transaction there, so it lands whole or not at all.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Connection, Database, Executor, IntoArguments, QueryBuilder, Row};

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
    ("meta", &[("key", Text), ("value", Text)]),
];

/// Rows per INSERT: well under both backends' limits on bound parameters.
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
        Backend::Sqlite(mut c) => read_all(&mut c).await?,
        Backend::Postgres(mut c) => read_all(&mut c).await?,
    };
    match Backend::open(to).await? {
        Backend::Sqlite(mut c) => write_all(&mut c, &rows, false).await,
        Backend::Postgres(mut c) => write_all(&mut c, &rows, true).await,
    }
}

enum Backend {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
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
            let options = SqliteConnectOptions::from_str(url)?;
            let pool = SqlitePoolOptions::new().max_connections(1);
            Ok(Backend::Sqlite(
                pool.connect_with(options).await?.acquire().await?.detach(),
            ))
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }
}

type Rows = Vec<(&'static str, Vec<Vec<Cell>>)>;

async fn read_all<C, DB>(conn: &mut C) -> Result<Rows, CopyError>
where
    DB: Database,
    for<'c> &'c mut C: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    for<'r> Option<String>: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> Option<i64>: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> Option<bool>: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
{
    let mut all = Vec::new();
    for (table, columns) in TABLES {
        let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
        let order = columns[0].0;
        let sql = format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", "));
        let found = sqlx::query(sqlx::AssertSqlSafe(sql))
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

async fn count<C, DB>(conn: &mut C, table: &str) -> Result<i64, CopyError>
where
    DB: Database,
    for<'c> &'c mut C: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let sql = format!("SELECT COUNT(*) FROM {table}");
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *conn)
        .await?;
    Ok(n)
}

async fn write_all<C, DB>(
    conn: &mut C,
    rows: &Rows,
    postgres: bool,
) -> Result<Vec<Copied>, CopyError>
where
    C: Connection<Database = DB>,
    DB: Database,
    for<'c> &'c mut C: Executor<'c, Database = DB>,
    for<'c> &'c mut <DB as Database>::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    for<'q> Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<bool>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut filled = Vec::new();
    for (table, _) in TABLES {
        let n = count(conn, table).await?;
        if n > 0 {
            filled.push(format!("{table}: {n} rows"));
        }
    }
    if !filled.is_empty() {
        return Err(CopyError::NotEmpty(filled.join(", ")));
    }
    let mut tx = conn.begin().await?;
    for ((table, columns), (_, table_rows)) in TABLES.iter().zip(rows) {
        let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
        for chunk in table_rows.chunks(BATCH) {
            let mut qb: QueryBuilder<DB> =
                QueryBuilder::new(format!("INSERT INTO {table} ({}) ", names.join(", ")));
            qb.push_values(chunk, |mut b, row| {
                for cell in row {
                    match cell {
                        Cell::Text(v) => b.push_bind(v.clone()),
                        Cell::Int(v) => b.push_bind(*v),
                        Cell::Bool(v) => b.push_bind(*v),
                    };
                }
            });
            qb.build().execute(&mut *tx).await?;
        }
        if postgres && columns[0] == ("id", Int) {
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
            target: count(conn, table).await?,
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
