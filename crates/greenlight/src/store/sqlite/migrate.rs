//! The SQLite schema's migrations, embedded in the binary and recorded the way sqlx's migrator
//! recorded them (table `_sqlx_migrations`, checksum = SHA-384 of the file's text), so that a
//! database migrated by an earlier build is recognised and brought up to date.

use std::time::Instant;

use rusqlite::{Connection, OptionalExtension};
use sha2::{Digest, Sha384};
use sqlx::migrate::MigrateError;

use super::{StoreError, StoreResult};

pub struct Migration {
    pub version: i64,
    /// As sqlx derived it: the file name after the version, `_` read as a space.
    pub description: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $description:literal, $file:literal) => {
        Migration {
            version: $version,
            description: $description,
            sql: include_str!(concat!("../../../migrations/sqlite/", $file)),
        }
    };
}

/// Every file of `migrations/sqlite`, in order (a test checks the list against the folder).
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "init", "0001_init.sql"),
    migration!(2, "delivery", "0002_delivery.sql"),
    migration!(4, "policies", "0004_policies.sql"),
    migration!(5, "change token", "0005_change_token.sql"),
    migration!(6, "replicas", "0006_replicas.sql"),
    migration!(7, "post claims", "0007_post_claims.sql"),
    migration!(8, "audit chain", "0008_audit_chain.sql"),
    migration!(9, "request metadata", "0009_request_metadata.sql"),
    migration!(10, "delivery lanes", "0010_delivery_lanes.sql"),
    migration!(11, "app home", "0011_app_home.sql"),
    migration!(12, "tool call", "0012_tool_call.sql"),
    migration!(13, "machine to machine", "0013_machine_to_machine.sql"),
    migration!(14, "digest counts", "0014_digest_counts.sql"),
    migration!(15, "drop outbox due", "0015_drop_outbox_due.sql"),
    migration!(16, "signal retention", "0016_signal_retention.sql"),
    migration!(17, "audit pending", "0017_audit_pending.sql"),
    migration!(18, "signing keys", "0018_signing_keys.sql"),
    migration!(19, "slack copies", "0019_slack_copies.sql"),
    migration!(20, "request identity", "0020_request_identity.sql"),
    migration!(21, "answers", "0021_answers.sql"),
    migration!(25, "standing approvals", "0025_standing_approvals.sql"),
    migration!(26, "standing lookups", "0026_standing_lookups.sql"),
    migration!(27, "outbox claim order", "0027_outbox_claim_order.sql"),
];

/// sqlx's own table, created the same way.
const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
)";

pub fn checksum(sql: &str) -> Vec<u8> {
    Sha384::digest(sql.as_bytes()).to_vec()
}

/// Applies the migrations `conn` has not seen, each in its own transaction; returns how many.
/// Refuses a database whose applied migrations differ from these (edited, unknown or failed).
pub fn run(conn: &mut Connection) -> StoreResult<usize> {
    run_these(conn, MIGRATIONS)
}

