//! Integration tests: the real server on loopback, a real SQLite file, the sandbox as Slack.

mod action_hooks;
mod api;
mod approval;
mod audit_chain;
mod cli;
mod cli_requests;
mod copy_db;
mod crash;
mod crash_outbox;
mod delivery;
mod deny_reason;
mod expiry;
mod helpers;
mod limits;
mod ownership;
mod policies;
mod properties;
mod receiver;
mod replicas;
mod rules;
mod slack_manifest;
mod slack_security;
mod socket_mode;
mod spoofing;
mod store;
