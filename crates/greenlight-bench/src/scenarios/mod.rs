//! The runs, in order: the peer starts (idle memory); greenlight's click runs (closed loop,
//! open loops, click-to-update, slow Slack) then a SIGKILL and the durability count; the same
//! click runs against the peer; greenlight's create runs (plain, auto-approve rule) with their
//! own durability count; the PostgreSQL runs; the large database (start-up and memory). One
//! system works at a time. This module holds the run's context and the helpers the runs share.

mod click_runs;
mod clicks;
mod cpu;
mod creates;
mod instance;
mod million;
mod peer;
mod postgres;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use greenlight_sandbox::{Sandbox, SandboxConfig, SandboxHandle};
use tokio::sync::broadcast::error::RecvError;

use self::clicks::greenlight_clicks;
use self::creates::greenlight_creates;
use self::million::greenlight_million;
use self::peer::peer_clicks;
use self::postgres::postgres_runs;
use crate::db::{self, Db, Location, PgDatabase};
use crate::procs;
use crate::report::{self, Report, mb, thousands};
use crate::rows::{pg_rows, rows};
use crate::{Error, Options, Result, Sizes};

/// The results the table's rows are built from (crate::rows).
pub(crate) use self::{
    click_runs::UpdateRun, clicks::GreenlightClicks, creates::Creates, million::Million,
    peer::PeerResults, postgres::PgRun,
};

const GREENLIGHT_APPROVE: &str = "greenlight.approve";
const CLICKER: &str = "U0ALICE";
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// Slack's per-channel pace (one post a second) would take hours to post the pre-created
/// requests; the sandbox has no such limit, so the bench lifts it. The click path and its
/// chat.update are not paced either way. The bench's one API key creates far more than the
/// per-key limit allows a caller, so that is lifted too.
const DELIVERY: &str = "[delivery]\nslack_posts_per_second = 1000000.0\nslack_post_burst = 1000000\n\n\
    [limits]\nrequests_per_minute_per_key = 1000000000\n\n";
const DEPLOY: &str = "[[workflow]]\nname = \"deploy\"\nchannel = \"#deploy\"\n";

fn step(msg: impl AsRef<str>) {
    eprintln!("==> {}", msg.as_ref());
}

struct Ctx<'a> {
    opts: &'a Options,
    sizes: Sizes,
    sandbox: SandboxHandle,
    secret: String,
    dir: PathBuf,
    notes: Vec<String>,
    /// PostgreSQL databases made and not dropped yet (a failed run keeps them and says so).
    pg_live: &'a Mutex<Vec<String>>,
}

