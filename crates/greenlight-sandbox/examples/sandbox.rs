//! Runs a sandbox with the default workspace until Ctrl-C, for trying the page by hand:
//! `cargo run -p greenlight-sandbox --example sandbox` then open http://127.0.0.1:8090/.
//! `GREENLIGHT_SANDBOX_LISTEN` and `GREENLIGHT_SANDBOX_INTERACTIVITY_URL` override the defaults.

use greenlight_sandbox::{Sandbox, SandboxConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = SandboxConfig::default();
    if let Ok(listen) = std::env::var("GREENLIGHT_SANDBOX_LISTEN") {
        config.listen = listen.parse()?;
    }
    if let Ok(url) = std::env::var("GREENLIGHT_SANDBOX_INTERACTIVITY_URL") {
        config.interactivity_url = url;
    }
    let sandbox = Sandbox::start(config).await?;
    println!("sandbox page: {}/", sandbox.url());
    println!("SLACK_API_URL={}", sandbox.api_url());
    println!(
        "app URLs: {} (interactions), {} (events), {} (commands)",
        sandbox.interactivity_url(),
        sandbox.events_url(),
        sandbox.commands_url()
    );
    tokio::signal::ctrl_c().await?;
    sandbox.shutdown().await;
    Ok(())
}
