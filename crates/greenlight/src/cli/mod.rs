//! The command line: one binary for the server and its clients. This file holds the parser, the
//! dispatch and what the commands share; each group of commands has a file of its own.
//! The top layer: it may import every module; nothing imports it.

mod ask;
mod audit;
mod check;
mod db;
mod dev;
mod github;
mod keys;
mod mcp;
mod receipt;
mod requests;
mod serve;
mod slack;
mod standing;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::client::ClientError;
use crate::config::Config;
use crate::store;

/// Exit codes. `ask`'s are part of the contract; the other client commands use the same.
pub mod exit {
    pub const APPROVED: u8 = 0;
    pub const DENIED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const EXPIRED_OR_CANCELLED: u8 = 3;
    pub const STILL_PENDING: u8 = 4;
    pub const FAILURE: u8 = 5;
}

#[derive(Debug, Parser)]
#[command(
    name = "greenlight",
    version,
    about = "Human approval for machines, in Slack"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

const DATABASE_ENV: &str = "\
Environment:
  GREENLIGHT_DATABASE_URL  sqlite:PATH or postgres://USER@HOST:5432/DB [default: sqlite:greenlight.db]
  GREENLIGHT_CONFIG        config file, for database_url [default: ./greenlight.toml if present]";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (HTTP API, Slack endpoints, delivery worker).
    #[command(after_help = serve::SERVE_ENV)]
    Serve,
    /// Server + Slack sandbox + SQLite in one process, no Slack account needed.
    #[command(after_help = serve::DEV_ENV)]
    Dev,
    /// The Slack sandbox alone: Web API, signed clicks, Socket Mode, a browser page.
    #[command(after_help = serve::SANDBOX_ENV)]
    Sandbox,
    /// Apply database migrations and exit.
    #[command(after_help = DATABASE_ENV)]
    Migrate,
    /// Validate the config file and exit (0 when clean, 1 with every problem listed).
    #[command(
        after_help = "Environment: GREENLIGHT_CONFIG, and every variable `serve --help` lists (they override the file)."
    )]
    Check {
        /// Config file to check (default: GREENLIGHT_CONFIG or ./greenlight.toml).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// Manage API keys (works directly on the database).
    #[command(subcommand, after_help = DATABASE_ENV)]
    Keys(keys::KeysCommand),
    /// Ask for approval; with --wait, block until decided and exit with the outcome.
    #[command(after_help = ask::ASK_AFTER)]
    Ask(Box<ask::AskArgs>),
    /// Print the audit log as JSON lines (over the API), or check its hash chain or export it
    /// for offline checks (on the database).
    #[command(after_help = audit::AUDIT_AFTER, args_conflicts_with_subcommands = true)]
    Audit(audit::AuditArgs),
    /// Copy a SQLite database to PATH while the server runs (a consistent snapshot).
    #[command(after_help = audit::BACKUP_AFTER)]
    Backup(audit::BackupArgs),
    /// Check a decision receipt offline: signature, expiry, and the params about to be run.
    #[command(subcommand, after_help = receipt::RECEIPT_AFTER)]
    Receipt(receipt::ReceiptCommand),
    /// The keys that sign decision receipts (works directly on the database).
    #[command(subcommand, after_help = DATABASE_ENV)]
    SigningKey(receipt::SigningKeyCommand),
    /// Print the `whsec_...` secret that signs callbacks, for receivers to verify them.
    #[command(after_help = DATABASE_ENV)]
    WebhookSecret,
    /// Copy every table of one database into another, empty one (SQLite to PostgreSQL when
    /// you start running replicas); prints the row counts of both.
    #[command(after_help = db::COPY_DB_AFTER)]
    CopyDb(db::CopyDbArgs),
    /// List, show, approve, deny or cancel requests over the API, as tables or JSON.
    #[command(subcommand, after_help = requests::REQUESTS_AFTER)]
    Requests(requests::RequestsCommand),
    /// List or revoke standing approvals ("Approve for…") over the API.
    #[command(subcommand, after_help = standing::STANDING_AFTER)]
    Standing(standing::StandingCommand),
    /// Print the Slack app manifest greenlight needs (YAML, or JSON) and the link that creates
    /// the app from it.
    #[command(after_help = slack::MANIFEST_AFTER)]
    SlackManifest(slack::ManifestArgs),
    /// Print the GitHub App manifest greenlight needs as a deployment protection rule (JSON)
    /// and the link that registers the App with it.
    #[command(after_help = github::GITHUB_MANIFEST_AFTER)]
    GithubAppManifest(github::GithubManifestArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    #[command(after_help = COMPLETIONS_AFTER)]
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// An MCP server over stdio for AI agents (Claude Code, ...), a client of the greenlight
    /// server at GREENLIGHT_URL: run it next to the agent.
    #[command(after_help = mcp::MCP_AFTER)]
    Mcp(mcp::McpArgs),
}

const COMPLETIONS_AFTER: &str = "\
Examples:
  greenlight completions bash > /etc/bash_completion.d/greenlight
  greenlight completions zsh > \"${fpath[1]}/_greenlight\"
  greenlight completions fish > ~/.config/fish/completions/greenlight.fish";

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing(matches!(
        cli.command,
        Command::Serve | Command::Dev | Command::Sandbox
    ));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Serve => serve::serve().await,
        Command::Dev => serve::dev().await,
        Command::Sandbox => serve::sandbox().await,
        Command::Migrate => with_store(db::migrate).await,
        Command::Check { config } => check::check(config),
        Command::Keys(cmd) => with_store(async |_, store| keys::keys(cmd, store).await).await,
        Command::Ask(args) => ask::ask(*args).await,
        Command::Audit(args) => audit::audit(args).await,
        Command::Backup(args) => audit::backup(args).await,
        Command::Receipt(cmd) => receipt::receipt(cmd).await,
        Command::SigningKey(cmd) => {
            with_store(async |_, store| receipt::signing_key(cmd, store).await).await
        }
        Command::WebhookSecret => {
            with_store(async |config, store| db::webhook_secret(config, store).await).await
        }
        Command::CopyDb(args) => db::copy_db(args).await,
        Command::Requests(cmd) => requests::requests(cmd).await,
        Command::Standing(cmd) => standing::standing(cmd).await,
        Command::SlackManifest(args) => slack::slack_manifest(args),
        Command::GithubAppManifest(args) => github::github_app_manifest(args),
        Command::Completions { shell } => completions(shell),
        Command::Mcp(args) => mcp::mcp(args).await,
    }
}

