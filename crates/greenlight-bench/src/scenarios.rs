//! The runs, in order: the peer starts (idle memory); greenlight's click runs (closed loop,
//! open loops, click-to-update, slow Slack) then a SIGKILL and the durability count; the same
//! click runs against the peer; greenlight's create runs (plain, auto-approve rule) with their
//! own durability count; the large database (start-up and memory). One system works at a time.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use greenlight_sandbox::{Sandbox, SandboxConfig, SandboxEvent, SandboxHandle};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::db::{self, Db, Location, PgDatabase};
use crate::load::{self, Job, Latencies, RunResult, Target};
use crate::procs::{self, GreenlightEnv, Server};
use crate::report::{self, Cell, Report, Row, mb, ms, rate, thousands};
use crate::{Error, Options, Result, Sizes};

const GREENLIGHT_APPROVE: &str = "greenlight.approve";
/// The ceiling run's button: a block action greenlight ignores (neither Approve nor Deny).
const CEILING_ACTION: &str = "bench.ignored";
/// The peer's approve button (its other ids make it answer "Unknown action", still updating).
const PEER_APPROVE: &str = "approve_button";
const CLICKER: &str = "U0ALICE";
/// The peer's messages live in their own channel, apart from greenlight's.
const PEER_CHANNEL: &str = "C0OPS";
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest pre-creation of a PostgreSQL click pool: creates there run at a few hundred a
/// second on a busy 2-core machine, and the closed loop stops early when its pool runs out.
const PG_POOL_BUDGET: Duration = Duration::from_secs(60);
/// How long to wait for the last chat.update of the click-to-update run.
const UPDATE_WAIT: Duration = Duration::from_secs(15);

/// Slack's per-channel pace (one post a second) would take hours to post the pre-created
/// requests; the sandbox has no such limit, so the bench lifts it. The click path and its
/// chat.update are not paced either way. The bench's one API key creates far more than the
/// per-key limit allows a caller, so that is lifted too.
const DELIVERY: &str = "[delivery]\nslack_posts_per_second = 1000000.0\nslack_post_burst = 1000000\n\n\
    [limits]\nrequests_per_minute_per_key = 1000000000\n\n";
const DEPLOY: &str = "[[workflow]]\nname = \"deploy\"\nchannel = \"#deploy\"\n";
const PAYMENTS: &str = "\n[[workflow]]\nname = \"payments\"\nchannel = \"#payments\"\n\n\
    [[workflow.rule]]\nname = \"small-payment\"\nwhen = \"params.amount < 500\"\ndecision = \"approve\"\n";
/// The same rule, its decisions told in one digest message per channel and window.
const REFUNDS: &str = "\n[[workflow]]\nname = \"refunds\"\nchannel = \"#payments\"\n\
    notify = \"digest\"\n\n[[workflow.rule]]\nname = \"small-refund\"\n\
    when = \"params.amount < 500\"\ndecision = \"approve\"\n";

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

/// A greenlight instance: one server on a SQLite file, or replicas on one PostgreSQL
/// database; its key, and a connection to its database.
struct Instance {
    env: GreenlightEnv,
    location: Location,
    servers: Vec<Server>,
    key: String,
    db: Db,
}

impl Instance {
    /// `path` on every replica, in order: the load generator takes them in turn.
    fn urls(&self, path: &str) -> Arc<Vec<String>> {
        Arc::new(
            self.servers
                .iter()
                .map(|s| format!("{}{path}", s.base()))
                .collect(),
        )
    }

    /// Creates spread over the replicas.
    fn creates(&self, make: impl Fn(usize) -> Value + Send + Sync + 'static) -> Job {
        Job::Create {
            urls: self.urls("/v1/requests"),
            key: self.key.clone(),
            make: Arc::new(make),
        }
    }

    /// SIGKILL to every replica, then a fresh connection to what is stored.
    async fn kill_and_reopen(&mut self) -> Result<Db> {
        for server in &mut self.servers {
            server.kill9().await?;
        }
        self.db.close().await;
        Db::open(&self.location).await
    }

    /// Warnings and errors in the replicas' logs (they run with RUST_LOG=warn), for the notes.
    fn log_note(&self, who: &str) -> Option<String> {
        let mut lines = Vec::new();
        for server in &self.servers {
            let text = server.log_text();
            lines.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned),
            );
        }
        let first = lines.first()?;
        let first: String = first.chars().take(400).collect();
        Some(format!(
            "{who}: {} warning/error lines in the server logs; the first: `{first}`",
            thousands(lines.len() as u64)
        ))
    }
}

/// Writes the config, migrates, makes an admin key and starts `replicas` servers on
/// `location` (a SQLite file takes one).
async fn instance(
    ctx: &Ctx<'_>,
    name: &str,
    config: &str,
    location: Location,
    replicas: usize,
) -> Result<Instance> {
    let dir = ctx.dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let config_path = dir.join("greenlight.toml");
    std::fs::write(&config_path, config)?;
    let env = greenlight_env(ctx, &dir, config_path, location.url());
    env.run(&["migrate"]).await?;
    let key = env
        .run(&["keys", "create", "--name", "bench", "--scopes", "admin"])
        .await?;
    let mut servers = Vec::new();
    for i in 0..replicas.max(1) {
        let mut replica = env.clone();
        if replicas > 1 {
            replica.log = dir.join(format!("greenlight-{}.log", i + 1));
        }
        servers.push(replica.serve().await?);
    }
    let db = Db::open(&location).await?;
    Ok(Instance {
        env,
        location,
        servers,
        key,
        db,
    })
}

fn greenlight_env(ctx: &Ctx<'_>, dir: &Path, config: PathBuf, db_url: String) -> GreenlightEnv {
    GreenlightEnv {
        bin: ctx.opts.greenlight_bin.clone(),
        config,
        db_url,
        api_url: ctx.sandbox.api_url(),
        bot_token: ctx.sandbox.config().bot_token.clone(),
        signing_secret: ctx.secret.clone(),
        log: dir.join("greenlight.log"),
    }
}

