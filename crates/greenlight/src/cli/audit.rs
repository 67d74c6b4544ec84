//! `audit` (over the API), `audit verify`, `audit export` and `backup` (on the database): the
//! trail and its copies.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{client_exit, exit, fail};
use crate::client::GreenlightClient;
use crate::store;

pub(super) const AUDIT_AFTER: &str = "\
`greenlight audit` lists events over the API (GREENLIGHT_URL, GREENLIGHT_TOKEN with the admin
scope). `audit verify` and `audit export` read the database itself (GREENLIGHT_DATABASE_URL).

Examples:
  greenlight audit --after 120 --limit 50
  greenlight audit verify
  greenlight audit export > audit.jsonl";

pub(super) const BACKUP_AFTER: &str = "\
SQLite only: the copy is taken with VACUUM INTO, a consistent snapshot even while the server
writes. To restore, stop the server and put the copy in place of the database file (or point
GREENLIGHT_DATABASE_URL at it). For PostgreSQL use pg_dump (see docs/operations.md).

Environment:
  GREENLIGHT_DATABASE_URL  sqlite:PATH [default: sqlite:greenlight.db]";

#[derive(Debug, Args)]
pub(super) struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    /// Only events after this audit id.
    #[arg(long, default_value_t = 0)]
    after: i64,
    /// How many events to print (1-1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain of the whole log: exit 0 when intact, 1 naming the first entry
    /// that was edited, deleted, reordered or inserted.
    Verify,
    /// Write the chained log as JSON Lines with each entry's hash and previous hash, for a
    /// third party to verify offline (docs/operations.md has a verifier).
    Export {
        /// Only entries after this audit id (the `id` of the last line of an earlier export).
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
}

#[derive(Debug, Args)]
pub(super) struct BackupArgs {
    /// Where the copy goes (must not exist yet).
    path: std::path::PathBuf,
}

pub(super) async fn audit(args: AuditArgs) -> ExitCode {
    match args.command {
        None => list(args.after, args.limit).await,
        Some(AuditCommand::Verify) => super::with_store(async |_, store| verify(store).await).await,
        Some(AuditCommand::Export { after }) => {
            super::with_store(async |_, store| export(store, after).await).await
        }
    }
}

pub(super) async fn backup(args: BackupArgs) -> ExitCode {
    super::with_store(async |_, store| backup_to(store, &args.path).await).await
}

async fn list(after: i64, limit: u32) -> ExitCode {
    let client = match GreenlightClient::from_env() {
        Ok(c) => c,
        Err(e) => return client_exit(e),
    };
    match client.audit(after, limit).await {
        Ok(body) => {
            for e in body["events"].as_array().into_iter().flatten() {
                println!("{e}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => client_exit(e),
    }
}

async fn verify(store: &dyn store::AuditLog) -> ExitCode {
    let now = jiff::Timestamp::now().as_millisecond();
    match crate::service::audit::verify(store, now).await {
        Err(e) => fail(e),
        Ok(Ok(intact)) => {
            let head = intact
                .head
                .map(|(seq, hash)| format!("; head: position {seq}, hash {hash}"))
                .unwrap_or_default();
            println!("audit log intact: {} entries chained{head}", intact.entries);
            if intact.pending > 0 {
                println!(
                    "{} entries greenlight wrote are waiting for their chain position (a running server chains them within a second; `greenlight migrate` chains them now)",
                    intact.pending
                );
            }
            ExitCode::SUCCESS
        }
        Ok(Err((broken, intact))) => {
            println!(
                "audit log BROKEN: {broken} ({} entries before it are intact)",
                intact.entries
            );
            ExitCode::from(1)
        }
    }
}

async fn export(store: &dyn store::AuditLog, after: i64) -> ExitCode {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = crate::service::audit::export(store, after, |entry| {
        writeln!(out, "{}", crate::service::audit::export_line(entry))
    })
    .await;
    let flushed = out.flush();
    match (written, flushed) {
        (Ok(Ok(n)), Ok(())) => {
            eprintln!("exported {n} audit entries");
            ExitCode::SUCCESS
        }
        (Err(e), _) => fail(e),
        (Ok(Err(e)), _) | (_, Err(e)) => fail(format!("cannot write the export: {e}")),
    }
}

async fn backup_to(store: &dyn store::Admin, path: &std::path::Path) -> ExitCode {
    if path.exists() {
        eprintln!("error: {} exists; backup writes a new file", path.display());
        return ExitCode::from(exit::USAGE);
    }
    match store.backup(path).await {
        Ok(()) => {
            eprintln!("backed up to {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
