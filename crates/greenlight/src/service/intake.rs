//! What a caller asks for, checked once at the edge, whichever way it came in (the HTTP API,
//! MCP): lengths, counts and shapes, so that nothing invalid reaches the use cases.

use serde::{Deserialize, Serialize};

use super::CreateInput;
use crate::domain::{Buttons, DurationSpec, Field, FieldSpec, IdError, Params, ToolCall};

pub const MAX_TITLE: usize = 200;
pub const MAX_DETAILS: usize = 10_000;
pub const MAX_PARAMS: usize = 50;
pub const MAX_PARAMS_BYTES: usize = 16 * 1024;
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
pub const MAX_TOOL_INPUT_BYTES: usize = 64 * 1024;

/// A refused input: a stable code and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid {
        code: "invalid_request",
        message: message.into(),
    }
}

/// Text either store can hold. PostgreSQL's `text` and `jsonb` refuse NUL, so it is refused
/// at the edge on both stores (the same answer whichever runs), naming the field.
pub fn storable(field: &str, text: &str) -> Result<(), Invalid> {
    if text.contains('\0') {
        return Err(invalid(format!(
            "{field} contains a NUL character (\\u0000), which cannot be stored"
        )));
    }
    Ok(())
}

/// A JSON value either store can hold: no NUL in any string or key (PostgreSQL reads stored
/// JSON as `jsonb`, which refuses `\u0000`).
pub fn storable_json(field: &str, value: &serde_json::Value) -> Result<(), Invalid> {
    match value {
        serde_json::Value::String(s) => storable(field, s),
        serde_json::Value::Array(items) => items.iter().try_for_each(|v| storable_json(field, v)),
        serde_json::Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            storable(field, k)?;
            storable_json(field, v)
        }),
        _ => Ok(()),
    }
}

/// `value` trimmed to absent when blank, refused when longer than `max` characters or when it
/// holds what cannot be stored.
pub fn non_empty(
    field: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, Invalid> {
    if let Some(v) = &value {
        storable(field, v)?;
    }
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) if v.chars().count() > max => {
            Err(invalid(format!("{field} is longer than {max} characters")))
        }
        Some(v) => Ok(Some(v)),
    }
}

/// The metadata object a caller keeps with its request (at most 16 KB).
pub fn metadata(
    value: Option<serde_json::Value>,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, Invalid> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(m)) => {
            storable_json("metadata", &serde_json::Value::Object(m.clone()))?;
            if serde_json::to_vec(&m).map_or(0, |v| v.len()) > MAX_METADATA_BYTES {
                return Err(invalid(format!(
                    "metadata is larger than {MAX_METADATA_BYTES} bytes"
                )));
            }
            Ok(Some(m))
        }
        Some(_) => Err(invalid("metadata must be a JSON object")),
    }
}

/// The body of a create, as the API documents it.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// The workflow to ask in (`[[workflow]] name`); the default workflow when left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// What is being asked, as approvers read it (1-200 characters, not all blank).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = true, min_length = 1, max_length = 200, pattern = r"\S", example = "Deploy api v1.4.2 to production")]
    pub title: Option<String>,
    /// More context, shown under the title (at most 10,000 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 10000)]
    pub details: Option<String>,
    /// Key/value facts that rules read and the message shows (`{"version": "1.4.2"}`; at
    /// most 50 keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub params: Option<Params>,
    /// Who asks: shown in the message (a person's name, a pipeline). A Slack user id or
    /// mention, in any case and with spaces around (`<@U0ALICE>`, ` u0alice `), is kept as
    /// the id (`U0ALICE`). Ignored when a workload token (OIDC) authenticates the call: the
    /// requester then comes from its `[[trust]]` policy's `requester` template, proven rather
    /// than claimed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub requester: Option<String>,
    /// An https URL told of the decision with a signed webhook (Standard Webhooks).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2000)]
    pub callback_url: Option<String>,
    /// How long the request may wait for a decision: seconds, or `"30m"`, `"2h"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<DurationSpec>,
    /// Repeating a create with the same key returns the same request (also the
    /// `Idempotency-Key` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Another channel than the workflow's, when the workflow allows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The caller's own JSON object, kept and handed back, never shown in Slack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// An agent's tool call the request asks about: shown in Slack as a code block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<ToolCall>,
    /// What approvers fill in when they approve (at most 10): Approve opens a Slack modal
    /// with these inputs, and the answers come back as the request's `response`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldSpec>>,
    /// `"answer"`: one Answer button instead of Approve and Deny, for a question that is not
    /// an approval (it needs fields; answering approves). Default `"approve_deny"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Buttons>)]
    pub buttons: Option<String>,
    /// Params an approver may edit before approving (`["params.replicas"]`), among those the
    /// workflow's `editable` allows; default: the workflow's. The request then gains
    /// `approved_params`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub editable: Option<Vec<String>>,
}

