//! The Slack adapter: request signatures, interaction payloads, message rendering and the Web
//! API client. The domain never sees a Slack type.
//! Imports the store's and the domain's types only; the service and delivery use it.

mod client;
pub mod commands;
pub mod directory;
pub mod home;
pub mod interaction;
pub mod manifest;
pub mod mrkdwn;
pub mod render;
pub mod signature;
pub mod socket_mode;

pub use client::{Installation, SlackApi, SlackCallError, Tag};
