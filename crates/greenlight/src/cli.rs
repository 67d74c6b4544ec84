//! The command line: one binary for the server and its clients.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::config::Config;
use crate::domain::{ApiKeyId, DurationSpec, SystemClock};
use crate::http::auth::{generate_key, hash_key};
use crate::store::{self, ApiKey, Scope};

/// `ask` exit codes, part of the contract.
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

const SERVE_ENV: &str = "\
Environment (the config file may set the same; the environment wins):
  GREENLIGHT_CONFIG        config file [default: ./greenlight.toml if present]
  GREENLIGHT_DATABASE_URL  sqlite:PATH or postgres://USER@HOST:5432/DB [default: sqlite:greenlight.db]
  GREENLIGHT_LISTEN        address to bind [default: 127.0.0.1:8080]
  SLACK_BOT_TOKEN          bot token, xoxb-... (required)
  SLACK_SIGNING_SECRET     verifies Slack's HTTP requests (required unless SLACK_APP_TOKEN)
  SLACK_APP_TOKEN          xapp-...; when set, Socket Mode is used
  SLACK_API_URL            Slack Web API base URL [default: https://slack.com/api/]
  GREENLIGHT_WEBHOOK_SECRET  whsec_... that signs callbacks [default: generated, stored]
  RUST_LOG                 log filter, e.g. debug or greenlight=debug [default: info]

Routes: /v1/... (API), /slack/interactions and /slack/events (Slack), /healthz, /readyz, /metrics.";

const DEV_ENV: &str = "\
Ports: the API on 127.0.0.1:8080, the sandbox page and its Slack Web API on 127.0.0.1:8090.

Environment:
  GREENLIGHT_LISTEN          API address [default: 127.0.0.1:8080]
  GREENLIGHT_SANDBOX_LISTEN  sandbox address [default: 127.0.0.1:8090]
  GREENLIGHT_DATABASE_URL    sqlite:PATH [default: sqlite:greenlight.db]
  GREENLIGHT_CONFIG          workflows [default: ./greenlight.toml if present, else a `deploy` workflow posting to #deploy]
  GREENLIGHT_TOKEN           API key to register and print, kept across restarts [default: a new one each start]
  RUST_LOG                   log filter [default: info]";

const SANDBOX_ENV: &str = "\
Environment:
  GREENLIGHT_SANDBOX_LISTEN             address [default: 127.0.0.1:8090]
  GREENLIGHT_SANDBOX_INTERACTIVITY_URL  where clicks are POSTed when no socket is open [default: http://127.0.0.1:8080/slack/interactions]
  SLACK_BOT_TOKEN       bot token it accepts [default: xoxb-sandbox-bot-token]
  SLACK_APP_TOKEN       app token for Socket Mode [default: xapp-1-sandbox-app-token]
  SLACK_SIGNING_SECRET  secret it signs clicks with [default: sandbox-signing-secret]";

const DATABASE_ENV: &str = "\
Environment:
  GREENLIGHT_DATABASE_URL  sqlite:PATH or postgres://USER@HOST:5432/DB [default: sqlite:greenlight.db]
  GREENLIGHT_CONFIG        config file, for database_url [default: ./greenlight.toml if present]";

const ASK_AFTER: &str = "\
Exit codes (with --wait):
  0  approved
  1  denied
  2  usage error (bad flags, or the server refused the input)
  3  expired or cancelled
  4  still pending when --timeout ran out
  5  any other failure (server unreachable, bad key)

Environment:
  GREENLIGHT_URL    the greenlight server [default: http://127.0.0.1:8080]
  GREENLIGHT_TOKEN  an API key with the request and read scopes (required)

Example:
  greenlight ask --workflow deploy --title \"Deploy api v1.2\" --param version=1.2 --wait";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (HTTP API, Slack endpoints, delivery worker).
    #[command(after_help = SERVE_ENV)]
    Serve,
    /// Server + Slack sandbox + SQLite in one process, no Slack account needed.
    #[command(after_help = DEV_ENV)]
    Dev,
    /// The Slack sandbox alone: Web API, signed clicks, Socket Mode, a browser page.
    #[command(after_help = SANDBOX_ENV)]
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
    Keys(KeysCommand),
    /// Ask for approval; with --wait, block until decided and exit with the outcome.
    #[command(after_help = ASK_AFTER)]
    Ask(AskArgs),
    /// Print the audit log as JSON lines (over the API), or check its hash chain or export it
    /// for offline checks (on the database).
    #[command(after_help = AUDIT_AFTER, args_conflicts_with_subcommands = true)]
    Audit(AuditArgs),
    /// Copy a SQLite database to PATH while the server runs (a consistent snapshot).
    #[command(after_help = BACKUP_AFTER)]
    Backup {
        /// Where the copy goes (must not exist yet).
        path: std::path::PathBuf,
    },
    /// Print the `whsec_...` secret that signs callbacks, for receivers to verify them.
    #[command(after_help = DATABASE_ENV)]
    WebhookSecret,
    /// An MCP server over stdio for AI agents (Claude Code, ...), a client of the greenlight
    /// server at GREENLIGHT_URL: run it next to the agent.
    #[command(after_help = MCP_AFTER)]
    Mcp {
        /// The workflow permission_prompt asks in [default: the server's default workflow].
        #[arg(long, env = "GREENLIGHT_MCP_PERMISSION_WORKFLOW")]
        permission_workflow: Option<String>,
        /// How long permission_prompt waits for a person before it answers deny.
        #[arg(long, default_value = "10m", env = "GREENLIGHT_MCP_PERMISSION_TIMEOUT")]
        permission_timeout: DurationSpec,
    },
    /// Copy every table of one database into another, empty one (SQLite to PostgreSQL when
    /// you start running replicas); prints the row counts of both.
    #[command(after_help = COPY_DB_AFTER)]
    CopyDb {
        /// The database to copy (sqlite:PATH or postgres://...); it is not changed.
        #[arg(long)]
        from: String,
        /// An empty database to fill; refused if it holds any row.
        #[arg(long)]
        to: String,
    },
}

const MCP_AFTER: &str = "\
Speaks MCP on stdin/stdout (logs go to stderr). Tools: request_approval, get_approval,
cancel_approval, list_pending_approvals, permission_prompt.

Environment:
  GREENLIGHT_URL    the greenlight server [default: http://127.0.0.1:8080]
  GREENLIGHT_TOKEN  an API key with the request and read scopes (required)

Example (Claude Code):
  claude mcp add greenlight --env GREENLIGHT_URL=https://greenlight.example.com \\
    --env GREENLIGHT_TOKEN=gl_... -- greenlight mcp
  claude -p --permission-prompt-tool mcp__greenlight__permission_prompt \"...\"";

const COPY_DB_AFTER: &str = "\
Stop the server first (or copy from a backup): rows written during the copy are not copied.
Both databases are migrated to the current schema; the target must be empty. The copy is one
transaction in the target: it lands whole or not at all.

Example:
  greenlight copy-db --from sqlite:greenlight.db --to postgres://greenlight@db.internal:5432/greenlight";

#[derive(Debug, Args)]
struct AuditArgs {
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
    /// third party to verify offline (the README has a verifier).
    Export {
        /// Only entries after this audit id (the `id` of the last line of an earlier export).
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
}

const AUDIT_AFTER: &str = "\
`greenlight audit` lists events over the API (GREENLIGHT_URL, GREENLIGHT_TOKEN with the admin
scope). `audit verify` and `audit export` read the database itself (GREENLIGHT_DATABASE_URL).

Examples:
  greenlight audit --after 120 --limit 50
  greenlight audit verify
  greenlight audit export > audit.jsonl";

const BACKUP_AFTER: &str = "\
SQLite only: the copy is taken with VACUUM INTO, a consistent snapshot even while the server
writes. To restore, stop the server and put the copy in place of the database file (or point
GREENLIGHT_DATABASE_URL at it). For PostgreSQL use pg_dump (see the README).

Environment:
  GREENLIGHT_DATABASE_URL  sqlite:PATH [default: sqlite:greenlight.db]";

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it (alone) on stdout. It is stored only as a hash.
    Create {
        /// A name for the key; shown as the actor in the audit log.
        #[arg(long)]
        name: String,
        /// Comma-separated: request, read, decide, admin.
        #[arg(long, value_delimiter = ',', default_value = "request,read")]
        scopes: Vec<String>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id.
    Revoke {
        /// The key's id (key_...), as `keys list` shows it.
        id: String,
    },
}

#[derive(Debug, Args)]
struct AskArgs {
    /// The workflow to ask in (may be left out when only one is configured).
    #[arg(long)]
    workflow: Option<String>,
    /// What is being approved, shown as the message's heading (up to 200 characters).
    #[arg(long)]
    title: String,
    /// More text under the title (mrkdwn-escaped; up to 10,000 characters).
    #[arg(long)]
    details: Option<String>,
    /// key=value; repeatable. Numbers and true/false become JSON numbers and booleans.
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, serde_json::Value)>,
    /// Who asks (a Slack user id like U012ABC shows as a mention).
    #[arg(long)]
    requester: Option<String>,
    /// When the request expires, e.g. 30m.
    #[arg(long)]
    expires_in: Option<DurationSpec>,
    /// Makes retries of this command return the same request.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Wait for the decision and exit with it.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this long (exit 4).
    #[arg(long, default_value = "30m")]
    timeout: DurationSpec,
    /// Print the request as JSON instead of the id and outcome.
    #[arg(long)]
    json: bool,
}

fn parse_param(s: &str) -> Result<(String, serde_json::Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    // Only literals that print back exactly become JSON: "1.10" stays a string.
    let value = match serde_json::from_str::<serde_json::Value>(v) {
        Ok(j @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)))
            if *j.to_string() == *v =>
        {
            j
        }
        _ => serde_json::Value::String(v.to_owned()),
    };
    Ok((k.to_owned(), value))
}

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

/// The configuration and its database, for commands that work on the database directly.
async fn open_store() -> Result<(Config, Arc<dyn store::Store>), ExitCode> {
    let config = Config::load().map_err(fail)?;
    let store = store::connect_with(&config.database_url, config.database.options())
        .await
        .map_err(fail)?;
    Ok((config, store))
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Serve => serve().await,
        Command::Dev => crate::dev::dev(stop_on_signal()).await,
        Command::Sandbox => crate::dev::sandbox(stop_on_signal()).await,
        Command::Migrate => {
            with_store(async |config, store| {
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
            })
            .await
        }
        Command::Check { config } => check(config),
        Command::Keys(cmd) => with_store(async |_, store| keys(cmd, store).await).await,
        Command::Ask(args) => ask(args).await,
        Command::Audit(AuditArgs {
            command: None,
            after,
            limit,
        }) => audit(after, limit).await,
        Command::Audit(AuditArgs {
            command: Some(AuditCommand::Verify),
            ..
        }) => with_store(async |_, store| audit_verify(store).await).await,
        Command::Audit(AuditArgs {
            command: Some(AuditCommand::Export { after }),
            ..
        }) => with_store(async |_, store| audit_export(store, after).await).await,
        Command::Backup { path } => with_store(async |_, store| backup(store, &path).await).await,
        Command::WebhookSecret => with_store(webhook_secret).await,
        Command::CopyDb { from, to } => copy_db(&from, &to).await,
        Command::Mcp {
            permission_workflow,
            permission_timeout,
        } => mcp_stdio(permission_workflow, permission_timeout).await,
    }
}