impl Ctx<'_> {
    /// A fresh PostgreSQL database for one instance.
    async fn pg_database(&self) -> Result<Location> {
        let db = PgDatabase::create(&self.opts.postgres_url).await?;
        lock(self.pg_live).push(db.name.clone());
        Ok(Location::Postgres(db))
    }

    /// Done with an instance's database: drops a PostgreSQL one unless --keep.
    async fn release(&mut self, location: &Location) -> Result<()> {
        if let Location::Postgres(db) = location {
            if self.opts.keep {
                self.notes.push(format!(
                    "kept PostgreSQL database {} ({})",
                    db.name,
                    db::redact(&db.url)
                ));
            } else {
                db.drop_database().await?;
            }
            lock(self.pg_live).retain(|n| *n != db.name);
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Brings a system to rest before the next run: greenlight's outbox delivered (when `outbox`
/// is given) and Slack quiet.
async fn settle(ctx: &mut Ctx<'_>, outbox: Option<&Db>) -> Result<()> {
    if let Some(db) = outbox
        && !db.wait_outbox_drained(DRAIN_TIMEOUT).await?
    {
        ctx.notes.push(format!(
            "greenlight's outbox was not empty after {DRAIN_TIMEOUT:?}; the next run overlapped it"
        ));
    }
    quiet(&ctx.sandbox).await;
    Ok(())
}

/// How long the sandbox must see no Web API call to count as quiet.
const QUIET: Duration = Duration::from_millis(300);

/// Waits until the sandbox has seen no Web API call for a moment (at most a minute).
async fn quiet(sandbox: &SandboxHandle) {
    let mut events = sandbox.subscribe();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match tokio::time::timeout(QUIET, events.recv()).await {
            Err(_) | Ok(Err(RecvError::Closed)) => return,
            Ok(_) => {}
        }
    }
}

fn count_for(rate: f64, d: Duration) -> usize {
    (rate * d.as_secs_f64()).round() as usize
}

pub(crate) async fn run(opts: &Options) -> Result<Report> {
    let sizes = opts.sizes();
    if !opts.greenlight_bin.exists() {
        return Err(Error::msg(format!(
            "{} does not exist: build it (cargo build --release -p greenlight) or pass --greenlight-bin",
            opts.greenlight_bin.display()
        )));
    }
    opts.peer()?;
    std::fs::create_dir_all(&opts.work_dir)?;
    let work = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&opts.work_dir)?;
    let pg_live = Mutex::new(Vec::new());
    match run_in(opts, sizes, work.path(), &pg_live).await {
        Ok(report) => {
            if opts.keep {
                eprintln!("kept {}", work.keep().display());
            }
            Ok(report)
        }
        // The logs and databases are what explain a failure: keep them.
        Err(e) => {
            let live = lock(&pg_live);
            let pg = if live.is_empty() {
                String::new()
            } else {
                format!(
                    "; PostgreSQL databases kept on {}: {}",
                    db::redact(&opts.postgres_url),
                    live.join(", ")
                )
            };
            Err(Error::msg(format!(
                "{e}
(the run's logs and databases are kept in {}{pg})",
                work.keep().display()
            )))
        }
    }
}

/// The rows of greenlight on SQLite (and the peer beside it), with the large database's.
async fn sqlite_rows(
    ctx: &mut Ctx<'_>,
    sizes: &Sizes,
    clicks: &GreenlightClicks,
    peer_results: Option<&PeerResults>,
    creates: &Creates,
) -> Result<Vec<report::Row>> {
    let opts = ctx.opts;
    let million = if opts.skip_million {
        None
    } else {
        Some(greenlight_million(ctx).await?)
    };
    if let Some(m) = &million {
        ctx.notes.push(format!(
            "large database: {} requests ({} pending, the rest approved) copied from two templates the server wrote \
             (one pending, one decided by a click), with their audit entries, by INSERT ... SELECT over json_each in \
             transactions of 100,000 rows, then a WAL checkpoint; {:.1} s to seed, {} on disk",
            thousands(m.seeded.rows as u64),
            thousands(m.seeded.pending as u64),
            m.seeded.took.as_secs_f64(),
            mb(Some(m.seeded.file_bytes)),
        ));
    }
    Ok(rows(
        sizes,
        clicks,
        peer_results,
        creates,
        million.as_ref(),
        opts.skip_peer,
    ))
}

async fn run_in(
    opts: &Options,
    sizes: Sizes,
    work: &Path,
    pg_live: &Mutex<Vec<String>>,
) -> Result<Report> {
    let secret = format!("bench-{}", ulid::Ulid::new());
    let mut sandbox_config = SandboxConfig::for_tests().with_signing_secret(&secret);
    sandbox_config.interactivity_url = "http://127.0.0.1:9/unused".to_owned();
    let sandbox = Sandbox::start(sandbox_config).await?;
    let mut ctx = Ctx {
        opts,
        sizes: sizes.clone(),
        sandbox,
        secret,
        dir: work.to_owned(),
        notes: Vec::new(),
        pg_live,
    };
    let started = jiff::Timestamp::now();

    let mut sqlite = None;
    if !opts.only_postgres {
        let peer = if let Some(app) = opts.peer()? {
            step("peer: starting the seed Flask bot");
            let server = procs::start_peer(
                &opts.python,
                app,
                &ctx.sandbox.api_url(),
                &ctx.sandbox.config().bot_token,
                &ctx.secret,
                &ctx.dir.join("peer.log"),
            )
            .await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some(server)
        } else {
            None
        };
        let clicks = greenlight_clicks(&mut ctx).await?;
        let peer_results = match &peer {
            Some(p) => Some(peer_clicks(&mut ctx, p).await?),
            None => None,
        };
        drop(peer);
        let creates = greenlight_creates(&mut ctx).await?;
        sqlite = Some((clicks, peer_results, creates));
    }
    let mut pg = Vec::new();
    if !opts.skip_postgres {
        for n in sizes.replicas.clone() {
            pg.push(postgres_runs(&mut ctx, n).await?);
        }
        ctx.notes.push(format!(
            "rows not marked PostgreSQL are greenlight on SQLite (one process); the PostgreSQL rows run \
             greenlight as replicas on one PostgreSQL database ({}), each click and create sent to the next \
             replica in turn, with a fresh database for the click runs and another for the create run",
            db::redact(&opts.postgres_url)
        ));
    }
    // The large database comes last, after the PostgreSQL runs.
    let rows = match &sqlite {
        Some((clicks, peer_results, creates)) => {
            sqlite_rows(&mut ctx, &sizes, clicks, peer_results.as_ref(), creates).await?
        }
        None => Vec::new(),
    };
    let rows = [rows, pg_rows(&sizes, &pg, opts.skip_postgres)].concat();
    let report = Report {
        date: started.to_string(),
        machine: report::machine(work),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        settings: serde_json::to_value(&sizes).unwrap_or_default(),
        rows,
        notes: std::mem::take(&mut ctx.notes),
    };
    ctx.sandbox.clone().shutdown().await;
    Ok(report)
}
