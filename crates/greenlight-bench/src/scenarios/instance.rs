//! A greenlight instance under test: its config, database, servers (one, or replicas on one
//! PostgreSQL database) and admin key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::Ctx;
use crate::Result;
use crate::db::{Db, Location};
use crate::load::Job;
use crate::procs::{GreenlightEnv, Server};
use crate::report::thousands;

/// A greenlight instance: one server on a SQLite file, or replicas on one PostgreSQL
/// database; its key, and a connection to its database.
pub(super) struct Instance {
    pub(super) env: GreenlightEnv,
    pub(super) location: Location,
    pub(super) servers: Vec<Server>,
    pub(super) key: String,
    pub(super) db: Db,
}

impl Instance {
    /// `path` on every replica, in order: the load generator takes them in turn.
    pub(super) fn urls(&self, path: &str) -> Arc<Vec<String>> {
        Arc::new(
            self.servers
                .iter()
                .map(|s| format!("{}{path}", s.base()))
                .collect(),
        )
    }

    /// Creates spread over the replicas.
    pub(super) fn creates(&self, make: impl Fn(usize) -> Value + Send + Sync + 'static) -> Job {
        Job::Create {
            urls: self.urls("/v1/requests"),
            key: self.key.clone(),
            make: Arc::new(make),
        }
    }

    /// SIGKILL to every replica, then a fresh connection to what is stored.
    pub(super) async fn kill_and_reopen(&mut self) -> Result<Db> {
        for server in &mut self.servers {
            server.kill9().await?;
        }
        self.db.close().await;
        Db::open(&self.location).await
    }

    /// Warnings and errors in the replicas' logs (they run with RUST_LOG=warn), for the notes.
    pub(super) fn log_note(&self, who: &str) -> Option<String> {
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
pub(super) async fn instance(
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

pub(super) fn greenlight_env(
    ctx: &Ctx<'_>,
    dir: &Path,
    config: PathBuf,
    db_url: String,
) -> GreenlightEnv {
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