/// Signed clicks on a target list, POSTed to `urls` in turn.
fn click_job(urls: Arc<Vec<String>>, secret: String) -> impl Fn(Vec<Target>) -> Job {
    move |targets| Job::clicks(urls.clone(), secret.clone(), CLICKER, &targets)
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

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

fn count_for(rate: f64, d: Duration) -> usize {
    (rate * d.as_secs_f64()).round() as usize
}

/// The click runs of one system, in order.
struct ClickRuns {
    closed: RunResult,
    /// Where the CPU went over the closed loop, when asked for.
    closed_cpu: Option<CpuSplit>,
    /// The same from the closed loop's start until its outbox was delivered, and how long
    /// that took after the last answer: the message updates the loop's clicks set off.
    drained_cpu: Option<(CpuSplit, Duration)>,
    /// Each open loop's rate and run (`None`: not run at that rate).
    open: Vec<(f64, Option<RunResult>)>,
    update: UpdateRun,
    slow: RunResult,
}

impl ClickRuns {
    /// Clicks sent in these runs that were not answered 200 (timed out, or an error).
    fn not_acked(&self) -> usize {
        let sent = self.closed.samples.len()
            + self
                .open
                .iter()
                .filter_map(|(_, r)| r.as_ref())
                .map(|r| r.samples.len())
                .sum::<usize>()
            + self.update.run.samples.len()
            + self.slow.samples.len();
        sent - self.acks()
    }

    fn acks(&self) -> usize {
        self.closed.ok(200)
            + self
                .open
                .iter()
                .filter_map(|(_, r)| r.as_ref())
                .map(|r| r.ok(200))
                .sum::<usize>()
            + self.update.run.ok(200)
            + self.slow.ok(200)
    }
}

struct UpdateRun {
    run: RunResult,
    latencies: Latencies,
    missing: usize,
}

/// Target lists for each click run, cut from one supply.
struct Phases {
    closed: Vec<Target>,
    open: Vec<Vec<Target>>,
    update: Vec<Target>,
    slow: Vec<Target>,
}

impl Phases {
    fn cut(sizes: &Sizes, closed: usize, mut supply: impl Iterator<Item = Target>) -> Self {
        let mut take = |n: usize| supply.by_ref().take(n).collect::<Vec<_>>();
        Phases {
            closed: take(closed),
            open: sizes
                .rates
                .iter()
                .map(|r| take(count_for(*r, sizes.open_duration)))
                .collect(),
            update: take(count_for(sizes.update_rate, sizes.update_duration)),
            slow: take(count_for(sizes.slow_rate, sizes.slow_duration)),
        }
    }

    fn after_closed(sizes: &Sizes) -> usize {
        sizes
            .rates
            .iter()
            .map(|r| count_for(*r, sizes.open_duration))
            .sum::<usize>()
            + count_for(sizes.update_rate, sizes.update_duration)
            + count_for(sizes.slow_rate, sizes.slow_duration)
    }
}

/// The closed click loop on `targets` (the caller lets the system come to rest afterwards).
async fn closed_clicks(
    ctx: &Ctx<'_>,
    who: &str,
    targets: Vec<Target>,
    job: &impl Fn(Vec<Target>) -> Job,
) -> Result<RunResult> {
    let s = ctx.sizes.clone();
    step(format!(
        "{who}: closed loop, {} connections, up to {} or {} clicks",
        s.connections,
        secs(s.duration),
        targets.len()
    ));
    load::closed_loop(job(targets), s.connections, s.duration, None, false).await
}

/// An open click loop at `rate` on `targets`; the system comes to rest afterwards.
async fn open_clicks(
    ctx: &mut Ctx<'_>,
    who: &str,
    rate: f64,
    targets: Vec<Target>,
    job: &impl Fn(Vec<Target>) -> Job,
    outbox: Option<&Db>,
) -> Result<RunResult> {
    let d = ctx.sizes.open_duration;
    step(format!("{who}: open loop, {rate}/s for {}", secs(d)));
    let run = load::open_loop(job(targets), rate, d, None).await?;
    settle(ctx, outbox).await?;
    Ok(run)
}

/// How one system's click runs go.
struct ClickSetup<'a> {
    /// Builds the click job for a target list.
    job: Box<dyn Fn(Vec<Target>) -> Job + 'a>,
    /// greenlight's database, to wait for its deliveries between runs.
    outbox: Option<&'a Db>,
    /// The instance whose CPU to read over the closed loop.
    cpu_of: Option<&'a Instance>,
    /// Open loops above this rate are not run.
    max_rate: f64,
}

/// Runs the four click runs; between runs the system comes to rest.
async fn click_runs(
    ctx: &mut Ctx<'_>,
    who: &str,
    phases: Phases,
    setup: ClickSetup<'_>,
) -> Result<ClickRuns> {
    let s = ctx.sizes.clone();
    let (job, outbox) = (&setup.job, setup.outbox);
    let before = setup.cpu_of.map(CpuMark::now);
    let closed = closed_clicks(ctx, who, phases.closed, job).await?;
    let closed_cpu = setup
        .cpu_of
        .zip(before.as_ref())
        .map(|(gl, before)| before.until(&CpuMark::now(gl)));
    let closed_end = Instant::now();
    settle(ctx, outbox).await?;
    let drained_cpu = setup
        .cpu_of
        .zip(before)
        .map(|(gl, before)| (before.until(&CpuMark::now(gl)), closed_end.elapsed()));
    let mut open = Vec::new();
    for (r, targets) in s.rates.iter().zip(phases.open) {
        if *r > setup.max_rate {
            open.push((*r, None));
            continue;
        }
        open.push((
            *r,
            Some(open_clicks(ctx, who, *r, targets, job, outbox).await?),
        ));
    }
    step(format!(
        "{who}: click to message updated, {}/s for {}",
        s.update_rate,
        secs(s.update_duration)
    ));
    let update = update_run(&ctx.sandbox, &phases.update, job(phases.update.clone()), &s).await?;
    settle(ctx, outbox).await?;
    step(format!(
        "{who}: every Slack call takes {}, open loop {}/s for {}",
        ms(Some(s.slack_latency.as_secs_f64() * 1000.0)),
        s.slow_rate,
        secs(s.slow_duration)
    ));
    ctx.sandbox.set_latency("*", s.slack_latency);
    let slow = load::open_loop(job(phases.slow), s.slow_rate, s.slow_duration, None).await;
    ctx.sandbox.clear_faults();
    Ok(ClickRuns {
        closed,
        closed_cpu,
        drained_cpu,
        open,
        update,
        slow: slow?,
    })
}

/// Open loop at a light rate, timing each click from its send to the moment the sandbox
/// applies the chat.update of that message.
async fn update_run(
    sandbox: &SandboxHandle,
    targets: &[Target],
    job: Job,
    s: &Sizes,
) -> Result<UpdateRun> {
    let wanted: HashSet<String> = targets.iter().map(|t| t.ts.clone()).collect();
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut events = sandbox.subscribe();
    let record = seen.clone();
    let listener = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(SandboxEvent::MessageUpdated(m)) if wanted.contains(&m.ts) => {
                    let mut seen = record.lock().unwrap_or_else(|e| e.into_inner());
                    seen.entry(m.ts).or_insert_with(Instant::now);
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
    });
    let sent: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let on_sent = {
        let sent = sent.clone();
        Arc::new(move |i: usize, at: Instant| {
            sent.lock().unwrap_or_else(|e| e.into_inner()).insert(i, at);
        })
    };
    let run = load::open_loop(job, s.update_rate, s.update_duration, Some(on_sent)).await?;
    let deadline = Instant::now() + UPDATE_WAIT;
    while Instant::now() < deadline {
        if seen.lock().unwrap_or_else(|e| e.into_inner()).len() >= run.samples.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    listener.abort();
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let sent = sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut latencies = Vec::new();
    for (i, at) in &sent {
        if let Some(updated) = targets.get(*i).and_then(|t| seen.get(&t.ts)) {
            latencies.push(updated.saturating_duration_since(*at));
        }
    }
    Ok(UpdateRun {
        missing: run.samples.len() - latencies.len(),
        latencies: Latencies::new(latencies),
        run,
    })
}

/// Results of greenlight's click instance.
struct GreenlightClicks {
    idle_rss: Option<u64>,
    peak_rss: Option<u64>,
    runs: ClickRuns,
    /// Signed clicks on a button greenlight ignores: the server's ceiling for a click.
    ceiling: Option<RunResult>,
    decided: i64,
}

