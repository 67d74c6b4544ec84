//! The approval message, rendered from a request's current state. Pure: the same request always
//! renders the same message, so a retried or collapsed update shows the truth.

use jiff::Timestamp;
use slack_morphism::prelude::*;

use super::mrkdwn::{clean, code_block, escape, escape_within, truncate};
use std::sync::Arc;

use crate::config::Workflow;
use crate::domain::{
    Approver, Buttons, CHECKED, DecisionKind, Field, FieldType, Policy, Request, SlackUserId,
    StageProgress, StageStatus, StandingApproval, Status, answer_text, number_text,
};

pub const APPROVE_ACTION: &str = "greenlight.approve";
pub const DENY_ACTION: &str = "greenlight.deny";
pub const ACTIONS_BLOCK: &str = "greenlight.actions";
/// The deny-reason modal: its callback id, and the input block and element holding the reason.
pub const DENY_REASON_CALLBACK: &str = "greenlight.deny_reason";
pub const REASON_BLOCK: &str = "greenlight.reason";
pub const REASON_ACTION: &str = "reason";
/// "Approve for…": the button, and the modal picking how long a standing approval lasts.
pub const APPROVE_FOR_ACTION: &str = "greenlight.approve_for";
pub const STANDING_CALLBACK: &str = "greenlight.standing";
pub const STANDING_BLOCK: &str = "greenlight.standing";
pub const STANDING_ACTION: &str = "duration";
/// The Revoke button of a standing approval, on the Home tab of the person who granted it and
/// on the message whose approval granted it (in an actions block with this id prefix).
pub const REVOKE_STANDING_ACTION: &str = "greenlight.revoke_standing";
pub const STANDING_ACTIONS_BLOCK: &str = "greenlight.standing_actions";
/// The answers modal (a request with fields): its callback id, each field's input block id
/// (this prefix, then the field's name) and the element's action id.
pub const ANSWERS_CALLBACK: &str = "greenlight.answers";
pub const FIELD_BLOCK_PREFIX: &str = "greenlight.field.";
pub const FIELD_ACTION: &str = "value";
/// An editable param's input block id in the same modal: this prefix, then the param's name.
pub const EDIT_BLOCK_PREFIX: &str = "greenlight.edit.";

/// What the workflow changes about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    pub approvals_required: u32,
    /// Buttons ask for confirmation.
    pub confirm: bool,
    /// A workflow written with stages: the message shows each stage's progress.
    pub stages: Option<Arc<StagedLook>>,
    /// `allow_standing`: a third button, "Approve for…", up to this long.
    pub approve_for: Option<crate::domain::DurationSpec>,
    /// The workflow has action hooks (`on_approve`, `on_deny`), whose results the message
    /// shows under it: without, there are none to look up.
    pub action_hooks: bool,
}

/// A workflow's stages as a message shows them: its policy and each stage's approvers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedLook {
    pub policy: Policy,
    pub approvers: Vec<Vec<Approver>>,
}

impl Default for Look {
    fn default() -> Self {
        Self {
            approvals_required: 1,
            confirm: false,
            stages: None,
            approve_for: None,
            action_hooks: true,
        }
    }
}

impl Look {
    /// How `workflow` renders its requests.
    pub fn of(workflow: &Workflow) -> Self {
        let stages = workflow.has_stages().then(|| {
            Arc::new(StagedLook {
                policy: workflow.policy(),
                approvers: workflow
                    .stages()
                    .iter()
                    .map(|s| s.approvers.clone())
                    .collect(),
            })
        });
        Self {
            approvals_required: workflow.approvals_required,
            confirm: workflow.confirm,
            stages,
            approve_for: workflow.allow_standing,
            action_hooks: !workflow.on_approve.is_empty() || !workflow.on_deny.is_empty(),
        }
    }
}

const MAX_FIELDS: usize = 10;

/// Most characters of a tool's input shown in its code block (a section holds 3000).
const MAX_CODE: usize = 2800;

/// What an agent asks to run: the tool's name and its input as a code block (cut to fit
/// Slack; the API keeps it whole).
fn tool_call_blocks(call: &crate::domain::ToolCall) -> Vec<SlackBlock> {
    let input = serde_json::to_string_pretty(&call.input).unwrap_or_default();
    let (code, cut) = code_block(&input, MAX_CODE);
    let mut blocks: Vec<SlackBlock> = vec![
        SlackSectionBlock::new()
            .with_text(md(format!("*Tool* {}", escape_within(&call.name, 200))))
            .into(),
        SlackSectionBlock::new().with_text(md(code)).into(),
    ];
    if cut {
        blocks.push(context_md(
            "The input is longer than Slack shows; the API has all of it.".into(),
        ));
    }
    blocks
}

/// A person or machine as mrkdwn: Slack user ids become mentions, anything else is escaped.
pub fn who(id: &str) -> String {
    if SlackUserId::looks_like(id) {
        format!("<@{id}>")
    } else {
        escape(id)
    }
}

pub(crate) fn date(ts: Timestamp) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} at {{time}}|{}>",
        ts.as_second(),
        ts.strftime("%Y-%m-%d %H:%M UTC")
    )
}

fn param_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn md(text: String) -> SlackBlockText {
    SlackBlockText::MarkDown(SlackBlockMarkDownText::new(text))
}

