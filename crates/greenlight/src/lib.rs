//! greenlight: a self-hosted approval gateway. Machines ask over HTTP or the CLI, people decide
//! with buttons in Slack, and the machine is told, exactly once and durably.
#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod http;
pub mod mcp;
pub mod policy;
pub mod rules;
pub mod service;
pub mod slack;
pub mod store;

/// rustls needs a process-wide crypto provider; greenlight uses ring everywhere.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
