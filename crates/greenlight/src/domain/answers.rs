//! Answers beyond yes and no: the fields a request asks its approvers to fill in, how they are
//! checked when asked for (Slack's limits) and when answered (types and bounds), and the typed
//! answers kept with the vote.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Answers by field name, typed: numbers as numbers, booleans as booleans, an optional field
/// left empty as `null`.
pub type Answers = serde_json::Map<String, Value>;

/// Most fields a request may ask (a modal holds 100 blocks; ten keep it readable).
pub const MAX_FIELDS: usize = 10;
/// Slack's limits: an input block's label, a select's options and each option's text, a
/// plain-text input's `max_length`.
pub const MAX_LABEL: usize = 2000;
pub const MAX_OPTIONS: usize = 100;
pub const MAX_OPTION: usize = 75;
pub const MAX_TEXT: u32 = 3000;
/// A field's name: its key in `response`, and part of its input block's id.
pub const MAX_NAME: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// One line of text.
    Text,
    /// Several lines of text.
    Textarea,
    Number,
    /// One of `options`.
    Select,
    /// A checkbox: `true` or `false`.
    Boolean,
}

impl FieldType {
    pub const ALL: [FieldType; 5] = [
        FieldType::Text,
        FieldType::Textarea,
        FieldType::Number,
        FieldType::Select,
        FieldType::Boolean,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Textarea => "textarea",
            FieldType::Number => "number",
            FieldType::Select => "select",
            FieldType::Boolean => "boolean",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A field a request asks approvers to fill in, as checked: its label (the name when none was
/// given), whether it must be answered, and its bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Field {
    pub name: String,
    pub label: String,
    #[serde(rename = "type")]
    pub kind: FieldType,
    pub required: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
}

/// Which buttons a request's message shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Buttons {
    /// Approve and Deny.
    #[default]
    ApproveDeny,
    /// One Answer button: a question, not an approval. Answering approves.
    Answer,
}

impl Buttons {
    pub fn is_default(&self) -> bool {
        *self == Buttons::ApproveDeny
    }
}

/// A field as a caller writes it, before it is checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// The key of its answer in `response`: letters, digits, `_` and `-`, at most 50.
    pub name: String,
    /// What the approver reads above the input (at most 2000 characters); the name when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `text`, `textarea`, `number`, `select` or `boolean`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Must be answered (default: true, except for `boolean`, where required means ticked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// A select's choices (1-100, each 1-75 characters, distinct).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    /// The value the input starts with, of the field's type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub default: Option<Value>,
    /// A number's bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The most characters of a text (1-3000; 3000 when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
}

/// Why fields cannot be asked: a stable code and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldProblem {
    pub code: &'static str,
    pub message: String,
}

fn problem(code: &'static str, message: String) -> FieldProblem {
    FieldProblem { code, message }
}

fn invalid(message: String) -> FieldProblem {
    problem("invalid_field", message)
}