/// A duration in words people read: `1h`, `1h30m`, `45s`.
fn span(from: Timestamp, to: Timestamp) -> String {
    let secs = (to.as_second() - from.as_second()).max(0);
    if secs < 60 {
        return format!("{secs}s");
    }
    let mins = (secs + 30) / 60;
    let (d, h, m) = (mins / 1440, mins / 60 % 24, mins % 60);
    let mut out = String::new();
    for (n, unit) in [(d, "d"), (h, "h"), (m, "m")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

fn outcome_line(r: &Request) -> String {
    let by = r.decided_by.as_deref().map(who).unwrap_or_default();
    let kind = r.decisions.last().map(|d| d.kind);
    let when = r.decided_at.map(date).unwrap_or_default();
    // The time it was given, not when the scheduler got to it.
    let waited = span(
        r.created_at,
        r.expires_at.or(r.decided_at).unwrap_or(r.created_at),
    );
    match r.status {
        Status::Pending => String::new(),
        Status::Approved if kind == Some(DecisionKind::Policy) => {
            format!(":white_check_mark: *Auto-approved* by rule *{by}* {when}")
        }
        Status::Denied if kind == Some(DecisionKind::Policy) => {
            format!(":no_entry: *Auto-denied* by rule *{by}* {when}")
        }
        Status::Approved if kind == Some(DecisionKind::Standing) => {
            format!(":white_check_mark: *Approved* by {by}'s standing approval {when}")
        }
        Status::Approved if kind == Some(DecisionKind::Timeout) => {
            format!(
                ":white_check_mark: *Approved* automatically: no decision within {waited} {when}"
            )
        }
        Status::Denied if kind == Some(DecisionKind::Timeout) => {
            format!(":no_entry: *Denied* automatically: no decision within {waited} {when}")
        }
        Status::Approved if r.buttons == Buttons::Answer => {
            format!(":white_check_mark: *Answered* by {by} {when}")
        }
        Status::Approved => format!(":white_check_mark: *Approved* by {by} {when}"),
        Status::Denied => format!(":no_entry: *Denied* by {by} {when}"),
        Status::Expired => format!(":hourglass: *Expired* after {waited}, no decision {when}"),
        Status::Cancelled => format!(":no_entry_sign: *Cancelled* by {by} {when}"),
    }
}

/// The notification text (shown where blocks are not: push notifications, screen readers).
pub fn fallback_text(r: &Request) -> String {
    let title = escape_within(&r.title, 200);
    match r.status {
        Status::Pending => format!("Approval requested: {title}"),
        status => format!("{}: {title}", capitalize(status.as_str())),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// A mention that notifies: `<@U…>` for people, `<!subteam^S…>` for user groups.
pub fn mention(a: &Approver) -> String {
    match a {
        Approver::User(u) => format!("<@{u}>"),
        Approver::Group(g) => format!("<!subteam^{g}>"),
    }
}

/// A stage and who may approve in it, for the lines that name whom a request waits for.
pub type StageOf<'a> = (&'a StageProgress, &'a [Approver]);

/// "Waiting for *security*: 0 of 2 from @ciso, @security-team": the open stages and whom they
/// wait for (mrkdwn with mentions; plain ids where mrkdwn is not shown, as in modal errors).
pub fn waiting_for(stages: &[StageOf<'_>], mrkdwn: bool) -> String {
    let lines: Vec<String> = stages
        .iter()
        .map(|(stage, approvers)| {
            let from: Vec<String> = approvers
                .iter()
                .map(|a| if mrkdwn { mention(a) } else { a.to_string() })
                .collect();
            let name = escape_within(&stage.name, 40);
            let name = if mrkdwn { format!("*{name}*") } else { name };
            let mut line = format!(
                "Waiting for {name}: {} of {}",
                stage.approvals.len(),
                stage.approvals_required
            );
            if !from.is_empty() {
                line.push_str(&format!(" from {}", from.join(", ")));
            }
            line
        })
        .collect();
    lines.join("; ")
}

/// The thread reply telling a stage's approvers it is their turn.
pub fn stage_opened_text(r: &Request, stage: &StageProgress, approvers: &[Approver]) -> String {
    let who: Vec<String> = approvers.iter().map(mention).collect();
    let mut text = String::new();
    if !who.is_empty() {
        text.push_str(&format!("{} ", who.join(" ")));
    }
    text.push_str(&format!(
        ":arrow_forward: Stage *{}* is open: *{}* needs {} approval{} from you.",
        escape_within(&stage.name, 40),
        escape_within(&r.title, 200),
        stage.approvals_required,
        if stage.approvals_required == 1 {
            ""
        } else {
            "s"
        },
    ));
    text
}

/// The thread reply nudging the approvers; `escalate_to` joins from the second reminder.
pub fn reminder_text(
    r: &Request,
    approvers: &[Approver],
    escalate_to: Option<&Approver>,
    number: u32,
    now: Timestamp,
) -> String {
    let mut who: Vec<String> = approvers.iter().map(mention).collect();
    let mut text = String::new();
    if let Some(e) = escalate_to.filter(|_| number >= 2) {
        text.push_str(&format!(":rotating_light: Escalating to {}. ", mention(e)));
        who.retain(|m| *m != mention(e));
    }
    if !who.is_empty() {
        text.push_str(&format!("{} ", who.join(" ")));
    }
    text.push_str(&format!(
        ":bell: Reminder {number}: *{}* is still waiting for a decision (asked {} ago).",
        escape_within(&r.title, 200),
        span(r.created_at, now)
    ));
    text
}

/// The modal a Deny click opens when the workflow wants a reason.
pub fn deny_reason_modal(r: &Request) -> SlackView {
    let input = SlackInputBlock::new(
        "Why do you deny it?".into(),
        SlackInputBlockElement::PlainTextInput(
            SlackBlockPlainTextInputElement::new()
                .with_action_id(REASON_ACTION.into())
                .with_multiline(true),
        ),
    )
    .with_block_id(REASON_BLOCK.into());
    SlackView::Modal(
        SlackModalView::new(
            "Deny request".into(),
            vec![
                SlackSectionBlock::new()
                    .with_text(md(format!("*{}*", escape_within(&r.title, 200))))
                    .into(),
                input.into(),
            ],
        )
        .with_submit("Deny".into())
        .with_close("Cancel".into())
        .with_callback_id(DENY_REASON_CALLBACK.into())
        .with_private_metadata(r.id.to_string()),
    )
}

/// The block id of a field's input in the answers modal.
pub fn field_block(name: &str) -> String {
    format!("{FIELD_BLOCK_PREFIX}{name}")
}

fn plain(text: &str, max: usize) -> SlackBlockPlainTextOnly {
    SlackBlockPlainText::new(truncate(&clean(text), max))
        .with_emoji(false)
        .into()
}

fn choice(option: &str) -> SlackBlockChoiceItem<SlackBlockPlainTextOnly> {
    SlackBlockChoiceItem::new(plain(option, 75), option.to_owned())
}

/// A field as a modal's input block, starting at its default.
fn field_input(f: &Field) -> SlackBlock {
    let default = f.default.as_ref();
    let element: SlackInputBlockElement = match f.kind {
        FieldType::Text | FieldType::Textarea => {
            let mut input = SlackBlockPlainTextInputElement::new()
                .with_action_id(FIELD_ACTION.into())
                .with_multiline(f.kind == FieldType::Textarea);
            if let Some(max) = f.max_length {
                input = input.with_max_length(u64::from(max));
            }
            if let Some(text) = default.and_then(|d| d.as_str()) {
                input = input.with_initial_value(text.to_owned());
            }
            input.into()
        }
        FieldType::Number => {
            let mut input =
                SlackBlockNumberInputElement::new(true).with_action_id(FIELD_ACTION.into());
            if let Some(min) = f.min {
                input = input.with_min_value(number_text(min));
            }
            if let Some(max) = f.max {
                input = input.with_max_value(number_text(max));
            }
            if let Some(n) = default.filter(|d| d.is_number()) {
                input = input.with_initial_value(n.to_string());
            }
            input.into()
        }
        FieldType::Select => {
            let mut select = SlackBlockStaticSelectElement::new()
                .with_action_id(FIELD_ACTION.into())
                .with_placeholder(plain("Choose", 150))
                .with_options(f.options.iter().map(|o| choice(o)).collect());
            if let Some(o) = default.and_then(|d| d.as_str()) {
                select = select.with_initial_option(choice(o));
            }
            select.into()
        }
        FieldType::Boolean => {
            let item = SlackBlockChoiceItem::new(
                SlackBlockText::Plain(SlackBlockPlainText::new("Yes".into())),
                CHECKED.to_owned(),
            );
            let mut boxes = SlackBlockCheckboxesElement::new(vec![item.clone()])
                .with_action_id(FIELD_ACTION.into());
            if default.and_then(serde_json::Value::as_bool) == Some(true) {
                boxes = boxes.with_initial_options(vec![item]);
            }
            boxes.into()
        }
    };
    SlackInputBlock::new(plain(&f.label, 2000), element)
        .with_block_id(field_block(&f.name).into())
        .with_optional(!f.required)
        .into()
}

/// The block id of an editable param's input in the answers modal.
pub fn edit_block(param: &str) -> String {
    format!("{EDIT_BLOCK_PREFIX}{param}")
}

/// An editable param as an input pre-filled with its value, of its type.
fn edit_input(param: &str, value: &serde_json::Value) -> Option<SlackBlock> {
    let element: SlackInputBlockElement = match value {
        serde_json::Value::Number(n) => SlackBlockNumberInputElement::new(true)
            .with_action_id(FIELD_ACTION.into())
            .with_initial_value(n.to_string())
            .into(),
        serde_json::Value::String(s) => SlackBlockPlainTextInputElement::new()
            .with_action_id(FIELD_ACTION.into())
            .with_multiline(s.contains('\n') || s.chars().count() > 80)
            .with_initial_value(s.clone())
            .into(),
        serde_json::Value::Bool(b) => {
            let item = SlackBlockChoiceItem::new(
                SlackBlockText::Plain(SlackBlockPlainText::new("Yes".into())),
                CHECKED.to_owned(),
            );
            let mut boxes = SlackBlockCheckboxesElement::new(vec![item.clone()])
                .with_action_id(FIELD_ACTION.into());
            if *b {
                boxes = boxes.with_initial_options(vec![item]);
            }
            boxes.into()
        }
        _ => return None,
    };
    Some(
        SlackInputBlock::new(
            plain(
                param
                    .strip_prefix(crate::domain::TOOL_INPUT_PREFIX)
                    .unwrap_or(param),
                2000,
            ),
            element,
        )
        .with_block_id(edit_block(param).into())
        // An emptied text is an edit to ""; a number must stay a number.
        .with_optional(!value.is_number())
        .with_hint(plain("You may change this before approving.", 150))
        .into(),
    )
}

/// What an approver may edit on `r` (params, and an agent's tool input), by edit key, with
/// the values.
pub fn editable_params(r: &Request) -> impl Iterator<Item = (&str, &serde_json::Value)> {
    r.editable_values().into_iter()
}

/// The modal Approve (or Answer) opens on a request with fields or editable params: an input
/// per field, starting at its default, and one per editable param, pre-filled with its value.
pub fn answers_modal(r: &Request) -> SlackView {
    let (title, submit) = match r.buttons {
        Buttons::Answer => ("Answer", "Answer"),
        Buttons::ApproveDeny => ("Approve request", "Approve"),
    };
    let mut blocks: Vec<SlackBlock> = vec![
        SlackSectionBlock::new()
            .with_text(md(format!("*{}*", escape_within(&r.title, 200))))
            .into(),
    ];
    blocks.extend(r.fields.iter().map(field_input));
    blocks.extend(editable_params(r).filter_map(|(name, value)| edit_input(name, value)));
    SlackView::Modal(
        SlackModalView::new(title.into(), blocks)
            .with_submit(submit.into())
            .with_close("Cancel".into())
            .with_callback_id(ANSWERS_CALLBACK.into())
            .with_private_metadata(r.id.to_string()),
    )
}

/// The answers that approved a request, as section fields: "*Environment*\nprod".
pub fn response_block(r: &Request) -> Option<SlackBlock> {
    let response = r.response.as_ref().filter(|a| !a.is_empty())?;
    // In the order the fields were asked.
    let fields: Vec<SlackBlockText> = r
        .fields
        .iter()
        .filter_map(|f| Some((f.label.as_str(), response.get(&f.name)?)))
        .take(MAX_FIELDS)
        .map(|(label, value)| {
            let label = escape_within(label, 200);
            let room = 2000 - 3 - label.chars().count();
            md(format!(
                "*{label}*\n{}",
                escape_within(&answer_text(value), room)
            ))
        })
        .collect();
    Some(SlackSectionBlock::new().with_fields(fields).into())
}

fn confirm(verb: &str, r: &Request, danger: bool) -> SlackBlockConfirmItem {
    let item = SlackBlockConfirmItem::new(
        format!("{verb} this request?").into(),
        md(format!("*{}*", escape_within(&r.title, 298))),
        verb.into(),
        "Cancel".into(),
    );
    if danger {
        item.with_style("danger".into())
    } else {
        item.with_style("primary".into())
    }
}

/// The message with default looks (one approval, no confirmation dialogs).
pub fn blocks(r: &Request) -> Vec<SlackBlock> {
    blocks_with(r, &Look::default())
}

pub fn blocks_with(r: &Request, look: &Look) -> Vec<SlackBlock> {
    let mut blocks: Vec<SlackBlock> =
        // Plain text shows `*` as typed, but would still turn `:white_check_mark:` into an emoji.
        vec![
            SlackHeaderBlock::new(
                SlackBlockPlainText::new(truncate(&clean(&r.title), 150))
                    .with_emoji(false)
                    .into(),
            )
            .into(),
        ];
    if let Some(line) = verified_line(r) {
        blocks.push(context_md(line));
    }
    if let Some(details) = r.details.as_deref().filter(|d| !d.trim().is_empty()) {
        blocks.push(
            SlackSectionBlock::new()
                .with_text(md(escape_within(details, 3000)))
                .into(),
        );
    }
    if let Some(call) = &r.tool_call {
        blocks.extend(tool_call_blocks(call));
    }
    if !r.params.is_empty() {
        let mut fields: Vec<SlackBlockText> = r
            .params
            .iter()
            .take(MAX_FIELDS)
            .map(|(k, v)| {
                let key = escape_within(k, 200);
                let room = 2000 - 3 - key.chars().count();
                md(format!("*{key}*\n{}", escape_within(&param_value(v), room)))
            })
            .collect();
        if r.params.len() > MAX_FIELDS {
            fields.pop();
            fields.push(md(format!(
                "_…and {} more_",
                r.params.len() - (MAX_FIELDS - 1)
            )));
        }
        blocks.push(SlackSectionBlock::new().with_fields(fields).into());
    }
    blocks.push(context_md(context_line(r)));
    if r.status == Status::Pending {
        if let Some(progress) = progress(r, look) {
            blocks.push(SlackSectionBlock::new().with_text(md(progress)).into());
        }
        blocks.push(buttons(r, look, ACTIONS_BLOCK));
    } else {
        blocks.push(
            SlackSectionBlock::new()
                .with_text(md(truncate(&outcome_with_reason(r), 3000)))
                .into(),
        );
        blocks.extend(response_block(r));
        if let Some(edited) = edited_line(r) {
            blocks.push(SlackSectionBlock::new().with_text(md(edited)).into());
        }
    }
    blocks
}

/// The claims a verified line names after the requester, as `label value`: GitHub Actions'
/// workflow and run, GitLab's pipeline and job.
const VERIFIED_CLAIMS: [(&str, &str); 4] = [
    ("workflow", "workflow"),
    ("run_id", "run"),
    ("pipeline_id", "pipeline"),
    ("job_id", "job"),
];

/// For a request a workload token made: "🔐 acme/api@refs/tags/v1.2 · workflow deploy.yml ·
/// run 8812 (verified by github-acme)", every part escaped as requester text is.
pub fn verified_line(r: &Request) -> Option<String> {
    let identity = r.identity.as_ref()?;
    let first = r.requester.as_deref().unwrap_or(&identity.subject);
    let mut parts = vec![escape_within(first, 200)];
    for (claim, label) in VERIFIED_CLAIMS {
        let value = match identity.claims.get(claim) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => continue,
        };
        parts.push(format!("{label} {}", escape_within(&value, 100)));
    }
    Some(format!(
        "\u{1f510} {} (verified by {})",
        parts.join(" · "),
        escape_within(&identity.trust, 64)
    ))
}

/// What an approver changed before approving: "*Edited:* replicas: 10 → 3".
pub fn edited_line(r: &Request) -> Option<String> {
    if r.status != Status::Approved {
        return None;
    }
    let edits = r.decisions.last()?.edits.as_ref()?;
    let changes = crate::domain::changes(|k| r.edit_target(k), edits);
    (!changes.is_empty()).then(|| {
        truncate(
            &format!(":pencil2: *Edited:* {}", escape(&changes.join(", "))),
            3000,
        )
    })
}

/// Who asked, in which workflow, until when, and the id: `requested by @frank · workflow
/// *deploy* · expires … · `req_…``.
pub fn context_line(r: &Request) -> String {
    let mut context = vec![format!("workflow *{}*", escape(r.workflow.as_str()))];
    if let Some(requester) = &r.requester {
        context.insert(0, format!("requested by {}", who(requester)));
    }
    if let (Status::Pending, Some(expires)) = (r.status, r.expires_at) {
        context.push(format!("expires {}", date(expires)));
    }
    context.push(format!("`{}`", r.id));
    context.join(" · ")
}

/// "1 of 2 approvals: @alice", when there is progress to show (N of M, or a first approval);
/// for a workflow with stages, a line per stage.
pub fn progress(r: &Request, look: &Look) -> Option<String> {
    if let Some(staged) = &look.stages {
        return Some(stage_lines(r, staged));
    }
    let approvals: Vec<String> = r
        .decisions
        .iter()
        .filter(|d| d.verdict == crate::domain::Verdict::Approve)
        .map(|d| who(&d.by))
        .collect();
    let required = look.approvals_required.max(1);
    if approvals.is_empty() && required == 1 {
        return None;
    }
    let mut progress = format!("{} of {required} approvals", approvals.len());
    if !approvals.is_empty() {
        progress.push_str(&format!(": {}", approvals.join(", ")));
    }
    Some(progress)
}

/// "✅ *owners* 1/1: @carol", "⏳ *security* 0/2: waiting for @ciso, @security-team", and
/// for a stage not open yet, the one it opens after.
pub fn stage_lines(r: &Request, staged: &StagedLook) -> String {
    let stages = r.stages(&staged.policy);
    let mut lines = Vec::with_capacity(stages.len());
    let mut before: Option<&str> = None;
    for (i, stage) in stages.iter().enumerate() {
        let name = escape_within(&stage.name, 40);
        let count = format!(
            "*{name}* {}/{}",
            stage.approvals.len(),
            stage.approvals_required
        );
        let by: Vec<String> = stage.approvals.iter().map(|a| who(&a.by)).collect();
        let from: Vec<String> = staged
            .approvers
            .get(i)
            .map(|a| a.iter().map(mention).collect())
            .unwrap_or_default();
        let line = match stage.status {
            StageStatus::Approved => format!(":white_check_mark: {count}: {}", by.join(", ")),
            StageStatus::Open => format!(
                ":hourglass_flowing_sand: {count}: waiting for {}",
                from.join(", ")
            ),
            StageStatus::Denied => format!(":no_entry: {count}"),
            StageStatus::Waiting => match before.filter(|_| r.status == Status::Pending) {
                Some(prev) => format!(
                    ":double_vertical_bar: {count}: opens when *{}* is approved",
                    escape_within(prev, 40)
                ),
                None => format!(":double_vertical_bar: {count}"),
            },
        };
        lines.push(line);
        before = Some(&stage.name);
    }
    lines.join("\n")
}

/// The direct message telling the requester how their request ended, who decided and why.
pub fn requester_outcome(r: &Request) -> String {
    format!(
        "Your request *{}* (`{}`) is decided:\n{}",
        escape_within(&r.title, 200),
        r.id,
        outcome_with_reason(r)
    )
}

/// How a decided request ended, with the deny reason quoted under it.
pub fn outcome_with_reason(r: &Request) -> String {
    let mut line = outcome_line(r);
    if let Some(reason) = r.reason.as_deref().filter(|s| !s.trim().is_empty()) {
        line.push_str(&format!(
            "\n>{}",
            escape_within(reason, 1000).replace('\n', "\n>")
        ));
    }
    line
}

/// Approve and Deny, carrying the request id: the same buttons wherever they are shown (the
/// message, the Home tab), so a click means the same everywhere. `block_id` must be unique
/// within its message or view.
pub fn buttons(r: &Request, look: &Look, block_id: &str) -> SlackBlock {
    if r.buttons == Buttons::Answer {
        // A question: one button, which approves once answered.
        let answer = SlackBlockButtonElement::new("Answer".into())
            .with_action_id(APPROVE_ACTION.into())
            .with_value(r.id.to_string())
            .with_style(SlackBlockButtonStyle::Primary);
        return SlackActionsBlock::new(vec![SlackActionBlockElement::Button(answer)])
            .with_block_id(block_id.into())
            .into();
    }
    let mut approve = SlackBlockButtonElement::new("Approve".into())
        .with_action_id(APPROVE_ACTION.into())
        .with_value(r.id.to_string())
        .with_style(SlackBlockButtonStyle::Primary);
    let mut deny = SlackBlockButtonElement::new("Deny".into())
        .with_action_id(DENY_ACTION.into())
        .with_value(r.id.to_string())
        .with_style(SlackBlockButtonStyle::Danger);
    if look.confirm {
        approve = approve.with_confirm(confirm("Approve", r, false));
        deny = deny.with_confirm(confirm("Deny", r, true));
    }
    let mut elements = vec![
        SlackActionBlockElement::Button(approve),
        SlackActionBlockElement::Button(deny),
    ];
    // Answers cannot be given in advance: a request with fields is approved one at a time.
    if look.approve_for.is_some() && r.fields.is_empty() {
        elements.push(SlackActionBlockElement::Button(
            SlackBlockButtonElement::new("Approve for\u{2026}".into())
                .with_action_id(APPROVE_FOR_ACTION.into())
                .with_value(r.id.to_string()),
        ));
    }
    SlackActionsBlock::new(elements)
        .with_block_id(block_id.into())
        .into()
}

/// "Approve for…": approves the request and, for the time typed (at most `bound`), later
/// requests like it from the same caller.
pub fn standing_modal(r: &Request, bound: crate::domain::DurationSpec) -> SlackView {
    let input = SlackInputBlock::new(
        format!("For how long? (at most {bound})").into(),
        SlackInputBlockElement::PlainTextInput(
            SlackBlockPlainTextInputElement::new()
                .with_action_id(STANDING_ACTION.into())
                .with_initial_value(if bound.as_millis() >= 3_600_000 {
                    "1h".to_owned()
                } else {
                    bound.to_string()
                })
                .with_placeholder("e.g. 30m, 2h".into()),
        ),
    )
    .with_block_id(STANDING_BLOCK.into());
    let who = r.requester.as_deref().map_or_else(
        || "the same caller".to_owned(),
        |q| format!("{} (the same caller)", who(q)),
    );
    SlackView::Modal(
        SlackModalView::new(
            "Approve for a while".into(),
            vec![
                SlackSectionBlock::new()
                    .with_text(md(format!(
                        "*{}*\nApproves this request, and until the time is up, requests from {who} in workflow *{}* with the same params, in your name. You can revoke it from the Home tab or with `greenlight standing revoke`.",
                        escape_within(&r.title, 200),
                        escape(r.workflow.as_str()),
                    )))
                    .into(),
                input.into(),
            ],
        )
        .with_submit("Approve".into())
        .with_close("Cancel".into())
        .with_callback_id(STANDING_CALLBACK.into())
        .with_private_metadata(r.id.to_string()),
    )
}

/// A plain message (alerts to the operators' channel); `text` is mrkdwn, already escaped.
pub fn notice(text: &str) -> Vec<SlackBlock> {
    vec![
        SlackSectionBlock::new()
            .with_text(md(truncate(text, 3000)))
            .into(),
    ]
}

/// A digest: the auto-decisions of one channel and window in one message, updated in place
/// while the window is open. Each recent request links to its API resource when `public_url`
/// is set. Returns the notification text and the blocks.
pub fn digest(
    window: &crate::store::DigestWindow,
    summary: &crate::store::DigestSummary,
    public_url: Option<&str>,
) -> (String, Vec<SlackBlock>) {
    let count = |status: &str| -> i64 {
        summary
            .by_rule
            .iter()
            .filter(|(_, s, _)| s == status)
            .map(|(_, _, n)| n)
            .sum()
    };
    let (approved, denied) = (count("approved"), count("denied"));
    let at = |ms: i64| Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let (start, end) = (at(window.start), at(window.end));
    let clock = |ts: Timestamp| {
        format!(
            "<!date^{}^{{time}}|{}>",
            ts.as_second(),
            ts.strftime("%H:%M UTC")
        )
    };
    let s = if summary.total == 1 { "" } else { "s" };
    let text = format!(
        "{} auto-decision{s} ({approved} approved, {denied} denied) from {} to {}",
        summary.total,
        start.strftime("%H:%M"),
        end.strftime("%H:%M UTC")
    );
    let mut head = format!(
        ":robot_face: *{} auto-decision{s}* from {} to {}: {approved} approved, {denied} denied",
        summary.total,
        clock(start),
        clock(end)
    );
    let rules: Vec<String> = summary
        .by_rule
        .iter()
        .take(MAX_FIELDS)
        .map(|(rule, status, n)| {
            let rule = if rule.is_empty() { "?" } else { rule.as_str() };
            format!("• rule *{}* {status} {n}", escape_within(rule, 80))
        })
        .collect();
    if !rules.is_empty() {
        head.push('\n');
        head.push_str(&rules.join("\n"));
    }
    let mut blocks: Vec<SlackBlock> = vec![SlackSectionBlock::new().with_text(md(head)).into()];
    let whom: Vec<String> = summary
        .by_requester
        .iter()
        .map(|(requester, n)| {
            let name = requester
                .as_deref()
                .map_or_else(|| "no requester".to_owned(), |r| who(&truncate(r, 80)));
            format!("{name} ({n})")
        })
        .collect();
    if !whom.is_empty() {
        blocks.push(
            SlackSectionBlock::new()
                .with_text(md(format!("*For:* {}", whom.join(", "))))
                .into(),
        );
    }
    let base = public_url.map(|u| u.trim_end_matches('/'));
    let recent: Vec<String> = summary
        .recent
        .iter()
        .map(|e| {
            let title = escape_within(&e.title, 120);
            let mark = match e.status.as_str() {
                "approved" => ":white_check_mark:",
                "denied" => ":no_entry:",
                _ => ":grey_question:",
            };
            match base {
                Some(base) => format!("{mark} <{base}/v1/requests/{}|{title}>", e.id),
                None => format!("{mark} {title} (`{}`)", e.id),
            }
        })
        .collect();
    if !recent.is_empty() {
        blocks.push(
            SlackSectionBlock::new()
                .with_text(md(format!("*Latest:*\n{}", recent.join("\n"))))
                .into(),
        );
    }
    blocks.push(context_md(format!(
        "Updated in place until {}. Every request is in the API: `GET /v1/requests/{{id}}`, `greenlight audit`.",
        clock(end)
    )));
    (text, blocks)
}

/// How many hook results a message shows (the newest).
const MAX_ACTION_RESULTS: usize = 5;

/// What the request's action hooks did: "Deployment triggered: HTTP 201".
pub fn action_results(results: &[crate::store::ActionResult]) -> Option<SlackBlock> {
    let skip = results.len().saturating_sub(MAX_ACTION_RESULTS);
    let lines: Vec<String> = results
        .iter()
        .skip(skip)
        .map(|a| {
            let name = escape_within(&a.name, 80);
            let summary = escape_within(&a.summary, 200);
            if a.ok {
                format!(":gear: {name} triggered: {summary}")
            } else {
                let s = if a.attempts == 1 { "" } else { "s" };
                format!(
                    ":warning: {name} failed after {} attempt{s}: {summary}",
                    a.attempts
                )
            }
        })
        .collect();
    (!lines.is_empty()).then(|| context_md(lines.join("\n")))
}

/// What a standing approval covers: "Requests from *deploy-bot* in *agent* with
/// tool_name=Bash".
pub fn standing_scope(s: &StandingApproval) -> String {
    let matched: Vec<String> = s
        .r#match
        .iter()
        .map(|(k, v)| format!("{k}={}", param_value(v)))
        .collect();
    let with = if matched.is_empty() {
        "no params".to_owned()
    } else {
        matched.join(", ")
    };
    format!(
        "Requests from *{}* in *{}* with {}",
        escape_within(&s.caller_name, 100),
        escape(s.workflow.as_str()),
        escape_within(&with, 500)
    )
}

/// Under the message whose approval granted them: each standing approval, live with a Revoke
/// button, or how it ended.
pub fn standing_blocks(granted: &[StandingApproval], now: Timestamp) -> Vec<SlackBlock> {
    let mut blocks = Vec::new();
    for s in granted {
        let scope = standing_scope(s);
        if let (Some(at), Some(by)) = (s.revoked_at, s.revoked_by.as_deref()) {
            blocks.push(context_md(format!(
                ":no_entry_sign: Standing approval `{}` revoked by {} {}: {scope} are asked again.",
                s.id,
                who(by),
                date(at)
            )));
        } else if s.expires_at <= now {
            blocks.push(context_md(format!(
                ":hourglass: Standing approval `{}` by {} ran out {}: {scope} are asked again.",
                s.id,
                who(&s.granted_by),
                date(s.expires_at)
            )));
        } else {
            blocks.push(
                SlackSectionBlock::new()
                    .with_text(md(format!(
                        ":hourglass_flowing_sand: *Standing approval* by {}: {scope} are approved until {} · `{}`",
                        who(&s.granted_by),
                        date(s.expires_at),
                        s.id
                    )))
                    .into(),
            );
            blocks.push(
                SlackActionsBlock::new(vec![SlackActionBlockElement::Button(
                    SlackBlockButtonElement::new("Revoke".into())
                        .with_action_id(REVOKE_STANDING_ACTION.into())
                        .with_value(s.id.to_string())
                        .with_style(SlackBlockButtonStyle::Danger)
                        .with_confirm(
                            SlackBlockConfirmItem::new(
                                "Revoke this standing approval?".into(),
                                md(
                                    "The requests it covers will need a person's approval again."
                                        .to_owned(),
                                ),
                                "Revoke".into(),
                                "Cancel".into(),
                            )
                            .with_style("danger".into()),
                        ),
                )])
                .with_block_id(format!("{STANDING_ACTIONS_BLOCK}.{}", s.id).into())
                .into(),
            );
        }
    }
    blocks
}

/// A context block of one mrkdwn text (at most the 3000 characters Slack takes).
pub(crate) fn context_md(text: String) -> SlackBlock {
    SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(
        SlackBlockMarkDownText::new(truncate(&text, 3000)),
    )])
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewRequest, Params, Policy, RequestId, Verdict, Vote};

    fn request(title: &str, details: &str) -> Request {
        let mut params = Params::new();
        params.insert("version".into(), "<!channel> v1.2".into());
        params.insert("replicas".into(), 3.into());
        Request::new(
            RequestId::generate(),
            NewRequest {
                workflow: "deploy".parse().unwrap(),
                title: title.into(),
                details: Some(details.into()),
                params,
                requester: Some("U0ALICE".into()),
                channel: "#deploys".parse().unwrap(),
                expires_at: Some(Timestamp::from_second(1_800_000_000).unwrap()),
                callback_url: None,
                remind_at: None,
            },
            Timestamp::from_second(1_700_000_000).unwrap(),
        )
    }

    fn json(r: &Request) -> String {
        serde_json::to_string(&blocks(r)).unwrap()
    }

    #[test]
    fn a_token_request_shows_a_verified_line_escaped_like_requester_text() {
        let mut r = request("Deploy", "");
        assert!(verified_line(&r).is_none());
        r.requester = Some("acme/api@refs/tags/v1.2 <!channel>".into());
        r.identity = Some(crate::domain::Identity {
            trust: "github-acme".into(),
            issuer: "https://token.actions.githubusercontent.com".into(),
            subject: "repo:acme/api:ref:refs/tags/v1.2".into(),
            claims: serde_json::json!({"workflow": "deploy.yml", "run_id": "8812", "repository": "acme/api"})
                .as_object()
                .unwrap()
                .clone(),
        });
        let line = verified_line(&r).unwrap();
        assert_eq!(
            line,
            "\u{1f510} acme/api@refs/tags/v1.2 &lt;!channel&gt; · workflow deploy.yml · run 8812 (verified by github-acme)"
        );
        let out = json(&r);
        assert!(out.contains("verified by github-acme"), "{out}");
        assert!(!out.contains("<!channel>"), "{out}");
    }

    #[test]
    fn requester_text_cannot_ping_the_channel_or_fake_links() {
        let r = request(
            "Deploy <!here>",
            "see <https://evil.example|docs> & <!channel>",
        );
        let out = json(&r);
        assert!(!out.contains("<!channel>"), "{out}");
        assert!(!out.contains("<https://evil"), "{out}");
        assert!(out.contains("&lt;!channel&gt;"));
        assert!(out.contains("&amp;"));
        assert_eq!(escape("a<b>&c"), "a&lt;b&gt;&amp;c");
    }

    #[test]
    fn pending_message_has_approve_and_deny_buttons_carrying_the_id() {
        let r = request("Deploy v1.2", "");
        let v: serde_json::Value = serde_json::to_value(blocks(&r)).unwrap();
        let actions = v
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "actions")
            .expect("actions block");
        let buttons = actions["elements"].as_array().unwrap();
        assert_eq!(buttons[0]["action_id"], APPROVE_ACTION);
        assert_eq!(buttons[0]["style"], "primary");
        assert_eq!(buttons[1]["action_id"], DENY_ACTION);
        assert_eq!(buttons[1]["style"], "danger");
        assert_eq!(buttons[0]["value"], r.id.as_str());
        assert!(json(&r).contains("<@U0ALICE>"));
        assert!(json(&r).contains("<!date^1800000000^"));
    }

    #[test]
    fn decided_message_has_no_buttons_and_names_the_decider() {
        let mut r = request("Deploy v1.2", "x");
        r.cast(
            Vote {
                by: "U0BOB".into(),
                name: None,
                kind: DecisionKind::User,
                verdict: Verdict::Deny,
                reason: Some("not <now>".into()),
                stage: None,
                response: None,
                edits: None,
            },
            &Policy::default(),
            Timestamp::from_second(1_700_000_100).unwrap(),
        )
        .unwrap();
        let out = json(&r);
        assert!(!out.contains("\"actions\""));
        assert!(out.contains("*Denied* by <@U0BOB>"));
        assert!(out.contains("not &lt;now&gt;"));
        assert_eq!(fallback_text(&r), "Denied: Deploy v1.2");
    }

    #[test]
    fn reminders_mention_people_and_groups_and_escalate_from_the_second() {
        let r = request("Deploy <!here>", "");
        let approvers: Vec<Approver> = vec!["U0ALICE".parse().unwrap(), "S0SRE".parse().unwrap()];
        let boss: Approver = "U0ERIN".parse().unwrap();
        let now = Timestamp::from_second(1_700_000_900).unwrap();
        let first = reminder_text(&r, &approvers, Some(&boss), 1, now);
        assert!(
            first.starts_with("<@U0ALICE> <!subteam^S0SRE> :bell: Reminder 1"),
            "{first}"
        );
        assert!(
            first.contains("Deploy &lt;!here&gt;") && first.contains("15m ago"),
            "{first}"
        );
        assert!(!first.contains("U0ERIN"));
        let second = reminder_text(&r, &approvers, Some(&boss), 2, now);
        assert!(
            second.starts_with(":rotating_light: Escalating to <@U0ERIN>."),
            "{second}"
        );
    }

    #[test]
    fn quorum_progress_and_confirmation_dialogs() {
        let r = request("Deploy", "");
        let look = Look {
            approvals_required: 2,
            confirm: true,
            ..Look::default()
        };
        let out = serde_json::to_string(&blocks_with(&r, &look)).unwrap();
        assert!(out.contains("0 of 2 approvals"), "{out}");
        assert_eq!(out.matches("\"confirm\":{\"title\"").count(), 2, "{out}");
        assert!(!json(&r).contains("\"confirm\""));
    }

    #[test]
    fn long_text_is_cut_to_slacks_limits() {
        let mut r = request(&"t".repeat(400), &"d".repeat(5000));
        for i in 0..30 {
            r.params.insert(format!("k{i}"), "v".repeat(3000).into());
        }
        let v: serde_json::Value = serde_json::to_value(blocks(&r)).unwrap();
        let blocks = v.as_array().unwrap();
        assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= 150);
        assert!(blocks[1]["text"]["text"].as_str().unwrap().chars().count() <= 3000);
        let fields = blocks[2]["fields"].as_array().unwrap();
        assert_eq!(fields.len(), 10);
        assert!(
            fields
                .iter()
                .all(|f| f["text"].as_str().unwrap().chars().count() <= 2000)
        );
    }
}
