//! Action hooks: HTTP calls an operator configures to run on a decision ("trigger the Jenkins
//! deploy job on approve"). Templates are parsed when the config loads, so a typo fails
//! `greenlight check`; they are rendered only at delivery time, so the outbox, the audit log and
//! the API hold the template and never a secret taken from the environment.
//!
//! `{{id}}`, `{{title}}`, `{{params.NAME}}`, ... come from the request and are escaped for where
//! they land (percent-encoded in the URL, JSON-escaped in the body). In the URL every character
//! but letters, digits and `-._~` is encoded (`/`, `\`, `?`, `#` and `%` included), so a value
//! stays inside its path segment; a value that would make the segment `.` or `..` fails the hook
//! instead, because URL parsing (and the server after it) would resolve the dots, encoded or not,
//! and move the call, with the operator's credentials, to another path on the host.
//!
//! `${VAR}` comes from the operator's environment and is inserted as written. The two are expanded in one pass, so a
//! requester who puts `${JENKINS_TOKEN}` in a param gets that text back, not the token.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::Request;

/// Request fields a template may name (besides `params.NAME`).
pub const FIELDS: &[&str] = &[
    "id",
    "title",
    "workflow",
    "status",
    "requester",
    "decided_by",
    "reason",
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// One `[[workflow.on_approve]]` / `[[workflow.on_deny]]` entry, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionHook {
    /// Shown on the Slack message: "Deployment triggered: HTTP 201".
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default = "default_method")]
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
}

fn default_name() -> String {
    "Action".to_owned()
}

fn default_method() -> String {
    "POST".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Field(&'a str),
    Env(&'a str),
}

/// Where a value lands decides how it is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    Url,
    Json,
    Header,
}

fn parse(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        let next = [rest.find("{{"), rest.find("${")]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next else {
            pieces.push(Piece::Text(rest));
            break;
        };
        if at > 0 {
            pieces.push(Piece::Text(&rest[..at]));
        }
        let is_field = rest[at..].starts_with("{{");
        let (open, close) = if is_field { (2, "}}") } else { (2, "}") };
        let inner_start = at + open;
        let Some(len) = rest[inner_start..].find(close) else {
            return Err(format!(
                "unclosed {} in {template:?}",
                if is_field { "{{" } else { "${" }
            ));
        };
        let inner = rest[inner_start..inner_start + len].trim();
        if is_field {
            let known = FIELDS.contains(&inner)
                || inner
                    .strip_prefix("params.")
                    .is_some_and(|p| !p.is_empty() && p.len() <= 100);
            if !known {
                return Err(format!(
                    "unknown placeholder {{{{{inner}}}}} (known: {}, params.NAME)",
                    FIELDS.join(", ")
                ));
            }
            pieces.push(Piece::Field(inner));
        } else {
            let valid = inner
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("invalid environment variable name ${{{inner}}}"));
            }
            pieces.push(Piece::Env(inner));
        }
        rest = &rest[inner_start + len + close.len()..];
    }
    Ok(pieces)
}

fn env_names<'a>(pieces: &[Piece<'a>]) -> impl Iterator<Item = &'a str> {
    pieces.iter().filter_map(|p| match p {
        Piece::Env(name) => Some(*name),
        _ => None,
    })
}

/// Why a hook could not be rendered. Never carries a rendered value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the request has no params.{0}")]
    MissingParam(String),
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("{{{{{0}}}}} would make a `.` or `..` segment of the URL path")]
    DotSegment(String),
    #[error("{0}")]
    Template(String),
}

fn field_value(request: &Request, field: &str) -> Result<String, RenderError> {
    if let Some(name) = field.strip_prefix("params.") {
        // An approver's edits count: the params it was approved with.
        return match request.effective_params().get(name) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(serde_json::Value::Null) | None => Err(RenderError::MissingParam(name.to_owned())),
            Some(other) => Ok(other.to_string()),
        };
    }
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    Ok(match field {
        "id" => request.id.to_string(),
        "title" => request.title.clone(),
        "workflow" => request.workflow.to_string(),
        "status" => request.status.as_str().to_owned(),
        "requester" => opt(&request.requester),
        "decided_by" => opt(&request.decided_by),
        "reason" => opt(&request.reason),
        other => return Err(RenderError::Template(format!("unknown field {other}"))),
    })
}

