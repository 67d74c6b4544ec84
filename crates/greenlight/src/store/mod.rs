//! Persistence behind role traits, one per thing the store serves (requests, the outbox, the
//! audit log, ...), which `Store` gathers. The domain decides; the store only writes what was
//! decided, atomically with its audit entries and outbox jobs, and refuses a write whose request
//! changed in between (compare-and-set on the request's version).
//! Imports the domain and the pure policy (`policy`) only; every layer above may use it.

mod admin;
mod alerts;
mod audit;
pub mod copy;
mod digests;
mod health;
mod history;
mod home;
mod keys;
mod local;
mod outbox;
mod postgres;
mod requests;
mod rows;
mod signals;
mod signing;
mod sqlite;
mod standing;

use std::sync::Arc;

use jiff::Timestamp;

use crate::domain::Millis;

pub use admin::{Admin, Coordination, DecisionFeed};
pub use alerts::Alerts;
pub use audit::{AuditEvent, AuditLog, ChainLink, NewAudit, Unchained};
pub use digests::{DigestEntry, DigestSummary, DigestWindow, Digests, SlackMessageRef};
pub use health::{LogThrottle, Retrying, WriteHealth, log_unavailable};
pub use history::History;
pub use home::Home;
pub use keys::{ApiKey, ApiKeys, Scope};
pub use local::LocalCoordination;
pub use outbox::{
    ActionResult, Attempt, DIGEST_UPDATE_DELAY_MS, Delivery, Effect, Job, JobReport, JobResult,
    JobState, Lane, Outbox,
};
pub use postgres::PostgresStore;
pub use requests::{
    CreateOutcome, Idempotency, ListFilter, Page, Requests, VOTABLE_COUNT_CAP, VotableFilter,
};
pub use signals::{SignalWrite, Signals};
pub use signing::{SigningKeys, StoredSigningKey};
pub use sqlite::SqliteStore;
pub use standing::StandingApprovals;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("migration failed: {0}")]
    MigrationSql(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: use sqlite:PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    #[error("{0}")]
    Unsupported(&'static str),
}

impl StoreError {
    /// A unique constraint refused the write (two creates with one idempotency key raced).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => e.is_unique_violation(),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// How a database is opened: pool size and statement timeout (PostgreSQL; SQLite has one
/// writer and a few readers of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseOptions {
    pub max_connections: u32,
    pub statement_timeout: std::time::Duration,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            statement_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Which backend a URL names.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens the store named by a database URL and brings its schema up to date.
pub async fn connect(url: &str) -> StoreResult<Arc<dyn Store>> {
    connect_with(url, DatabaseOptions::default()).await
}

pub async fn connect_with(url: &str, options: DatabaseOptions) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if is_postgres(url) {
        Ok(Arc::new(PostgresStore::open(url, options).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

/// Everything the store does: every role, on one backend. Any role's methods can be called on
/// an `Arc<dyn Store>` (a trait object's supertrait methods need no import).
pub trait Store:
    Requests
    + Outbox
    + AuditLog
    + ApiKeys
    + Signals
    + History
    + Digests
    + Alerts
    + Home
    + Admin
    + SigningKeys
    + StandingApprovals
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: Requests
        + Outbox
        + AuditLog
        + ApiKeys
        + Signals
        + History
        + Digests
        + Alerts
        + Home
        + Admin
        + SigningKeys
        + StandingApprovals
        + Send
        + Sync
        + 'static
{
}

pub(crate) fn ts_from_millis(ms: Millis) -> StoreResult<Timestamp> {
    Timestamp::from_millisecond(ms).map_err(|e| StoreError::Corrupt(format!("timestamp {ms}: {e}")))
}

pub(crate) fn millis(ts: Timestamp) -> Millis {
    ts.as_millisecond()
}
