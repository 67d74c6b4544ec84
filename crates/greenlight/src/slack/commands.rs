//! The `/greenlight` slash command: its payload (form fields over HTTP, the same fields as JSON
//! over Socket Mode), what the text asks for, and the ephemeral answers, rendered here so the
//! service only decides what to say.

use serde::Deserialize;
use serde_json::{Value, json};
use slack_morphism::prelude::*;

use crate::domain::{Request, Status};
use crate::slack::mrkdwn::{self, escape, escape_within};
use crate::slack::render::{self, Look, md};

/// A slash command payload, read leniently: Slack adds fields over time, and greenlight reads
/// only these.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlashCommand {
    pub command: Option<String>,
    #[serde(default)]
    pub text: String,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub team_domain: Option<String>,
    pub channel_id: Option<String>,
    pub response_url: Option<String>,
}

impl SlashCommand {
    /// The command as the person typed it (`/greenlight`, or whatever the app named it).
    pub fn name(&self) -> &str {
        self.command
            .as_deref()
            .filter(|c| c.starts_with('/') && c.len() <= 32)
            .unwrap_or("/greenlight")
    }
}

/// What the text asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subcommand {
    Pending,
    Show(String),
    Help,
    /// Anything else: answered with the help, naming what was not understood.
    Unknown(String),
}

impl Subcommand {
    pub fn parse(text: &str) -> Self {
        let mut words = text.split_whitespace();
        match (
            words.next().map(str::to_ascii_lowercase).as_deref(),
            words.next(),
            words.next(),
        ) {
            (None | Some("help"), None, _) => Subcommand::Help,
            (Some("pending" | "list"), None, _) => Subcommand::Pending,
            (Some("show"), Some(id), None) => Subcommand::Show(id.to_owned()),
            _ => Subcommand::Unknown(text.trim().to_owned()),
        }
    }

    /// A label for metrics: never the person's text.
    pub fn label(&self) -> &'static str {
        match self {
            Subcommand::Pending => "pending",
            Subcommand::Show(_) => "show",
            Subcommand::Help => "help",
            Subcommand::Unknown(_) => "unknown",
        }
    }
}

/// The ack body: an ephemeral message (`response_type` says so explicitly).
fn ephemeral(text: String, blocks: Vec<SlackBlock>) -> Value {
    json!({
        "response_type": "ephemeral",
        "text": text,
        "blocks": blocks,
    })
}

fn section(text: String) -> SlackBlock {
    SlackSectionBlock::new()
        .with_text(md(mrkdwn::truncate(&text, 3000)))
        .into()
}

/// A plain ephemeral line (errors, "try again").
pub fn text_reply(text: &str) -> Value {
    ephemeral(text.to_owned(), vec![section(text.to_owned())])
}

pub fn help(command: &str, not_understood: Option<&str>) -> Value {
    let command = escape(command);
    let mut text = String::new();
    if let Some(what) = not_understood {
        text.push_str(&format!(
            "greenlight does not know `{}`.\n",
            escape_within(what, 100)
        ));
    }
    text.push_str(&format!(
        "*{command} pending*: the requests waiting for your vote\n\
         *{command} show* `req_…`: one request as its channel message shows it\n\
         *{command} help*: this list\n\
         Approve or deny in the request's message, or on greenlight's Home tab."
    ));
    ephemeral(text.clone(), vec![section(text)])
}

/// Where a request's message is: the channel, and a link to the message when the workspace's
/// domain is known (`https://<domain>.slack.com/archives/<channel>/p<ts without the dot>`).
fn where_posted(r: &Request, team_domain: Option<&str>) -> String {
    let Some(slack) = &r.slack else {
        return "not posted yet".to_owned();
    };
    let domain = team_domain.filter(|d| {
        !d.is_empty()
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    });
    match domain {
        Some(d) => format!(
            "in <#{}> (<https://{d}.slack.com/archives/{}/p{}|message>)",
            slack.channel,
            slack.channel,
            slack.ts.replace('.', "")
        ),
        None => format!("in <#{}>", slack.channel),
    }
}