fn escape(value: &str, how: Escape) -> String {
    match how {
        Escape::Url => urlencoding::encode(value).into_owned(),
        Escape::Json => {
            let quoted = serde_json::Value::String(value.to_owned()).to_string();
            quoted[1..quoted.len() - 1].to_owned()
        }
        // A header value cannot hold line breaks; dropping control characters keeps a
        // requester from smuggling in another header.
        Escape::Header => value.chars().filter(|c| !c.is_control()).collect(),
    }
}

type Fields<'a> = &'a dyn Fn(&str) -> Result<String, RenderError>;

fn render_one(
    template: &str,
    how: Escape,
    field: Fields<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(template.len());
    for piece in parse(template).map_err(RenderError::Template)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Field(f) => out.push_str(&escape(&field(f)?, how)),
            Piece::Env(name) => {
                out.push_str(&env(name).ok_or_else(|| RenderError::MissingEnv(name.to_owned()))?)
            }
        }
    }
    Ok(out)
}

/// Renders the URL template, then refuses it if a request field made a path segment `.` or `..`
/// (field values are percent-encoded, so the segments are the template's own).
fn render_url(
    template: &str,
    field: Fields<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(template.len());
    let mut filled: Vec<(std::ops::Range<usize>, &str)> = Vec::new();
    for piece in parse(template).map_err(RenderError::Template)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Field(f) => {
                let start = out.len();
                out.push_str(&escape(&field(f)?, Escape::Url));
                filled.push((start..out.len(), f));
            }
            Piece::Env(name) => {
                out.push_str(&env(name).ok_or_else(|| RenderError::MissingEnv(name.to_owned()))?)
            }
        }
    }
    let after_scheme = out.find("://").map_or(0, |i| i + 3);
    let path_start = out[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(out.len(), |i| after_scheme + i);
    let path_end = out[path_start..]
        .find(['?', '#'])
        .map_or(out.len(), |i| path_start + i);
    let mut at = path_start;
    for segment in out[path_start..path_end].split('/') {
        let range = at..at + segment.len();
        at = range.end + 1;
        if !is_dot_segment(segment) {
            continue;
        }
        if let Some((_, f)) = filled
            .iter()
            .find(|(r, _)| r.start < range.end && range.start < r.end)
        {
            return Err(RenderError::DotSegment((*f).to_owned()));
        }
    }
    Ok(out)
}

/// `.` or `..`, spelled with `%2e` or not: what URL parsing resolves (WHATWG URL, path state).
fn is_dot_segment(segment: &str) -> bool {
    let s = segment.to_ascii_lowercase().replace("%2e", ".");
    s == "." || s == ".."
}

/// A hook filled in for one request: ready to send, and full of secrets. Lives only in memory
/// for the duration of one attempt; never log or store it.
pub struct Rendered {
    pub method: reqwest::Method,
    pub url: reqwest::Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

impl ActionHook {
    /// Every problem with this hook, for the config loader. `env` is the loader's environment.
    pub fn problems(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let what = format!("action hook {:?}", self.name);
        if !METHODS.contains(&self.method.as_str()) {
            problems.push((
                "method",
                format!(
                    "{what}: method {:?} is not one of {}",
                    self.method,
                    METHODS.join(", ")
                ),
            ));
        }
        if self.name.trim().is_empty() || self.name.chars().count() > 80 {
            problems.push(("name", format!("{what}: name must be 1-80 characters")));
        }
        let mut templates: Vec<(&'static str, &str)> = vec![("url", &self.url)];
        templates.extend(self.headers.values().map(|v| ("headers", v.as_str())));
        if let Some(b) = &self.body {
            templates.push(("body", b));
        }
        let mut parsed = true;
        for (part, t) in templates {
            match parse(t) {
                Err(e) => {
                    parsed = false;
                    problems.push((part, format!("{what}: {part}: {e}")));
                }
                Ok(pieces) => {
                    for name in env_names(&pieces) {
                        if env(name).is_none() {
                            problems.push((
                                part,
                                format!(
                                    "{what}: {part} uses ${{{name}}}, which is not set in the environment"
                                ),
                            ));
                        }
                    }
                }
            }
        }
        for name in self.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                parsed = false;
                problems.push((
                    "headers",
                    format!("{what}: {name:?} is not a valid header name"),
                ));
            }
        }
        // The requester must never choose where the call goes: no request field before the path.
        let authority_end = self
            .url
            .find("://")
            .map(|s| {
                s + 3
                    + self.url[s + 3..]
                        .find(['/', '?', '#'])
                        .unwrap_or(self.url.len() - s - 3)
            })
            .unwrap_or(self.url.len());
        if self.url[..authority_end].contains("{{") {
            problems.push((
                "url",
                format!(
                    "{what}: url: request fields may appear only in the path and query, not in the scheme or host"
                ),
            ));
        }
        if !parsed {
            // Rendering would only repeat the template errors above.
            return problems;
        }
        // Render with stand-ins to check that the result is a URL (and JSON, when sent as JSON).
        let stand_in = |_: &str| Some("x".to_owned());
        match self.render_with(&|_| Ok("x".to_owned()), &stand_in) {
            Err(e) => problems.push(("url", format!("{what}: {e}"))),
            Ok(r) => {
                if let Some(body) = &r.body
                    && self.sends_json()
                    && serde_json::from_str::<serde_json::Value>(body).is_err()
                {
                    problems.push((
                        "body",
                        format!(
                            "{what}: body is not valid JSON once filled in (put placeholders inside quotes: \"{{{{params.version}}}}\")"
                        ),
                    ));
                }
            }
        }
        problems
    }

