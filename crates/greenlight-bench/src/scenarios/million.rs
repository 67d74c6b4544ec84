//! The large database: start-up and memory with a million stored requests, seeded from two
//! templates the server wrote.

use std::time::Duration;

use serde_json::{Value, json};

use super::click_runs::click_job;
use super::instance::instance;
use super::{Ctx, DELIVERY, DEPLOY, GREENLIGHT_APPROVE, settle, step};
use crate::db::{self, Location};
use crate::load::{self, Target};
use crate::procs::Server;
use crate::report::thousands;
use crate::{Error, Result};

pub(crate) struct Million {
    pub(crate) seeded: db::Seeded,
    pub(crate) startup: Duration,
    pub(crate) rss_started: Option<u64>,
    pub(crate) rss_after_reads: Option<u64>,
}

pub(super) async fn greenlight_million(ctx: &mut Ctx<'_>) -> Result<Million> {
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