fn run_these(conn: &mut Connection, migrations: &[Migration]) -> StoreResult<usize> {
    conn.execute_batch(VERSION_TABLE)?;
    let dirty: Option<i64> = conn
        .query_row(
            "SELECT version FROM _sqlx_migrations WHERE success = false ORDER BY version LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(version) = dirty {
        return Err(MigrateError::Dirty(version).into());
    }
    let applied: Vec<(i64, Vec<u8>)> = conn
        .prepare("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (version, _) in &applied {
        if !migrations.iter().any(|m| m.version == *version) {
            return Err(MigrateError::VersionMissing(*version).into());
        }
    }
    let mut ran = 0;
    for m in migrations {
        if let Some((_, sum)) = applied.iter().find(|(v, _)| *v == m.version) {
            if *sum != checksum(m.sql) {
                return Err(MigrateError::VersionMismatch(m.version).into());
            }
            continue;
        }
        let started = Instant::now();
        let tx = conn.transaction()?;
        tx.execute_batch(m.sql).map_err(|e| {
            StoreError::MigrationSql(format!("migration {} failed to apply: {e}", m.version))
        })?;
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?1, ?2, TRUE, ?3, ?4)",
            (
                m.version,
                m.description,
                checksum(m.sql),
                i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX),
            ),
        )?;
        tx.commit()?;
        ran += 1;
    }
    Ok(ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> Connection {
        Connection::open_in_memory().unwrap()
    }

    #[test]
    fn the_list_names_every_file_in_the_folder() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), MIGRATIONS.len());
        for (file, m) in files.iter().zip(MIGRATIONS) {
            let (version, rest) = file.split_once('_').unwrap();
            assert_eq!(version.parse::<i64>().unwrap(), m.version, "{file}");
            let description = rest.trim_end_matches(".sql").replace('_', " ");
            assert_eq!(description, m.description, "{file}");
            let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
            assert_eq!(text, m.sql, "{file}");
        }
    }

    #[test]
    fn a_migrated_database_reopened_applies_nothing() {
        let mut conn = memory();
        assert_eq!(run(&mut conn).unwrap(), MIGRATIONS.len());
        assert_eq!(run(&mut conn).unwrap(), 0);
        let recorded: i64 = conn
            .query_row(
                "SELECT count(*) FROM _sqlx_migrations WHERE success",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(recorded, MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_database_migrated_part_way_gets_the_rest() {
        let mut conn = memory();
        assert_eq!(run_these(&mut conn, &MIGRATIONS[..3]).unwrap(), 3);
        assert_eq!(run(&mut conn).unwrap(), MIGRATIONS.len() - 3);
    }

    #[test]
    fn an_edited_migration_is_refused() {
        let mut conn = memory();
        run(&mut conn).unwrap();
        conn.execute(
            "UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 2",
            [],
        )
        .unwrap();
        let e = run(&mut conn).unwrap_err();
        assert!(
            matches!(e, StoreError::Migrate(MigrateError::VersionMismatch(2))),
            "{e}"
        );
        assert!(e.to_string().contains("migration 2"), "{e}");
    }

    #[test]
    fn an_unknown_or_failed_migration_is_refused() {
        let mut conn = memory();
        run(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99, 'from the future', TRUE, x'00', 0)",
            [],
        )
        .unwrap();
        assert!(matches!(
            run(&mut conn).unwrap_err(),
            StoreError::Migrate(MigrateError::VersionMissing(99))
        ));
        conn.execute(
            "UPDATE _sqlx_migrations SET success = FALSE WHERE version = 99",
            [],
        )
        .unwrap();
        assert!(matches!(
            run(&mut conn).unwrap_err(),
            StoreError::Migrate(MigrateError::Dirty(99))
        ));
    }

    /// What sqlx 0.9's migrator wrote into a database it migrated to version 2 (its table,
    /// rows copied from such a database): this build takes it as its own and applies the rest.
    #[test]
    fn a_version_table_written_by_sqlx_is_accepted() {
        let mut conn = memory();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
                version BIGINT PRIMARY KEY,
                description TEXT NOT NULL,
                installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                success BOOLEAN NOT NULL,
                checksum BLOB NOT NULL,
                execution_time BIGINT NOT NULL
            );",
        )
        .unwrap();
        for m in &MIGRATIONS[..2] {
            conn.execute_batch(m.sql).unwrap();
        }
        conn.execute_batch(SQLX_ROWS).unwrap();
        assert_eq!(run(&mut conn).unwrap(), MIGRATIONS.len() - 2);
        assert_eq!(run(&mut conn).unwrap(), 0);
    }

    /// The rows sqlx 0.9's migrator wrote for versions 1 and 2, copied out of a database it
    /// migrated.
    const SQLX_ROWS: &str = include_str!("sqlx_migrations.sql");
}
