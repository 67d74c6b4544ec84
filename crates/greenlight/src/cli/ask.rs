//! `ask`: create a request over the API and, with `--wait`, block until it is decided.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use super::{client_exit, exit, fail, outcome};
use crate::client::{ClientError, Credential, GreenlightClient};
use crate::domain::{DurationSpec, RequestId};

pub(super) const ASK_AFTER: &str = "\
Exit codes (with --wait):
  0  approved
  1  denied
  2  usage error (bad flags, or the server refused the input)
  3  expired or cancelled
  4  still pending when --timeout ran out
  5  any other failure (server unreachable, bad key)

A server that cannot be reached is tried again for 10 s to create the request (every ask
carries an idempotency key, its own unless --idempotency-key gives one, so a retry cannot ask
twice); --wait keeps waiting through a restart. At a terminal, --wait shows on stderr where it
waits and for how long; piped, it prints only the id and the outcome.

Environment:
  GREENLIGHT_URL    the greenlight server [default: http://127.0.0.1:8080]
  GREENLIGHT_TOKEN  an API key with the request and read scopes (required unless --oidc or
                    --oidc-token-file gives a workload token a [[trust]] policy accepts)

With --field, Approve opens a form in Slack; the answers come back as the request's
`response` (with --json), or as name=value lines after the outcome. --buttons answer asks a
question instead of an approval: one Answer button, and answering approves.

Examples:
  greenlight ask --workflow deploy --title \"Deploy api v1.2\" --param version=1.2 --wait
  greenlight ask --oidc github --audience greenlight --title \"Deploy\" --wait   # GitHub Actions
  greenlight ask --oidc gitlab:GREENLIGHT_ID_TOKEN --title \"Deploy\" --wait     # GitLab CI
  greenlight ask --oidc-token-file /var/run/secrets/greenlight/token --title \"Deploy\" --wait
  greenlight ask --title \"Which environment?\" --buttons answer \\
    --field env:select:staging,production --field replicas:number --wait --json";

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
    /// Makes retries of this command return the same request (without one, each run makes a
    /// key of its own, so that its own retries cannot create twice).
    #[arg(long)]
    idempotency_key: Option<String>,
    /// name:type[:options]; repeatable. What the approver fills in: type is text, textarea,
    /// number, select (options comma-separated: env:select:staging,production) or boolean.
    #[arg(long = "field", value_parser = parse_field)]
    fields: Vec<serde_json::Value>,
    /// approve_deny (the default) or answer: one Answer button, for a question (needs --field).
    #[arg(long, value_parser = ["approve_deny", "answer"])]
    buttons: Option<String>,
    /// Wait for the decision and exit with it.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this long (exit 4).
    #[arg(long, default_value = "30m", requires = "wait")]
    timeout: DurationSpec,
    /// Print the request as JSON instead of the id and outcome.
    #[arg(long)]
    json: bool,
    /// With --wait: write the decision's signed receipt (a JWS) to FILE, for the executor to
    /// check with `greenlight receipt verify FILE`.
    #[arg(long, value_name = "FILE", requires = "wait")]
    receipt: Option<std::path::PathBuf>,
    /// Authenticate with a workload token instead of GREENLIGHT_TOKEN: `github` (the GitHub
    /// Actions job's OIDC token; the job needs `permissions: id-token: write`) or `gitlab:VAR`
    /// (a GitLab CI `id_tokens` variable). Fetched or read again on every call.
    #[arg(long, value_name = "github|gitlab:VAR", value_parser = parse_oidc, conflicts_with = "oidc_token_file")]
    oidc: Option<Oidc>,
    /// With --oidc github: the audience to ask GitHub for (the audience of your [[trust]]).
    #[arg(long, requires = "oidc")]
    audience: Option<String>,
    /// Authenticate with the workload token in PATH (a Kubernetes projected service-account
    /// token), read again on every call since it rotates.
    #[arg(long, value_name = "PATH")]
    oidc_token_file: Option<std::path::PathBuf>,
}

