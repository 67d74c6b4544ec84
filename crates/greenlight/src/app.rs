//! Wiring: store, service, Slack client, delivery worker and HTTP server, run side by side and
//! stopped together by one cancellation token.
//! Imports the adapters and everything below them; only the CLI (and the tests) import it.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::delivery::Worker;
use crate::domain::Clock;
use crate::http::{self, AppState};
use crate::service::Service;
use crate::service::{commands, home, interactions};
use crate::slack::SlackApi;
use crate::slack::socket_mode::{Handlers, SocketMode};
use crate::store::{self, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up the Slack client: {0}")]
    Slack(std::io::Error),
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error("cannot set up outgoing HTTP: {0}")]
    Outbound(String),
    #[error("cannot open Socket Mode: {0}")]
    SocketMode(String),
}

/// How often the recorder's histograms are drained into their summaries.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// One Prometheus recorder per process, shared by every server it runs (tests run several).
///
/// A recorder built this way keeps every histogram sample until something drains it: a scrape
/// of `/metrics`, or its upkeep. Without the upkeep a server nobody scrapes grows by about 20 MB
/// per million HTTP requests, so a thread of its own runs the upkeep for the life of the
/// process (a thread, not a task: it must not depend on which runtime first asked).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the metrics upkeep; histograms grow until /metrics is read");
            }
            handle
        })
        .clone()
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    worker: Arc<Worker>,
    slack: SlackApi,
    app_token: Option<String>,
    socket_connections: u32,
    shutdown_timeout: Duration,
    serve_limits: http::serve::ServeLimits,
    permissions: crate::mcp::PermissionSettings,
}

/// What each kind of Socket Mode envelope means: the same use cases as the HTTP endpoints.
fn socket_handlers(service: &Arc<Service>) -> Handlers {
    let (s1, s2, s3) = (service.clone(), service.clone(), service.clone());
    Handlers {
        interaction: Arc::new(move |interaction| {
            let service = s1.clone();
            Box::pin(async move {
                let handled =
                    async { interactions::handle(&service, interaction.gesture()?).await };
                match handled.await {
                    Ok(handled) => handled.ack_payload(),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot handle a Socket Mode interaction");
                        None
                    }
                }
            })
        }),
        event: Arc::new(move |callback| {
            let service = s2.clone();
            Box::pin(async move {
                if let Err(e) = home::on_event(&service, &callback).await {
                    tracing::error!(error = %e, "cannot handle a Socket Mode event");
                }
            })
        }),
        command: Arc::new(move |command| {
            let service = s3.clone();
            Box::pin(async move {
                commands::handle(&service, &command)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::error!(error = %e, "cannot answer a Socket Mode command");
                        crate::slack::commands::text_reply(
                            "greenlight could not answer that; please try again shortly.",
                        )
                    })
            })
        }),
    }
}

/// A name for this process on the leases it takes: unique per start, readable in the database.
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty() && h.len() <= 64)
        .unwrap_or_else(|| "greenlight".to_owned());
    format!("{host}-{}-{}", std::process::id(), ulid::Ulid::new())
}

