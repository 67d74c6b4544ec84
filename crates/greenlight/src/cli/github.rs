//! `github-app-manifest`: the GitHub App greenlight needs to be a custom deployment protection
//! rule, as a manifest (GitHub's "Registering a GitHub App from a manifest") and as the link
//! that opens the registration page filled in (GitHub's "Registering a GitHub App using URL
//! parameters").

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

pub(super) const GITHUB_MANIFEST_AFTER: &str = "\
The manifest goes to stdout (JSON); the link that registers the App with the same settings,
and what to do next, go to stderr. Nothing is read or sent: the command needs no server, token
or config.

Examples:
  greenlight github-app-manifest --url https://greenlight.example.com
  greenlight github-app-manifest --url https://greenlight.example.com --org acme
  greenlight github-app-manifest --url https://greenlight.example.com --github-url https://ghe.example.com";

#[derive(Debug, Args)]
pub(super) struct GithubManifestArgs {
    /// greenlight's public https base URL: GitHub POSTs webhooks to URL/github/webhook.
    #[arg(long, value_name = "URL", value_parser = base_url)]
    url: String,
    /// Register the App on this organization (default: your personal account).
    #[arg(long, value_name = "ORG", value_parser = org_name)]
    org: Option<String>,
    /// The App's name on GitHub (unique across GitHub).
    #[arg(long, default_value = "greenlight")]
    name: String,
    /// GitHub's web address: https://github.com, or a GitHub Enterprise Server's.
    #[arg(long, value_name = "URL", default_value = "https://github.com", value_parser = base_url)]
    github_url: String,
}

fn base_url(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!("{s:?} is not https"));
    }
    if url.host_str().is_none_or(str::is_empty)
        || !url.username().is_empty()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(format!(
            "{s:?} must be a base URL alone, without user, query or fragment"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn org_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 39
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a GitHub organization name"))
    }
}

/// Repository permissions the rule needs: read the run (actions), review the deployment
/// (deployments).
pub const PERMISSIONS: [(&str, &str); 2] = [("actions", "read"), ("deployments", "write")];
pub const EVENTS: [&str; 1] = ["deployment_protection_rule"];

/// The App's manifest.
pub fn manifest(name: &str, url: &str) -> Value {
    let permissions: serde_json::Map<String, Value> = PERMISSIONS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({
        "name": name,
        "url": url,
        "description": "Approve GitHub deployments in Slack with greenlight: N of M, stages, rules and an audit log, no runner waiting.",
        "hook_attributes": {"url": format!("{url}/github/webhook"), "active": true},
        "public": false,
        "default_permissions": permissions,
        "default_events": EVENTS,
    })
}

/// The registration page with the manifest's settings filled in.
pub fn registration_link(github_url: &str, org: Option<&str>, name: &str, url: &str) -> String {
    let page = match org {
        Some(org) => format!("{github_url}/organizations/{org}/settings/apps/new"),
        None => format!("{github_url}/settings/apps/new"),
    };
    let enc = |s: &str| urlencoding::encode(s).into_owned();
    let mut query = vec![
        format!("name={}", enc(name)),
        format!("url={}", enc(url)),
        "public=false".to_owned(),
        "webhook_active=true".to_owned(),
        format!("webhook_url={}", enc(&format!("{url}/github/webhook"))),
    ];
    query.extend(PERMISSIONS.iter().map(|(k, v)| format!("{k}={v}")));
    query.extend(EVENTS.iter().map(|e| format!("events[]={e}")));
    format!("{page}?{}", query.join("&"))
}

pub(super) fn github_app_manifest(args: GithubManifestArgs) -> ExitCode {
    let manifest = manifest(&args.name, &args.url);
    println!(
        "{}",
        serde_json::to_string_pretty(&manifest).unwrap_or_default()
    );
    let api_url = if args.github_url == "https://github.com" {
        "https://api.github.com".to_owned()
    } else {
        format!("{}/api/v3", args.github_url)
    };
    eprintln!(
        "Register the App (review, set a webhook secret, Create GitHub App):\n  {}\n\
         Then:\n  \
         1. On the App's page: note the App ID; Private keys > Generate a private key (a .pem).\n  \
         2. Install App: pick the repositories whose deployments greenlight approves.\n  \
         3. In greenlight.toml:\n\
         \x20      [github]\n\
         \x20      app_id = <App ID>\n\
         \x20      private_key_path = \"/etc/greenlight/github-app.pem\"\n\
         \x20      webhook_secret = \"${{GITHUB_WEBHOOK_SECRET}}\"\n\
         \x20      api_url = \"{api_url}\"\n\
         \x20      [[github.environment]]\n\
         \x20      name = \"production\"\n\
         \x20      workflow = \"deploy\"\n  \
         4. Each repository: Settings > Environments > production > enable the App under\n\
         \x20    Deployment protection rules.",
        registration_link(&args.github_url, args.org.as_deref(), &args.name, &args.url)
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_asks_for_what_the_rule_needs() {
        let m = manifest("greenlight", "https://gl.example.com");
        assert_eq!(
            m["hook_attributes"]["url"],
            "https://gl.example.com/github/webhook"
        );
        assert_eq!(m["hook_attributes"]["active"], true);
        assert_eq!(
            m["default_permissions"],
            json!({"deployments": "write", "actions": "read"})
        );
        assert_eq!(m["default_events"], json!(["deployment_protection_rule"]));
        assert_eq!(m["public"], false);
    }

    #[test]
    fn the_link_fills_in_the_registration_page() {
        let link = registration_link(
            "https://github.com",
            Some("acme"),
            "greenlight",
            "https://gl.example.com",
        );
        assert!(link.starts_with("https://github.com/organizations/acme/settings/apps/new?"));
        assert!(link.contains("webhook_url=https%3A%2F%2Fgl.example.com%2Fgithub%2Fwebhook"));
        assert!(link.contains("deployments=write") && link.contains("actions=read"));
        assert!(link.contains("events[]=deployment_protection_rule"));
        let personal = registration_link("https://github.com", None, "gl", "https://x.example");
        assert!(personal.starts_with("https://github.com/settings/apps/new?name=gl&"));
    }

    #[test]
    fn urls_and_orgs_are_checked() {
        assert_eq!(
            base_url("https://gl.example.com/").unwrap(),
            "https://gl.example.com"
        );
        assert!(base_url("http://gl.example.com").is_err());
        assert!(base_url("https://gl.example.com/?x=1").is_err());
        assert!(org_name("acme-corp").is_ok());
        assert!(org_name("acme/corp").is_err());
        assert!(org_name("-acme").is_err());
    }
}
