//! `ask`: create a request over the API and, with `--wait`, block until it is decided.

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use super::{client_exit, exit, fail, outcome};
use crate::client::{ClientError, GreenlightClient};
use crate::domain::{DurationSpec, RequestId};

pub(super) const ASK_AFTER: &str = "\
Exit codes (with --wait):
  0  approved
  1  denied
  2  usage error (bad flags, or the server refused the input)
  3  expired or cancelled
  4  still pending when --timeout ran out
  5  any other failure (server unreachable, bad key)

Environment:
  GREENLIGHT_URL    the greenlight server [default: http://127.0.0.1:8080]
  GREENLIGHT_TOKEN  an API key with the request and read scopes (required)

Example:
  greenlight ask --workflow deploy --title \"Deploy api v1.2\" --param version=1.2 --wait";

#[derive(Debug, Args)]
pub(super) struct AskArgs {
    /// The workflow to ask in (may be left out when only one is configured).
    #[arg(long)]
    workflow: Option<String>,
    /// What is being approved, shown as the message's heading (up to 200 characters).
    #[arg(long)]
    title: String,
    /// More text under the title (mrkdwn-escaped; up to 10,000 characters).
    #[arg(long)]
    details: Option<String>,
    /// key=value; repeatable. Numbers and true/false become JSON numbers and booleans.
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, serde_json::Value)>,
    /// Who asks (a Slack user id like U012ABC shows as a mention).
    #[arg(long)]
    requester: Option<String>,
    /// When the request expires, e.g. 30m.
    #[arg(long)]
    expires_in: Option<DurationSpec>,
    /// Makes retries of this command return the same request.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Wait for the decision and exit with it.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this long (exit 4).
    #[arg(long, default_value = "30m")]
    timeout: DurationSpec,
    /// Print the request as JSON instead of the id and outcome.
    #[arg(long)]
    json: bool,
}

fn parse_param(s: &str) -> Result<(String, serde_json::Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    // Only literals that print back exactly become JSON: "1.10" stays a string.
    let value = match serde_json::from_str::<serde_json::Value>(v) {
        Ok(j @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)))
            if *j.to_string() == *v =>
        {
            j
        }
        _ => serde_json::Value::String(v.to_owned()),
    };
    Ok((k.to_owned(), value))
}

pub(super) async fn ask(args: AskArgs) -> ExitCode {
    let client = match GreenlightClient::from_env() {
        Ok(c) => c,
        Err(e) => return client_exit(e),
    };
    let mut body = serde_json::json!({
        "title": args.title,
        "params": args.params.into_iter().collect::<serde_json::Map<_, _>>(),
    });
    for (k, v) in [
        ("workflow", args.workflow),
        ("details", args.details),
        ("requester", args.requester),
        ("idempotency_key", args.idempotency_key),
        ("expires_in", args.expires_in.map(|d| d.to_string())),
    ] {
        if let Some(v) = v {
            body[k] = v.into();
        }
    }
    let mut request = match client.create(&body).await {
        Ok(r) => r,
        Err(e) => return client_exit(e),
    };
    let Some(id) = request["id"]
        .as_str()
        .and_then(|s| s.parse::<RequestId>().ok())
    else {
        return fail("the server answered without a request id");
    };
    if !args.json {
        println!("{id}");
    }
    if args.wait {
        let deadline = Instant::now() + args.timeout.as_duration();
        while request["status"] == "pending" {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match client.get(&id, Some(left)).await {
                Ok(r) => request = r,
                Err(e @ ClientError::Unreachable(..)) => {
                    // The server may be restarting; the request is durable, so keep waiting.
                    eprintln!("warning: {e}; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1).min(left)).await;
                }
                Err(e) => return client_exit(e),
            }
        }
    }
    let status = request["status"].as_str().unwrap_or("unknown").to_owned();
    if args.json {
        println!("{request}");
    } else if args.wait {
        println!("{}", outcome(&request));
    }
    if !args.wait {
        return ExitCode::SUCCESS;
    }
    ExitCode::from(match status.as_str() {
        "approved" => exit::APPROVED,
        "denied" => exit::DENIED,
        "expired" | "cancelled" => exit::EXPIRED_OR_CANCELLED,
        "pending" => exit::STILL_PENDING,
        _ => exit::FAILURE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_keep_strings_that_only_look_like_numbers() {
        assert_eq!(parse_param("amount=120").unwrap().1, serde_json::json!(120));
        assert_eq!(parse_param("ok=true").unwrap().1, serde_json::json!(true));
        assert_eq!(
            parse_param("version=1.10").unwrap().1,
            serde_json::json!("1.10")
        );
        assert_eq!(parse_param("zip=007").unwrap().1, serde_json::json!("007"));
        assert_eq!(
            parse_param("q=a=b").unwrap(),
            ("q".into(), serde_json::json!("a=b"))
        );
        assert!(parse_param("novalue").is_err());
        assert!(parse_param("=x").is_err());
    }
}