/// The ceiling: the same closed loop, each click signed and well formed but on a button that is
/// not greenlight's (its action id is neither Approve nor Deny), so the server verifies the
/// signature, checks for a replay, decodes the payload and the clicker, and answers 200 without
/// reading or writing anything. Decisions/s as a share of this is what deciding durably costs.
///
/// Not a click for an unknown request, as issue 14 words it: greenlight tells that clicker
/// "greenlight does not know this request" with an ephemeral message, which is a durable outbox
/// job and a Slack call, so such clicks cost about what a decision does.
async fn ceiling_run(
    ctx: &mut Ctx<'_>,
    like: &Target,
    job: &impl Fn(Vec<Target>) -> Job,
) -> Result<RunResult> {
    let s = ctx.sizes.clone();
    let n = count_for(30_000.0, s.duration).max(1);
    let targets = (0..n)
        .map(|_| Target {
            action_id: CEILING_ACTION.to_owned(),
            value: format!("req_{}", ulid::Ulid::new()),
            ..like.clone()
        })
        .collect();
    step(format!(
        "greenlight: the ceiling, closed loop of clicks on a button greenlight ignores, {} connections, up to {}",
        s.connections,
        secs(s.duration)
    ));
    let run = load::closed_loop(job(targets), s.connections, s.duration, None, false).await?;
    settle(ctx, None).await?;
    Ok(run)
}

/// Pre-creates up to `total` pending requests over the API (spread over the replicas), for at
/// most `budget` (then fewer: the closed loop stops early when its pool runs out), waits until
/// every one is posted to Slack, and returns them as click targets, oldest first.
async fn click_pool(
    ctx: &mut Ctx<'_>,
    who: &str,
    gl: &Instance,
    total: usize,
    budget: Duration,
) -> Result<Vec<Target>> {
    step(format!(
        "{who}: pre-creating {} requests over the API (for at most {})",
        thousands(total as u64),
        secs(budget)
    ));
    let pre = load::closed_loop(
        gl.creates(|i| json!({"workflow": "deploy", "title": format!("Deploy build {i}"), "params": {"build": i}})),
        ctx.sizes.connections,
        budget,
        Some(total),
        false,
    )
    .await?;
    let created = pre.ok(201);
    if pre.failed(201) > 0 || created == 0 {
        return Err(Error::msg(format!(
            "pre-creating requests: {created} of {} answered 201; see the logs in {}",
            pre.samples.len(),
            gl.env.log.parent().unwrap_or(&ctx.dir).display()
        )));
    }
    step(format!(
        "{who}: waiting until every request is posted to Slack"
    ));
    let posting = Instant::now();
    settle(ctx, Some(&gl.db)).await?;
    ctx.notes.push(format!(
        "{who}: pre-created {}{} requests at {} over {} connections, then waited {:.1} s for all of them to be posted",
        thousands(created as u64),
        if created < total {
            format!(" of {} (the {} budget ran out)", thousands(total as u64), secs(budget))
        } else {
            String::new()
        },
        rate(pre.throughput(201)),
        ctx.sizes.connections,
        posting.elapsed().as_secs_f64()
    ));
    let posted = gl.db.posted().await?;
    if posted.len() < created {
        return Err(Error::msg(format!(
            "only {} of {created} requests were posted",
            posted.len()
        )));
    }
    Ok(posted
        .into_iter()
        .map(|p| Target {
            channel: p.channel,
            ts: p.ts,
            action_id: GREENLIGHT_APPROVE.to_owned(),
            value: p.id,
        })
        .collect())
}

async fn greenlight_clicks(ctx: &mut Ctx<'_>) -> Result<GreenlightClicks> {
    step("greenlight: starting (clicks)");
    let location = Location::Sqlite(ctx.dir.join("clicks/greenlight.db"));
    let mut gl = instance(ctx, "clicks", &format!("{DELIVERY}{DEPLOY}"), location, 1).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = gl.servers[0].rss();
    let total = ctx.sizes.click_pool + Phases::after_closed(&ctx.sizes);
    let supply = click_pool(ctx, "greenlight", &gl, total, Duration::from_secs(3600)).await?;
    if supply.len() < total {
        return Err(Error::msg(format!(
            "{} of {total} requests were pre-created",
            supply.len()
        )));
    }
    let phases = Phases::cut(&ctx.sizes, ctx.sizes.click_pool, supply.into_iter());
    let any = phases.closed.first().cloned();
    let job = click_job(gl.urls("/slack/interactions"), ctx.secret.clone());
    let setup = ClickSetup {
        job: Box::new(click_job(
            gl.urls("/slack/interactions"),
            ctx.secret.clone(),
        )),
        outbox: Some(&gl.db),
        cpu_of: Some(&gl),
        max_rate: f64::INFINITY,
    };
    let runs = click_runs(ctx, "greenlight", phases, setup).await?;
    if let Some(cpu) = &runs.closed_cpu {
        ctx.notes.push(format!(
            "greenlight (SQLite), CPU over the closed click loop: {}",
            cpu.describe()
        ));
    }
    if let (Some(cpu), Some((drained, after))) = (&runs.closed_cpu, &runs.drained_cpu) {
        let decisions = runs.closed.ok(200).max(1) as f64;
        let per = |c: &CpuSplit| {
            let us = |d: Duration| d.as_secs_f64() * 1e6 / decisions;
            format!(
                "greenlight {:.0} µs, the bench {:.0} µs",
                us(c.replicas.iter().sum()),
                us(c.bench)
            )
        };
        ctx.notes.push(format!(
            "greenlight (SQLite), the closed click loop's message updates: its outbox was \
             delivered {:.1} s after the last answer (the sandbox's {} ms of quiet included); \
             CPU per decision over the loop: {}; over the loop and that drain: {}",
            after.as_secs_f64(),
            QUIET.as_millis(),
            per(cpu),
            per(drained)
        ));
    }
    let ceiling = match any {
        Some(any) => Some(ceiling_run(ctx, &any, &job).await?),
        None => None,
    };
    let peak_rss = gl.servers[0].peak_rss();
    step("greenlight: SIGKILL, then counting decided requests in the database");
    let db = gl.kill_and_reopen().await?;
    let decided = db.decided().await?;
    db.close().await;
    if let Some(note) = gl.log_note("greenlight (clicks)") {
        ctx.notes.push(note);
    }
    Ok(GreenlightClicks {
        idle_rss,
        peak_rss,
        runs,
        ceiling,
        decided,
    })
}

/// Posts `n` approval messages for the peer straight to the sandbox's Web API, as the bot.
async fn post_peer_messages(sandbox: &SandboxHandle, n: usize) -> Result<Vec<Target>> {
    let http = load::client(16)?;
    let url = format!("{}chat.postMessage", sandbox.api_url());
    let token = sandbox.config().bot_token.clone();
    let mut targets = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let mut posts = tokio::task::JoinSet::new();
        for i in chunk {
            let body = json!({
                "channel": PEER_CHANNEL,
                "text": format!("Approval needed: deploy build {i}"),
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": format!("Approval needed: deploy build {i}")}},
                    {"type": "actions", "elements": [
                        {"type": "button", "action_id": PEER_APPROVE, "text": {"type": "plain_text", "text": "Approve"}, "value": "approve"},
                        {"type": "button", "action_id": "deny_button", "text": {"type": "plain_text", "text": "Deny"}, "value": "deny"}
                    ]}
                ]
            });
            let req = http.post(&url).bearer_auth(&token).json(&body);
            posts.spawn(async move { req.send().await?.json::<Value>().await });
        }
        while let Some(res) = posts.join_next().await {
            let answer = res??;
            let ts = answer["ts"]
                .as_str()
                .ok_or_else(|| Error::msg(format!("chat.postMessage for the peer: {answer}")))?;
            targets.push(Target {
                channel: PEER_CHANNEL.to_owned(),
                ts: ts.to_owned(),
                action_id: PEER_APPROVE.to_owned(),
                value: "approve".to_owned(),
            });
        }
    }
    Ok(targets)
}

