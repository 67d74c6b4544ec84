//! greenlight's create runs on SQLite (plain, and auto-approved by a rule with each notify
//! mode), then a SIGKILL and the count of stored requests.

use std::time::Duration;

use serde_json::{Value, json};

use super::instance::{Instance, greenlight_env, instance};
use super::{Ctx, DELIVERY, DEPLOY, settle, step};
use crate::Result;
use crate::db::Location;
use crate::load::{self, RunResult};
use crate::report::secs;

const PAYMENTS: &str = "\n[[workflow]]\nname = \"payments\"\nchannel = \"#payments\"\n\n\
    [[workflow.rule]]\nname = \"small-payment\"\nwhen = \"params.amount < 500\"\ndecision = \"approve\"\n";
/// The same rule, its decisions told in one digest message per channel and window.
const REFUNDS: &str = "\n[[workflow]]\nname = \"refunds\"\nchannel = \"#payments\"\n\
    notify = \"digest\"\n\n[[workflow.rule]]\nname = \"small-refund\"\n\
    when = \"params.amount < 500\"\ndecision = \"approve\"\n";

pub(crate) struct Creates {
    pub(crate) plain: RunResult,
    /// The rule run (`notify = "message"`) and how many answers said `approved`; `Err` says
    /// why it did not run.
    pub(crate) rule: std::result::Result<(RunResult, usize), String>,
    /// The same with `notify = "digest"`.
    pub(crate) digest: std::result::Result<(RunResult, usize), String>,
    pub(crate) pending_in_db: i64,
    pub(crate) approved_in_db: i64,
}

/// The plain create run: a closed loop of `POST /v1/requests` spread over the replicas, then
/// the outbox drained (every request posted).
pub(super) async fn plain_creates(
    ctx: &mut Ctx<'_>,
    who: &str,
    gl: &Instance,
) -> Result<RunResult> {
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

pub(super) async fn greenlight_creates(ctx: &mut Ctx<'_>) -> Result<Creates> {
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
