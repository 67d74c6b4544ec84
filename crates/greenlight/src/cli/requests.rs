//! `requests list | show | approve | deny | cancel`: an operator at a terminal, over the API.
//! Tables and fields for people; `--json` prints the API's answer for scripts.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::{client_exit, outcome};
use crate::client::{ClientError, GreenlightClient, ListQuery};
use crate::domain::{RequestId, Status, Verdict, WorkflowName};

pub(super) const REQUESTS_AFTER: &str = "\
Exit codes:
  0  done (approve, deny: the vote was counted; the request may wait for more votes)
  1  the request is no longer pending, or this key has voted already: nothing changed
  2  usage error, or the server refused the input (no such request, a bad filter)
  5  any other failure (server unreachable, bad key, a scope the key lacks)

Environment:
  GREENLIGHT_URL    the greenlight server [default: http://127.0.0.1:8080]
  GREENLIGHT_TOKEN  an API key (required): read for list and show, decide for approve and
                    deny, request for cancel (of the key's own requests; admin for any)

Examples:
  greenlight requests list --status pending
  greenlight requests show req_01JQ4Z5X8M2T6V9W3Y7B1C0D4E
  greenlight requests deny req_01JQ4Z5X8M2T6V9W3Y7B1C0D4E --reason \"not during the freeze\"";

#[derive(Debug, Subcommand)]
pub(super) enum RequestsCommand {
    /// List requests, newest first: a table, or the API's JSON with --json.
    #[command(after_help = REQUESTS_AFTER)]
    List(ListArgs),
    /// Show one request: its fields, votes, deliveries and action hooks.
    #[command(after_help = REQUESTS_AFTER)]
    Show {
        /// The request's id (req_...).
        id: RequestId,
        /// Print the API's JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Approve as a machine: the key's name is the approver (decide scope).
    #[command(after_help = REQUESTS_AFTER)]
    Approve(ApproveArgs),
    /// Deny as a machine, saying why (decide scope).
    #[command(after_help = REQUESTS_AFTER)]
    Deny(DenyArgs),
    /// Cancel a pending request and strip its buttons in Slack.
    #[command(after_help = REQUESTS_AFTER)]
    Cancel(VoteArgs),
}

#[derive(Debug, Args)]
pub(super) struct ListArgs {
    /// Only requests in this state: pending, approved, denied, expired or cancelled.
    #[arg(long, value_parser = parse_status)]
    status: Option<Status>,
    /// Only requests of this workflow.
    #[arg(long)]
    workflow: Option<WorkflowName>,
    /// How many to show (1-200).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=200))]
    limit: u32,
    /// Go on after this request (the cursor the page before printed).
    #[arg(long)]
    cursor: Option<RequestId>,
    /// Print the API's JSON instead (with its `next_cursor`).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct VoteArgs {
    /// The request's id (req_...).
    id: RequestId,
    /// Why; shown with the decision in Slack and kept in the audit log.
    #[arg(long)]
    reason: Option<String>,
    /// Print the request the API answered with, as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct ApproveArgs {
    /// The request's id (req_...).
    id: RequestId,
    /// Why; shown with the decision in Slack and kept in the audit log.
    #[arg(long)]
    reason: Option<String>,
    /// The open stage this vote is for (default: the first open stage).
    #[arg(long)]
    stage: Option<String>,
    /// Print the request the API answered with, as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct DenyArgs {
    /// The request's id (req_...).
    id: RequestId,
    /// Why; shown with the decision in Slack and kept in the audit log.
    #[arg(long)]
    reason: String,
    /// The open stage this vote is for (default: the first open stage).
    #[arg(long)]
    stage: Option<String>,
    /// Print the request the API answered with, as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_status(s: &str) -> Result<Status, String> {
    Status::parse(s)
        .ok_or_else(|| format!("{s:?} is not one of pending, approved, denied, expired, cancelled"))
}

pub(super) async fn requests(cmd: RequestsCommand) -> ExitCode {
    let client = match GreenlightClient::from_env() {
        Ok(c) => c,
        Err(e) => return client_exit(e),
    };
    match cmd {
        RequestsCommand::List(args) => list(&client, args).await,
        RequestsCommand::Show { id, json } => show(&client, &id, json).await,
        RequestsCommand::Approve(a) => {
            let (reason, stage) = (a.reason.as_deref(), a.stage.as_deref());
            let answer = client.decide(&a.id, Verdict::Approve, reason, stage).await;
            changed(&client, &a.id, answer, a.json).await
        }
        RequestsCommand::Deny(d) => {
            let (reason, stage) = (Some(d.reason.as_str()), d.stage.as_deref());
            let answer = client.decide(&d.id, Verdict::Deny, reason, stage).await;
            changed(&client, &d.id, answer, d.json).await
        }
        RequestsCommand::Cancel(VoteArgs { id, reason, json }) => {
            let answer = client.cancel(&id, reason.as_deref()).await;
            changed(&client, &id, answer, json).await
        }
    }
}

async fn list(client: &GreenlightClient, args: ListArgs) -> ExitCode {
    let query = ListQuery {
        status: args.status,
        workflow: args.workflow.clone(),
        limit: Some(args.limit),
        cursor: args.cursor,
    };
    let page = match client.list(&query).await {
        Ok(page) => page,
        Err(e) => return client_exit(e),
    };
    if args.json {
        println!("{page}");
        return ExitCode::SUCCESS;
    }
    let requests = page["requests"].as_array().cloned().unwrap_or_default();
    if requests.is_empty() {
        eprintln!("no requests");
    } else {
        let now = jiff::Timestamp::now();
        let rows: Vec<Vec<String>> = requests
            .iter()
            .map(|r| {
                vec![
                    text(&r["id"]),
                    text(&r["status"]),
                    text(&r["workflow"]),
                    truncate(&one_line(&text(&r["title"])), TITLE_WIDTH),
                    one_line(&text(&r["decided_by"])),
                    age(&r["created_at"], now),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &["ID", "STATUS", "WORKFLOW", "TITLE", "DECIDED BY", "AGE"],
                &rows
            )
        );
    }
    if let Some(next) = page["next_cursor"].as_str() {
        let mut hint = format!("more: greenlight requests list --cursor {next}");
        if let Some(s) = args.status {
            hint.push_str(&format!(" --status {}", s.as_str()));
        }
        if let Some(w) = &args.workflow {
            hint.push_str(&format!(" --workflow {w}"));
        }
        if args.limit != 20 {
            hint.push_str(&format!(" --limit {}", args.limit));
        }
        eprintln!("{hint}");
    }
    ExitCode::SUCCESS
}

async fn show(client: &GreenlightClient, id: &RequestId, json: bool) -> ExitCode {
    match client.get(id, None).await {
        Ok(r) if json => {
            println!("{r}");
            ExitCode::SUCCESS
        }
        Ok(r) => {
            print!("{}", describe(&r, jiff::Timestamp::now()));
            ExitCode::SUCCESS
        }
        Err(e) => client_exit(e),
    }
}

/// What a vote or a cancel answered: the outcome, or why nothing changed (exit 1).
async fn changed(
    client: &GreenlightClient,
    id: &RequestId,
    answer: Result<Value, ClientError>,
    json: bool,
) -> ExitCode {
    match answer {
        Ok(r) if json => {
            println!("{r}");
            ExitCode::SUCCESS
        }
        Ok(r) => {
            let still = if r["status"] == "pending" {
                " (the vote is counted; more approvals are needed)"
            } else {
                ""
            };
            println!("{}{still}", clean(&outcome(&r)));
            ExitCode::SUCCESS
        }
        Err(ClientError::Rejected { code, message, .. }) if code == "not_pending" => {
            // Say who decided it, which the refusal does not.
            let now = match client.get(id, None).await {
                Ok(r) => clean(&outcome(&r)),
                Err(_) => message,
            };
            eprintln!("error: {id} is no longer pending ({now}); nothing changed");
            ExitCode::from(1)
        }
        Err(ClientError::Rejected { code, message, .. }) if code == "already_voted" => {
            eprintln!("error: {message}; nothing changed");
            ExitCode::from(1)
        }
        Err(e) => client_exit(e),
    }
}

/// Titles longer than this are cut in the table (`show` prints them whole).
const TITLE_WIDTH: usize = 48;

/// A JSON string as text; anything else (null, a number) as its JSON, null as nothing.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => clean(s),
        other => other.to_string(),
    }
}

/// Requesters write titles and details: nothing they send may move the cursor, recolour the
/// terminal or reorder what an operator reads (controls and bidirectional overrides go).
pub(super) fn clean(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\t' => c,
            c if c.is_control() => '\u{FFFD}',
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' => {
                '\u{FFFD}'
            }
            c => c,
        })
        .collect()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// Columns padded to their widest cell (counted in characters), two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn timestamp(v: &Value) -> Option<jiff::Timestamp> {
    v.as_str()?.parse().ok()
}

