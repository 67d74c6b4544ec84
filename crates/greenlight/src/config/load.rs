//! Reading the configuration: the file (if any), then the environment over it, one function per
//! section. Every problem is collected with its place in the file, so `greenlight check` reports
//! them all at once, sorted by line.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::problems::{self, KeyOffsets, Problem, Source};
use super::schema::{
    Alert, AlertsConfig, DatabaseConfig, DeliveryConfig, FileConfig, FileGithub, FileSlack,
    GithubConfig, LimitsConfig, McpConfig, RuleSpec, SLACK_MAX_SOCKET_CONNECTIONS, SlackConfig,
    TRUST_NAMES, TrustPolicy, TrustSpec, Workflow,
};
use super::{
    Config, ConfigError, DEFAULT_CONFIG_FILE, DEFAULT_DATABASE_URL, DEFAULT_LISTEN,
    DEFAULT_SLACK_API_URL, Secret,
};
use crate::domain::{DurationSpec, is_slack_team_id};
use crate::rules::Rule;

/// The environment, or what stands in for it in tests.
type Env<'e> = &'e dyn Fn(&str) -> Option<String>;

/// The file's root table as read, to place problems (none without a file).
type Root<'r, 't> = Option<&'r toml::Spanned<toml::de::DeValue<'t>>>;

/// Where a value came from: the environment (named) or a key of the file.
enum Origin<'a> {
    Env(&'static str),
    File(&'a KeyOffsets, &'static str),
    Default,
}

struct Checker<'a> {
    source: Option<Source<'a>>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn push(&mut self, origin: Origin<'_>, message: String) {
        let problem = match (origin, &self.source) {
            (Origin::Env(var), _) => Problem::general(var, message),
            (Origin::File(keys, key), Some(src)) => src.at(keys.of(key), message),
            (_, Some(src)) => src.at(None, message),
            (_, None) => Problem::general("configuration", message),
        };
        self.problems.push(problem);
    }

    fn at(&mut self, offset: Option<usize>, message: String) {
        match &self.source {
            Some(src) => self.problems.push(src.at(offset, message)),
            None => self
                .problems
                .push(Problem::general("configuration", message)),
        }
    }
}

/// A setting read from the environment, else the file, remembering which.
fn setting<'k>(
    env: Env<'_>,
    var: &'static str,
    file: Option<String>,
    keys: &'k KeyOffsets,
    key: &'static str,
) -> (Option<String>, Origin<'k>) {
    match env(var) {
        Some(v) => (Some(v), Origin::Env(var)),
        None => match file {
            Some(v) => (Some(v), Origin::File(keys, key)),
            None => (None, Origin::Default),
        },
    }
}

/// The keys of the table `name` at the top of the file.
fn table_keys(root: Root<'_, '_>, name: &str) -> KeyOffsets {
    problems::key_offsets(root.and_then(|r| r.get_ref().get(name)))
}

/// The file as read, with the table values it came from (to place problems).
struct ReadFile<'t> {
    config: FileConfig,
    root: Option<toml::Spanned<toml::de::DeValue<'t>>>,
}

