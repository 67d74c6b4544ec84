//! Socket Mode: Slack pushes interactions, events and slash commands over WebSockets the app
//! opens, so no public endpoint is needed. slack-morphism keeps the connections (two by
//! default, so one restarting after a `disconnect` leaves the other taking payloads), pings
//! them and acks each envelope with what the handler returns. Payloads are re-read into
//! greenlight's own lenient types, and one that slack-morphism cannot parse is still handled
//! (after its ack) from the raw JSON.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use super::client::{Connector, SlackApi};
use super::commands::SlashCommand;
use super::interaction::{EventCallback, Interaction};

/// What the transport-neutral handler answers: nothing (a plain ack) or an ack payload such as
/// `{"response_action":"errors",...}` for a modal.
pub type AckPayload = Option<serde_json::Value>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Handles one interaction; given by the application so this adapter knows no use case.
pub type Handler = Arc<dyn Fn(Interaction) -> BoxFuture<AckPayload> + Send + Sync>;

/// Handles one Events API callback, after its envelope was acked.
pub type EventHandler = Arc<dyn Fn(EventCallback) -> BoxFuture<()> + Send + Sync>;

/// Answers one slash command: the ack's payload (`{response_type, text, blocks}`).
pub type CommandHandler = Arc<dyn Fn(SlashCommand) -> BoxFuture<serde_json::Value> + Send + Sync>;

/// What the application does with each kind of envelope.
#[derive(Clone)]
pub struct Handlers {
    pub interaction: Handler,
    pub event: EventHandler,
    pub command: CommandHandler,
}

struct State {
    handlers: Handlers,
}

pub struct SocketMode {
    listener: SlackClientSocketModeListener<Connector>,
}

impl SocketMode {
    /// Opens `connections` connections for `app_token` (an `xapp-` token) and starts taking
    /// payloads. Slack sends each payload to one connection of the app, whichever replica opened
    /// it, and allows 10 per app in all.
    pub async fn start(
        slack: &SlackApi,
        app_token: &str,
        handlers: Handlers,
        connections: u32,
    ) -> Result<Self, SlackClientError> {
        let environment = Arc::new(
            SlackClientEventsListenerEnvironment::new(slack.client())
                .with_error_handler(on_error)
                .with_user_state(State { handlers }),
        );
        let callbacks = SlackSocketModeListenerCallbacks::new()
            .with_interaction_events(on_interaction)
            .with_push_events(on_push)
            .with_command_events(on_command);
        let config = SlackClientSocketModeConfig::new()
            .with_max_connections_count(connections)
            .with_initial_backoff_in_seconds(1)
            .with_reconnect_timeout_in_seconds(10);
        let listener = SlackClientSocketModeListener::new(&config, environment, callbacks);
        let token = SlackApiToken::new(app_token.to_owned().into());
        listener.listen_for(&token).await?;
        listener.start().await;
        Ok(Self { listener })
    }

    pub async fn shutdown(&self) {
        self.listener.shutdown().await;
    }
}

async fn handlers_of(states: &SlackClientEventsUserState) -> Option<Handlers> {
    let guard = states.read().await;
    guard.get_user_state::<State>().map(|s| s.handlers.clone())
}

async fn on_interaction(
    event: SlackInteractionEvent,
    _client: Arc<SlackHyperClient>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<SlackInteractionResponse> {
    let Some(handlers) = handlers_of(&states).await else {
        return Ok(SlackInteractionResponse::Empty);
    };
    let interaction: Interaction = serde_json::from_value(serde_json::to_value(&event)?)?;
    Ok(match (handlers.interaction)(interaction).await {
        Some(payload) => serde_json::from_value::<SlackViewSubmissionResponse>(payload)
            .map(SlackInteractionResponse::ViewSubmission)
            .unwrap_or(SlackInteractionResponse::Empty),
        None => SlackInteractionResponse::Empty,
    })
}

/// The envelope is acked when this returns, so the work runs beside the ack, not before it.
async fn on_push(
    event: SlackPushEventCallback,
    _client: Arc<SlackHyperClient>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    let Some(handlers) = handlers_of(&states).await else {
        return Ok(());
    };
    let callback: EventCallback = serde_json::from_value(serde_json::to_value(&event)?)?;
    tokio::spawn((handlers.event)(callback));
    Ok(())
}

/// Slash commands are answered in the ack (`accepts_response_payload`), as over HTTP.
async fn on_command(
    event: SlackCommandEvent,
    _client: Arc<SlackHyperClient>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<SlackCommandEventResponse> {
    let Some(handlers) = handlers_of(&states).await else {
        return Err("no command handler".into());
    };
    let command: SlashCommand = serde_json::from_value(serde_json::to_value(&event)?)?;
    let reply = (handlers.command)(command).await;
    Ok(serde_json::from_value(reply)?)
}

/// slack-morphism calls this when it cannot parse an envelope (and acks it afterwards): handle
/// the raw payload leniently rather than lose the click, the event or the command. A command
/// read this way is answered through its `response_url`, since its ack has gone empty.
fn on_error(
    err: Box<dyn std::error::Error + Send + Sync>,
    client: Arc<SlackHyperClient>,
    states: SlackClientEventsUserState,
) -> HttpStatusCode {
    let body = err
        .downcast_ref::<SlackClientError>()
        .and_then(|e| match e {
            SlackClientError::ProtocolError(p) => p.json_body.clone(),
            _ => None,
        });
    let Some(envelope) = body
        .as_deref()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
    else {
        tracing::warn!(error = %err, "Socket Mode error");
        return HttpStatusCode::OK;
    };
    let payload = envelope["payload"].clone();
    match envelope["type"].as_str() {
        Some("interactive") => match serde_json::from_value::<Interaction>(payload) {
            Ok(interaction) => {
                tracing::debug!("handling an interaction slack-morphism could not parse");
                tokio::spawn(async move {
                    if let Some(handlers) = handlers_of(&states).await {
                        (handlers.interaction)(interaction).await;
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "ignored a malformed Socket Mode payload"),
        },
        Some("events_api") => match serde_json::from_value::<EventCallback>(payload) {
            Ok(callback) => {
                tracing::debug!("handling an event slack-morphism could not parse");
                tokio::spawn(async move {
                    if let Some(handlers) = handlers_of(&states).await {
                        (handlers.event)(callback).await;
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "ignored a malformed Socket Mode event"),
        },
        Some("slash_commands") => match serde_json::from_value::<SlashCommand>(payload) {
            Ok(command) => {
                tracing::debug!("answering a command slack-morphism could not parse");
                tokio::spawn(async move {
                    if let Some(handlers) = handlers_of(&states).await {
                        respond(&client, &command, (handlers.command)(command.clone()).await).await;
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "ignored a malformed Socket Mode command"),
        },
        _ => tracing::warn!(error = %err, "Socket Mode error"),
    }
    HttpStatusCode::OK
}

/// Posts a command's answer to its `response_url` (an ephemeral unless it says otherwise).
async fn respond(client: &SlackHyperClient, command: &SlashCommand, reply: serde_json::Value) {
    let Some(url) = command
        .response_url
        .as_deref()
        .and_then(|u| u.parse::<reqwest::Url>().ok())
    else {
        tracing::warn!("a slash command without a usable response_url went unanswered");
        return;
    };
    let request = match serde_json::from_value::<SlackApiPostWebhookMessageRequest>(reply) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot send a slash command's answer");
            return;
        }
    };
    if let Err(e) = client
        .respond_to_event(&SlackResponseUrl::new(url), &request)
        .await
    {
        tracing::warn!(error = %e, "cannot answer a slash command through its response_url");
    }
}
