//! `greenlight sandbox` (the local Slack alone) and `greenlight dev` (server + sandbox + SQLite
//! in one process, zero configuration): how a new user sees greenlight work in a minute.

use std::process::ExitCode;
use std::sync::Arc;

use greenlight_sandbox::{Channel, Sandbox, SandboxConfig};
use tokio_util::sync::CancellationToken;

use super::fail;
use crate::app::Application;
use crate::config::{Config, SandboxSettings, Secret, Workflow};
use crate::domain::{ApiKeyId, SystemClock};
use crate::http::auth::{generate_key, hash_key};
use crate::store::{self, ApiKey, Scope};

fn sandbox_config(settings: &SandboxSettings) -> SandboxConfig {
    let mut config = SandboxConfig {
        listen: settings.listen,
        ..SandboxConfig::default()
    };
    if let Some(t) = &settings.bot_token {
        config.bot_token = t.expose().to_owned();
    }
    if let Some(t) = &settings.app_token {
        config.app_token = Some(t.expose().to_owned());
    }
    if let Some(s) = &settings.signing_secret {
        config.signing_secret = s.expose().to_owned();
    }
    if let Some(url) = &settings.interactivity_url {
        config.interactivity_url = url.clone();
    }
    config
}

/// Gives every channel the workflows post to (a `#name` or an id) a place in the sandbox.
fn add_workflow_channels(config: &mut SandboxConfig, workflows: &[Workflow]) {
    for w in workflows {
        let target = w.channel.as_str();
        let (id, name) = match target.strip_prefix('#') {
            Some(name) => (
                format!("C0{}", name.to_uppercase().replace(['-', '_'], "")),
                name.to_owned(),
            ),
            None => (target.to_owned(), target.to_lowercase()),
        };
        if !config.channels.iter().any(|c| c.name == name || c.id == id) {
            config.channels.push(Channel::new(id, name));
        }
    }
}

pub async fn sandbox(shutdown: CancellationToken) -> ExitCode {
    let settings = match SandboxSettings::load() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let handle = match Sandbox::start(sandbox_config(&settings)).await {
        Ok(h) => h,
        Err(e) => {
            return fail(format!(
                "cannot start the sandbox on {}: {e}",
                settings.listen
            ));
        }
    };
    println!("Slack sandbox: {}/", handle.url());
    println!("  SLACK_API_URL={}", handle.api_url());
    println!(
        "  clicks go to {} (or over Socket Mode when connected)",
        handle.interactivity_url()
    );
    shutdown.cancelled().await;
    handle.shutdown().await;
    ExitCode::SUCCESS
}

pub async fn dev(shutdown: CancellationToken) -> ExitCode {
    let (mut config, settings) = match (Config::load(), SandboxSettings::load()) {
        (Ok(c), Ok(s)) => (c, s),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    if config.workflows.is_empty() {
        config.workflows.push(Workflow::new(
            "deploy".parse().expect("a valid workflow name"),
            "#deploy".parse().expect("a valid channel"),
        ));
    }
    let mut sb_config = sandbox_config(&settings);
    // Fresh credentials unless the environment names them, so nothing guessable is reused.
    if settings.signing_secret.is_none() {
        sb_config.signing_secret = generate_key();
    }
    if settings.bot_token.is_none() {
        sb_config.bot_token = format!("xoxb-dev-{}", &generate_key()[3..27]);
    }
    // Dev mode uses signed HTTP clicks; Socket Mode is for `serve` behind a firewall.
    sb_config.app_token = None;
    sb_config.interactivity_url = format!("http://{}/slack/interactions", config.listen);
    add_workflow_channels(&mut sb_config, &config.workflows);

    let sandbox = match Sandbox::start(sb_config.clone()).await {
        Ok(h) => h,
        Err(e) => {
            return fail(format!(
                "cannot start the sandbox on {}: {e}",
                settings.listen
            ));
        }
    };
    config.slack.api_url = sandbox.api_url();
    config.slack.bot_token = Some(Secret::new(sb_config.bot_token.clone()));
    config.slack.signing_secret = Some(Secret::new(sb_config.signing_secret.clone()));
    config.slack.app_token = None;

    let key = match dev_key(&config.database_url).await {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let app = match Application::build(&config, Arc::new(SystemClock)).await {
        Ok(app) => app,
        Err(e) => return fail(e),
    };
    let api = format!("http://{}", app.local_addr());
    sandbox.set_interactivity_url(format!("{api}/slack/interactions"));
    print_banner(&sandbox.url(), &api, &key, &config);
    let served = app.run_until_stopped(shutdown).await;
    sandbox.shutdown().await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// The key from GREENLIGHT_TOKEN (registered if new), or a fresh one.
async fn dev_key(database_url: &str) -> Result<String, store::StoreError> {
    let store = store::connect(database_url).await?;
    let given = std::env::var("GREENLIGHT_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let secret = given.unwrap_or_else(generate_key);
    if store.find_api_key(&hash_key(&secret)).await?.is_none() {
        let key = ApiKey {
            id: ApiKeyId::generate(),
            name: "dev".into(),
            scopes: Scope::ALL.to_vec(),
            created_at: jiff::Timestamp::now(),
            revoked_at: None,
        };
        store.insert_api_key(&key, &hash_key(&secret)).await?;
    }
    store.close().await;
    Ok(secret)
}

fn print_banner(sandbox: &str, api: &str, key: &str, config: &Config) {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
        .unwrap_or_else(|| "greenlight".to_owned());
    let workflow = config.workflows[0].name.as_str();
    let names: Vec<&str> = config.workflows.iter().map(|w| w.name.as_str()).collect();
    println!(
        "\ngreenlight dev: server, Slack sandbox and SQLite ({db}) in one process\n\
         \n  Slack (sandbox)  {sandbox}/    open it, pick a user, click Approve\
         \n  API              {api}\
         \n  API key          {key}\
         \n  workflows        {workflows}\
         \n\nAsk for approval and wait for the click:\n\
         \n  export GREENLIGHT_URL={api} GREENLIGHT_TOKEN={key}\
         \n  {exe} ask --workflow {workflow} --title \"Deploy api v1.2\" --param version=1.2 --wait\
         \n\nOr with curl (and jq):\n\
         \n  id=$(curl -s -X POST {api}/v1/requests -H \"Authorization: Bearer $GREENLIGHT_TOKEN\" \\\
         \n    -H 'Content-Type: application/json' -d '{{\"workflow\":\"{workflow}\",\"title\":\"Deploy api v1.2\"}}' | jq -r .id)\
         \n  curl -s \"{api}/v1/requests/$id?wait=30\" -H \"Authorization: Bearer $GREENLIGHT_TOKEN\"\n",
        db = config.database_url,
        workflows = names.join(", "),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_channels_exist_in_the_sandbox_by_name_or_id() {
        let mut config = SandboxConfig::default();
        let before = config.channels.len();
        let workflows = ["#deploy", "#db-migrations", "C0123PAY"]
            .map(|c| Workflow::new("w".parse().unwrap(), c.parse().unwrap()));
        add_workflow_channels(&mut config, &workflows);
        assert_eq!(config.channels.len(), before + 2, "#deploy exists already");
        assert!(config.channels.iter().any(|c| c.name == "db-migrations"));
        assert!(config.channels.iter().any(|c| c.id == "C0123PAY"));
    }
}
