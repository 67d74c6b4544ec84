//! Databases of the tests' own (SQLite or PostgreSQL, dropped afterwards) and API keys in them.

use greenlight::domain::ApiKeyId;
use greenlight::http::auth::{generate_key, hash_key};
use greenlight::store::{self, ApiKey, Scope};

/// Where the tests find a PostgreSQL server to create their databases in.
pub fn postgres_admin_url() -> String {
    std::env::var("GREENLIGHT_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of the test's own: a SQLite file in a temporary directory, or a fresh PostgreSQL
/// database (created here, dropped when this is dropped, even after a failure).
pub struct TestDb {
    pub url: String,
    postgres: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            url: format!("sqlite:{}", dir.path().join("greenlight.db").display()),
            postgres: None,
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> Self {
        use sqlx::Connection;
        let admin = postgres_admin_url();
        // The creation time in the name lets a later run drop what a killed run left behind.
        let name = format!(
            "gl_test_{}_{}",
            jiff::Timestamp::now().as_second(),
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin} (GREENLIGHT_TEST_POSTGRES_URL): {e}; start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`")
        });
        sweep_stale_databases(&mut conn).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Self {
            url: format!("{base}/{name}"),
            postgres: Some(name),
            _dir: None,
        }
    }

    /// Another handle on a database some other `TestDb` owns (a second replica): dropping it
    /// drops nothing.
    pub fn existing(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            postgres: None,
            _dir: None,
        }
    }

    pub async fn of(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::sqlite(),
            Backend::Postgres => Self::postgres().await,
        }
    }
}

/// Databases of test runs that died more than an hour ago.
async fn sweep_stale_databases(conn: &mut sqlx::PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'gl\\_test\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    let hour_ago = jiff::Timestamp::now().as_second() - 3600;
    for name in names {
        let born: Option<i64> = name.split('_').nth(2).and_then(|t| t.parse().ok());
        if born.is_some_and(|t| t < hour_ago) {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.postgres.take() else {
            return;
        };
        // Drop may run inside the test's runtime: drop the database from a thread of its own.
        let admin = postgres_admin_url();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop a test database; a later run drops it");
        }
    }
}

/// The store backends every store test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub async fn create_key(db_url: &str, name: &str, scopes: &[Scope]) -> String {
    let store = store::connect(db_url).await.expect("store opens");
    let secret = generate_key();
    let key = ApiKey {
        id: ApiKeyId::generate(),
        name: name.to_owned(),
        scopes: scopes.to_vec(),
        created_at: jiff::Timestamp::now(),
        revoked_at: None,
    };
    store
        .insert_api_key(&key, &hash_key(&secret))
        .await
        .unwrap();
    secret
}