impl FieldSpec {
    fn check(self) -> Result<Field, FieldProblem> {
        let name = self.name;
        if name.is_empty()
            || name.chars().count() > MAX_NAME
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(format!(
                "field name {name:?} must be 1-{MAX_NAME} letters, digits, '_' or '-'"
            )));
        }
        let kind = FieldType::parse(&self.kind).ok_or_else(|| {
            problem(
                "invalid_field_type",
                format!(
                    "field {name:?} has type {:?}; the types are text, textarea, number, select and boolean",
                    self.kind
                ),
            )
        })?;
        let label = self.label.unwrap_or_else(|| name.clone());
        if label.trim().is_empty() || label.contains('\0') {
            return Err(invalid(format!("field {name:?} has an empty label")));
        }
        if label.chars().count() > MAX_LABEL {
            return Err(problem(
                "field_too_long",
                format!("field {name:?}: its label is longer than Slack's {MAX_LABEL} characters"),
            ));
        }
        let options = self.options.unwrap_or_default();
        match kind {
            FieldType::Select if options.is_empty() => {
                return Err(problem(
                    "select_without_options",
                    format!("field {name:?} is a select without options"),
                ));
            }
            FieldType::Select => {}
            _ if !options.is_empty() => {
                return Err(invalid(format!(
                    "field {name:?}: only a select has options"
                )));
            }
            _ => {}
        }
        if options.len() > MAX_OPTIONS {
            return Err(problem(
                "field_too_long",
                format!("field {name:?} has more than Slack's {MAX_OPTIONS} options"),
            ));
        }
        for (i, o) in options.iter().enumerate() {
            if o.trim().is_empty() || o.contains('\0') {
                return Err(invalid(format!("field {name:?} has an empty option")));
            }
            if o.chars().count() > MAX_OPTION {
                return Err(problem(
                    "field_too_long",
                    format!(
                        "field {name:?}: option {o:?} is longer than Slack's {MAX_OPTION} characters"
                    ),
                ));
            }
            if options[..i].contains(o) {
                return Err(invalid(format!("field {name:?} lists option {o:?} twice")));
            }
        }
        if kind != FieldType::Number && (self.min.is_some() || self.max.is_some()) {
            return Err(invalid(format!(
                "field {name:?}: only a number has min and max"
            )));
        }
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min > max
        {
            return Err(invalid(format!("field {name:?}: min is above max")));
        }
        let texty = matches!(kind, FieldType::Text | FieldType::Textarea);
        match self.max_length {
            Some(_) if !texty => {
                return Err(invalid(format!(
                    "field {name:?}: only a text or textarea has max_length"
                )));
            }
            Some(n) if n == 0 || n > MAX_TEXT => {
                return Err(problem(
                    "field_too_long",
                    format!("field {name:?}: max_length must be 1-{MAX_TEXT} (Slack's limit)"),
                ));
            }
            _ => {}
        }
        let mut field = Field {
            required: self.required.unwrap_or(kind != FieldType::Boolean),
            name,
            label,
            kind,
            options,
            default: None,
            min: self.min,
            max: self.max,
            max_length: self.max_length,
        };
        if let Some(default) = self.default.filter(|d| !d.is_null()) {
            let checked = field.check(&default).map_err(|why| {
                invalid(format!(
                    "field {:?}: its default does not fit: {why}",
                    field.name
                ))
            })?;
            field.default = Some(checked);
        }
        Ok(field)
    }
}

/// Checks the fields a request asks: at most ten, distinct names, each within Slack's limits.
pub fn check_fields(specs: Vec<FieldSpec>) -> Result<Vec<Field>, FieldProblem> {
    if specs.len() > MAX_FIELDS {
        return Err(problem(
            "too_many_fields",
            format!("a request asks at most {MAX_FIELDS} fields"),
        ));
    }
    let mut fields: Vec<Field> = Vec::with_capacity(specs.len());
    for spec in specs {
        let field = spec.check()?;
        if fields.iter().any(|f| f.name == field.name) {
            return Err(problem(
                "duplicate_field",
                format!("two fields are named {:?}", field.name),
            ));
        }
        fields.push(field);
    }
    Ok(fields)
}

/// An answer as a Slack input element gives it, before it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawAnswer {
    /// A plain-text or number input's text (none or empty: left empty).
    Text(Option<String>),
    /// A static select's chosen option value.
    Choice(Option<String>),
    /// The checked options' values of a checkboxes element.
    Checked(Vec<String>),
}

/// The value of a checked box (a boolean's one option).
pub const CHECKED: &str = "true";

