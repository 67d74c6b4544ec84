//! Direct looks into greenlight's SQLite file: what is durably there (the durability checks)
//! and the bulk seeding of a large database. The bench does not link the product: it reads the
//! file the way an operator would, so a claim cannot be checked by the code that makes it.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::Rng;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Executor, Row};

use crate::{Error, Result};

/// Rows per INSERT statement (one JSON array bound, expanded by json_each).
const ROWS_PER_STATEMENT: usize = 10_000;
/// Rows per transaction.
const ROWS_PER_TRANSACTION: usize = 100_000;
/// One seeded request in this many is still pending; the rest are decided.
const PENDING_ONE_IN: usize = 20;

pub async fn open(path: &Path) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(&format!("sqlite:{}", path.display()))?
        .busy_timeout(Duration::from_secs(30));
    Ok(SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?)
}

pub async fn count(pool: &SqlitePool, sql: &'static str) -> Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}

pub async fn decided(pool: &SqlitePool) -> Result<i64> {
    count(
        pool,
        "SELECT count(*) FROM requests WHERE status <> 'pending'",
    )
    .await
}

pub async fn with_status(pool: &SqlitePool, status: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM requests WHERE status = $1")
            .bind(status)
            .fetch_one(pool)
            .await?,
    )
}

/// Outbox jobs not yet delivered (posts and updates still to send).
pub async fn outbox_waiting(pool: &SqlitePool) -> Result<i64> {
    count(pool, "SELECT count(*) FROM outbox WHERE state = 'pending'").await
}

/// Waits until the delivery worker has sent everything; false when `timeout` ran out first.
pub async fn wait_outbox_drained(pool: &SqlitePool, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if outbox_waiting(pool).await? == 0 {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A posted request: its id and where its message is.
#[derive(Debug, Clone)]
pub struct Posted {
    pub id: String,
    pub channel: String,
    pub ts: String,
}

/// Every pending request whose message is posted, oldest first.
pub async fn posted(pool: &SqlitePool) -> Result<Vec<Posted>> {
    let rows = sqlx::query(
        "SELECT id, slack_channel, slack_ts FROM requests \
         WHERE slack_ts IS NOT NULL AND status = 'pending' ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Posted {
                id: r.try_get("id")?,
                channel: r.try_get("slack_channel")?,
                ts: r.try_get("slack_ts")?,
            })
        })
        .collect()
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
    let started = Instant::now();
    let pool = open(path).await?;
    let columns: Vec<String> = sqlx::query("SELECT name FROM pragma_table_info('requests')")
        .fetch_all(&pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("name"))
        .collect::<std::result::Result<_, _>>()?;
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
        "INSERT INTO requests ({}) SELECT {} FROM json_each($1) j, requests t WHERE t.id = $2",
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
         FROM json_each($1) j, requests t JOIN audit a ON a.request_id = t.id WHERE t.id = $2 ORDER BY j.key, a.id";

    let now_ms = jiff::Timestamp::now().as_millisecond();
    let year_ms: i64 = 365 * 24 * 3600 * 1000;
    let mut rng = rand::rng();
    let mut pending = 0;
    let mut done = 0;
    while done < n {
        let mut tx = pool.begin().await?;
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
                for sql in [insert_requests.clone(), insert_audit.to_owned()] {
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(&json)
                        .bind(template)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            done = end;
        }
        tx.commit().await?;
    }
    pool.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
    pool.close().await;
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