/// Where `--oidc` gets the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Oidc {
    GitHub,
    GitLab(String),
}

fn parse_oidc(s: &str) -> Result<Oidc, String> {
    match s.split_once(':') {
        None if s == "github" => Ok(Oidc::GitHub),
        Some(("gitlab", var))
            if !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Ok(Oidc::GitLab(var.to_owned()))
        }
        _ => Err(format!(
            "{s:?} is not github or gitlab:VAR (VAR: the id_tokens variable, e.g. gitlab:GREENLIGHT_ID_TOKEN)"
        )),
    }
}

/// The client for `ask`: a workload token when a flag names one, else GREENLIGHT_TOKEN.
fn client_for(args: &AskArgs) -> Result<GreenlightClient, ClientError> {
    let credential = match (&args.oidc, &args.oidc_token_file) {
        (Some(Oidc::GitHub), _) => Credential::GitHubActions {
            audience: args.audience.clone(),
        },
        (Some(Oidc::GitLab(var)), _) => Credential::EnvVar(var.clone()),
        (None, Some(path)) => Credential::File(path.clone()),
        (None, None) => return GreenlightClient::from_env(),
    };
    GreenlightClient::from_env_with(credential)
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

/// `name:type[:options]` as the API's field: a select's options comma-separated.
fn parse_field(s: &str) -> Result<serde_json::Value, String> {
    let mut parts = s.splitn(3, ':');
    let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
        return Err(format!("{s:?} is not name:type[:options]"));
    };
    if name.is_empty() {
        return Err(format!("{s:?} has an empty name"));
    }
    let mut field = serde_json::json!({"name": name, "type": kind});
    match (kind, parts.next()) {
        ("select", Some(options)) => {
            field["options"] = options
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .collect::<Vec<_>>()
                .into();
        }
        ("select", None) => return Err(format!("{s:?}: a select needs options (name:select:a,b)")),
        (_, Some(_)) => return Err(format!("{s:?}: only a select takes options")),
        (_, None) => {}
    }
    Ok(field)
}

/// How long `ask` keeps trying to create its request while the server cannot be reached (it
/// may be restarting). Safe because every try carries the same idempotency key.
const CREATE_RETRY_FOR: Duration = Duration::from_secs(10);