impl Application {
    /// Opens the store (running migrations), binds the listener and prepares the worker.
    pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, AppError> {
        config.check_serve()?;
        let store = store::connect_with(&config.database_url, config.database.options()).await?;
        let bot_token = config
            .slack
            .bot_token
            .as_ref()
            .map(|t| t.expose().to_owned())
            .unwrap_or_default();
        let slack = SlackApi::new(&config.slack.api_url, &bot_token).map_err(AppError::Slack)?;
        let wake = Arc::new(Notify::new());
        let service = Arc::new(
            Service::new(
                store.clone(),
                clock.clone(),
                config.workflows.clone(),
                wake.clone(),
            )
            .with_allow_private_targets(config.delivery.allow_private_targets)
            .with_limits(
                config.limits.requests_per_minute_per_key,
                config.limits.max_waiters,
            )
            .with_signal_limits(config.limits.max_signals, config.limits.signal_retention)
            .with_alerts(
                config.alert_rules.clone(),
                config
                    .alerts
                    .channel
                    .as_ref()
                    .map(|c| c.as_str().to_owned()),
            )
            .with_allowed_teams(config.slack.allowed_teams.clone())
            .with_issuer(config.public_url.as_deref())
            .with_permissions(&config.mcp)
            .with_trust(
                crate::service::identity::Verifier::new(config.trust.clone())
                    .map_err(|e| AppError::Outbound(e.to_string()))?,
            )
            .with_github(config.github.clone())
            .with_slack(slack.clone()),
        );
        // The first start makes the key decision receipts are signed with.
        service.ensure_signing_key().await.map_err(|e| match e {
            crate::service::ServiceError::Store(e) => AppError::Store(e),
            other => AppError::Outbound(other.to_string()),
        })?;
        let secret = crate::delivery::webhook_secret(config, store.as_ref()).await?;
        let settings = crate::delivery::Settings::from_config(config, secret)
            .map_err(|e| AppError::Outbound(e.to_string()))?;
        let replica = replica_name();
        tracing::info!(replica = %replica, database = store.backend(), "store open");
        let worker = Worker::new(
            store,
            service.clone(),
            slack.clone(),
            clock,
            wake,
            settings,
            replica,
        );
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| AppError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(AppError::Serve)?;
        Ok(Self {
            listener,
            addr,
            state: AppState {
                service,
                signing_secret: config.slack.signing_secret.clone().map(Arc::new),
                github_webhook_secret: config
                    .github
                    .as_ref()
                    .map(|g| Arc::new(g.webhook_secret.clone())),
                metrics: metrics_handle(),
                request_timeout: config.limits.request_timeout.as_duration(),
                mcp_timeout: config.mcp.permission_timeout.as_duration() + Duration::from_secs(60),
            },
            permissions: crate::mcp::PermissionSettings {
                workflow: config
                    .mcp
                    .permission_workflow
                    .as_ref()
                    .map(|w| w.to_string()),
                timeout: Some(config.mcp.permission_timeout.as_duration()),
            },
            worker,
            slack,
            app_token: config
                .slack
                .app_token
                .as_ref()
                .map(|t| t.expose().to_owned()),
            socket_connections: config.slack.socket_connections,
            shutdown_timeout: config.shutdown_timeout.as_duration(),
            serve_limits: http::serve::ServeLimits {
                max_connections: config.limits.max_connections as usize,
                header_timeout: config.limits.header_timeout.as_duration(),
            },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown`; then stops accepting, answers the requests in flight (a click
    /// answered 200 is committed), lets deliveries in flight finish and frees the leases it
    /// holds, closes its sockets and the database, all within `shutdown_timeout`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), AppError> {
        let service = self.state.service.clone();
        let socket_mode = match &self.app_token {
            Some(token) => {
                let sm = SocketMode::start(
                    &self.slack,
                    token,
                    socket_handlers(&service),
                    self.socket_connections,
                )
                .await
                .map_err(|e| AppError::SocketMode(e.to_string()))?;
                tracing::info!(
                    connections = self.socket_connections,
                    "Socket Mode on: interactions, events and commands arrive over WebSockets"
                );
                Some(sm)
            }
            None => None,
        };
        // Which workspace may vote: asked now, in the background, so that a Slack slow or
        // down at start delays nothing; a click asks again while it is not known.
        {
            let service = service.clone();
            tokio::spawn(async move {
                if let Err(e) = service.learn_workspace().await {
                    tracing::warn!(error = %e, "cannot tell which Slack workspace greenlight is installed in; until it can (a click asks again), only clicks from [slack] allowed_teams count");
                }
            });
        }
        // Deliveries get most of the time; the rest is for sockets and the database.
        let grace = self.shutdown_timeout.mul_f64(0.8);
        let worker = tokio::spawn(self.worker.clone().run(shutdown.clone(), grace));
        let scheduler = tokio::spawn(
            crate::service::scheduler::Scheduler::new(service.clone()).run(shutdown.clone()),
        );
        let store = service.store().clone();
        let chainer = tokio::spawn(crate::service::audit::keep_chaining(
            store.clone(),
            shutdown.clone(),
        ));
        let alerts = tokio::spawn(crate::service::alerts::keep_checking(
            service.clone(),
            shutdown.clone(),
        ));
        let follower = {
            let (store, service, stop) = (store.clone(), service.clone(), shutdown.clone());
            let feed: store::DecisionFeed =
                Arc::new(move |id| service.decided_elsewhere(id.as_ref()));
            tokio::spawn(async move { store.follow_decisions(feed, stop).await })
        };
        {
            let (service, stop) = (service.clone(), shutdown.clone());
            tokio::spawn(async move {
                stop.cancelled().await;
                service.stop_waiting();
            });
        }
        let mcp = crate::mcp::mcp_service(service.clone(), self.permissions, shutdown.clone());
        let app = http::router(self.state, mcp);
        let serve = http::serve::serve(self.listener, app, self.serve_limits, shutdown.clone());
        let timeout = self.shutdown_timeout;
        tokio::select! {
            _ = serve => {}
            _ = async { shutdown.cancelled().await; tokio::time::sleep(timeout).await } => {
                tracing::warn!("requests still in flight after shutdown_timeout; closing them");
            }
        };
        shutdown.cancel();
        if let Some(sm) = socket_mode {
            let _ = tokio::time::timeout(Duration::from_secs(2), sm.shutdown()).await;
        }
        let _ = worker.await;
        let _ = scheduler.await;
        let _ = follower.await;
        let _ = chainer.await;
        let _ = alerts.await;
        store.close().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// The recorder keeps histogram samples until they are drained; without its upkeep thread a
    /// server nobody scrapes grows without bound (about 20 MB per million requests).
    #[test]
    fn the_metrics_recorder_runs_its_upkeep_on_a_thread_of_its_own() {
        let _handle = super::metrics_handle();
        let threads = || -> Vec<String> {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|name| name.trim().to_owned())
                .collect()
        };
        // A new thread takes its name once it runs: look again for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !threads().iter().any(|name| name == "metrics-upkeep") {
            assert!(
                std::time::Instant::now() < deadline,
                "threads: {:?}",
                threads()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