struct PeerResults {
    idle_rss: Option<u64>,
    peak_rss: Option<u64>,
    runs: ClickRuns,
}

async fn peer_clicks(ctx: &mut Ctx<'_>, peer: &Server) -> Result<PeerResults> {
    step(format!(
        "peer: posting {} messages for it to update",
        thousands(ctx.sizes.peer_messages as u64)
    ));
    let messages = post_peer_messages(&ctx.sandbox, ctx.sizes.peer_messages).await?;
    // The peer keeps no state, so a message may be clicked again: its work is the same.
    let closed = count_for(20_000.0, ctx.sizes.duration).max(1);
    let phases = Phases::cut(&ctx.sizes, closed, messages.iter().cloned().cycle());
    let idle_rss = peer.rss();
    let job = click_job(
        Arc::new(vec![format!("{}/slack/events", peer.base())]),
        ctx.secret.clone(),
    );
    let setup = ClickSetup {
        job: Box::new(job),
        outbox: None,
        cpu_of: None,
        max_rate: ctx.sizes.peer_max_rate,
    };
    let runs = click_runs(ctx, "peer", phases, setup).await?;
    quiet(&ctx.sandbox).await;
    Ok(PeerResults {
        idle_rss,
        peak_rss: peer.peak_rss(),
        runs,
    })
}

struct Creates {
    plain: RunResult,
    /// The rule run (`notify = "message"`) and how many answers said `approved`; `Err` says
    /// why it did not run.
    rule: std::result::Result<(RunResult, usize), String>,
    /// The same with `notify = "digest"`.
    digest: std::result::Result<(RunResult, usize), String>,
    pending_in_db: i64,
    approved_in_db: i64,
}

/// The plain create run: a closed loop of `POST /v1/requests` spread over the replicas, then
/// the outbox drained (every request posted).
async fn plain_creates(ctx: &mut Ctx<'_>, who: &str, gl: &Instance) -> Result<RunResult> {
    let (c, d) = (ctx.sizes.connections, ctx.sizes.create_duration);
    step(format!(
        "{who}: creates, closed loop, {c} connections for {}",
        secs(d)
    ));
    let plain = load::closed_loop(
        gl.creates(|i| json!({"workflow": "deploy", "title": format!("Deploy build {i}"), "params": {"build": i}})),
        c,
        d,
        None,
        false,
    )
    .await?;
    settle(ctx, Some(&gl.db)).await?;
    Ok(plain)
}

async fn greenlight_creates(ctx: &mut Ctx<'_>) -> Result<Creates> {
    let dir = ctx.dir.join("creates");
    std::fs::create_dir_all(&dir)?;
    let with_rule = format!("{DELIVERY}{DEPLOY}{PAYMENTS}{REFUNDS}");
    let probe = dir.join("rules.toml");
    std::fs::write(&probe, &with_rule)?;
    let location = Location::Sqlite(dir.join("greenlight.db"));
    let check = greenlight_env(ctx, &dir, probe.clone(), location.url())
        .run(&["check", "--config", &probe.display().to_string()])
        .await;
    let (config, rules) = match check {
        Ok(_) => (with_rule, Ok(())),
        Err(e) => {
            ctx.notes
                .push(format!("the auto-approve rule config was refused: {e}"));
            (
                format!("{DELIVERY}{DEPLOY}"),
                Err("rules not available".to_owned()),
            )
        }
    };
    step("greenlight: starting (creates)");
    let mut gl = instance(ctx, "creates", &config, location, 1).await?;
    let (c, d) = (ctx.sizes.connections, ctx.sizes.create_duration);
    let plain = plain_creates(ctx, "greenlight", &gl).await?;
    let rule = match &rules {
        Ok(()) => Ok(rule_creates(&gl, "payments", "message", c, d).await?),
        Err(why) => Err(why.clone()),
    };
    settle(ctx, Some(&gl.db)).await?;
    let digest = match &rules {
        Ok(()) => Ok(rule_creates(&gl, "refunds", "digest", c, d).await?),
        Err(why) => Err(why.clone()),
    };
    step("greenlight: SIGKILL, then counting requests in the database");
    let db = gl.kill_and_reopen().await?;
    let pending_in_db = db.with_status("pending").await?;
    let approved_in_db = db.with_status("approved").await?;
    db.close().await;
    if let Some(note) = gl.log_note("greenlight (creates)") {
        ctx.notes.push(note);
    }
    Ok(Creates {
        plain,
        rule,
        digest,
        pending_in_db,
        approved_in_db,
    })
}

/// A closed loop of creates that a rule approves (every amount below 500), in `workflow`
/// whose auto-decisions are told as `notify` says; returns the run and how many answers said
/// `approved`.
async fn rule_creates(
    gl: &Instance,
    workflow: &'static str,
    notify: &str,
    c: usize,
    d: Duration,
) -> Result<(RunResult, usize)> {
    step(format!(
        "greenlight: creates auto-approved by a rule (notify = {notify:?}), closed loop, {c} connections for {}",
        secs(d)
    ));
    let run = load::closed_loop(
        gl.creates(move |i| {
            json!({"workflow": workflow, "title": format!("Refund order {i}"),
                   "params": {"amount": i % 500, "currency": "USD"}})
        }),
        c,
        d,
        None,
        true,
    )
    .await?;
    let approved = run
        .samples
        .iter()
        .filter(|s| s.status == 201)
        .filter_map(|s| s.body.as_deref())
        .filter_map(|b| serde_json::from_str::<Value>(b).ok())
        .filter(|v| v["status"] == "approved")
        .count();
    Ok((run, approved))
}

/// Where the CPU went during one run: each replica, PostgreSQL (the backends serving the
/// instance's database, and all its other processes), and this process (load generator and
/// sandbox). Read from /proc before and after.
struct CpuSplit {
    wall: Duration,
    replicas: Vec<Duration>,
    pg_ours: Duration,
    pg_others: Duration,
    bench: Duration,
}

struct CpuMark {
    at: Instant,
    replicas: Vec<Duration>,
    pg: (Duration, Duration),
    bench: Duration,
}

impl CpuMark {
    fn now(gl: &Instance) -> Self {
        let pg = match &gl.location {
            Location::Postgres(db) => procs::postgres_cpu(&db.name),
            Location::Sqlite(_) => (Duration::ZERO, Duration::ZERO),
        };
        CpuMark {
            at: Instant::now(),
            replicas: gl
                .servers
                .iter()
                .map(|s| s.cpu().unwrap_or_default())
                .collect(),
            pg,
            bench: procs::own_cpu().unwrap_or_default(),
        }
    }

    fn until(&self, later: &CpuMark) -> CpuSplit {
        CpuSplit {
            wall: later.at.duration_since(self.at),
            replicas: later
                .replicas
                .iter()
                .zip(&self.replicas)
                .map(|(b, a)| b.saturating_sub(*a))
                .collect(),
            pg_ours: later.pg.0.saturating_sub(self.pg.0),
            pg_others: later.pg.1.saturating_sub(self.pg.1),
            bench: later.bench.saturating_sub(self.bench),
        }
    }
}