pub(super) async fn ask(args: AskArgs) -> ExitCode {
    if matches!(args.oidc, Some(Oidc::GitLab(_))) && args.audience.is_some() {
        eprintln!(
            "error: --audience goes with --oidc github; a GitLab token's audience is set by aud: under id_tokens in .gitlab-ci.yml"
        );
        return ExitCode::from(exit::USAGE);
    }
    let client = match client_for(&args) {
        Ok(c) => c,
        Err(e) => return client_exit(e),
    };
    // A key of its own when none is given: a try whose answer was lost cannot create twice.
    let idempotency_key = args
        .idempotency_key
        .unwrap_or_else(|| format!("greenlight-ask-{}", ulid::Ulid::new()));
    let mut body = serde_json::json!({
        "title": args.title,
        "params": args.params.into_iter().collect::<serde_json::Map<_, _>>(),
        "idempotency_key": idempotency_key,
    });
    if !args.fields.is_empty() {
        body["fields"] = args.fields.into();
    }
    for (k, v) in [
        ("buttons", args.buttons),
        ("workflow", args.workflow),
        ("details", args.details),
        ("requester", args.requester),
        ("expires_in", args.expires_in.map(|d| d.to_string())),
    ] {
        if let Some(v) = v {
            body[k] = v.into();
        }
    }
    let mut request = match create(&client, &body).await {
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
        let started = Instant::now();
        let deadline = started + args.timeout.as_duration();
        let mut progress = Progress::new(&request, started, deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        while request["status"] == "pending" {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let poll = client.get(&id, Some(left));
            tokio::pin!(poll);
            let answer = loop {
                tokio::select! {
                    answer = &mut poll => break answer,
                    _ = tick.tick(), if progress.on => progress.draw(),
                }
            };
            match answer {
                Ok(r) => request = r,
                Err(e @ ClientError::Unreachable(..)) => {
                    // The server may be restarting; the request is durable, so keep waiting.
                    progress.clear();
                    eprintln!("warning: {e}; retrying");
                    tokio::time::sleep(Duration::from_secs(1).min(left)).await;
                }
                Err(e) => {
                    progress.clear();
                    return client_exit(e);
                }
            }
        }
        progress.clear();
    }
    let status = request["status"].as_str().unwrap_or("unknown").to_owned();
    if let (Some(path), Some(receipt)) = (&args.receipt, request["receipt"].as_str())
        && let Err(e) = std::fs::write(path, format!("{receipt}\n"))
    {
        return fail(format!(
            "cannot write the receipt to {}: {e}",
            path.display()
        ));
    }
    if args.json {
        println!("{request}");
    } else if args.wait {
        println!("{}", outcome(&request));
        // The answers, one name=value a line (strings as they are, the rest as JSON).
        for (name, value) in request["response"].as_object().into_iter().flatten() {
            match value {
                serde_json::Value::String(s) => println!("{name}={s}"),
                other => println!("{name}={other}"),
            }
        }
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

/// Creates the request, trying again for [`CREATE_RETRY_FOR`] while the server is unreachable.
async fn create(
    client: &GreenlightClient,
    body: &serde_json::Value,
) -> Result<serde_json::Value, ClientError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(250);
    let mut warned = false;
    loop {
        match client.create(body).await {
            Err(e @ ClientError::Unreachable(..))
                if started.elapsed() + pause < CREATE_RETRY_FOR =>
            {
                if !std::mem::replace(&mut warned, true) {
                    eprintln!(
                        "warning: {e}; retrying for up to {}s",
                        CREATE_RETRY_FOR.as_secs()
                    );
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            answer => return answer,
        }
    }
}

/// The line a person at a terminal sees while `ask --wait` waits, redrawn in place; nothing at
/// all when stderr is a file or a pipe (scripts read only the outcome).
struct Progress {
    on: bool,
    drawn: bool,
    place: String,
    started: Instant,
    deadline: Instant,
}

impl Progress {
    fn new(request: &serde_json::Value, started: Instant, deadline: Instant) -> Self {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
        Self {
            on: std::io::stderr().is_terminal(),
            drawn: false,
            place: format!(
                "{} (workflow {})",
                text(&request["channel"]),
                text(&request["workflow"])
            ),
            started,
            deadline,
        }
    }

    fn draw(&mut self) {
        let now = Instant::now();
        let line = waiting_line(
            &self.place,
            now.duration_since(self.started),
            // Rounded up: "gives up in 0s" only once it has.
            self.deadline.saturating_duration_since(now) + Duration::from_millis(999),
        );
        // \r and "erase to the end of the line": the line is rewritten, never scrolled.
        eprint!("\r{line}\x1b[K");
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    fn clear(&mut self) {
        if std::mem::take(&mut self.drawn) {
            eprint!("\r\x1b[K");
            let _ = std::io::stderr().flush();
        }
    }
}

fn waiting_line(place: &str, waited: Duration, left: Duration) -> String {
    format!(
        "waiting for a decision in {place}, {} so far, gives up in {}",
        span(waited),
        span(left)
    )
}

/// 45s, 2m10s, 1h02m.
fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
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

    #[test]
    fn the_help_tells_the_retry_window_there_is() {
        let said = format!("tried again for {} s", CREATE_RETRY_FOR.as_secs());
        assert!(ASK_AFTER.contains(&said), "{ASK_AFTER}");
    }

    #[test]
    fn the_waiting_line_says_where_and_for_how_long() {
        assert_eq!(
            waiting_line(
                "#deploy (workflow deploy)",
                Duration::from_secs(130),
                Duration::from_secs(1670)
            ),
            "waiting for a decision in #deploy (workflow deploy), 2m10s so far, gives up in 27m50s"
        );
        assert_eq!(span(Duration::from_secs(9)), "9s");
        assert_eq!(span(Duration::from_secs(3720)), "1h02m");
    }
}
