//! The peer's click runs: the seed Flask bot, clicked on messages posted for it.

use std::sync::Arc;

use greenlight_sandbox::SandboxHandle;
use serde_json::{Value, json};

use super::click_runs::{ClickRuns, ClickSetup, Phases, click_job, click_runs};
use super::{Ctx, count_for, quiet, step};
use crate::load::{self, Target};
use crate::procs::Server;
use crate::report::thousands;
use crate::{Error, Result};

/// The peer's approve button (its other ids make it answer "Unknown action", still updating).
const PEER_APPROVE: &str = "approve_button";
/// The peer's messages live in their own channel, apart from greenlight's.
const PEER_CHANNEL: &str = "C0OPS";

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

pub(crate) struct PeerResults {
    pub(crate) idle_rss: Option<u64>,
    pub(crate) peak_rss: Option<u64>,
    pub(crate) runs: ClickRuns,
}

pub(super) async fn peer_clicks(ctx: &mut Ctx<'_>, peer: &Server) -> Result<PeerResults> {
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
