//! greenlight's App Home tab: what waits for the person's vote (with the message's own Approve
//! and Deny buttons), what they asked for, and what was decided lately. Pure, like the
//! message: rendered from the state at publish time.

use slack_morphism::prelude::*;

use crate::domain::{Request, Status};
use crate::slack::mrkdwn::{self, escape_within};
use crate::slack::render::{self, Look, md, who};

/// Block ids of the Home tab's button rows: this prefix and the request id (unique per view).
pub const HOME_ACTIONS_BLOCK: &str = "greenlight.home";

/// What the tab shows; the service decides which requests.
pub struct HomeTab<'a> {
    /// What the person may vote on, newest first, each with its workflow's looks.
    pub waiting: &'a [(&'a Request, Look)],
    /// How many more wait than are listed...
    pub more_waiting: u32,
    /// ...and whether that count stopped at the store's cap.
    pub more_at_least: bool,
    /// Workflows whose approvers could not be looked up just now.
    pub unchecked: &'a [&'a str],
    pub mine: &'a [Request],
    pub decided: &'a [Request],
    /// The live standing approvals the person granted ("Approve for…").
    pub standing: &'a [crate::domain::StandingApproval],
    /// Shown on top: why the person's last click on this tab did not count (mrkdwn).
    pub notice: Option<&'a str>,
}

fn header(text: &str) -> SlackBlock {
    SlackHeaderBlock::new(SlackBlockPlainText::new(text.to_owned()).into()).into()
}

fn section(text: String) -> SlackBlock {
    SlackSectionBlock::new()
        .with_text(md(mrkdwn::truncate(&text, 3000)))
        .into()
}

fn title(r: &Request) -> String {
    format!("*{}*", escape_within(&r.title, 200))
}

/// "and 3 more", "and 980+ more".
pub fn more_text(more: u32, at_least: bool) -> String {
    let plus = if at_least { "+" } else { "" };
    format!("and {more}{plus} more")
}

/// One line of state for lists: pending with its progress, or how it ended.
fn state_line(r: &Request, look: &Look) -> String {
    match r.status {
        Status::Pending => {
            let progress = render::progress(r, look)
                .map(|p| format!(" · {p}"))
                .unwrap_or_default();
            format!(":hourglass_flowing_sand: *Pending*{progress}")
        }
        _ => render::outcome_with_reason(r),
    }
}