impl Config {
    /// Loads from the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_with(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Loads with `env` standing in for the environment (tests pass a map). Every problem is
    /// reported at once, sorted by line.
    pub fn load_with(env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env: Env<'_> = &env;
        let path = match env("GREENLIGHT_CONFIG") {
            Some(p) => Some(PathBuf::from(p)),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
        };
        let text = match &path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        let mut check = Checker {
            source: path.as_ref().map(|p| Source {
                shown: p.display().to_string(),
                text: &text,
            }),
            problems: Vec::new(),
        };
        let read = match &check.source {
            Some(src) => read_file(src, &mut check.problems),
            None => Some(ReadFile {
                config: FileConfig::default(),
                root: None,
            }),
        };
        let Some(read) = read else {
            // A syntax error: nothing else can be trusted until it is fixed.
            problems::sort(&mut check.problems);
            return Err(ConfigError::Invalid(check.problems));
        };
        let root = read.root.as_ref();
        let top = problems::key_offsets(root);
        let file = read.config;

        let listen = listen(env, file.listen, &top, &mut check);
        let database_url = database_url(env, file.database_url, &top, &mut check);
        check_database(&file.database, root, &mut check);
        let slack = slack(env, file.slack, root, &mut check);
        let delivery = delivery(env, file.delivery, root, &mut check);
        check_limits(&file.limits, root, &mut check);
        check_workflows(env, &file.workflows, root, &mut check);
        check_mcp(&file.mcp, &file.workflows, root, &mut check);
        let public_url = public_url(env, file.public_url, &top, &mut check);
        check_alerts(
            &file.alert_rules,
            &file.alerts,
            &file.workflows,
            root,
            &mut check,
        );
        let trust = compile_trust(&file.trust, &file.workflows, root, &mut check);
        let github = github(env, file.github, &file.workflows, root, &mut check);
        let workflows = compile_workflows(file.workflows, root, &mut check);
        if !check.problems.is_empty() {
            problems::sort(&mut check.problems);
            return Err(ConfigError::Invalid(check.problems));
        }
        Ok(Config {
            listen,
            database_url,
            database: file.database,
            shutdown_timeout: file.shutdown_timeout.unwrap_or_else(|| {
                super::DEFAULT_SHUTDOWN_TIMEOUT
                    .parse()
                    .unwrap_or_else(|_| unreachable!())
            }),
            slack,
            workflows,
            source: path,
            delivery,
            alerts: file.alerts,
            limits: file.limits,
            mcp: file.mcp,
            public_url: public_url.map(|u| u.trim_end_matches('/').to_owned()),
            alert_rules: file.alert_rules,
            trust,
            github,
        })
    }
}

/// `listen` / `GREENLIGHT_LISTEN`.
fn listen(
    env: Env<'_>,
    file: Option<String>,
    top: &KeyOffsets,
    check: &mut Checker<'_>,
) -> SocketAddr {
    let (listen_raw, origin) = setting(env, "GREENLIGHT_LISTEN", file, top, "listen");
    let listen_raw = listen_raw.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    listen_raw.parse().unwrap_or_else(|_| {
        check.push(
            origin,
            format!("listen address {listen_raw:?} is not HOST:PORT (e.g. 127.0.0.1:8080)"),
        );
        SocketAddr::from(([127, 0, 0, 1], 8080))
    })
}

/// `database_url` / `GREENLIGHT_DATABASE_URL`.
fn database_url(
    env: Env<'_>,
    file: Option<String>,
    top: &KeyOffsets,
    check: &mut Checker<'_>,
) -> String {
    let (database_url, origin) = setting(env, "GREENLIGHT_DATABASE_URL", file, top, "database_url");
    let database_url = database_url.unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    if !database_url.starts_with("sqlite:") && !crate::store::is_postgres(&database_url) {
        check.push(
            origin,
            format!(
                "database URL {database_url:?} is not supported: use sqlite:PATH or postgres://USER@HOST:5432/DB"
            ),
        );
    }
    database_url
}

/// `[database]`.
fn check_database(database: &DatabaseConfig, root: Root<'_, '_>, check: &mut Checker<'_>) {
    let database_keys = table_keys(root, "database");
    if !(1..=1000).contains(&database.max_connections) {
        check.push(
            Origin::File(&database_keys, "max_connections"),
            "[database] max_connections must be 1-1000".to_owned(),
        );
    }
    if database.statement_timeout.as_millis() < 100 {
        check.push(
            Origin::File(&database_keys, "statement_timeout"),
            "[database] statement_timeout must be at least 100ms".to_owned(),
        );
    }
}