/// The fields and buttons a request asks, checked (stable codes: `invalid_field_type`,
/// `select_without_options`, `duplicate_field`, `too_many_fields`, `field_too_long`,
/// `invalid_field`, `invalid_buttons`).
pub fn form(
    fields: Option<Vec<FieldSpec>>,
    buttons: Option<&str>,
) -> Result<(Vec<Field>, Buttons), Invalid> {
    let fields = crate::domain::check_fields(fields.unwrap_or_default()).map_err(|p| Invalid {
        code: p.code,
        message: p.message,
    })?;
    let buttons = match buttons {
        None | Some("approve_deny") => Buttons::ApproveDeny,
        Some("answer") => Buttons::Answer,
        Some(other) => {
            return Err(Invalid {
                code: "invalid_buttons",
                message: format!("buttons is {other:?}; it is \"approve_deny\" or \"answer\""),
            });
        }
    };
    if buttons == Buttons::Answer && fields.is_empty() {
        return Err(Invalid {
            code: "invalid_buttons",
            message: "buttons \"answer\" needs fields to answer".into(),
        });
    }
    Ok((fields, buttons))
}

/// A tool call as a person will read it: a name of 1-200 characters, an input of at most
/// 64 KB (Slack shows its start; the API keeps it whole).
fn tool_call(call: Option<ToolCall>) -> Result<Option<ToolCall>, Invalid> {
    let Some(call) = call else {
        return Ok(None);
    };
    let name = call.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(invalid("tool_call.name must be 1-200 characters"));
    }
    storable("tool_call.name", name)?;
    storable_json("tool_call.input", &call.input)?;
    if serde_json::to_vec(&call.input).map_or(0, |v| v.len()) > MAX_TOOL_INPUT_BYTES {
        return Err(invalid(format!(
            "tool_call.input is larger than {MAX_TOOL_INPUT_BYTES} bytes"
        )));
    }
    Ok(Some(ToolCall {
        name: name.to_owned(),
        input: call.input,
        approved_input: None,
    }))
}

impl CreateBody {
    /// Checks the body; `header_key` is an `Idempotency-Key` given beside it.
    pub fn into_input(self, header_key: Option<String>) -> Result<CreateInput, Invalid> {
        let workflow = self
            .workflow
            .map(|w| w.parse())
            .transpose()
            .map_err(|e: IdError| Invalid {
                code: "unknown_workflow",
                message: e.to_string(),
            })?;
        let title = non_empty("title", self.title, MAX_TITLE)?
            .ok_or_else(|| invalid("title is required"))?;
        let details = non_empty("details", self.details, MAX_DETAILS)?;
        let requester = non_empty("requester", self.requester, 200)?;
        let params = self.params.unwrap_or_default();
        if params.len() > MAX_PARAMS {
            return Err(invalid(format!("params has more than {MAX_PARAMS} keys")));
        }
        if serde_json::to_vec(&params).map_or(0, |v| v.len()) > MAX_PARAMS_BYTES {
            return Err(invalid(format!(
                "params is larger than {MAX_PARAMS_BYTES} bytes"
            )));
        }
        for (k, v) in &params {
            storable("param name", k)?;
            storable_json(&format!("param {k:?}"), v)?;
        }
        if let Some(k) = params.keys().find(|k| k.is_empty() || k.len() > 100) {
            return Err(invalid(format!(
                "param name {k:?} must be 1-100 characters"
            )));
        }
        let callback_url = non_empty("callback_url", self.callback_url, 2000)?;
        if let Some(url) = &callback_url {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| invalid(format!("callback_url is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid("callback_url must be http or https"));
            }
        }
        let idempotency_key = match (header_key, self.idempotency_key) {
            (Some(h), Some(b)) if h != b => {
                return Err(invalid(
                    "Idempotency-Key header and idempotency_key field disagree",
                ));
            }
            (h, b) => non_empty("idempotency key", h.or(b), MAX_IDEMPOTENCY_KEY)?,
        };
        let channel = non_empty("channel", self.channel, 100)?
            .map(|c| c.parse())
            .transpose()
            .map_err(|e: IdError| invalid(e.to_string()))?;
        let (fields, buttons) = form(self.fields, self.buttons.as_deref())?;
        if let Some(e) = self
            .editable
            .iter()
            .flatten()
            .find(|e| crate::domain::editable_param(e).is_none())
        {
            return Err(Invalid {
                code: "invalid_editable",
                message: format!("editable entry {e:?} must name a param, as \"params.NAME\""),
            });
        }
        Ok(CreateInput {
            fields,
            buttons,
            editable: self.editable,
            metadata: metadata(self.metadata)?,
            channel,
            workflow,
            title,
            details,
            params,
            requester,
            callback_url,
            expires_in: self.expires_in,
            idempotency_key,
            tool_call: tool_call(self.tool_call)?,
            token: None,
        })
    }
}