impl CpuSplit {
    fn cores(&self, d: Duration) -> f64 {
        d.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    fn json(&self) -> Value {
        json!({
            "wall_s": self.wall.as_secs_f64(),
            "greenlight_cores": self.replicas.iter().map(|d| self.cores(*d)).collect::<Vec<_>>(),
            "postgres_backends_cores": self.cores(self.pg_ours),
            "postgres_other_cores": self.cores(self.pg_others),
            "bench_cores": self.cores(self.bench),
        })
    }

    fn describe(&self) -> String {
        let each: Vec<String> = self
            .replicas
            .iter()
            .map(|d| format!("{:.2}", self.cores(*d)))
            .collect();
        format!(
            "greenlight {:.2} cores ({}), PostgreSQL backends of its database {:.2}, other PostgreSQL processes {:.2}, \
             the bench (load generator and sandbox) {:.2}, over {:.1} s",
            self.cores(self.replicas.iter().sum()),
            each.join(" + "),
            self.cores(self.pg_ours),
            self.cores(self.pg_others),
            self.cores(self.bench),
            self.wall.as_secs_f64()
        )
    }
}

/// The runs of greenlight as `replicas` replicas on one PostgreSQL database.
struct PgRun {
    replicas: usize,
    closed: RunResult,
    /// CPU over the closed loop (its outbox drain not included).
    closed_cpu: CpuSplit,
    open: RunResult,
    decided: i64,
    creates: RunResult,
    pending_in_db: i64,
}

impl PgRun {
    fn acks(&self) -> usize {
        self.closed.ok(200) + self.open.ok(200)
    }

