//! Integration tests: the real server on loopback, a real SQLite file, the sandbox as Slack.

mod action_hooks;
mod api;
mod approval;
mod audit_chain;
mod cli;
mod copy_db;
mod crash;
mod crash_outbox;
mod delivery;
mod deny_reason;
mod expiry;
mod helpers;
mod home;
mod limits;
mod m2m;
mod mcp;
mod ownership;
mod policies;
mod properties;
mod receiver;
mod replicas;
mod rules;
mod slack_security;
mod socket_mode;
mod spoofing;
mod store;
