//! Pure policy below the config: the action hook templates an operator writes and the signing
//! of callbacks (Standard Webhooks). No I/O; it imports only the domain. The config loader
//! parses them, the store keeps them in outbox jobs, and delivery renders and sends them.

pub mod github;
pub mod hooks;
pub mod webhook;
