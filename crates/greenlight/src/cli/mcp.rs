//! `greenlight mcp`: the MCP tools over stdio, a client of the server's API (like `ask`).

use std::process::ExitCode;

use clap::Args;

use super::{exit, fail};
use crate::domain::DurationSpec;

#[derive(Debug, Args)]
pub(super) struct McpArgs {
    /// The workflow permission_prompt asks in [default: the server's [mcp]
    /// permission_workflow, else its default workflow].
    #[arg(long, env = "GREENLIGHT_MCP_PERMISSION_WORKFLOW")]
    permission_workflow: Option<String>,
    /// How long permission_prompt waits for a person before it answers deny [default: the
    /// server's [mcp] permission_timeout, 10m unless set].
    #[arg(long, env = "GREENLIGHT_MCP_PERMISSION_TIMEOUT")]
    permission_timeout: Option<DurationSpec>,
}

pub(super) const MCP_AFTER: &str = "\
Speaks MCP on stdin/stdout (logs go to stderr). Tools: request_approval, get_approval,
cancel_approval, list_pending_approvals, permission_prompt.

Environment:
  GREENLIGHT_URL    the greenlight server [default: http://127.0.0.1:8080]
  GREENLIGHT_TOKEN  an API key with the request and read scopes (required)

Example (Claude Code):
  claude mcp add greenlight --env GREENLIGHT_URL=https://greenlight.example.com \\
    --env GREENLIGHT_TOKEN=gl_... -- greenlight mcp
  claude -p --permission-prompt-tool mcp__greenlight__permission_prompt \"...\"";

/// Serves the tools until the agent closes stdin.
pub(super) async fn mcp(args: McpArgs) -> ExitCode {
    use rmcp::ServiceExt;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let base = env("GREENLIGHT_URL").unwrap_or_else(|| crate::client::DEFAULT_URL.to_owned());
    let Some(token) = env("GREENLIGHT_TOKEN") else {
        eprintln!(
            "error: GREENLIGHT_TOKEN is not set (create one with `greenlight keys create --scopes request,read`)"
        );
        return ExitCode::from(exit::USAGE);
    };
    let settings = crate::mcp::PermissionSettings {
        workflow: args.permission_workflow,
        timeout: args.permission_timeout.map(DurationSpec::as_duration),
    };
    let backend = match crate::mcp::OverApi::new(&base, &token, settings) {
        Ok(b) => b,
        Err(e) => return fail(format!("cannot build the HTTP client: {e}")),
    };
    let server = crate::mcp::GreenlightMcp::new(std::sync::Arc::new(backend));
    match server.serve(rmcp::transport::stdio()).await {
        Ok(running) => match running.waiting().await {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(format!("the MCP session failed: {e}")),
        },
        Err(e) => fail(format!("cannot start the MCP session: {e}")),
    }
}