/// `pending`: the requests waiting for this person's vote, newest first.
pub fn pending(
    waiting: &[(&Request, Look)],
    more: u32,
    more_at_least: bool,
    unchecked: &[&str],
    team_domain: Option<&str>,
) -> Value {
    let mut blocks = Vec::new();
    let head = match waiting.len() {
        0 => "Nothing is waiting for your vote.".to_owned(),
        1 => "1 request is waiting for your vote:".to_owned(),
        n if more > 0 => format!(
            "{n} requests ({}) are waiting for your vote:",
            crate::slack::home::more_text(more, more_at_least)
        ),
        n => format!("{n} requests are waiting for your vote:"),
    };
    blocks.push(section(format!("*{head}*")));
    for (r, look) in waiting {
        let mut text = format!(
            "*{}* · {}\n{}",
            escape_within(&r.title, 200),
            where_posted(r, team_domain),
            render::context_line(r)
        );
        if let Some(progress) = render::progress(r, look) {
            text.push_str(&format!("\n{progress}"));
        }
        blocks.push(section(text));
    }
    if more > 0 {
        blocks.push(section(format!(
            "_…{}: the newest {} are listed._",
            crate::slack::home::more_text(more, more_at_least),
            waiting.len()
        )));
    }
    if !unchecked.is_empty() {
        let names: Vec<String> = unchecked
            .iter()
            .map(|w| format!("*{}*", escape(w)))
            .collect();
        blocks.push(section(format!(
            ":warning: greenlight could not look up who approves in {} just now; try again shortly.",
            names.join(", ")
        )));
    }
    ephemeral(head, blocks)
}

/// `show ID`: the request as its channel message shows it, without the buttons.
pub fn show(
    r: &Request,
    look: &Look,
    actions: &[crate::store::ActionResult],
    team_domain: Option<&str>,
) -> Value {
    let mut blocks: Vec<SlackBlock> = render::blocks_with(r, look)
        .into_iter()
        .filter(|b| !matches!(b, SlackBlock::Actions(_)))
        .collect();
    blocks.extend(render::action_results(actions));
    if r.status == Status::Pending {
        blocks.push(section(format!(
            "Vote on it {}, or on greenlight's Home tab.",
            where_posted(r, team_domain)
        )));
    }
    ephemeral(render::fallback_text(r), blocks)
}

pub fn unknown_request(id: &str) -> Value {
    text_reply(&format!(
        "greenlight does not know the request `{}`.",
        escape_within(id, 100)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcommands_are_read_from_the_text() {
        assert_eq!(Subcommand::parse(""), Subcommand::Help);
        assert_eq!(Subcommand::parse("  HELP "), Subcommand::Help);
        assert_eq!(Subcommand::parse("pending"), Subcommand::Pending);
        assert_eq!(
            Subcommand::parse("show req_01ABC"),
            Subcommand::Show("req_01ABC".into())
        );
        assert_eq!(
            Subcommand::parse("show"),
            Subcommand::Unknown("show".into())
        );
        assert_eq!(
            Subcommand::parse("approve everything"),
            Subcommand::Unknown("approve everything".into())
        );
    }

    #[test]
    fn the_persons_text_is_escaped_in_the_answer() {
        let v = help("/greenlight", Some("<!channel> *now*"));
        assert_eq!(v["response_type"], "ephemeral");
        let text = v.to_string();
        assert!(!text.contains("<!channel>"), "{text}");
        assert!(text.contains("pending"));
        let v = unknown_request("<!here>");
        assert!(!v.to_string().contains("<!here>"));
    }

    #[test]
    fn a_form_payload_reads_leniently() {
        let body = "token=x&team_id=T0SANDBOX&team_domain=sandbox&channel_id=C0DEPLOY&user_id=U0ALICE&command=%2Fgreenlight&text=pending&response_url=http%3A%2F%2Fx&trigger_id=1.2&is_enterprise_install=false&something_new=1";
        let cmd: SlashCommand = serde_urlencoded::from_str(body).unwrap();
        assert_eq!(cmd.user_id.as_deref(), Some("U0ALICE"));
        assert_eq!(cmd.name(), "/greenlight");
        assert_eq!(Subcommand::parse(&cmd.text), Subcommand::Pending);
        let bare: SlashCommand = serde_urlencoded::from_str("user_id=U1").unwrap();
        assert_eq!(bare.text, "");
    }
}