/// `[slack]` and the Slack variables.
fn slack(
    env: Env<'_>,
    file: FileSlack,
    root: Root<'_, '_>,
    check: &mut Checker<'_>,
) -> SlackConfig {
    let slack_keys = table_keys(root, "slack");
    let (api_url, origin) = setting(env, "SLACK_API_URL", file.api_url, &slack_keys, "api_url");
    let socket_connections = file
        .socket_connections
        .unwrap_or(SlackConfig::DEFAULT_SOCKET_CONNECTIONS);
    if !(1..=SLACK_MAX_SOCKET_CONNECTIONS).contains(&socket_connections) {
        check.push(
            Origin::File(&slack_keys, "socket_connections"),
            format!(
                "[slack] socket_connections must be 1-{SLACK_MAX_SOCKET_CONNECTIONS} (Slack allows {SLACK_MAX_SOCKET_CONNECTIONS} per app, across all replicas)"
            ),
        );
    }
    if let Some(bad) = file.allowed_teams.iter().find(|t| !is_slack_team_id(t)) {
        check.push(
            Origin::File(&slack_keys, "allowed_teams"),
            format!(
                "[slack] allowed_teams: {bad:?} is not a Slack workspace id (T…) or Enterprise Grid organization id (E…)"
            ),
        );
    }
    let slack = SlackConfig {
        socket_connections,
        allowed_teams: file.allowed_teams,
        bot_token: env("SLACK_BOT_TOKEN").map(Secret).or(file.bot_token),
        signing_secret: env("SLACK_SIGNING_SECRET")
            .map(Secret)
            .or(file.signing_secret),
        app_token: env("SLACK_APP_TOKEN").map(Secret).or(file.app_token),
        api_url: api_url.unwrap_or_else(|| DEFAULT_SLACK_API_URL.to_owned()),
    };
    if !(slack.api_url.starts_with("https://") || slack.api_url.starts_with("http://")) {
        check.push(
            origin,
            format!("SLACK_API_URL {:?} is not an http(s) URL", slack.api_url),
        );
    }
    slack
}

/// `[delivery]` and `GREENLIGHT_WEBHOOK_SECRET`.
fn delivery(
    env: Env<'_>,
    mut delivery: DeliveryConfig,
    root: Root<'_, '_>,
    check: &mut Checker<'_>,
) -> DeliveryConfig {
    let delivery_keys = table_keys(root, "delivery");
    let secret_origin = match env("GREENLIGHT_WEBHOOK_SECRET") {
        Some(s) => {
            delivery.webhook_secret = Some(Secret(s));
            Origin::Env("GREENLIGHT_WEBHOOK_SECRET")
        }
        None => Origin::File(&delivery_keys, "webhook_secret"),
    };
    if let Some(s) = &delivery.webhook_secret
        && crate::policy::webhook::WebhookSecret::parse(s.expose()).is_err()
    {
        check.push(
            secret_origin,
            format!("webhook secret: {}", crate::policy::webhook::BadSecret),
        );
    }
    for (key, message) in delivery_problems(&delivery) {
        check.push(Origin::File(&delivery_keys, key), message);
    }
    delivery
}

/// What is wrong with `[delivery]`, each with its key.
fn delivery_problems(d: &DeliveryConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if d.max_attempts == 0 {
        out.push((
            "max_attempts",
            "[delivery] max_attempts must be at least 1".to_owned(),
        ));
    }
    if d.backoff_base > d.backoff_max {
        out.push((
            "backoff_base",
            "[delivery] backoff_base must not exceed backoff_max".to_owned(),
        ));
    }
    if !(d.slack_posts_per_second.is_finite() && d.slack_posts_per_second > 0.0) {
        out.push((
            "slack_posts_per_second",
            "[delivery] slack_posts_per_second must be above 0".to_owned(),
        ));
    }
    if d.callback_concurrency == 0 || d.callback_host_concurrency == 0 {
        out.push((
            "callback_concurrency",
            "[delivery] callback_concurrency and callback_host_concurrency must be at least 1"
                .to_owned(),
        ));
    }
    if d.lease <= d.timeout {
        out.push((
            "lease",
            "[delivery] lease must be longer than timeout: a lease that runs out during a call lets another worker make the same call".to_owned(),
        ));
    }
    if d.slack_post_burst == 0 {
        out.push((
            "slack_post_burst",
            "[delivery] slack_post_burst must be at least 1".to_owned(),
        ));
    }
    out
}