async fn audit_verify(store: &dyn store::Store) -> ExitCode {
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
                    "{} entries from the last minute are not chained yet",
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

async fn audit_export(store: &dyn store::Store, after: i64) -> ExitCode {
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

async fn backup(store: &dyn store::Store, path: &std::path::Path) -> ExitCode {
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

/// `greenlight mcp`: the tools over stdio, calling the server's API.
async fn mcp_stdio(workflow: Option<String>, timeout: DurationSpec) -> ExitCode {
    use rmcp::ServiceExt;
    let base = std::env::var("GREENLIGHT_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let Some(token) = std::env::var("GREENLIGHT_TOKEN")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        eprintln!(
            "error: GREENLIGHT_TOKEN is not set (create one with `greenlight keys create --scopes request,read`)"
        );
        return ExitCode::from(exit::USAGE);
    };
    let settings = crate::mcp::PermissionSettings {
        workflow,
        timeout: timeout.as_duration(),
    };
    let backend = match crate::mcp::OverApi::new(&base, &token, settings) {
        Ok(b) => b,
        Err(e) => return fail(format!("cannot build the HTTP client: {e}")),
    };
    let server = crate::mcp::GreenlightMcp::new(std::sync::Arc::new(backend));
    match server.serve(rmcp::transport::stdio()).await {
        Ok(running) => match running.waiting().await {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(format!("the MCP session failed: {e}")),
        },
        Err(e) => fail(format!("cannot start the MCP session: {e}")),
    }
}

async fn copy_db(from: &str, to: &str) -> ExitCode {
    use crate::store::copy::{copy_db, redact};
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

/// The configured secret, or the stored one (generated now if the server never ran).
async fn webhook_secret(config: &Config, store: &dyn store::Store) -> ExitCode {
    match crate::delivery::webhook_secret(config, store).await {
        Ok(secret) => {
            println!("{}", secret.expose());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

async fn serve() -> ExitCode {
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let app = match Application::build(&config, Arc::new(SystemClock)).await {
        Ok(app) => app,
        Err(e) => return fail(e),
    };
    tracing::info!(addr = %app.local_addr(), workflows = config.workflows.len(), "greenlight listening");
    match app.run_until_stopped(stop_on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// A token cancelled on Ctrl-C or SIGTERM.
fn stop_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        stop.cancel();
    });
    token
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn check(path: Option<std::path::PathBuf>) -> ExitCode {
    let path_str = path.map(|p| p.display().to_string());
    let loaded = Config::load_with(|k| {
        if k == "GREENLIGHT_CONFIG" {
            path_str
                .clone()
                .or_else(|| std::env::var(k).ok().filter(|v| !v.is_empty()))
        } else {
            std::env::var(k).ok().filter(|v| !v.is_empty())
        }
    });
    match loaded {
        Ok(c) => match c.workflow_problem() {
            // `serve` refuses a config without workflows; so does `check`.
            Some(p) => {
                eprintln!("{p}");
                ExitCode::from(1)
            }
            None => {
                let source = c.source.as_ref().map_or_else(
                    || "(no config file)".to_owned(),
                    |p| p.display().to_string(),
                );
                let names: Vec<&str> = c.workflows.iter().map(|w| w.name.as_str()).collect();
                println!(
                    "{source}: ok, {} workflow(s): {}",
                    c.workflows.len(),
                    names.join(", ")
                );
                ExitCode::SUCCESS
            }
        },
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

async fn keys(cmd: KeysCommand, store: &dyn store::Store) -> ExitCode {
    match cmd {
        KeysCommand::Create { name, scopes } => {
            let name = name.trim().to_owned();
            if name.is_empty() || name.len() > 100 {
                eprintln!("error: --name must be 1-100 characters");
                return ExitCode::from(exit::USAGE);
            }
            let mut parsed = Vec::new();
            for s in &scopes {
                match Scope::parse(s.trim()) {
                    Some(scope) if !parsed.contains(&scope) => parsed.push(scope),
                    Some(_) => {}
                    None => {
                        eprintln!("error: unknown scope {s:?}: use request, read, decide, admin");
                        return ExitCode::from(exit::USAGE);
                    }
                }
            }
            let secret = generate_key();
            let key = ApiKey {
                id: ApiKeyId::generate(),
                name,
                scopes: parsed,
                created_at: jiff::Timestamp::now(),
                revoked_at: None,
            };
            match store.insert_api_key(&key, &hash_key(&secret)).await {
                Ok(()) => {
                    eprintln!("created {} ({}); the key is shown once:", key.id, key.name);
                    println!("{secret}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        KeysCommand::List => match store.list_api_keys().await {
            Ok(keys) => {
                for k in keys {
                    let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!("{}\t{}\t{}\t{}", k.id, k.name, scopes.join(","), state);
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        KeysCommand::Revoke { id } => {
            let Ok(id) = id.parse::<ApiKeyId>() else {
                eprintln!("error: {id:?} is not a key id (key_...)");
                return ExitCode::from(exit::USAGE);
            };
            match store.revoke_api_key(&id, jiff::Timestamp::now()).await {
                Ok(true) => {
                    eprintln!("revoked {id}");
                    ExitCode::SUCCESS
                }
                Ok(false) => fail(format!("no active key {id}")),
                Err(e) => fail(e),
            }
        }
    }
}

/// The API client the CLI uses: GREENLIGHT_URL and GREENLIGHT_TOKEN.
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

#[derive(Debug)]
enum ClientError {
    /// The server refused the input (4xx other than auth): a usage error.
    Rejected(String),
    Failed(String),
}

impl Client {
    fn from_env() -> Result<Self, ClientError> {
        let base = std::env::var("GREENLIGHT_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
        let token = std::env::var("GREENLIGHT_TOKEN")
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                ClientError::Failed(
                    "GREENLIGHT_TOKEN is not set (create one with `greenlight keys create`)".into(),
                )
            })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Failed(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let res = req.bearer_auth(&self.token).send().await.map_err(|e| {
            ClientError::Failed(format!(
                "cannot reach greenlight at {}: {}",
                self.base,
                root_cause(&e)
            ))
        })?;
        let status = res.status().as_u16();
        let body: serde_json::Value = res
            .json()
            .await
            .map_err(|e| ClientError::Failed(format!("bad response from greenlight: {e}")))?;
        if status >= 400 {
            let msg = format!(
                "{} ({})",
                body["error"]["message"]
                    .as_str()
                    .unwrap_or("request failed"),
                body["error"]["code"].as_str().unwrap_or("unknown")
            );
            return Err(
                if (400..500).contains(&status) && status != 401 && status != 403 {
                    ClientError::Rejected(msg)
                } else {
                    ClientError::Failed(msg)
                },
            );
        }
        Ok((status, body))
    }
}

/// The innermost cause of an error ("connection refused"), which is what a person can act on;
/// reqwest's own message only says that sending failed.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        let kind = match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                Some("connection refused (is the server running?)")
            }
            std::io::ErrorKind::TimedOut => Some("timed out"),
            std::io::ErrorKind::ConnectionReset => Some("connection reset"),
            _ => None,
        };
        if let Some(kind) = kind {
            return kind.to_owned();
        }
    }
    if e.downcast_ref::<reqwest::Error>()
        .is_some_and(reqwest::Error::is_timeout)
    {
        return "timed out".to_owned();
    }
    text
}

fn client_exit(e: ClientError) -> ExitCode {
    match e {
        ClientError::Rejected(m) => {
            eprintln!("error: {m}");
            ExitCode::from(exit::USAGE)
        }
        ClientError::Failed(m) => fail(m),
    }
}

async fn ask(args: AskArgs) -> ExitCode {
    let client = match Client::from_env() {
        Ok(c) => c,
        Err(e) => return client_exit(e),
    };
    let mut body = serde_json::json!({
        "title": args.title,
        "params": args.params.into_iter().collect::<serde_json::Map<_, _>>(),
    });
    for (k, v) in [
        ("workflow", args.workflow),
        ("details", args.details),
        ("requester", args.requester),
        ("idempotency_key", args.idempotency_key),
        ("expires_in", args.expires_in.map(|d| d.to_string())),
    ] {
        if let Some(v) = v {
            body[k] = v.into();
        }
    }
    let created = client
        .send(
            client
                .http
                .post(format!("{}/v1/requests", client.base))
                .json(&body),
        )
        .await;
    let mut request = match created {
        Ok((_, r)) => r,
        Err(e) => return client_exit(e),
    };
    let Some(id) = request["id"].as_str().map(str::to_owned) else {
        return fail("the server answered without a request id");
    };
    if !args.json {
        println!("{id}");
    }
    if args.wait {
        let deadline = Instant::now() + args.timeout.as_duration();
        while request["status"] == "pending" {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let wait = left.as_secs().clamp(1, crate::http::MAX_WAIT_SECS);
            let url = format!("{}/v1/requests/{id}?wait={wait}", client.base);
            match client
                .send(client.http.get(url).timeout(Duration::from_secs(wait + 30)))
                .await
            {
                Ok((_, r)) => request = r,
                Err(ClientError::Failed(m)) if m.contains("cannot reach") => {
                    // The server may be restarting; the request is durable, so keep waiting.
                    eprintln!("warning: {m}; retrying");
                    tokio::time::sleep(Duration::from_secs(1).min(left)).await;
                }
                Err(e) => return client_exit(e),
            }
        }
    }
    let status = request["status"].as_str().unwrap_or("unknown").to_owned();
    if args.json {
        println!("{request}");
    } else if args.wait {
        let by = request["decided_by"]
            .as_str()
            .map(|b| format!(" by {b}"))
            .unwrap_or_default();
        let reason = request["reason"]
            .as_str()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        println!("{status}{by}{reason}");
    }
    if !args.wait {
        return ExitCode::SUCCESS;
    }
    ExitCode::from(match status.as_str() {
        "approved" => exit::APPROVED,
        "denied" => exit::DENIED,
        "expired" | "cancelled" => exit::EXPIRED_OR_CANCELLED,
        "pending" => exit::STILL_PENDING,
        _ => exit::FAILURE,
    })
}

async fn audit(after: i64, limit: u32) -> ExitCode {
    let client = match Client::from_env() {
        Ok(c) => c,
        Err(e) => return client_exit(e),
    };
    let url = format!("{}/v1/audit", client.base);
    let req = client
        .http
        .get(url)
        .query(&[("after", after.to_string()), ("limit", limit.to_string())]);
    match client.send(req).await {
        Ok((_, body)) => {
            for e in body["events"].as_array().into_iter().flatten() {
                println!("{e}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => client_exit(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_keep_strings_that_only_look_like_numbers() {
        assert_eq!(parse_param("amount=120").unwrap().1, serde_json::json!(120));
        assert_eq!(parse_param("ok=true").unwrap().1, serde_json::json!(true));
        assert_eq!(
            parse_param("version=1.10").unwrap().1,
            serde_json::json!("1.10")
        );
        assert_eq!(parse_param("zip=007").unwrap().1, serde_json::json!("007"));
        assert_eq!(
            parse_param("q=a=b").unwrap(),
            ("q".into(), serde_json::json!("a=b"))
        );
        assert!(parse_param("novalue").is_err());
        assert!(parse_param("=x").is_err());
    }
}
