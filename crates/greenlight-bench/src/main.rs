//! greenlight-bench: greenlight against the seed Flask bot, same run, same machine, with the
//! sandbox (in this process) as Slack. See docs/benchmarks.md for the method.
#![forbid(unsafe_code)]

mod db;
mod load;
mod procs;
mod report;
mod rows;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// The same allocator as the server's, so the load generator and the sandbox take less of the
/// cores they share with it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Msg(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Sandbox(#[from] greenlight_sandbox::SandboxError),
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
}

impl Error {
    pub fn msg(s: impl Into<String>) -> Self {
        Error::Msg(s.into())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Measures greenlight against the seed Flask bot (ack latency, durable decisions per second,
/// creates, click-to-update, memory, start-up) and prints a markdown table.
#[derive(Debug, Parser)]
#[command(name = "greenlight-bench")]
pub struct Options {
    /// The greenlight binary under test.
    #[arg(long, default_value = "target/release/greenlight")]
    pub greenlight_bin: PathBuf,
    /// A Python with Flask and slack_sdk (bench/requirements.txt), to run the peer.
    #[arg(long, default_value = ".venv/bin/python")]
    pub python: PathBuf,
    /// The peer: the app.py of the seed article's Flask + slack_sdk bot ("Build a Custom
    /// Approval Workflow using Slack Buttons and Python"), with its Slack client pointed at
    /// `SLACK_API_URL`. It is not part of this repository; without it, pass --skip-peer.
    #[arg(long, env = "GREENLIGHT_BENCH_PEER_APP")]
    pub peer_app: Option<PathBuf>,
    /// Tiny sizes, seconds in total: the smoke mode. Explicit sizes still win.
    #[arg(long)]
    pub quick: bool,
    /// Measure greenlight alone.
    #[arg(long)]
    pub skip_peer: bool,
    /// Skip the large-database rows (memory and start-up with a million requests).
    #[arg(long)]
    pub skip_million: bool,
    /// Skip the PostgreSQL rows (greenlight as replicas on one PostgreSQL database).
    #[arg(long)]
    pub skip_postgres: bool,
    /// Only the PostgreSQL rows: no SQLite runs, no peer, no large database (for working on
    /// the PostgreSQL store; the full run is what the README's figures come from).
    #[arg(long, conflicts_with = "skip_postgres")]
    pub only_postgres: bool,
    /// PostgreSQL admin URL: the bench creates a fresh database per instance on this server
    /// (`greenlight_bench_<ulid>`) and drops it at the end unless --keep.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres_url: String,
    /// Replica counts of the PostgreSQL runs, comma-separated; the load is spread over them.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub replicas: Vec<usize>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where databases and logs go (a fresh directory inside it per run). Keep it on the disk
    /// you want measured: fsync on tmpfs is free.
    #[arg(long, default_value = "target/bench")]
    pub work_dir: PathBuf,
    /// Keep the run's directory (databases, logs) and its PostgreSQL databases instead of
    /// deleting them.
    #[arg(long)]
    pub keep: bool,
    /// Closed-loop connections [default: 128; quick: 8]. Enough to keep the server busy: a
    /// closed loop cannot go faster than its connections divided by the latency of one answer.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Longest closed-loop run, seconds [default: 10; quick: 1].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Pending requests pre-created for the closed click loop; it stops early when they run
    /// out [default: 100000; quick: 300].
    #[arg(long)]
    pub click_pool: Option<usize>,
    /// Open-loop click rates per second, comma-separated [default: 1000,5000; quick: 50,100].
    #[arg(long, value_delimiter = ',')]
    pub rates: Option<Vec<f64>>,
    /// The peer's open loops run only at rates up to this: it already fails a third of the
    /// clicks at 1,000/s, and a higher rate only queues clicks to time out [default: 1000].
    #[arg(long)]
    pub peer_max_rate: Option<f64>,
    /// The PostgreSQL runs' open-loop click rate [default: 1000; quick: 100].
    #[arg(long)]
    pub pg_rate: Option<f64>,
    /// Length of each open-loop run, seconds [default: 10; quick: 1].
    #[arg(long)]
    pub open_duration: Option<f64>,
    /// Latency the sandbox adds to every Slack Web API call in the slow-Slack run, ms.
    #[arg(long, default_value_t = 2500)]
    pub slack_latency_ms: u64,
    /// Click rate during the slow-Slack run [default: 200; quick: 20].
    #[arg(long)]
    pub slow_rate: Option<f64>,
    /// Length of the slow-Slack run, seconds [default: 10; quick: 1].
    #[arg(long)]
    pub slow_duration: Option<f64>,
    /// Click rate of the click-to-message-updated run [default: 20; quick: 10].
    #[arg(long)]
    pub update_rate: Option<f64>,
    /// Length of the click-to-message-updated run, seconds [default: 5; quick: 1].
    #[arg(long)]
    pub update_duration: Option<f64>,
    /// Length of each create run, seconds [default: 10; quick: 1].
    #[arg(long)]
    pub create_duration: Option<f64>,
    /// Requests in the large database [default: 1000000; quick: 10000].
    #[arg(long)]
    pub million: Option<usize>,
    /// Distinct messages pre-posted for the peer to update (reused round robin)
    /// [default: 5000; quick: 200].
    #[arg(long)]
    pub peer_messages: Option<usize>,
}

/// The sizes of this run, `--quick` defaults applied (durations in seconds in the JSON).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sizes {
    pub connections: usize,
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    pub click_pool: usize,
    pub rates: Vec<f64>,
    #[serde(serialize_with = "seconds")]
    pub open_duration: Duration,
    #[serde(serialize_with = "seconds")]
    pub slack_latency: Duration,
    pub slow_rate: f64,
    #[serde(serialize_with = "seconds")]
    pub slow_duration: Duration,
    pub update_rate: f64,
    #[serde(serialize_with = "seconds")]
    pub update_duration: Duration,
    #[serde(serialize_with = "seconds")]
    pub create_duration: Duration,
    pub million: usize,
    pub peer_messages: usize,
    /// Replica counts of the PostgreSQL runs.
    pub replicas: Vec<usize>,
    /// The PostgreSQL runs' open-loop click rate.
    pub pg_rate: f64,
    /// The peer's open loops run at rates up to this.
    pub peer_max_rate: f64,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Where the peer comes from, for the error a run without one gives.
pub const PEER_HELP: &str = "the peer is the seed article's Flask + slack_sdk bot (\"Build a Custom \
     Approval Workflow using Slack Buttons and Python\"), which is not part of this repository: save \
     its app.py with its Slack client built as WebClient(token=..., base_url=os.environ.get(\"SLACK_API_URL\", \"https://slack.com/api/\")) \
     and pass --peer-app PATH (or GREENLIGHT_BENCH_PEER_APP=PATH), or measure greenlight alone with \
     --skip-peer";

impl Options {
    /// The peer's app, checked before any work: a run that would fail at the peer after minutes
    /// of greenlight's rows fails at once instead.
    pub fn peer(&self) -> Result<Option<&std::path::Path>> {
        if self.skip_peer {
            return Ok(None);
        }
        match &self.peer_app {
            None => Err(Error::msg(format!("no peer given: {PEER_HELP}"))),
            Some(p) if !p.is_file() => Err(Error::msg(format!(
                "--peer-app {}: no such file; {PEER_HELP}",
                p.display()
            ))),
            Some(p) => Ok(Some(p)),
        }
    }

    pub fn sizes(&self) -> Sizes {
        let q = self.quick;
        let rates = self.rates.clone().unwrap_or_else(|| {
            if q {
                vec![50.0, 100.0]
            } else {
                vec![1000.0, 5000.0]
            }
        });
        let secs = |v: Option<f64>, full: f64, quick: f64| {
            Duration::from_secs_f64(v.unwrap_or(if q { quick } else { full }).max(0.001))
        };
        Sizes {
            connections: self.connections.unwrap_or(if q { 8 } else { 128 }).max(1),
            duration: secs(self.duration, 10.0, 1.0),
            click_pool: self.click_pool.unwrap_or(if q { 300 } else { 100_000 }),
            pg_rate: self
                .pg_rate
                .unwrap_or(if q { 100.0 } else { 1000.0 })
                .max(1.0),
            peer_max_rate: self.peer_max_rate.unwrap_or(1000.0),
            rates,
            open_duration: secs(self.open_duration, 10.0, 1.0),
            slack_latency: Duration::from_millis(self.slack_latency_ms),
            slow_rate: self.slow_rate.unwrap_or(if q { 20.0 } else { 200.0 }),
            slow_duration: secs(self.slow_duration, 10.0, 1.0),
            update_rate: self.update_rate.unwrap_or(if q { 10.0 } else { 20.0 }),
            update_duration: secs(self.update_duration, 5.0, 1.0),
            create_duration: secs(self.create_duration, 10.0, 1.0),
            million: self.million.unwrap_or(if q { 10_000 } else { 1_000_000 }),
            peer_messages: self
                .peer_messages
                .unwrap_or(if q { 200 } else { 5_000 })
                .max(1),
            replicas: self.replicas.iter().map(|n| (*n).max(1)).collect(),
        }
    }
}

fn main() -> ExitCode {
    // reqwest is built without a default TLS provider; only loopback http is used, but the
    // client still wants one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = Options::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = scenarios::run(&options) => r,
            // Returning drops every child process handle, which kills them.
            _ = tokio::signal::ctrl_c() => Err(Error::msg("interrupted")),
        }
    });
    match outcome {
        Ok(report) => {
            print!("{}", report.markdown());
            if let Some(path) = &options.json {
                let text = serde_json::to_string_pretty(&report).unwrap_or_default();
                if let Err(e) = std::fs::write(path, text) {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
