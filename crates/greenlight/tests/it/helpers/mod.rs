//! The integration tests' harness: the server in-process or as a process, databases, Slack, time.

mod app;
mod clock;
mod db;
pub mod github;
pub mod oidc;
mod process;
mod slack;

use std::time::Duration;

pub use app::*;
pub use clock::*;
pub use db::*;
pub use process::*;
pub use slack::*;

/// How long the tests wait for something that should happen soon.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn init() {
    greenlight::install_crypto_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