pub fn view(tab: &HomeTab) -> SlackView {
    let mut blocks = Vec::new();
    if let Some(notice) = tab.notice {
        blocks.push(render::context_md(format!(":warning: {notice}")));
    }
    blocks.push(header("Waiting for you"));
    if tab.waiting.is_empty() {
        blocks.push(section("Nothing is waiting for your decision.".to_owned()));
    }
    for (r, look) in tab.waiting {
        let mut text = format!("{}\n{}", title(r), render::context_line(r));
        if let Some(progress) = render::progress(r, look) {
            text.push_str(&format!("\n{progress}"));
        }
        blocks.push(section(text));
        blocks.push(render::buttons(
            r,
            look,
            &format!("{HOME_ACTIONS_BLOCK}.{}", r.id),
        ));
    }
    if tab.more_waiting > 0 {
        blocks.push(render::context_md(format!(
            "…{} waiting; only the newest {} are shown here.",
            more_text(tab.more_waiting, tab.more_at_least),
            tab.waiting.len()
        )));
    }
    if !tab.unchecked.is_empty() {
        let names: Vec<String> = tab
            .unchecked
            .iter()
            .map(|w| format!("*{}*", mrkdwn::escape(w)))
            .collect();
        blocks.push(render::context_md(format!(
            ":warning: greenlight could not look up who approves in {} just now; their requests are missing here until the next refresh.",
            names.join(", ")
        )));
    }
    if !tab.standing.is_empty() {
        blocks.push(SlackDividerBlock::new().into());
        blocks.push(header("Your standing approvals"));
        for s in tab.standing {
            blocks.push(section(format!(
                "{} · until {} · `{}`",
                render::standing_scope(s),
                render::date(s.expires_at),
                s.id
            )));
            blocks.push(
                SlackActionsBlock::new(vec![SlackActionBlockElement::Button(
                    SlackBlockButtonElement::new("Revoke".into())
                        .with_action_id(render::REVOKE_STANDING_ACTION.into())
                        .with_value(s.id.to_string())
                        .with_style(SlackBlockButtonStyle::Danger),
                )])
                .with_block_id(format!("{HOME_ACTIONS_BLOCK}.{}", s.id).into())
                .into(),
            );
        }
    }
    blocks.push(SlackDividerBlock::new().into());
    blocks.push(header("Your requests"));
    if tab.mine.is_empty() {
        blocks.push(section("You have not asked for anything.".to_owned()));
    }
    for r in tab.mine {
        blocks.push(section(format!(
            "{} · `{}`\n{}",
            title(r),
            r.id,
            state_line(r, &Look::default())
        )));
    }
    blocks.push(SlackDividerBlock::new().into());
    blocks.push(header("Recently decided"));
    if tab.decided.is_empty() {
        blocks.push(section(
            "Nothing was decided in the last 7 days.".to_owned(),
        ));
    }
    for r in tab.decided {
        let requested = r
            .requester
            .as_deref()
            .map(|q| format!(" · requested by {}", who(q)))
            .unwrap_or_default();
        blocks.push(section(format!(
            "{} · `{}`{requested}\n{}",
            title(r),
            r.id,
            render::outcome_with_reason(r)
        )));
    }
    SlackView::Home(SlackHomeView::new(blocks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewRequest, Params, RequestId};
    use jiff::Timestamp;

    fn request(title: &str) -> Request {
        Request::new(
            RequestId::generate(),
            NewRequest {
                workflow: "deploy".parse().unwrap(),
                title: title.into(),
                details: None,
                params: Params::new(),
                requester: Some("U0FRANK".into()),
                channel: "#deploy".parse().unwrap(),
                expires_at: None,
                callback_url: None,
                remind_at: None,
            },
            Timestamp::from_second(1_700_000_000).unwrap(),
        )
    }

    fn json(tab: &HomeTab) -> serde_json::Value {
        serde_json::to_value(view(tab)).unwrap()
    }

    #[test]
    fn waiting_requests_carry_the_messages_buttons_in_unique_rows() {
        let (a, b) = (request("Deploy api"), request("Deploy web"));
        let looks = [(&a, Look::default()), (&b, Look::default())];
        let v = json(&HomeTab {
            waiting: &looks,
            more_waiting: 3,
            more_at_least: false,
            unchecked: &[],
            mine: &[],
            decided: &[],
            standing: &[],
            notice: None,
        });
        assert_eq!(v["type"], "home");
        let blocks = v["blocks"].as_array().unwrap();
        let rows: Vec<&serde_json::Value> =
            blocks.iter().filter(|b| b["type"] == "actions").collect();
        assert_eq!(rows.len(), 2);
        assert_ne!(rows[0]["block_id"], rows[1]["block_id"]);
        for (row, r) in rows.iter().zip([&a, &b]) {
            assert_eq!(row["elements"][0]["action_id"], render::APPROVE_ACTION);
            assert_eq!(row["elements"][1]["action_id"], render::DENY_ACTION);
            assert_eq!(row["elements"][0]["value"], r.id.as_str());
        }
        assert!(v.to_string().contains("and 3 more"), "{v}");
    }

    #[test]
    fn requester_text_is_escaped_and_the_notice_comes_first() {
        let mut evil = request("<!channel> *urgent*");
        evil.requester = Some("<!here>".into());
        let looks = [(&evil, Look::default())];
        let mine = [evil.clone()];
        let v = json(&HomeTab {
            waiting: &looks,
            more_waiting: 0,
            more_at_least: false,
            unchecked: &[],
            mine: &mine,
            decided: &mine,
            standing: &[],
            notice: Some("This request was already approved by <@U0BOB>."),
        });
        let text = v.to_string();
        assert!(!text.contains("<!channel>"), "{text}");
        assert!(!text.contains("<!here>"), "{text}");
        assert!(text.contains("&lt;!channel&gt;"));
        assert_eq!(v["blocks"][0]["type"], "context");
        assert!(v["blocks"][0].to_string().contains("<@U0BOB>"));
    }

    #[test]
    fn an_empty_tab_says_so_and_stays_within_slacks_block_limit() {
        let v = json(&HomeTab {
            waiting: &[],
            more_waiting: 0,
            more_at_least: false,
            unchecked: &[],
            mine: &[],
            decided: &[],
            standing: &[],
            notice: None,
        });
        assert!(v.to_string().contains("Nothing is waiting"));
        let many: Vec<Request> = (0..20).map(|i| request(&format!("r{i}"))).collect();
        let looks: Vec<(&Request, Look)> = many.iter().map(|r| (r, Look::default())).collect();
        let full = json(&HomeTab {
            waiting: &looks,
            more_waiting: 980,
            more_at_least: true,
            unchecked: &["payments"],
            mine: &many[..10],
            decided: &many[..10],
            standing: &[],
            notice: Some("x"),
        });
        let n = full["blocks"].as_array().unwrap().len();
        assert!(n <= 100, "{n} blocks");
        assert!(full.to_string().contains("980+ more"));
    }
}