/// How long ago `v` was: 45s, 12m, 3h, 2d.
fn age(v: &Value, now: jiff::Timestamp) -> String {
    timestamp(v).map_or_else(String::new, |t| {
        short(now.as_second().saturating_sub(t.as_second()))
    })
}

fn short(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// A time and how far it is from now: `2025-01-02T10:00:00Z (3m ago)`, `... (in 57m)`.
fn when(v: &Value, now: jiff::Timestamp) -> Option<String> {
    let t = timestamp(v)?;
    let delta_ms = t.as_millisecond() - now.as_millisecond();
    let rel = match delta_ms {
        -999..=999 => "just now".to_owned(),
        1000.. => format!("in {}", short(delta_ms / 1000)),
        _ => format!("{} ago", short(-delta_ms / 1000)),
    };
    Some(format!("{} ({rel})", text(v)))
}

/// `show`'s text: one field a line, then the votes, the deliveries and the action hooks.
fn describe(r: &Value, now: jiff::Timestamp) -> String {
    let mut fields: Vec<(&str, String)> = vec![
        ("id", text(&r["id"])),
        ("status", clean(&outcome(r))),
        ("workflow", text(&r["workflow"])),
        ("title", text(&r["title"])),
    ];
    let mut optional = |name, value: String| {
        if !value.is_empty() {
            fields.push((name, value));
        }
    };
    optional("details", text(&r["details"]));
    optional("requester", text(&r["requester"]));
    let mut channel = text(&r["channel"]);
    if let Some(ts) = r["slack"]["ts"].as_str() {
        channel.push_str(&format!(
            " (message {} in {})",
            clean(ts),
            text(&r["slack"]["channel"])
        ));
    }
    optional("channel", channel);
    let params = r["params"]
        .as_object()
        .map(|p| {
            p.iter()
                .map(|(k, v)| format!("{}={v}", clean(k)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    optional("params", clean(&params));
    optional("created", when(&r["created_at"], now).unwrap_or_default());
    optional("expires", when(&r["expires_at"], now).unwrap_or_default());
    optional("decided", when(&r["decided_at"], now).unwrap_or_default());
    optional("callback", text(&r["callback_url"]));
    if r["metadata"].is_object() {
        optional("metadata", clean(&r["metadata"].to_string()));
    }
    let mut out = String::new();
    for (name, value) in &fields {
        // Continuation lines of multi-line text line up under the first.
        let value = value.replace('\n', &format!("\n{:12}", ""));
        out.push_str(&format!("{name:<12}{value}\n"));
    }
    let votes: Vec<Vec<String>> = array(&r["decisions"])
        .map(|d| {
            vec![
                text(&d["at"]),
                one_line(&text(&d["by"])),
                text(&d["kind"]),
                text(&d["verdict"]),
                one_line(&text(&d["reason"])),
            ]
        })
        .collect();
    section(
        &mut out,
        "votes",
        &["AT", "BY", "KIND", "VERDICT", "REASON"],
        &votes,
    );
    let deliveries: Vec<Vec<String>> = array(&r["delivery"])
        .map(|d| {
            let next = when(&d["next_attempt_at"], now).unwrap_or_default();
            vec![
                text(&d["kind"]),
                text(&d["state"]),
                text(&d["attempts"]),
                one_line(&text(&d["last_error"])),
                next,
                text(&d["target"]),
            ]
        })
        .collect();
    section(
        &mut out,
        "deliveries",
        &[
            "KIND",
            "STATE",
            "ATTEMPTS",
            "LAST ERROR",
            "NEXT TRY",
            "TARGET",
        ],
        &deliveries,
    );
    let actions: Vec<Vec<String>> = array(&r["actions"])
        .map(|a| {
            vec![
                one_line(&text(&a["name"])),
                if a["ok"] == true { "ok" } else { "failed" }.to_owned(),
                one_line(&text(&a["summary"])),
                text(&a["attempts"]),
                text(&a["at"]),
            ]
        })
        .collect();
    section(
        &mut out,
        "action hooks",
        &["NAME", "RESULT", "SUMMARY", "ATTEMPTS", "AT"],
        &actions,
    );
    out
}

fn array(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn section(out: &mut String, title: &str, header: &[&str], rows: &[Vec<String>]) {
    out.push('\n');
    if rows.is_empty() {
        out.push_str(&format!("{title}: none\n"));
        return;
    }
    out.push_str(&format!("{title}:\n"));
    for line in table(header, rows).lines() {
        out.push_str(&format!("  {line}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_lines_up_and_cuts_long_titles() {
        let rows = vec![
            vec!["a".into(), truncate("a very long title indeed", 10)],
            vec!["bbbb".into(), "short".into()],
        ];
        assert_eq!(
            table(&["ID", "TITLE"], &rows),
            "ID    TITLE\na     a very lo…\nbbbb  short\n"
        );
    }

    #[test]
    fn requester_text_cannot_drive_the_terminal() {
        let title = "ok\u{1b}[2J\u{1b}]0;pwned\u{7}\u{202E}txt.exe";
        let shown = clean(title);
        assert!(!shown.chars().any(|c| c.is_control() || c == '\u{202E}'));
        assert!(shown.starts_with("ok\u{FFFD}[2J"));
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(short(5), "5s");
        assert_eq!(short(130), "2m");
        assert_eq!(short(7300), "2h");
        assert_eq!(short(200_000), "2d");
        assert_eq!(short(-3), "0s");
    }

    #[test]
    fn show_lists_fields_votes_and_deliveries() {
        let now: jiff::Timestamp = "2025-01-02T10:05:00Z".parse().unwrap();
        let r = serde_json::json!({
            "id": "req_01JQ4Z5X8M2T6V9W3Y7B1C0D4E",
            "status": "approved", "decided_by": "U0ALICE", "reason": "fine",
            "workflow": "deploy", "title": "Deploy api", "details": "line one\nline two",
            "params": {"version": "1.10", "amount": 120},
            "channel": "#deploy", "slack": {"channel": "C0DEPLOY", "ts": "1.2"},
            "created_at": "2025-01-02T10:00:00Z", "decided_at": "2025-01-02T10:02:00Z",
            "expires_at": null,
            "decisions": [{"by": "U0ALICE", "kind": "user", "verdict": "approve",
                           "reason": "fine", "at": "2025-01-02T10:02:00Z"}],
            "delivery": [{"kind": "slack_post", "state": "done", "attempts": 1,
                          "last_error": null, "next_attempt_at": null}],
            "actions": []
        });
        let text = describe(&r, now);
        assert!(
            text.contains("status      approved by U0ALICE: fine\n"),
            "{text}"
        );
        assert!(
            text.contains("details     line one\n            line two\n"),
            "{text}"
        );
        assert!(
            text.contains("params      amount=120 version=\"1.10\"\n"),
            "{text}"
        );
        assert!(
            text.contains("channel     #deploy (message 1.2 in C0DEPLOY)\n"),
            "{text}"
        );
        assert!(
            text.contains("created     2025-01-02T10:00:00Z (5m ago)\n"),
            "{text}"
        );
        assert!(!text.contains("expires"), "{text}");
        assert!(text.contains("votes:\n  AT"), "{text}");
        assert!(text.contains("U0ALICE  user  approve  fine"), "{text}");
        assert!(text.contains("slack_post  done   1"), "{text}");
        assert!(text.contains("action hooks: none"), "{text}");
    }
}
