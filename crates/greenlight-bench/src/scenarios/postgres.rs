//! greenlight as replicas on one PostgreSQL database: click and create runs, each on a fresh
//! database, with their durability counts.

use std::time::Duration;

use super::click_runs::{click_job, click_pool, closed_clicks, open_clicks};
use super::cpu::{CpuMark, CpuSplit};
use super::creates::plain_creates;
use super::instance::instance;
use super::{Ctx, DELIVERY, DEPLOY, count_for, settle, step};
use crate::Result;
use crate::db::Location;
use crate::load::RunResult;

/// Longest pre-creation of a PostgreSQL click pool: creates there run at a few hundred a
/// second on a busy 2-core machine, and the closed loop stops early when its pool runs out.
const PG_POOL_BUDGET: Duration = Duration::from_secs(60);

/// The runs of greenlight as `replicas` replicas on one PostgreSQL database.
pub(crate) struct PgRun {
    pub(crate) replicas: usize,
    pub(crate) closed: RunResult,
    /// CPU over the closed loop (its outbox drain not included).
    pub(crate) closed_cpu: CpuSplit,
    /// CPU over the closed loop and the drain of its outbox (the message updates).
    pub(crate) drained_cpu: CpuSplit,
    pub(crate) open: RunResult,
    pub(crate) decided: i64,
    pub(crate) creates: RunResult,
    pub(crate) pending_in_db: i64,
}

impl PgRun {
    /// CPU time of PostgreSQL's backends serving the run's database per click acked in the
    /// closed loop, the outbox drain after it included (each decision's message update).
    pub(crate) fn pg_cpu_per_decision(&self) -> Option<Duration> {
        let acks = u32::try_from(self.closed.ok(200)).ok().filter(|n| *n > 0)?;
        Some(self.drained_cpu.pg_ours / acks)
    }

    pub(crate) fn acks(&self) -> usize {
        self.closed.ok(200) + self.open.ok(200)
    }

    /// Clicks that got no answer within the request timeout: the server may have committed
    /// them or not, so the decided rows may exceed the acks by up to this many.
    pub(crate) fn clicks_unanswered(&self) -> usize {
        self.closed.ok(0) + self.open.ok(0)
    }
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

pub(super) async fn postgres_runs(ctx: &mut Ctx<'_>, replicas: usize) -> Result<PgRun> {
    let who = format!(
        "greenlight (PostgreSQL, {replicas} replica{})",
        if replicas == 1 { "" } else { "s" }
    );
    let name = format!("pg{replicas}");
    let config = format!("{DELIVERY}{DEPLOY}");
    let rate = ctx.sizes.pg_rate;
    let (closed, closed_cpu, drained_cpu, open, decided) =
        on_fresh_postgres(ctx, async |ctx, location| {
            step(format!(
                "{who}: starting (clicks) on {}",
                location.describe()
            ));
            let mut gl =
                instance(ctx, &format!("{name}-clicks"), &config, location, replicas).await?;
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
            let drained_cpu = before.until(&CpuMark::now(&gl));
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
            Ok((closed, closed_cpu, drained_cpu, open, decided))
        })
        .await?;
    ctx.notes.push(format!(
        "{who}, CPU over the closed click loop: {}",
        closed_cpu.describe()
    ));
    ctx.notes.push(format!(
        "{who}, CPU over the closed click loop and the drain of its outbox (every message updated): {}",
        drained_cpu.describe()
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
        drained_cpu,
        open,
        decided,
        creates,
        pending_in_db,
    })
}
