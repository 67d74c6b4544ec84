//! `standing list | revoke`: standing approvals ("Approve for…") over the API.

use std::process::ExitCode;

use clap::Subcommand;

use super::client_exit;
use crate::client::GreenlightClient;

pub(super) const STANDING_AFTER: &str = "\
Exit codes:
  0  done
  2  usage error, or the server refused the input (no live standing approval with that id)
  5  any other failure (server unreachable, bad key, a scope the key lacks)

Environment:
  GREENLIGHT_URL    the greenlight server [default: http://127.0.0.1:8080]
  GREENLIGHT_TOKEN  an API key (required): read for list, admin for revoke

Examples:
  greenlight standing list
  greenlight standing revoke std_01JQ4Z5X8M2T6V9W3Y7B1C0D4E";

#[derive(Debug, Subcommand)]
pub(super) enum StandingCommand {
    /// List the live standing approvals: who granted them, for which caller and params, until
    /// when (or the API's JSON with --json).
    #[command(after_help = STANDING_AFTER)]
    List {
        /// Print the API's JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// End a standing approval at once (admin scope).
    #[command(after_help = STANDING_AFTER)]
    Revoke {
        /// The standing approval's id (std_...).
        id: String,
    },
}

pub(super) async fn standing(cmd: StandingCommand) -> ExitCode {
    let client = match GreenlightClient::from_env() {
        Ok(c) => c,
        Err(e) => return client_exit(e),
    };
    match cmd {
        StandingCommand::List { json } => match client.standing().await {
            Ok(answer) if json => {
                println!("{answer}");
                ExitCode::SUCCESS
            }
            Ok(answer) => {
                let list = answer["standing"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no live standing approvals");
                }
                for s in list {
                    let text = |k: &str| super::requests::clean(s[k].as_str().unwrap_or("-"));
                    println!(
                        "{}  {}  granted by {} to {}  match {}  until {}",
                        text("id"),
                        text("workflow"),
                        text("granted_by"),
                        text("caller_name"),
                        super::requests::clean(&s["match"].to_string()),
                        text("expires_at"),
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => client_exit(e),
        },
        StandingCommand::Revoke { id } => match client.revoke_standing(&id).await {
            Ok(answer) => {
                println!(
                    "revoked {} (granted by {})",
                    super::requests::clean(answer["id"].as_str().unwrap_or(&id)),
                    super::requests::clean(answer["granted_by"].as_str().unwrap_or("-"))
                );
                ExitCode::SUCCESS
            }
            Err(e) => client_exit(e),
        },
    }
}
