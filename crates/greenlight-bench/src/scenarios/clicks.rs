//! greenlight's click instance on SQLite: its click runs, the ceiling, then a SIGKILL and the
//! count of decided requests.

use std::time::Duration;

use super::click_runs::{ClickRuns, ClickSetup, Phases, click_job, click_pool, click_runs};
use super::cpu::CpuSplit;
use super::instance::instance;
use super::{Ctx, DELIVERY, DEPLOY, QUIET, count_for, settle, step};
use crate::db::Location;
use crate::load::{self, Job, RunResult, Target};
use crate::report::secs;
use crate::{Error, Result};

/// The ceiling run's button: a block action greenlight ignores (neither Approve nor Deny).
const CEILING_ACTION: &str = "bench.ignored";

/// Results of greenlight's click instance.
pub(crate) struct GreenlightClicks {
    pub(crate) idle_rss: Option<u64>,
    pub(crate) peak_rss: Option<u64>,
    pub(crate) runs: ClickRuns,
    /// Signed clicks on a button greenlight ignores: the server's ceiling for a click.
    pub(crate) ceiling: Option<RunResult>,
    pub(crate) decided: i64,
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

pub(super) async fn greenlight_clicks(ctx: &mut Ctx<'_>) -> Result<GreenlightClicks> {
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
