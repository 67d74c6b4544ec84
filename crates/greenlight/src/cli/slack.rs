//! `slack-manifest`: the Slack app greenlight needs, ready to paste or open as a link.

use std::process::ExitCode;

use clap::Args;

use crate::slack::manifest::{BaseUrl, Manifest, Transport};

pub(super) const MANIFEST_AFTER: &str = "\
The manifest goes to stdout (YAML, with why each scope is there; or JSON with --json); the link
that creates the app from it, and what to do next, go to stderr. Nothing is read or sent: the
command needs no server, token or config.

Examples:
  greenlight slack-manifest --socket-mode
  greenlight slack-manifest --request-url https://greenlight.example.com > manifest.yaml";

#[derive(Debug, Args)]
pub(super) struct ManifestArgs {
    /// Slack sends clicks, events and commands over a WebSocket greenlight opens (the default):
    /// no public URL, an app-level token instead.
    #[arg(long, conflicts_with = "request_url")]
    socket_mode: bool,
    /// greenlight's public https base URL: Slack POSTs to URL/slack/interactions,
    /// URL/slack/events and URL/slack/commands.
    #[arg(long, value_name = "URL")]
    request_url: Option<BaseUrl>,
    /// Print the manifest as JSON instead of YAML.
    #[arg(long)]
    json: bool,
}

pub(super) fn slack_manifest(args: ManifestArgs) -> ExitCode {
    let socket_mode = args.request_url.is_none();
    let transport = args
        .request_url
        .map_or(Transport::SocketMode, Transport::RequestUrl);
    let manifest = Manifest::new(transport);
    if args.json {
        let pretty = serde_json::to_string_pretty(&manifest.to_json()).unwrap_or_default();
        println!("{pretty}");
    } else {
        print!("{}", manifest.to_yaml());
    }
    let credentials = if socket_mode {
        "  3. SLACK_APP_TOKEN: Basic Information > App-Level Tokens > Generate, with the\n\
         \x20    connections:write scope (xapp-...)."
    } else {
        "  3. SLACK_SIGNING_SECRET: Basic Information > App Credentials > Signing Secret.\n\
         \x20    Slack checks the events URL with a signed challenge: once greenlight serves there,\n\
         \x20    press Retry (Event Subscriptions) if Slack could not reach it before."
    };
    eprintln!(
        "Create the app from this manifest (pick a workspace, review, Create):\n  {}\n\
         Then:\n  \
         1. Install it to the workspace (OAuth & Permissions > Install to Workspace).\n  \
         2. SLACK_BOT_TOKEN: the Bot User OAuth Token on that page (xoxb-...).\n\
         {credentials}\n  \
         4. greenlight serve",
        manifest.create_app_link()
    );
    ExitCode::SUCCESS
}