    /// Clicks that got no answer within the request timeout: the server may have committed
    /// them or not, so the decided rows may exceed the acks by up to this many.
    fn clicks_unanswered(&self) -> usize {
        self.closed.ok(0) + self.open.ok(0)
    }
}

/// "stored = answered", plus the share of unanswered requests that were stored anyway; met
/// when every answered request is stored and nothing beyond the unanswered ones.
fn durable_cell(stored: i64, answered: usize, unanswered: usize) -> (Cell, bool) {
    let extra = stored - answered as i64;
    let mut text = format!(
        "{} = {}",
        thousands(stored.max(0) as u64),
        thousands(answered as u64)
    );
    if unanswered > 0 {
        text = format!(
            "{} = {} + {} of the {} not acked (timed out or refused)",
            thousands(stored.max(0) as u64),
            thousands(answered as u64),
            extra,
            thousands(unanswered as u64)
        );
    }
    let met = extra >= 0 && extra <= unanswered as i64;
    (
        Cell::new(
            text,
            json!({"in_db": stored, "answered": answered, "unanswered": unanswered}),
        ),
        met,
    )
}

/// Runs `f` on a fresh PostgreSQL database; drops it afterwards unless --keep (a failure keeps
/// it, and the error names it).
async fn on_fresh_postgres<T>(
    ctx: &mut Ctx<'_>,
    f: impl AsyncFnOnce(&mut Ctx<'_>, Location) -> Result<T>,
) -> Result<T> {
    let location = ctx.pg_database().await?;
    let out = f(ctx, location.clone()).await?;
    ctx.release(&location).await?;
    Ok(out)
}

async fn postgres_runs(ctx: &mut Ctx<'_>, replicas: usize) -> Result<PgRun> {
    let who = format!(
        "greenlight (PostgreSQL, {replicas} replica{})",
        if replicas == 1 { "" } else { "s" }
    );
    let name = format!("pg{replicas}");
    let config = format!("{DELIVERY}{DEPLOY}");
    let rate = ctx.sizes.pg_rate;
    let (closed, closed_cpu, open, decided) = on_fresh_postgres(ctx, async |ctx, location| {
        step(format!(
            "{who}: starting (clicks) on {}",
            location.describe()
        ));
        let mut gl = instance(ctx, &format!("{name}-clicks"), &config, location, replicas).await?;
        let sizes = ctx.sizes.clone();
        let total = sizes.click_pool + count_for(rate, sizes.open_duration);
        let mut supply = click_pool(ctx, &who, &gl, total, PG_POOL_BUDGET).await?;
        // The open loop's schedule comes first; the closed loop takes what is left.
        let open_count = count_for(rate, sizes.open_duration);
        let open_targets = supply.split_off(supply.len().saturating_sub(open_count));
        let job = click_job(gl.urls("/slack/interactions"), ctx.secret.clone());
        let before = CpuMark::now(&gl);
        let closed = closed_clicks(ctx, &who, supply, &job).await?;
        let closed_cpu = before.until(&CpuMark::now(&gl));
        settle(ctx, Some(&gl.db)).await?;
        let open = open_clicks(ctx, &who, rate, open_targets, &job, Some(&gl.db)).await?;
        step(format!(
            "{who}: SIGKILL to every replica, then counting decided requests in PostgreSQL"
        ));
        let db = gl.kill_and_reopen().await?;
        let decided = db.decided().await?;
        db.close().await;
        if let Some(note) = gl.log_note(&format!("{who} (clicks)")) {
            ctx.notes.push(note);
        }
        Ok((closed, closed_cpu, open, decided))
    })
    .await?;
    ctx.notes.push(format!(
        "{who}, CPU over the closed click loop: {}",
        closed_cpu.describe()
    ));
    let (creates, pending_in_db) = on_fresh_postgres(ctx, async |ctx, location| {
        step(format!(
            "{who}: starting (creates) on {}",
            location.describe()
        ));
        let mut gl = instance(ctx, &format!("{name}-creates"), &config, location, replicas).await?;
        let creates = plain_creates(ctx, &who, &gl).await?;
        step(format!(
            "{who}: SIGKILL to every replica, then counting requests in PostgreSQL"
        ));
        let db = gl.kill_and_reopen().await?;
        let pending = db.with_status("pending").await?;
        db.close().await;
        if let Some(note) = gl.log_note(&format!("{who} (creates)")) {
            ctx.notes.push(note);
        }
        Ok((creates, pending))
    })
    .await?;
    Ok(PgRun {
        replicas,
        closed,
        closed_cpu,
        open,
        decided,
        creates,
        pending_in_db,
    })
}

struct Million {
    seeded: db::Seeded,
    startup: Duration,
    rss_started: Option<u64>,
    rss_after_reads: Option<u64>,
}

async fn greenlight_million(ctx: &mut Ctx<'_>) -> Result<Million> {
    let n = ctx.sizes.million.max(2);
    step("greenlight: starting (large database); two template requests, one decided by a click");
    let path = ctx.dir.join("million/greenlight.db");
    let location = Location::Sqlite(path.clone());
    let mut gl = instance(ctx, "million", &format!("{DELIVERY}{DEPLOY}"), location, 1).await?;
    let make = |i: usize| json!({"workflow": "deploy", "title": format!("Deploy build {i}"), "params": {"build": i, "service": "api"}});
    let created =
        load::closed_loop(gl.creates(make), 1, Duration::from_secs(60), Some(2), true).await?;
    let mut ids = Vec::new();
    for s in &created.samples {
        let v: Value = s
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or_default();
        match v["id"].as_str() {
            Some(id) if s.status == 201 => ids.push(id.to_owned()),
            _ => {
                return Err(Error::msg(format!(
                    "creating a template request: {} {v}",
                    s.status
                )));
            }
        }
    }
    settle(ctx, Some(&gl.db)).await?;
    let decided = gl
        .db
        .posted()
        .await?
        .into_iter()
        .find(|p| ids.get(1) == Some(&p.id))
        .ok_or_else(|| Error::msg("the template request was not posted"))?;
    let click = click_job(gl.urls("/slack/interactions"), ctx.secret.clone())(vec![Target {
        channel: decided.channel,
        ts: decided.ts,
        action_id: GREENLIGHT_APPROVE.to_owned(),
        value: decided.id.clone(),
    }]);
    let clicked = load::closed_loop(click, 1, Duration::from_secs(60), None, false).await?;
    if clicked.ok(200) != 1 {
        return Err(Error::msg("the template click was not acked"));
    }
    settle(ctx, Some(&gl.db)).await?;
    gl.servers[0].terminate().await?;
    gl.db.close().await;
    step(format!(
        "seeding {} requests into {}",
        thousands(n as u64 - 2),
        path.display()
    ));
    let seeded = db::seed(&path, &ids[0], &decided.id, n - 2).await?;
    step("greenlight: starting on the large database");
    let server = gl.env.serve().await?;
    let startup = server.startup;
    let rss_started = server.rss();
    step("greenlight: 1,000 reads (10 list pages of 100, then each listed request by id)");
    reads(&server, &gl.key).await?;
    let rss_after_reads = server.rss();
    let mut server = server;
    server.terminate().await?;
    Ok(Million {
        seeded: db::Seeded { rows: n, ..seeded },
        startup,
        rss_started,
        rss_after_reads,
    })
}

/// Pages through the newest 1,000 requests, then reads each one.
async fn reads(server: &Server, key: &str) -> Result<()> {
    let http = load::client(1)?;
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut url = format!("{}/v1/requests?limit=100", server.base());
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http
            .get(&url)
            .bearer_auth(key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for r in page["requests"].as_array().into_iter().flatten() {
            if let Some(id) = r["id"].as_str() {
                ids.push(id.to_owned());
            }
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    for id in ids {
        http.get(format!("{}/v1/requests/{id}", server.base()))
            .bearer_auth(key)
            .send()
            .await?
            .error_for_status()?;
    }
    Ok(())
}

pub async fn run(opts: &Options) -> Result<Report> {
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
    let million = if opts.skip_million {
        None
    } else {
        Some(greenlight_million(&mut ctx).await?)
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
    let rows = rows(
        &sizes,
        &clicks,
        peer_results.as_ref(),
        &creates,
        million.as_ref(),
        opts.skip_peer,
    );
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

/// The table: one row per measurement, in the order.
fn rows(
    s: &Sizes,
    gl: &GreenlightClicks,
    peer: Option<&PeerResults>,
    creates: &Creates,
    million: Option<&Million>,
    skip_peer: bool,
) -> Vec<Row> {
    let not_run = if skip_peer { "--skip-peer" } else { "not run" };
    let peer_cell = |f: &dyn Fn(&PeerResults) -> Cell| peer.map_or_else(|| Cell::na(not_run), f);
    let mut rows = Vec::new();

    let gl_rate = gl.runs.closed.throughput(200);
    let peer_rate = peer.map(|p| p.runs.closed.throughput(200));
    let ratio = peer_rate.filter(|r| *r > 0.0).map(|r| gl_rate / r);
    rows.push(Row {
        id: "decisions_closed".into(),
        measurement: format!(
            "Durable decisions (signed clicks on distinct pending requests), closed loop, {} connections, up to {}",
            s.connections,
            secs(s.duration)
        ),
        greenlight: Cell::new(
            match ratio {
                Some(x) => format!("{} ({x:.1}x the peer)", rate(gl_rate)),
                None => rate(gl_rate),
            },
            json!({"per_s": gl_rate, "acks": gl.runs.closed.ok(200), "failed": gl.runs.closed.failed(200),
                   "elapsed_s": gl.runs.closed.elapsed.as_secs_f64(), "vs_peer": ratio}),
        ),
        peer: peer_cell(&|p| {
            let r = p.runs.closed.throughput(200);
            Cell::new(
                rate(r),
                json!({"per_s": r, "acks": p.runs.closed.ok(200), "failed": p.runs.closed.failed(200),
                       "elapsed_s": p.runs.closed.elapsed.as_secs_f64()}),
            )
        }),
        target: ">= 10,000/s and >= 20x the peer".to_owned(),
        met: Some(gl_rate >= 10_000.0 && ratio.is_none_or(|x| x >= 20.0)),
    });
    rows.push(Row {
        id: "ack_closed".into(),
        measurement: "Ack latency in that closed loop, p50 / p99 / p99.9".to_owned(),
        greenlight: report::latency_cell(&gl.runs.closed, 200),
        peer: peer_cell(&|p| report::latency_cell(&p.runs.closed, 200)),
        target: "-".to_owned(),
        met: None,
    });
    for (i, (r, run)) in gl.runs.open.iter().enumerate() {
        let Some(run) = run else { continue };
        let p99 = run.latencies().percentile_ms(99.0);
        // The targets: p99 < 10 ms at 1,000/s, < 25 ms at 5,000/s with none failed.
        let limit = match *r as u64 {
            1000 => Some(10.0),
            5000 => Some(25.0),
            _ => None,
        };
        rows.push(Row {
            id: format!("ack_open_{}", i + 1),
            measurement: format!(
                "Ack latency, open loop {}/s for {}, from the scheduled send time, p50 / p99 / p99.9",
                thousands(*r as u64),
                secs(s.open_duration)
            ),
            greenlight: report::latency_cell(run, 200),
            peer: peer_cell(&|p| match &p.runs.open[i].1 {
                Some(run) => report::latency_cell(run, 200),
                None => Cell::na(&format!(
                    "not run above {}/s (--peer-max-rate)",
                    thousands(s.peer_max_rate as u64)
                )),
            }),
            target: limit.map_or_else(
                || "-".to_owned(),
                |l| format!("p99 < {l} ms, nothing failed"),
            ),
            met: limit.map(|l| p99.is_some_and(|v| v < l) && run.failed(200) == 0),
        });
    }
    if let Some(ceiling) = &gl.ceiling {
        let top = ceiling.throughput(200);
        let share = (top > 0.0).then(|| gl_rate / top);
        rows.push(Row {
            id: "ceiling".into(),
            measurement: format!(
                "The ceiling: signed clicks on a button greenlight ignores (verify, parse; no read, no write), closed loop, {} connections",
                s.connections
            ),
            greenlight: Cell::new(
                match share {
                    Some(x) => format!("{} (decisions are {:.0}% of it)", rate(top), x * 100.0),
                    None => rate(top),
                },
                json!({"per_s": top, "acks": ceiling.ok(200), "failed": ceiling.failed(200),
                       "decisions_share": share}),
            ),
            peer: Cell::na("-"),
            target: "reported; decisions >= 70% of it".to_owned(),
            met: Some(share.is_some_and(|x| x >= 0.7)),
        });
    }
    let slow_p99 = gl.runs.slow.latencies().percentile_ms(99.0);
    rows.push(Row {
        id: "ack_slow_slack".into(),
        measurement: format!(
            "Ack latency while every Slack API call takes {}, open loop {}/s for {}, p50 / p99 / p99.9",
            ms(Some(s.slack_latency.as_secs_f64() * 1000.0)),
            s.slow_rate,
            secs(s.slow_duration)
        ),
        greenlight: report::latency_cell(&gl.runs.slow, 200),
        peer: peer_cell(&|p| report::latency_cell(&p.runs.slow, 200)),
        target: "p99 < 50 ms (Slack's limit: 3 s)".to_owned(),
        met: Some(slow_p99.is_some_and(|v| v < 50.0) && gl.runs.slow.failed(200) == 0),
    });
    for (id, notify, result, target) in [
        ("create_rule", "message", &creates.rule, ">= 10,000/s"),
        ("create_digest", "digest", &creates.digest, ">= 10,000/s"),
    ] {
        let rate_of = |(run, approved): &(RunResult, usize)| {
            *approved as f64 / run.elapsed.as_secs_f64().max(1e-9)
        };
        let cell = match result {
            Ok(r @ (run, approved)) => Cell::new(
                format!(
                    "{} ({} of {} answers approved)",
                    rate(rate_of(r)),
                    thousands(*approved as u64),
                    thousands(run.samples.len() as u64)
                ),
                json!({"per_s": rate_of(r), "approved": approved,
                       "requests": run.samples.len(), "elapsed_s": run.elapsed.as_secs_f64(),
                       "p50_ms": run.latencies().percentile_ms(50.0), "p99_ms": run.latencies().percentile_ms(99.0)}),
            ),
            Err(why) => Cell::na(why),
        };
        let per_s = result.as_ref().ok().map(rate_of);
        rows.push(Row {
            id: id.into(),
            measurement: format!(
                "Creates auto-approved by a CEL rule, notify = \"{notify}\" (POST /v1/requests, durable), closed loop, {} connections, {}",
                s.connections,
                secs(s.create_duration)
            ),
            greenlight: cell,
            peer: Cell::na("no API"),
            target: target.to_owned(),
            met: (target != "-").then(|| per_s.is_some_and(|r| r >= 10_000.0)),
        });
    }
    let plain = &creates.plain;
    rows.push(Row {
        id: "create_plain".into(),
        measurement: format!(
            "Creates, pending and posted to Slack, closed loop, {} connections, {}",
            s.connections,
            secs(s.create_duration)
        ),
        greenlight: Cell::new(
            rate(plain.throughput(201)),
            json!({"per_s": plain.throughput(201), "created": plain.ok(201), "failed": plain.failed(201),
                   "p50_ms": plain.latencies().percentile_ms(50.0), "p99_ms": plain.latencies().percentile_ms(99.0)}),
        ),
        peer: Cell::na("no API"),
        target: "-".to_owned(),
        met: None,
    });
    let update_cell = |u: &UpdateRun| {
        let (p50, p99) = (
            u.latencies.percentile_ms(50.0),
            u.latencies.percentile_ms(99.0),
        );
        let mut text = format!("{} / {}", ms(p50), ms(p99));
        if u.missing > 0 {
            text.push_str(&format!(
                " ({} of {} never updated)",
                u.missing,
                u.run.samples.len()
            ));
        }
        Cell::new(
            text,
            json!({"p50_ms": p50, "p99_ms": p99, "clicks": u.run.samples.len(), "missing": u.missing}),
        )
    };
    rows.push(Row {
        id: "click_to_update".into(),
        measurement: format!(
            "Click sent -> chat.update applied by Slack, {}/s for {}, p50 / p99",
            s.update_rate,
            secs(s.update_duration)
        ),
        greenlight: update_cell(&gl.runs.update),
        peer: peer_cell(&|p| update_cell(&p.runs.update)),
        target: "p50 < 20 ms".to_owned(),
        met: Some(
            gl.runs
                .update
                .latencies
                .percentile_ms(50.0)
                .is_some_and(|v| v < 20.0)
                && gl.runs.update.missing == 0,
        ),
    });
    let rss_cell = |b: Option<u64>| match b {
        Some(b) => Cell::new(mb(Some(b)), json!({"bytes": b})),
        None => Cell::na("not measured"),
    };
    rows.push(Row {
        id: "rss_idle".into(),
        measurement: "Resident memory (VmRSS) idle, 1 s after start".to_owned(),
        greenlight: rss_cell(gl.idle_rss),
        peer: peer_cell(&|p| rss_cell(p.idle_rss)),
        target: "< 30 MB".to_owned(),
        met: gl.idle_rss.map(|b| b < 30_000_000),
    });
    rows.push(Row {
        id: "rss_peak".into(),
        measurement: "Peak resident memory (VmHWM) over the click runs".to_owned(),
        greenlight: rss_cell(gl.peak_rss),
        peer: peer_cell(&|p| rss_cell(p.peak_rss)),
        target: "-".to_owned(),
        met: None,
    });
    match million {
        Some(m) => {
            rows.push(Row {
                id: "rss_million".into(),
                measurement: format!(
                    "Resident memory with {} stored requests, after start and 1,000 reads",
                    thousands(m.seeded.rows as u64)
                ),
                greenlight: Cell::new(
                    format!(
                        "{} (after start: {})",
                        mb(m.rss_after_reads),
                        mb(m.rss_started)
                    ),
                    json!({"bytes": m.rss_after_reads, "after_start_bytes": m.rss_started,
                           "database_bytes": m.seeded.file_bytes}),
                ),
                peer: Cell::na("stores nothing"),
                target: "< 100 MB".to_owned(),
                met: m.rss_after_reads.map(|b| b < 100_000_000),
            });
            rows.push(Row {
                id: "startup_million".into(),
                measurement: format!(
                    "Start-up with {} stored requests (spawn -> /readyz 200)",
                    thousands(m.seeded.rows as u64)
                ),
                greenlight: Cell::new(
                    ms(Some(m.startup.as_secs_f64() * 1000.0)),
                    json!({"ms": m.startup.as_secs_f64() * 1000.0}),
                ),
                peer: Cell::na("stores nothing"),
                target: "< 1 s".to_owned(),
                met: Some(m.startup < Duration::from_secs(1)),
            });
        }
        None => {
            for (id, what) in [
                (
                    "rss_million",
                    "Resident memory with a million stored requests",
                ),
                ("startup_million", "Start-up with a million stored requests"),
            ] {
                rows.push(Row {
                    id: id.into(),
                    measurement: what.to_owned(),
                    greenlight: Cell::na("--skip-million"),
                    peer: Cell::na("stores nothing"),
                    target: "-".to_owned(),
                    met: None,
                });
            }
        }
    }
    let acks = gl.runs.acks();
    // A click the generator gave up on (or that was answered with an error) may still have
    // been decided: it counts as allowed, never as required.
    let (mut cell, durable) = durable_cell(gl.decided, acks, gl.runs.not_acked());
    cell.values =
        Some(json!({"decided_in_db": gl.decided, "acks": acks, "not_acked": gl.runs.not_acked()}));
    rows.push(Row {
        id: "durable_clicks".into(),
        measurement:
            "Decided requests in the database after SIGKILL = clicks acked 200 (all click runs)"
                .to_owned(),
        greenlight: cell,
        peer: Cell::na("keeps no state"),
        target: "equal (plus at most the clicks not acked)".to_owned(),
        met: Some(durable),
    });
    let approved_answers = creates.rule.as_ref().map_or(0, |(_, a)| *a)
        + creates.digest.as_ref().map_or(0, |(_, a)| *a);
    let created = creates.plain.ok(201);
    rows.push(Row {
        id: "durable_creates".into(),
        measurement: "Pending / approved requests in the database after SIGKILL = creates answered 201 / approved".to_owned(),
        greenlight: Cell::new(
            format!(
                "{} / {} = {} / {}",
                thousands(creates.pending_in_db.max(0) as u64),
                thousands(creates.approved_in_db.max(0) as u64),
                thousands(created as u64),
                thousands(approved_answers as u64)
            ),
            json!({"pending_in_db": creates.pending_in_db, "approved_in_db": creates.approved_in_db,
                   "created": created, "approved_answers": approved_answers}),
        ),
        peer: Cell::na("no API"),
        target: "equal".to_owned(),
        met: Some(creates.pending_in_db == created as i64 && creates.approved_in_db == approved_answers as i64),
    });
    rows
}

/// The PostgreSQL rows, per replica count: decisions, ack latency (closed loop and open loop),
/// creates, and the two durability counts. The targets are the issue's, for two replicas.
fn pg_rows(s: &Sizes, runs: &[PgRun], skipped: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    let peer = || Cell::na("one process, no database");
    for &n in &s.replicas {
        let label = format!(
            "PostgreSQL, {n} replica{}",
            if n == 1 {
                ""
            } else {
                "s, load spread over them"
            }
        );
        let two = n == 2;
        let measured = runs.iter().find(|r| r.replicas == n);
        let cell = |f: &dyn Fn(&PgRun) -> Cell| {
            measured.map_or_else(
                || {
                    Cell::na(if skipped {
                        "--skip-postgres"
                    } else {
                        "not run"
                    })
                },
                f,
            )
        };
        let decisions = measured.map(|r| r.closed.throughput(200));
        rows.push(Row {
            id: format!("pg{n}_decisions_closed"),
            measurement: format!(
                "{label}: durable decisions (signed clicks on distinct pending requests), closed loop, {} connections, up to {}",
                s.connections,
                secs(s.duration)
            ),
            greenlight: cell(&|r| {
                let per_s = r.closed.throughput(200);
                let ran = r.closed.elapsed;
                let text = if ran + Duration::from_millis(500) < s.duration {
                    format!(
                        "{} (its pool of {} ran out after {:.1} s)",
                        rate(per_s),
                        thousands(r.closed.samples.len() as u64),
                        ran.as_secs_f64()
                    )
                } else {
                    rate(per_s)
                };
                Cell::new(
                    text,
                    json!({"per_s": per_s, "acks": r.closed.ok(200), "failed": r.closed.failed(200),
                           "elapsed_s": r.closed.elapsed.as_secs_f64(), "cpu": r.closed_cpu.json()}),
                )
            }),
            peer: peer(),
            target: if two { ">= 5,000/s".to_owned() } else { "-".to_owned() },
            met: if two { decisions.map(|d| d >= 5_000.0) } else { None },
        });
        rows.push(Row {
            id: format!("pg{n}_ack_closed"),
            measurement: format!("{label}: ack latency in that closed loop, p50 / p99 / p99.9"),
            greenlight: cell(&|r| report::latency_cell(&r.closed, 200)),
            peer: peer(),
            target: "-".to_owned(),
            met: None,
        });
        let at_1000 = (s.pg_rate - 1000.0).abs() < f64::EPSILON;
        rows.push(Row {
            id: format!("pg{n}_ack_open_1000"),
            measurement: format!(
                "{label}: ack latency, open loop {}/s for {}, from the scheduled send time, p50 / p99 / p99.9",
                thousands(s.pg_rate as u64),
                secs(s.open_duration)
            ),
            greenlight: cell(&|r| report::latency_cell(&r.open, 200)),
            peer: peer(),
            target: if two && at_1000 {
                "p99 < 50 ms".to_owned()
            } else {
                "-".to_owned()
            },
            met: (two && at_1000)
                .then(|| {
                    measured.map(|r| {
                        r.open.latencies().percentile_ms(99.0).is_some_and(|v| v < 50.0)
                            && r.open.failed(200) == 0
                    })
                })
                .flatten(),
        });
        rows.push(Row {
            id: format!("pg{n}_creates"),
            measurement: format!(
                "{label}: creates, pending and posted to Slack, closed loop, {} connections, {}",
                s.connections,
                secs(s.create_duration)
            ),
            greenlight: cell(&|r| {
                let c = &r.creates;
                Cell::new(
                    rate(c.throughput(201)),
                    json!({"per_s": c.throughput(201), "created": c.ok(201), "failed": c.failed(201),
                           "p50_ms": c.latencies().percentile_ms(50.0), "p99_ms": c.latencies().percentile_ms(99.0)}),
                )
            }),
            peer: Cell::na("no API"),
            target: "-".to_owned(),
            met: None,
        });
        rows.push(Row {
            id: format!("pg{n}_durable_clicks"),
            measurement: format!(
                "{label}: decided requests in PostgreSQL after SIGKILL to every replica = clicks acked 200"
            ),
            greenlight: cell(&|r| durable_cell(r.decided, r.acks(), r.clicks_unanswered()).0),
            peer: Cell::na("keeps no state"),
            target: "equal".to_owned(),
            met: measured.map(|r| durable_cell(r.decided, r.acks(), r.clicks_unanswered()).1),
        });
        rows.push(Row {
            id: format!("pg{n}_durable_creates"),
            measurement: format!(
                "{label}: pending requests in PostgreSQL after SIGKILL to every replica = creates answered 201"
            ),
            greenlight: cell(&|r| {
                durable_cell(r.pending_in_db, r.creates.ok(201), r.creates.ok(0)).0
            }),
            peer: Cell::na("no API"),
            target: "equal".to_owned(),
            met: measured
                .map(|r| durable_cell(r.pending_in_db, r.creates.ok(201), r.creates.ok(0)).1),
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn a_timed_out_request_may_be_stored_but_an_answered_one_must_be() {
        assert_eq!(durable_cell(10, 10, 0).0.text, "10 = 10");
        assert!(durable_cell(10, 10, 0).1);
        assert!(!durable_cell(9, 10, 0).1, "an acked decision was lost");
        assert!(!durable_cell(11, 10, 0).1, "a row nobody asked for");
        let (cell, met) = durable_cell(1_012, 1_000, 30);
        assert_eq!(
            cell.text,
            "1,012 = 1,000 + 12 of the 30 not acked (timed out or refused)"
        );
        assert!(met);
        assert!(!durable_cell(1_031, 1_000, 30).1);
    }

    #[test]
    fn skipped_postgres_rows_still_stand_in_the_table_and_only_two_replicas_have_targets() {
        let sizes = Options::parse_from(["greenlight-bench", "--skip-postgres"]).sizes();
        let rows = pg_rows(&sizes, &[], true);
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        for n in [1, 2] {
            for what in [
                "decisions_closed",
                "ack_closed",
                "ack_open_1000",
                "creates",
                "durable_clicks",
                "durable_creates",
            ] {
                assert!(ids.contains(&format!("pg{n}_{what}").as_str()), "{ids:?}");
            }
        }
        assert!(
            rows.iter()
                .all(|r| r.greenlight.values.is_none() && r.met.is_none())
        );
        let targets: Vec<(&str, &str)> = rows
            .iter()
            .filter(|r| r.target != "-" && r.target != "equal")
            .map(|r| (r.id.as_str(), r.target.as_str()))
            .collect();
        assert_eq!(
            targets,
            [
                ("pg2_decisions_closed", ">= 5,000/s"),
                ("pg2_ack_open_1000", "p99 < 50 ms")
            ]
        );
    }
}