/// `[limits]`.
fn check_limits(limits: &LimitsConfig, root: Root<'_, '_>, check: &mut Checker<'_>) {
    let limits_keys = table_keys(root, "limits");
    for (key, value) in [
        (
            "requests_per_minute_per_key",
            limits.requests_per_minute_per_key,
        ),
        ("max_connections", limits.max_connections),
        ("max_waiters", limits.max_waiters),
        ("max_signals", limits.max_signals),
    ] {
        if value == 0 {
            check.push(
                Origin::File(&limits_keys, key),
                format!("[limits] {key} must be at least 1"),
            );
        }
    }
}

/// The `[[workflow]]` tables as written: names, policies, rule names and hook templates.
fn check_workflows(
    env: Env<'_>,
    workflows: &[Workflow],
    root: Root<'_, '_>,
    check: &mut Checker<'_>,
) {
    let mut seen = HashSet::new();
    for (i, w) in workflows.iter().enumerate() {
        let item = problems::element(root, "workflow", i);
        let keys = problems::key_offsets(item);
        if w.name.as_str() != problems::MISSING_NAME && !seen.insert(w.name.clone()) {
            check.push(
                Origin::File(&keys, "name"),
                format!("workflow {:?} is defined twice", w.name.as_str()),
            );
        }
        for (key, message) in w.problems() {
            check.push(Origin::File(&keys, key), message);
        }
        for (j, stage) in w.stages.iter().enumerate() {
            let stage_keys = problems::key_offsets(problems::element(item, "stage", j));
            for (key, message) in stage.problems(w.name.as_str()) {
                check.push(Origin::File(&stage_keys, key), message);
            }
        }
        let mut rule_names = HashSet::new();
        for (j, spec) in w.rule_specs.iter().enumerate() {
            let rule_keys = problems::key_offsets(problems::element(item, "rule", j));
            if spec.name.trim().is_empty() {
                check.push(
                    Origin::File(&rule_keys, "name"),
                    format!("workflow {:?}: a rule has an empty name", w.name.as_str()),
                );
            } else if !rule_names.insert(spec.name.as_str()) {
                check.push(
                    Origin::File(&rule_keys, "name"),
                    format!(
                        "workflow {:?}: rule {:?} is defined twice",
                        w.name.as_str(),
                        spec.name
                    ),
                );
            }
        }
        for (list, hooks) in [("on_approve", &w.on_approve), ("on_deny", &w.on_deny)] {
            for (j, hook) in hooks.iter().enumerate() {
                let hook_keys = problems::key_offsets(problems::element(item, list, j));
                for (part, message) in hook.problems(&env) {
                    check.push(
                        Origin::File(&hook_keys, part),
                        format!("workflow {:?}: {message}", w.name.as_str()),
                    );
                }
            }
        }
    }
}