fn number_value(n: f64) -> Value {
    // Whole numbers within f64's exact range are kept as integers.
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        #[allow(clippy::cast_possible_truncation)]
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// A number as people and Slack read it: `3`, not `3.0`.
pub fn number_text(n: f64) -> String {
    number_value(n).to_string()
}

impl Field {
    /// Checks a JSON value given as this field's answer (over the API, or as a default);
    /// returns it as kept (a whole number as an integer).
    pub fn check(&self, value: &Value) -> Result<Value, String> {
        match (self.kind, value) {
            (_, Value::Null) => self.empty(),
            (FieldType::Text | FieldType::Textarea, Value::String(s)) => {
                self.text(s.clone()).map(Value::String)
            }
            (FieldType::Number, Value::Number(n)) => {
                self.number(n.as_f64().ok_or("is not a number")?)
            }
            (FieldType::Select, Value::String(s)) => self.choice(s),
            (FieldType::Boolean, Value::Bool(b)) => self.boolean(*b),
            (kind, _) => Err(format!("must be a {}", json_type(kind))),
        }
    }

    /// Reads and checks what a Slack input element gave for this field.
    pub fn read(&self, raw: RawAnswer) -> Result<Value, String> {
        match (self.kind, raw) {
            (_, RawAnswer::Text(None) | RawAnswer::Choice(None)) => self.empty(),
            (_, RawAnswer::Text(Some(t)) | RawAnswer::Choice(Some(t))) if t.trim().is_empty() => {
                self.empty()
            }
            (FieldType::Text | FieldType::Textarea, RawAnswer::Text(Some(t))) => {
                self.text(t).map(Value::String)
            }
            (FieldType::Number, RawAnswer::Text(Some(t))) => {
                let n: f64 = t
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n: &f64| n.is_finite())
                    .ok_or_else(|| "Please enter a number.".to_owned())?;
                self.number(n)
            }
            (FieldType::Select, RawAnswer::Choice(Some(c))) => self.choice(&c),
            (FieldType::Boolean, RawAnswer::Checked(values)) => {
                self.boolean(values.iter().any(|v| v == CHECKED))
            }
            (kind, _) => Err(format!("must be a {}", json_type(kind))),
        }
    }

    fn empty(&self) -> Result<Value, String> {
        match self.kind {
            FieldType::Boolean => self.boolean(false),
            _ if self.required => Err("Please fill this in.".into()),
            _ => Ok(Value::Null),
        }
    }

    fn text(&self, t: String) -> Result<String, String> {
        let max = self.max_length.unwrap_or(MAX_TEXT);
        if t.chars().count() > max as usize {
            return Err(format!("At most {max} characters, please."));
        }
        if t.contains('\0') {
            return Err("This text holds a NUL character, which cannot be stored.".into());
        }
        if self.kind == FieldType::Text && t.contains('\n') {
            return Err("One line, please.".into());
        }
        if t.trim().is_empty() {
            return self.empty().map(|_| t);
        }
        Ok(t)
    }

    fn number(&self, n: f64) -> Result<Value, String> {
        if !n.is_finite() {
            return Err("Please enter a number.".into());
        }
        match (self.min, self.max) {
            (Some(min), Some(max)) if n < min || n > max => Err(format!(
                "Please enter a number from {} to {}.",
                number_text(min),
                number_text(max)
            )),
            (Some(min), _) if n < min => Err(format!("Please enter {} or more.", number_text(min))),
            (_, Some(max)) if n > max => Err(format!("Please enter {} or less.", number_text(max))),
            _ => Ok(number_value(n)),
        }
    }

    fn choice(&self, c: &str) -> Result<Value, String> {
        if self.options.iter().any(|o| o == c) {
            Ok(Value::String(c.to_owned()))
        } else {
            Err(format!(
                "Please choose one of: {}.",
                self.options.join(", ")
            ))
        }
    }

    fn boolean(&self, b: bool) -> Result<Value, String> {
        if self.required && !b {
            Err("Please tick this box.".into())
        } else {
            Ok(Value::Bool(b))
        }
    }
}

fn json_type(kind: FieldType) -> &'static str {
    match kind {
        FieldType::Text | FieldType::Textarea | FieldType::Select => "string",
        FieldType::Number => "number",
        FieldType::Boolean => "boolean",
    }
}