fn completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "greenlight",
        &mut std::io::stdout(),
    );
    ExitCode::SUCCESS
}

fn init_tracing(server: bool) {
    let default = if server { "info" } else { "warn" };
    // rmcp logs every MCP call at info; its warnings are what an operator needs.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},rmcp=warn")));
    // Colour only for a person at a terminal: a file or a pipe gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
}

pub(crate) fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(exit::FAILURE)
}

/// A failed API call: refused input is a usage error (2), anything else a failure (5).
fn client_exit(e: ClientError) -> ExitCode {
    match e {
        ClientError::Rejected { .. } => {
            eprintln!("error: {e}");
            ExitCode::from(exit::USAGE)
        }
        e => fail(e),
    }
}

/// A request's state as one line: `approved by U0ALICE: looks fine`, `pending`.
fn outcome(request: &serde_json::Value) -> String {
    let status = request["status"].as_str().unwrap_or("unknown");
    let by = request["decided_by"]
        .as_str()
        .map(|b| format!(" by {b}"))
        .unwrap_or_default();
    let reason = request["reason"]
        .as_str()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    format!("{status}{by}{reason}")
}

/// The configuration and its database, for commands that work on the database directly.
async fn open_store() -> Result<(Config, Arc<dyn store::Store>), ExitCode> {
    let config = Config::load().map_err(fail)?;
    let store = store::connect_with(&config.database_url, config.database.options())
        .await
        .map_err(fail)?;
    Ok((config, store))
}

/// Runs `f` on the database, then closes it cleanly.
async fn with_store(f: impl AsyncFnOnce(&Config, &dyn store::Store) -> ExitCode) -> ExitCode {
    let (config, store) = match open_store().await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let code = f(&config, store.as_ref()).await;
    store.close().await;
    code
}
