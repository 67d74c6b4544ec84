//! Wiring: store, service, Slack client, delivery worker and HTTP server, run side by side and
//! stopped together by one cancellation token.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::delivery::Worker;
use crate::domain::Clock;
use crate::http::{self, AppState};
use crate::interactions;
use crate::service::Service;
use crate::slack::SlackApi;
use crate::slack::socket_mode::{Handler, SocketMode};
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

/// One Prometheus recorder per process, shared by every server it runs (tests run several).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
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
}

impl Application {
    /// Opens the store (running migrations), binds the listener and prepares the worker.
    pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, AppError> {
        config.check_serve()?;
        let store = store::connect(&config.database_url).await?;
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
            .with_slack(slack.clone()),
        );
        let secret = crate::delivery::webhook_secret(config, store.as_ref()).await?;
        let settings = crate::delivery::Settings::from_config(config, secret)
            .map_err(|e| AppError::Outbound(e.to_string()))?;
        let worker = Worker::new(store, slack.clone(), clock, wake, settings);
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
                signing_secret: config.slack.signing_secret.clone(),
                metrics: metrics_handle(),
            },
            worker,
            slack,
            app_token: config
                .slack
                .app_token
                .as_ref()
                .map(|t| t.expose().to_owned()),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), AppError> {
        let socket_mode = match &self.app_token {
            Some(token) => {
                let service = self.state.service.clone();
                let handler: Handler = Arc::new(move |interaction| {
                    let service = service.clone();
                    Box::pin(async move {
                        match interactions::handle(&service, &interaction).await {
                            Ok(handled) => handled.ack_payload(),
                            Err(e) => {
                                tracing::error!(error = %e, "cannot handle a Socket Mode interaction");
                                None
                            }
                        }
                    })
                });
                let sm = SocketMode::start(&self.slack, token, handler)
                    .await
                    .map_err(|e| AppError::SocketMode(e.to_string()))?;
                tracing::info!("Socket Mode on: interactions arrive over WebSockets");
                Some(sm)
            }
            None => None,
        };
        let worker = tokio::spawn(self.worker.clone().run(shutdown.clone()));
        let scheduler = tokio::spawn(
            crate::scheduler::Scheduler::new(self.state.service.clone()).run(shutdown.clone()),
        );
        let store = self.state.service.store().clone();
        let app = http::router(self.state);
        let stop = shutdown.clone();
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .map_err(AppError::Serve);
        shutdown.cancel();
        if let Some(sm) = socket_mode {
            sm.shutdown().await;
        }
        let _ = worker.await;
        let _ = scheduler.await;
        store.close().await;
        served
    }
}