/// `[github]` and `[[github.environment]]`: the App's key (`private_key_path`, or the PEM text
/// in `GREENLIGHT_GITHUB_PRIVATE_KEY`), the webhook secret (`${VAR}` reads the environment, as
/// does `GREENLIGHT_GITHUB_WEBHOOK_SECRET`), the API's URL, and the workflows mapped.
fn github(
    env: Env<'_>,
    file: Option<FileGithub>,
    workflows: &[Workflow],
    root: Root<'_, '_>,
    check: &mut Checker<'_>,
) -> Option<GithubConfig> {
    let file = file?;
    let keys = table_keys(root, "github");
    let mut ok = true;
    let mut fail = |check: &mut Checker<'_>, origin: Origin<'_>, message: String| {
        ok = false;
        check.push(origin, message);
    };
    let app_id = file.app_id.unwrap_or_default();
    if app_id == 0 {
        fail(
            check,
            Origin::File(&keys, "app_id"),
            "[github] app_id is required (the App's id, on its settings page)".to_owned(),
        );
    }
    let pem = match (env("GREENLIGHT_GITHUB_PRIVATE_KEY"), &file.private_key_path) {
        (Some(pem), _) => Some((pem, Origin::Env("GREENLIGHT_GITHUB_PRIVATE_KEY"))),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(pem) => Some((pem, Origin::File(&keys, "private_key_path"))),
            Err(e) => {
                fail(
                    check,
                    Origin::File(&keys, "private_key_path"),
                    format!("[github] private_key_path {path:?} cannot be read: {e}"),
                );
                None
            }
        },
        (None, None) => {
            fail(
                check,
                Origin::File(&keys, "app_id"),
                "[github] needs the App's private key: private_key_path = \"/path/app.pem\" or GREENLIGHT_GITHUB_PRIVATE_KEY (the PEM text)".to_owned(),
            );
            None
        }
    };
    let private_key =
        pem.and_then(
            |(pem, origin)| match crate::policy::github::AppKey::from_pem(&pem) {
                Ok(key) => Some(key),
                Err(e) => {
                    fail(check, origin, format!("[github] {e}"));
                    None
                }
            },
        );
    let secret = match env("GREENLIGHT_GITHUB_WEBHOOK_SECRET") {
        Some(s) => Some((s, Origin::Env("GREENLIGHT_GITHUB_WEBHOOK_SECRET"))),
        None => file.webhook_secret.as_ref().map(|s| {
            let written = s.expose().trim();
            let from_env = written
                .strip_prefix("${")
                .and_then(|rest| rest.strip_suffix('}'))
                .map(|var| env(var.trim()).unwrap_or_default());
            (
                from_env.unwrap_or_else(|| written.to_owned()),
                Origin::File(&keys, "webhook_secret"),
            )
        }),
    };
    let webhook_secret = match secret {
        Some((s, _)) if !s.is_empty() => Some(Secret(s)),
        Some((_, origin)) => {
            fail(
                check,
                origin,
                "[github] webhook_secret is empty (is its environment variable set?)".to_owned(),
            );
            None
        }
        None => {
            fail(
                check,
                Origin::File(&keys, "webhook_secret"),
                "[github] webhook_secret is required (the App's webhook secret; GitHub signs every webhook with it)".to_owned(),
            );
            None
        }
    };
    let api_url = file
        .api_url
        .clone()
        .unwrap_or_else(|| super::DEFAULT_GITHUB_API_URL.to_owned())
        .trim_end_matches('/')
        .to_owned();
    let parsed = reqwest::Url::parse(&api_url);
    if !parsed.is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some()) {
        fail(
            check,
            Origin::File(&keys, "api_url"),
            format!(
                "[github] api_url {api_url:?} is not an http(s) URL (https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server)"
            ),
        );
    }
    for (i, e) in file.environments.iter().enumerate() {
        let item = problems::element(
            root.and_then(|r| r.get_ref().get("github")),
            "environment",
            i,
        );
        let env_keys = problems::key_offsets(item);
        if e.name.trim().is_empty() {
            fail(
                check,
                Origin::File(&env_keys, "name"),
                "[[github.environment]] name is empty (an environment name, or a glob such as \"prod-*\")".to_owned(),
            );
        }
        if let Some(bad) = e
            .repositories
            .iter()
            .find(|r| r.matches('/').count() != 1 || r.starts_with('/') || r.ends_with('/'))
        {
            fail(
                check,
                Origin::File(&env_keys, "repositories"),
                format!(
                    "[[github.environment]] {:?}: repository {bad:?} is not owner/name (globs allowed: \"acme/*\")",
                    e.name
                ),
            );
        }
        if !workflows.iter().any(|w| w.name == e.workflow) {
            fail(
                check,
                Origin::File(&env_keys, "workflow"),
                format!(
                    "[[github.environment]] {:?}: workflow {:?} is not configured",
                    e.name,
                    e.workflow.as_str()
                ),
            );
        }
    }
    if file.environments.is_empty() {
        fail(
            check,
            Origin::File(&keys, "app_id"),
            "[github] maps no environment: add [[github.environment]] with name and workflow"
                .to_owned(),
        );
    }
    if !ok {
        return None;
    }
    Some(GithubConfig {
        app_id,
        private_key: private_key?,
        webhook_secret: webhook_secret?,
        api_url,
        environments: file.environments,
    })
}