    fn sends_json(&self) -> bool {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .is_none_or(|(_, v)| v.contains("json"))
    }

    /// Fills the templates in for `request`, reading `${VAR}` from `env`.
    pub fn render(
        &self,
        request: &Request,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Rendered, RenderError> {
        self.render_with(&|f| field_value(request, f), env)
    }

    fn render_with(
        &self,
        field: Fields<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Rendered, RenderError> {
        let method = reqwest::Method::from_bytes(self.method.as_bytes())
            .map_err(|_| RenderError::Template(format!("bad method {:?}", self.method)))?;
        let url_text = render_url(&self.url, field, env)?;
        // The parse error would quote the URL, secrets and all.
        let url = reqwest::Url::parse(&url_text)
            .map_err(|_| RenderError::Template("url is not a valid URL once filled in".into()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RenderError::Template("url must be http or https".into()));
        }
        let mut headers = Vec::with_capacity(self.headers.len() + 1);
        for (name, value) in &self.headers {
            headers.push((name.clone(), render_one(value, Escape::Header, field, env)?));
        }
        let body = match &self.body {
            Some(b) => {
                let how = if self.sends_json() {
                    Escape::Json
                } else {
                    Escape::Url
                };
                if !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                {
                    headers.push(("Content-Type".into(), "application/json".into()));
                }
                Some(render_one(b, how, field, env)?)
            }
            None => None,
        };
        Ok(Rendered {
            method,
            url,
            headers,
            body,
        })
    }

    /// Every `${VAR}` this hook reads, so that their values can be scrubbed from error text.
    pub fn env_vars(&self) -> Vec<String> {
        let mut all = vec![self.url.as_str()];
        all.extend(self.headers.values().map(String::as_str));
        all.extend(self.body.as_deref());
        all.into_iter()
            .filter_map(|t| parse(t).ok())
            .flat_map(|p| env_names(&p).map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str, body: Option<&str>) -> ActionHook {
        ActionHook {
            name: "Deployment".into(),
            method: "POST".into(),
            url: url.into(),
            headers: [("Authorization".to_owned(), "Bearer ${TOKEN}".to_owned())].into(),
            body: body.map(Into::into),
        }
    }

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cr3t".to_owned())
    }

    fn request() -> Request {
        let mut r = crate::domain::Request::new(
            crate::domain::RequestId::generate(),
            crate::domain::NewRequest {
                workflow: "deploy".parse().unwrap(),
                title: "Deploy".into(),
                details: None,
                params: crate::domain::Params::new(),
                requester: None,
                channel: "#deploy".parse().unwrap(),
                expires_at: None,
                callback_url: None,
                remind_at: None,
            },
            jiff::Timestamp::UNIX_EPOCH,
        );
        r.params
            .insert("version".into(), "1.2 & \"quoted\" ${TOKEN}".into());
        r
    }

    #[test]
    fn values_are_escaped_for_where_they_land_and_env_comes_only_from_the_template() {
        let h = hook(
            "https://ci.example.com/job/deploy/buildWithParameters?VERSION={{params.version}}",
            Some(r#"{"version": "{{params.version}}", "request": "{{id}}"}"#),
        );
        assert!(h.problems(&env).is_empty(), "{:?}", h.problems(&env));
        let r = h.render(&request(), &env).unwrap();
        assert_eq!(
            r.url.as_str(),
            "https://ci.example.com/job/deploy/buildWithParameters?VERSION=1.2%20%26%20%22quoted%22%20%24%7BTOKEN%7D"
        );
        let body: serde_json::Value = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["version"], "1.2 & \"quoted\" ${TOKEN}");
        assert!(
            r.headers
                .contains(&("Authorization".into(), "Bearer s3cr3t".into()))
        );
    }

    #[test]
    fn mistakes_are_caught_at_load() {
        let bad = hook(
            "https://ci.example.com/?v={{params.version}}&x={{nope}}",
            None,
        );
        assert!(
            bad.problems(&env)[0]
                .1
                .contains("unknown placeholder {{nope}}")
        );
        let mut missing = hook("https://ci.example.com/", None);
        missing
            .headers
            .insert("X-Other".into(), "${NOT_SET}".into());
        assert!(missing.problems(&env)[0].1.contains("${NOT_SET}"));
        let host = hook("https://{{params.host}}/x", None);
        assert!(
            host.problems(&env)[0]
                .1
                .contains("not in the scheme or host")
        );
        let unquoted = hook("https://ci.example.com/", Some(r#"{"v": {{params.v}}}"#));
        assert!(unquoted.problems(&env)[0].1.contains("not valid JSON"));
        let mut method = hook("https://ci.example.com/", None);
        method.method = "FETCH".into();
        assert!(method.problems(&env)[0].1.contains("method"));
    }

    fn request_with(name: &str, value: &str) -> Request {
        let mut r = request();
        r.params.insert(name.into(), value.into());
        r
    }

    /// A param of `..` must not climb out of `/job/` to another path of the trusted host.
    #[test]
    fn a_dot_segment_param_cannot_move_the_hook_to_another_path() {
        let h = hook("https://ci.example.com/job/{{params.name}}/build", None);
        assert!(h.problems(&env).is_empty());
        for dots in [".", "..", "%2e%2e", ".%2E"] {
            match h.render(&request_with("name", dots), &env) {
                Err(RenderError::DotSegment(f)) if dots.len() <= 2 => {
                    assert_eq!(f, "params.name")
                }
                Err(e) => panic!("{dots:?}: {e}"),
                Ok(r) => {
                    // Encoded percent signs keep the dots literal text inside the segment.
                    assert!(dots.contains('%'), "{dots:?} rendered {}", r.url);
                    assert_eq!(r.url.path_segments().unwrap().count(), 3, "{}", r.url);
                    assert!(r.url.path().starts_with("/job/"), "{}", r.url);
                }
            }
        }
        // Two fields that together make `..`, and a field next to template dots.
        let h = hook(
            "https://ci.example.com/job/{{params.a}}{{params.b}}/build",
            None,
        );
        let mut r = request_with("a", ".");
        r.params.insert("b".into(), ".".into());
        assert!(matches!(
            h.render(&r, &env),
            Err(RenderError::DotSegment(_))
        ));
        let h = hook("https://ci.example.com/job/%2e{{params.a}}/build", None);
        assert!(matches!(
            h.render(&request_with("a", "."), &env),
            Err(RenderError::DotSegment(_))
        ));
        // Dots in the query are just text.
        let h = hook(
            "https://ci.example.com/job/x/build?name={{params.name}}",
            None,
        );
        let r = h.render(&request_with("name", ".."), &env).unwrap();
        assert_eq!(r.url.as_str(), "https://ci.example.com/job/x/build?name=..");
    }

    /// Whatever the value, it stays inside its segment: the path keeps its shape.
    #[test]
    fn a_path_param_is_encoded_to_stay_in_its_segment() {
        let h = hook("https://ci.example.com/job/{{params.name}}/build", None);
        for (value, segment) in [
            ("../admin", "..%2Fadmin"),
            ("a/../../b", "a%2F..%2F..%2Fb"),
            (".\\..", ".%5C.."),
            ("..\\", "..%5C"),
            ("x?y=1#z", "x%3Fy%3D1%23z"),
            ("%2e%2e", "%252e%252e"),
            ("100%", "100%25"),
            ("...", "..."),
            ("a b", "a%20b"),
        ] {
            let r = h.render(&request_with("name", value), &env).unwrap();
            assert_eq!(
                r.url.as_str(),
                format!("https://ci.example.com/job/{segment}/build"),
                "{value:?}"
            );
            assert!(r.url.path().starts_with("/job/"));
            assert_eq!(r.url.query(), None);
            assert_eq!(r.url.fragment(), None);
        }
    }

    #[test]
    fn a_missing_param_fails_the_hook_instead_of_sending_an_empty_value() {
        let h = hook("https://ci.example.com/?v={{params.absent}}", None);
        assert_eq!(
            h.render(&request(), &env).err(),
            Some(RenderError::MissingParam("absent".into()))
        );
    }
}
