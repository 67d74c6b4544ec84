//! `migrate`, `copy-db` and `webhook-secret`: the database and what it keeps for the server.

use std::process::ExitCode;

use clap::Args;

use super::fail;
use crate::config::Config;
use crate::store;

pub(super) const COPY_DB_AFTER: &str = "\
Stop the server first (or copy from a backup): rows written during the copy are not copied.
Both databases are migrated to the current schema; the target must be empty. The copy is one
transaction in the target: it lands whole or not at all.

Example:
  greenlight copy-db --from sqlite:greenlight.db --to postgres://greenlight@db.internal:5432/greenlight";

#[derive(Debug, Args)]
pub(super) struct CopyDbArgs {
    /// The database to copy (sqlite:PATH or postgres://...); it is not changed.
    #[arg(long)]
    from: String,
    /// An empty database to fill; refused if it holds any row.
    #[arg(long)]
    to: String,
}

/// Opening the database migrates it; what is left is chaining older audit entries.
pub(super) async fn migrate(config: &Config, store: &dyn store::Store) -> ExitCode {
    // Entries written before the chain existed get their places now.
    match crate::service::audit::chain_all(store).await {
        Ok(0) => {}
        Ok(n) => eprintln!("chained {n} audit entries"),
        Err(e) => return fail(e),
    }
    eprintln!(
        "database {} is up to date",
        crate::store::copy::redact(&config.database_url)
    );
    ExitCode::SUCCESS
}

pub(super) async fn copy_db(args: CopyDbArgs) -> ExitCode {
    use crate::store::copy::{copy_db, redact};
    let (from, to) = (args.from.as_str(), args.to.as_str());
    match copy_db(from, to).await {
        Ok(copied) => {
            println!("{:<16} {:>10} {:>10}", "table", "source", "target");
            for c in &copied {
                println!("{:<16} {:>10} {:>10}", c.table, c.source, c.target);
            }
            if copied.iter().all(|c| c.source == c.target) {
                eprintln!(
                    "copied {} to {}: every count matches",
                    redact(from),
                    redact(to)
                );
                ExitCode::SUCCESS
            } else {
                fail("the counts differ: the target does not hold the whole copy")
            }
        }
        Err(e) => fail(e),
    }
}

/// The configured secret, or the stored one (generated now if the server never ran).
pub(super) async fn webhook_secret(config: &Config, store: &dyn store::Admin) -> ExitCode {
    match crate::delivery::webhook_secret(config, store).await {
        Ok(secret) => {
            println!("{}", secret.expose());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