/// `[mcp]`.
fn check_mcp(mcp: &McpConfig, workflows: &[Workflow], root: Root<'_, '_>, check: &mut Checker<'_>) {
    if let Some(name) = &mcp.permission_workflow
        && !workflows.iter().any(|w| &w.name == name)
    {
        let mcp_keys = table_keys(root, "mcp");
        check.push(
            Origin::File(&mcp_keys, "permission_workflow"),
            format!(
                "[mcp] permission_workflow {:?} is not a configured workflow",
                name.as_str()
            ),
        );
    }
}

/// The default of a trust policy's `max_token_lifetime`, and its bounds.
const TRUST_LIFETIME_DEFAULT_SECS: u64 = 3600;
const TRUST_LIFETIME_MIN_SECS: u64 = 60;
const TRUST_LIFETIME_MAX_SECS: u64 = 24 * 3600;

/// Whether an issuer (or JWKS) URL may be used: `https://`, or `http://` on a loopback address.
fn issuer_allowed(url: &str) -> bool {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => u.host().is_some(),
        Ok(u) if u.scheme() == "http" => u.host_str().is_some_and(|h| {
            h == "localhost"
                || h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }),
        _ => false,
    }
}

/// The `[[trust]]` tables, checked and compiled.
fn compile_trust(
    specs: &[TrustSpec],
    workflows: &[Workflow],
    root: Root<'_, '_>,
    check: &mut Checker<'_>,
) -> Vec<TrustPolicy> {
    let mut names = HashSet::new();
    let mut pairs = HashSet::new();
    let mut policies = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let keys = problems::key_offsets(problems::element(root, "trust", i));
        let before = check.problems.len();
        let name = spec.name.trim();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            check.push(
                Origin::File(&keys, "name"),
                format!(
                    "trust name {:?} must be 1 to 64 letters, digits, '-' or '_' (e.g. \"github-acme\")",
                    spec.name
                ),
            );
        } else if !names.insert(name.to_owned()) {
            check.push(
                Origin::File(&keys, "name"),
                format!("trust {name:?} is defined twice"),
            );
        }
        if !issuer_allowed(&spec.issuer) {
            check.push(
                Origin::File(&keys, "issuer"),
                format!(
                    "trust {name:?}: issuer {:?} must be an https:// URL (http:// only on a loopback address, for tests), e.g. \"https://token.actions.githubusercontent.com\"",
                    spec.issuer
                ),
            );
        }
        let audience = spec.audience.as_deref().map(str::trim).unwrap_or_default();
        if audience.is_empty() {
            check.push(
                Origin::File(&keys, "name"),
                format!(
                    "trust {name:?} needs an audience: the value the tokens' aud must contain, e.g. audience = \"greenlight\""
                ),
            );
        } else if !pairs.insert((spec.issuer.clone(), audience.to_owned())) {
            check.push(
                Origin::File(&keys, "audience"),
                format!(
                    "trust {name:?}: another [[trust]] already has issuer {:?} and audience {audience:?}; a token would match both",
                    spec.issuer
                ),
            );
        }
        if let Some(url) = &spec.jwks_url
            && !issuer_allowed(url)
        {
            check.push(
                Origin::File(&keys, "jwks_url"),
                format!(
                    "trust {name:?}: jwks_url {url:?} must be an https:// URL (http:// only on a loopback address)"
                ),
            );
        }
        let mut scopes = Vec::new();
        match &spec.scopes {
            None => scopes.extend([crate::store::Scope::Request, crate::store::Scope::Read]),
            Some(list) if list.is_empty() => check.push(
                Origin::File(&keys, "scopes"),
                format!(
                    "trust {name:?}: scopes is empty, so its tokens could do nothing; leave it out for [\"request\", \"read\"]"
                ),
            ),
            Some(list) => {
                for s in list {
                    match crate::store::Scope::parse(s) {
                        Some(scope) => scopes.push(scope),
                        None => check.push(
                            Origin::File(&keys, "scopes"),
                            format!(
                                "trust {name:?}: unknown scope {s:?} (one of: {})",
                                crate::store::Scope::ALL.map(|s| s.as_str()).join(", ")
                            ),
                        ),
                    }
                }
            }
        }
        let mut allowed = Vec::new();
        for w in &spec.workflows {
            match workflows.iter().find(|wf| wf.name.as_str() == w) {
                Some(wf) => allowed.push(wf.name.clone()),
                None => check.push(
                    Origin::File(&keys, "workflows"),
                    format!("trust {name:?}: workflow {w:?} is not a configured workflow"),
                ),
            }
        }
        let when = spec.when.as_ref().and_then(|when| {
            match crate::rules::Predicate::compile(when.get_ref(), TRUST_NAMES) {
                Ok(p) => Some(p),
                Err(found) => {
                    let start = check
                        .source
                        .as_ref()
                        .map(|src| expression_start(src.text, when.span()));
                    for p in found {
                        check.at(
                            start.map(|s| s + p.offset),
                            format!("trust {name:?}, when: {}", p.message),
                        );
                    }
                    None
                }
            }
        });
        if let Some(template) = &spec.requester {
            let bad = crate::domain::Identity::unknown_placeholders(template);
            if !bad.is_empty() {
                check.push(
                    Origin::File(&keys, "requester"),
                    format!(
                        "trust {name:?}: requester may only use {{{{claims.NAME}}}} placeholders, not {}",
                        bad.iter()
                            .map(|b| format!("{{{{{b}}}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
        let lifetime = spec.max_token_lifetime.unwrap_or_else(|| {
            DurationSpec::from_secs(TRUST_LIFETIME_DEFAULT_SECS).unwrap_or_else(|_| unreachable!())
        });
        let secs = lifetime.as_duration().as_secs();
        if !(TRUST_LIFETIME_MIN_SECS..=TRUST_LIFETIME_MAX_SECS).contains(&secs) {
            check.push(
                Origin::File(&keys, "max_token_lifetime"),
                format!(
                    "trust {name:?}: max_token_lifetime {lifetime} is out of range (1m to 24h; default 1h)"
                ),
            );
        }
        if check.problems.len() == before {
            policies.push(TrustPolicy {
                name: name.to_owned(),
                issuer: spec.issuer.clone(),
                audience: audience.to_owned(),
                jwks_url: spec.jwks_url.clone(),
                scopes,
                workflows: allowed,
                when,
                requester: spec.requester.clone(),
                max_token_lifetime: lifetime,
            });
        }
    }
    policies
}

/// `public_url` / `GREENLIGHT_PUBLIC_URL`.
fn public_url(
    env: Env<'_>,
    file: Option<String>,
    top: &KeyOffsets,
    check: &mut Checker<'_>,
) -> Option<String> {
    let (public_url, origin) = setting(env, "GREENLIGHT_PUBLIC_URL", file, top, "public_url");
    if let Some(url) = &public_url {
        let ok = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !ok {
            check.push(
                origin,
                format!(
                    "public_url {url:?} is not an http(s) URL (e.g. https://greenlight.example.com)"
                ),
            );
        }
    }
    public_url
}

/// The `[[alert]]` tables and `[alerts]`.
fn check_alerts(
    alert_rules: &[Alert],
    alerts: &AlertsConfig,
    workflows: &[Workflow],
    root: Root<'_, '_>,
    check: &mut Checker<'_>,
) {
    let mut alert_names = HashSet::new();
    for (i, alert) in alert_rules.iter().enumerate() {
        let keys = problems::key_offsets(problems::element(root, "alert", i));
        if !alert.name.trim().is_empty() && !alert_names.insert(alert.name.as_str()) {
            check.push(
                Origin::File(&keys, "name"),
                format!("alert {:?} is defined twice", alert.name),
            );
        }
        for (key, message) in alert.problems(workflows) {
            check.push(Origin::File(&keys, key), message);
        }
    }
    if !alert_rules.is_empty() && alerts.channel.is_none() {
        let keys = problems::key_offsets(problems::element(root, "alert", 0));
        check.push(
            Origin::File(&keys, "name"),
            "[[alert]] needs somewhere to post: set [alerts] channel = \"#ops\"".to_owned(),
        );
    }
}

/// Compiles every workflow's rules, and checks that the workflows their history functions
/// name exist.
fn compile_workflows(
    mut workflows: Vec<Workflow>,
    root: Root<'_, '_>,
    check: &mut Checker<'_>,
) -> Vec<Workflow> {
    for w in &mut workflows {
        w.rules = compile_rules(w.name.as_str(), &w.rule_specs, check);
    }
    let names: HashSet<String> = workflows.iter().map(|w| w.name.to_string()).collect();
    for (i, w) in workflows.iter().enumerate() {
        let item = problems::element(root, "workflow", i);
        for (j, rule) in w.rules.iter().enumerate() {
            for unknown in rule
                .history_workflows
                .iter()
                .filter(|n| !names.contains(*n))
            {
                let rule_keys = problems::key_offsets(problems::element(item, "rule", j));
                check.push(
                    Origin::File(&rule_keys, "when"),
                    format!(
                        "workflow {:?}, rule {:?}: no workflow {unknown:?} to look back at (history functions name a configured workflow)",
                        w.name.as_str(),
                        rule.name
                    ),
                );
            }
        }
    }
    workflows
}

/// Reads the file: a TOML syntax error is reported and ends the reading (`None`); anything
/// else wrong is added to `problems` with its place, and the rest is still read and checked.
fn read_file<'t>(src: &Source<'t>, problems: &mut Vec<Problem>) -> Option<ReadFile<'t>> {
    let (root, syntax) = toml::de::DeTable::parse_recoverable(src.text);
    if !syntax.is_empty() {
        problems.extend(syntax.iter().map(|e| src.toml(e)));
        return None;
    }
    let span = root.span();
    let root = toml::Spanned::new(span, toml::de::DeValue::Table(root.into_inner()));
    let (file, errors) = problems::lenient::<FileConfig>(root.clone());
    problems.extend(errors.iter().map(|e| src.toml(e)));
    Some(ReadFile {
        config: file.unwrap_or_default(),
        root: Some(root),
    })
}

/// Compiles a workflow's rules; each problem is reported at its place in the file, with the
/// line and a caret under the spot.
fn compile_rules(workflow: &str, specs: &[RuleSpec], check: &mut Checker<'_>) -> Vec<Rule> {
    let mut compiled = Vec::new();
    for spec in specs {
        match Rule::compile(&spec.name, spec.when.get_ref(), spec.decision) {
            Ok(rule) => compiled.push(rule.with_notify(spec.notify)),
            Err(found) => {
                let start = check
                    .source
                    .as_ref()
                    .map(|src| expression_start(src.text, spec.when.span()));
                for p in found {
                    check.at(
                        start.map(|s| s + p.offset),
                        format!("workflow {workflow:?}, rule {:?}: {}", spec.name, p.message),
                    );
                }
            }
        }
    }
    compiled
}

/// Where a TOML string's contents begin, after its opening quote(s). Escapes inside basic
/// strings can shift later columns; expressions rarely have any.
fn expression_start(text: &str, span: std::ops::Range<usize>) -> usize {
    let raw = text.get(span.clone()).unwrap_or_default();
    let quote = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
        let after = &raw[3..];
        3 + if after.starts_with("\r\n") {
            2
        } else {
            usize::from(after.starts_with('\n'))
        }
    } else {
        1
    };
    span.start + quote
}
