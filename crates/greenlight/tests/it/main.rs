//! Integration tests: the real server on loopback, a real SQLite file, the sandbox as Slack.

mod api;
mod approval;
mod cli;
mod crash;
mod helpers;
mod slack_security;
