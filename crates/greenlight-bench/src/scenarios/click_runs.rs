//! The click runs both systems go through (closed loop, open loops, click-to-update, slow
//! Slack), and the targets they click.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use greenlight_sandbox::{SandboxEvent, SandboxHandle};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::cpu::{CpuMark, CpuSplit};
use super::instance::Instance;
use super::{CLICKER, Ctx, GREENLIGHT_APPROVE, count_for, lock, settle, step};
use crate::db::Db;
use crate::load::{self, Job, Latencies, RunResult, Target};
use crate::report::{ms, rate, secs, thousands};
use crate::{Error, Result, Sizes};

/// How long to wait for the last chat.update of the click-to-update run.
const UPDATE_WAIT: Duration = Duration::from_secs(15);

/// Signed clicks on a target list, POSTed to `urls` in turn.
pub(super) fn click_job(urls: Arc<Vec<String>>, secret: String) -> impl Fn(Vec<Target>) -> Job {
    move |targets| Job::clicks(urls.clone(), secret.clone(), CLICKER, &targets)
}

/// The click runs of one system, in order.
pub(crate) struct ClickRuns {
    pub(crate) closed: RunResult,
    /// Where the CPU went over the closed loop, when asked for.
    pub(super) closed_cpu: Option<CpuSplit>,
    /// The same from the closed loop's start until its outbox was delivered, and how long
    /// that took after the last answer: the message updates the loop's clicks set off.
    pub(super) drained_cpu: Option<(CpuSplit, Duration)>,
    /// Each open loop's rate and run (`None`: not run at that rate).
    pub(crate) open: Vec<(f64, Option<RunResult>)>,
    pub(crate) update: UpdateRun,
    pub(crate) slow: RunResult,
}

impl ClickRuns {
    /// Clicks sent in these runs that were not answered 200 (timed out, or an error).
    pub(crate) fn not_acked(&self) -> usize {
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

    pub(crate) fn acks(&self) -> usize {
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

pub(crate) struct UpdateRun {
    pub(crate) run: RunResult,
    pub(crate) latencies: Latencies,
    pub(crate) missing: usize,
}

/// Target lists for each click run, cut from one supply.
pub(super) struct Phases {
    pub(super) closed: Vec<Target>,
    open: Vec<Vec<Target>>,
    update: Vec<Target>,
    slow: Vec<Target>,
}

impl Phases {
    pub(super) fn cut(
        sizes: &Sizes,
        closed: usize,
        mut supply: impl Iterator<Item = Target>,
    ) -> Self {
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

    pub(super) fn after_closed(sizes: &Sizes) -> usize {
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
pub(super) async fn closed_clicks(
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
pub(super) async fn open_clicks(
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
pub(super) struct ClickSetup<'a> {
    /// Builds the click job for a target list.
    pub(super) job: Box<dyn Fn(Vec<Target>) -> Job + 'a>,
    /// greenlight's database, to wait for its deliveries between runs.
    pub(super) outbox: Option<&'a Db>,
    /// The instance whose CPU to read over the closed loop.
    pub(super) cpu_of: Option<&'a Instance>,
    /// Open loops above this rate are not run.
    pub(super) max_rate: f64,
}

/// Runs the four click runs; between runs the system comes to rest.
pub(super) async fn click_runs(
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
                    let mut seen = lock(&record);
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
            lock(&sent).insert(i, at);
        })
    };
    let run = load::open_loop(job, s.update_rate, s.update_duration, Some(on_sent)).await?;
    let deadline = Instant::now() + UPDATE_WAIT;
    while Instant::now() < deadline {
        if lock(&seen).len() >= run.samples.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    listener.abort();
    let seen = lock(&seen).clone();
    let sent = lock(&sent).clone();
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

/// Pre-creates up to `total` pending requests over the API (spread over the replicas), for at
/// most `budget` (then fewer: the closed loop stops early when its pool runs out), waits until
/// every one is posted to Slack, and returns them as click targets, oldest first.
pub(super) async fn click_pool(
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