/// Every field answered and checked, by field name; or, for each field whose answer does not
/// fit, its name and why.
pub fn answer_all(
    fields: &[Field],
    mut raw: impl FnMut(&Field) -> Result<Value, String>,
) -> Result<Answers, Vec<(String, String)>> {
    let mut answers = Answers::new();
    let mut errors = Vec::new();
    for f in fields {
        match raw(f) {
            Ok(v) => {
                answers.insert(f.name.clone(), v);
            }
            Err(why) => errors.push((f.name.clone(), why)),
        }
    }
    if errors.is_empty() {
        Ok(answers)
    } else {
        Err(errors)
    }
}

/// Checks answers given over the API as a JSON object: every field checked (a missing one as
/// empty), no name that is not a field.
pub fn check_answers(fields: &[Field], given: &Answers) -> Result<Answers, String> {
    if let Some(unknown) = given.keys().find(|k| !fields.iter().any(|f| &f.name == *k)) {
        return Err(format!("the request has no field {unknown:?}"));
    }
    answer_all(fields, |f| {
        f.check(given.get(&f.name).unwrap_or(&Value::Null))
    })
    .map_err(|errs| {
        errs.into_iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// The param an `editable` entry names (`"params.replicas"` -> `"replicas"`), if it names one.
pub fn editable_param(entry: &str) -> Option<&str> {
    entry
        .strip_prefix("params.")
        .filter(|p| !p.is_empty() && p.len() <= 100)
}

/// The prefix of an `editable` entry naming a key of an agent's tool input (a permission
/// prompt's, with `[mcp] permission_editable`); its edits are kept under the whole entry.
pub const TOOL_INPUT_PREFIX: &str = "tool_call.input.";

/// Checks an edit of a param: its type is kept (a number stays a number, a string a string,
/// a boolean a boolean). Returns the value as kept.
pub fn check_edit(old: &Value, raw: RawAnswer) -> Result<Value, String> {
    match (old, raw) {
        (Value::Number(_), RawAnswer::Text(t)) => {
            let t = t.unwrap_or_default();
            t.trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .map(number_value)
                .ok_or_else(|| "Please enter a number.".to_owned())
        }
        (Value::String(_), RawAnswer::Text(t)) => {
            let t = t.unwrap_or_default();
            if t.contains('\0') {
                Err("This text holds a NUL character, which cannot be stored.".into())
            } else if t.chars().count() > MAX_TEXT as usize {
                Err(format!("At most {MAX_TEXT} characters, please."))
            } else {
                Ok(Value::String(t))
            }
        }
        (Value::Bool(_), RawAnswer::Checked(values)) => {
            Ok(Value::Bool(values.iter().any(|v| v == CHECKED)))
        }
        _ => Err("This value cannot be edited here.".into()),
    }
}

/// Whether a param's value can be edited in a modal: a number, a boolean, or a string a
/// Slack text input holds (at most 3000 characters).
pub fn is_editable_value(v: &Value) -> bool {
    match v {
        Value::String(s) => s.chars().count() <= MAX_TEXT as usize,
        Value::Number(_) | Value::Bool(_) => true,
        _ => false,
    }
}

/// Most keys of an agent's tool input offered for editing (a modal holds 100 blocks).
pub const MAX_EDITABLE_INPUT_KEYS: usize = 20;

/// What an edit changed, as people read it: `replicas: 10 → 3`, one per changed value;
/// `before` gives a value's old value by its edit key.
pub fn changes<'a>(
    before: impl Fn(&str) -> Option<&'a Value>,
    edits: &serde_json::Map<String, Value>,
) -> Vec<String> {
    edits
        .iter()
        .filter(|(k, v)| before(k) != Some(*v))
        .map(|(k, v)| {
            let old = before(k).map_or_else(|| "—".to_owned(), answer_text);
            let name = k.strip_prefix(TOOL_INPUT_PREFIX).unwrap_or(k);
            format!("{name}: {old} → {}", answer_text(v))
        })
        .collect()
}

/// An answer as a person reads it: text as typed, numbers and booleans in words.
pub fn answer_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> FieldSpec {
        serde_json::from_value(v).unwrap()
    }

    fn code(specs: Vec<Value>) -> &'static str {
        check_fields(specs.into_iter().map(spec).collect())
            .unwrap_err()
            .code
    }

    #[test]
    fn bad_fields_are_refused_with_stable_codes() {
        assert_eq!(
            code(vec![json!({"name": "a", "type": "date"})]),
            "invalid_field_type"
        );
        assert_eq!(
            code(vec![json!({"name": "a", "type": "select"})]),
            "select_without_options"
        );
        assert_eq!(
            code(vec![
                json!({"name": "a", "type": "text"}),
                json!({"name": "a", "type": "number"})
            ]),
            "duplicate_field"
        );
        let eleven = (0..11)
            .map(|i| json!({"name": format!("f{i}"), "type": "text"}))
            .collect();
        assert_eq!(code(eleven), "too_many_fields");
        assert_eq!(
            code(vec![
                json!({"name": "a", "type": "text", "label": "x".repeat(2001)})
            ]),
            "field_too_long"
        );
        assert_eq!(
            code(vec![
                json!({"name": "a", "type": "select", "options": ["y".repeat(76)]})
            ]),
            "field_too_long"
        );
        assert_eq!(
            code(vec![json!({"name": "a b", "type": "text"})]),
            "invalid_field"
        );
        assert_eq!(
            code(vec![
                json!({"name": "n", "type": "number", "min": 5, "max": 1})
            ]),
            "invalid_field"
        );
        assert_eq!(
            code(vec![
                json!({"name": "n", "type": "number", "default": "three"})
            ]),
            "invalid_field"
        );
        assert_eq!(
            code(vec![
                json!({"name": "s", "type": "select", "options": ["a"], "default": "b"})
            ]),
            "invalid_field"
        );
    }

    #[test]
    fn answers_are_typed_and_bounded() {
        let fields = check_fields(
            vec![
                json!({"name": "env", "type": "select", "options": ["staging", "prod"]}),
                json!({"name": "replicas", "type": "number", "min": 1, "max": 10}),
                json!({"name": "note", "type": "textarea", "required": false, "max_length": 5}),
                json!({"name": "dry", "type": "boolean"}),
            ]
            .into_iter()
            .map(spec)
            .collect(),
        )
        .unwrap();
        let ok = answer_all(&fields, |f| {
            f.read(match f.name.as_str() {
                "env" => RawAnswer::Choice(Some("prod".into())),
                "replicas" => RawAnswer::Text(Some("3.0".into())),
                "note" => RawAnswer::Text(None),
                _ => RawAnswer::Checked(vec![CHECKED.into()]),
            })
        })
        .unwrap();
        assert_eq!(
            Value::Object(ok),
            json!({"env": "prod", "replicas": 3, "note": null, "dry": true})
        );
        let errs = answer_all(&fields, |f| {
            f.read(match f.name.as_str() {
                "env" => RawAnswer::Choice(Some("dev".into())),
                "replicas" => RawAnswer::Text(Some("eleven".into())),
                "note" => RawAnswer::Text(Some("toolong".into())),
                _ => RawAnswer::Checked(vec![]),
            })
        })
        .unwrap_err();
        let names: Vec<&str> = errs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["env", "replicas", "note"]);
        assert_eq!(
            fields[1].read(RawAnswer::Text(Some("11".into()))),
            Err("Please enter a number from 1 to 10.".into())
        );
        assert_eq!(fields[1].check(&json!(2.5)), Ok(json!(2.5)));
        assert!(fields[1].check(&json!("2")).is_err());
        assert!(check_answers(&fields, &json!({"nope": 1}).as_object().unwrap().clone()).is_err());
        assert!(check_answers(&fields, &Answers::new()).is_err());
    }
}
