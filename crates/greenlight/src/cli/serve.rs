//! `serve`, `dev` and `sandbox`: the long-running processes, stopped by Ctrl-C or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::fail;
use crate::app::Application;
use crate::config::Config;
use crate::domain::SystemClock;

pub(super) const SERVE_ENV: &str = "\
Environment (the config file may set the same; the environment wins):
  GREENLIGHT_CONFIG        config file [default: ./greenlight.toml if present]
  GREENLIGHT_DATABASE_URL  sqlite:PATH or postgres://USER@HOST:5432/DB [default: sqlite:greenlight.db]
  GREENLIGHT_LISTEN        address to bind [default: 127.0.0.1:8080]
  SLACK_BOT_TOKEN          bot token, xoxb-... (required)
  SLACK_SIGNING_SECRET     verifies Slack's HTTP requests (required unless SLACK_APP_TOKEN)
  SLACK_APP_TOKEN          xapp-...; when set, Socket Mode is used
  SLACK_API_URL            Slack Web API base URL [default: https://slack.com/api/]
  GREENLIGHT_WEBHOOK_SECRET  whsec_... that signs callbacks [default: generated, stored]
  RUST_LOG                 log filter, e.g. debug or greenlight=debug [default: info]

Routes: /v1/... (API), /slack/interactions and /slack/events (Slack), /healthz, /readyz, /metrics.";

pub(super) const DEV_ENV: &str = "\
Ports: the API on 127.0.0.1:8080, the sandbox page and its Slack Web API on 127.0.0.1:8090.

Environment:
  GREENLIGHT_LISTEN          API address [default: 127.0.0.1:8080]
  GREENLIGHT_SANDBOX_LISTEN  sandbox address [default: 127.0.0.1:8090]
  GREENLIGHT_DATABASE_URL    sqlite:PATH [default: sqlite:greenlight.db]
  GREENLIGHT_CONFIG          workflows [default: ./greenlight.toml if present, else a `deploy` workflow posting to #deploy]
  GREENLIGHT_TOKEN           API key to register and print, kept across restarts [default: a new one each start]
  RUST_LOG                   log filter [default: info]";

pub(super) const SANDBOX_ENV: &str = "\
Environment:
  GREENLIGHT_SANDBOX_LISTEN             address [default: 127.0.0.1:8090]
  GREENLIGHT_SANDBOX_INTERACTIVITY_URL  where clicks are POSTed when no socket is open [default: http://127.0.0.1:8080/slack/interactions]
  SLACK_BOT_TOKEN       bot token it accepts [default: xoxb-sandbox-bot-token]
  SLACK_APP_TOKEN       app token for Socket Mode [default: xapp-1-sandbox-app-token]
  SLACK_SIGNING_SECRET  secret it signs clicks with [default: sandbox-signing-secret]";

pub(super) async fn serve() -> ExitCode {
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let app = match Application::build(&config, Arc::new(SystemClock)).await {
        Ok(app) => app,
        Err(e) => return fail(e),
    };
    tracing::info!(addr = %app.local_addr(), workflows = config.workflows.len(), "greenlight listening");
    match app.run_until_stopped(stop_on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

pub(super) async fn dev() -> ExitCode {
    super::dev::dev(stop_on_signal()).await
}

pub(super) async fn sandbox() -> ExitCode {
    super::dev::sandbox(stop_on_signal()).await
}

/// A token cancelled on Ctrl-C or SIGTERM.
fn stop_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        stop.cancel();
    });
    token
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
