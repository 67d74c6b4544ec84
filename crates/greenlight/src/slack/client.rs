//! The Slack Web API, through slack-morphism. Errors are sorted into what the outbox needs to
//! know: wait (rate limited), give up (cannot heal), or try again later.

use std::sync::Arc;
use std::time::Duration;

use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackCallError {
    #[error("rate limited, retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// An error that retrying will not fix (bad channel, bad token, bad blocks).
    #[error("{0}")]
    Permanent(String),
    #[error("{0}")]
    Transient(String),
}

/// What greenlight reads of a `chat.update` answer beyond `ok`: nothing. Slack echoes the
/// whole message back, and decoding it into slack-morphism's answer type (whose flattened
/// fields serde buffers) cost more than the rest of the call (docs/performance.md).
#[derive(serde::Deserialize)]
struct Updated {}

/// What greenlight reads of a `chat.postMessage` answer: where the message is, not the message.
#[derive(serde::Deserialize)]
struct Posted {
    channel: String,
    ts: String,
}

/// Where the bot token is installed, as `auth.test` says: the workspace (`T…`), and the
/// Enterprise Grid organization (`E…`) when there is one. An org-wide install may name only
/// the organization.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Installation {
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub enterprise_id: Option<String>,
}

impl Installation {
    /// The ids whose people may vote: the workspace and its organization, those given.
    pub fn teams(&self) -> Vec<String> {
        [&self.team_id, &self.enterprise_id]
            .into_iter()
            .flatten()
            .filter(|t| !t.is_empty())
            .cloned()
            .collect()
    }
}

/// Slack error codes that no retry can fix.
const PERMANENT: &[&str] = &[
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "token_expired",
    "account_inactive",
    "missing_scope",
    "no_permission",
    "invalid_blocks",
    "invalid_blocks_format",
    "msg_too_long",
    "no_text",
    "message_not_found",
    "cant_update_message",
    "edit_window_closed",
    "user_not_in_channel",
    "user_not_found",
    "invalid_arguments",
    "restricted_action",
    "team_access_not_granted",
    "ekm_access_denied",
    // views.publish: the app's Home tab is not turned on.
    "not_enabled",
];

fn classify(err: SlackClientError) -> SlackCallError {
    match err {
        SlackClientError::RateLimitError(e) => SlackCallError::RateLimited {
            retry_after: e.retry_after.unwrap_or(Duration::from_secs(1)),
        },
        SlackClientError::ApiError(e) if e.code == "rate_limited" || e.code == "ratelimited" => {
            SlackCallError::RateLimited {
                retry_after: Duration::from_secs(1),
            }
        }
        SlackClientError::ApiError(e) if PERMANENT.contains(&e.code.as_str()) => {
            SlackCallError::Permanent(e.code)
        }
        SlackClientError::ApiError(e) => SlackCallError::Transient(e.code),
        SlackClientError::HttpError(e) => {
            SlackCallError::Transient(format!("HTTP {}", e.status_code.as_u16()))
        }
        other => SlackCallError::Transient(first_line(&other.to_string())),
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

/// Message metadata greenlight tags its own posts with, to find them again after a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub event_type: &'static str,
    pub key: &'static str,
    pub value: String,
}

/// Pages of 200 a history or channel search reads at most.
const MAX_PAGES: usize = 5;

pub(crate) type Connector = SlackClientHyperConnector<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
>;

#[derive(Clone)]
pub struct SlackApi {
    client: Arc<SlackClient<Connector>>,
    token: SlackApiToken,
}

impl SlackApi {
    /// `api_url` is Slack's (`https://slack.com/api/`) or the sandbox's (`http://…/api/`).
    pub fn new(api_url: &str, bot_token: &str) -> std::io::Result<Self> {
        // slack-morphism's default connector is HTTPS-only; the sandbox speaks plain HTTP.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        let connector = SlackClientHyperConnector::with_connector(https)
            .with_slack_api_url(api_url.trim_end_matches('/'));
        Ok(Self {
            client: Arc::new(SlackClient::new(connector)),
            token: SlackApiToken::new(bot_token.to_owned().into()),
        })
    }

    pub(crate) fn client(&self) -> Arc<SlackClient<Connector>> {
        self.client.clone()
    }

    pub async fn post_message(
        &self,
        channel: &str,
        text: String,
        blocks: Vec<SlackBlock>,
    ) -> Result<(String, String), SlackCallError> {
        self.post_tagged(channel, text, blocks, None).await
    }

    /// Posts with message metadata (`metadata: {event_type, event_payload}`), which
    /// `find_tagged` finds again in the channel's history.
    pub async fn post_tagged(
        &self,
        channel: &str,
        text: String,
        blocks: Vec<SlackBlock>,
        tag: Option<&Tag>,
    ) -> Result<(String, String), SlackCallError> {
        let session = self.client.open_session(&self.token);
        let content = SlackMessageContent::new()
            .with_text(text)
            .with_blocks(blocks)
            .opt_metadata(tag.map(|t| {
                SlackMessageMetadata::new(t.event_type.to_owned())
                    .with_event_payload([(t.key.to_owned(), t.value.clone())].into_iter().collect())
            }));
        let req = SlackApiChatPostMessageRequest::new(channel.to_owned().into(), content);
        // `chat_post_message` with a lighter answer type: only where the message landed.
        let res = session
            .http_session_api
            .http_post::<_, Posted>(
                "chat.postMessage",
                &req,
                Some(&*slack_morphism::api::CHAT_POST_MESSAGE_SPECIAL_LIMIT_RATE_CTL),
            )
            .await
            .map_err(classify)?;
        Ok((res.channel, res.ts))
    }

    /// `chat.update`.
    pub async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        text: String,
        blocks: Vec<SlackBlock>,
    ) -> Result<(), SlackCallError> {
        let session = self.client.open_session(&self.token);
        let content = SlackMessageContent::new()
            .with_text(text)
            .with_blocks(blocks);
        let req = SlackApiChatUpdateRequest::new(
            channel.to_owned().into(),
            content,
            ts.to_owned().into(),
        );
        // `chat_update` with a lighter answer type: the connector still checks `ok` and maps
        // `error`, but the message Slack echoes back is skipped, not decoded.
        session
            .http_session_api
            .http_post::<_, Updated>("chat.update", &req, Some(&*SLACK_TIER3_METHOD_CONFIG))
            .await
            .map_err(classify)?;
        Ok(())
    }

    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: String,
    ) -> Result<(), SlackCallError> {
        let session = self.client.open_session(&self.token);
        let req = SlackApiChatPostEphemeralRequest::new(
            channel.to_owned().into(),
            user.to_owned().into(),
            SlackMessageContent::new().with_text(text),
        );
        session.chat_post_ephemeral(&req).await.map_err(classify)?;
        Ok(())
    }

    /// The app's direct-message channel with `user` (conversations.open, `im:write`).
    pub async fn open_dm(&self, user: &str) -> Result<String, SlackCallError> {
        let session = self.client.open_session(&self.token);
        let req = SlackApiConversationsOpenRequest::new().with_users(vec![user.to_owned().into()]);
        let res = session.conversations_open(&req).await.map_err(classify)?;
        Ok(res.channel.id.to_string())
    }

    /// Replies in the thread of the message `thread_ts`.
    pub async fn post_thread_reply(
        &self,
        channel: &str,
        thread_ts: &str,
        text: String,
    ) -> Result<(), SlackCallError> {
        let session = self.client.open_session(&self.token);
        let req = SlackApiChatPostMessageRequest::new(
            channel.to_owned().into(),
            SlackMessageContent::new().with_text(text),
        )
        .with_thread_ts(thread_ts.to_owned().into());
        session.chat_post_message(&req).await.map_err(classify)?;
        Ok(())
    }

    /// Opens a modal for the user whose click gave `trigger_id` (valid once, for 3 seconds).
    pub async fn open_view(&self, trigger_id: &str, view: SlackView) -> Result<(), SlackCallError> {
        let session = self.client.open_session(&self.token);
        let req = SlackApiViewsOpenRequest::new(trigger_id.to_owned().into(), view);
        session.views_open(&req).await.map_err(classify)?;
        Ok(())
    }

    /// Publishes `user`'s Home tab (views.publish), replacing what it showed.
    pub async fn publish_home(&self, user: &str, view: SlackView) -> Result<(), SlackCallError> {
        let session = self.client.open_session(&self.token);
        let req = SlackApiViewsPublishRequest::new(user.to_owned().into(), view);
        session.views_publish(&req).await.map_err(classify)?;
        Ok(())
    }

    /// The user ids in a user group.
    pub async fn usergroup_members(&self, group: &str) -> Result<Vec<String>, SlackCallError> {
        let session = self.client.open_session(&self.token);
        let req = SlackApiUserGroupsUsersListRequest::new(group.to_owned().into());
        let res = session
            .usergroups_users_list(&req)
            .await
            .map_err(classify)?;
        Ok(res.users.into_iter().map(|u| u.to_string()).collect())
    }

    /// The user with this email, or `None` when Slack knows nobody by it.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<String>, SlackCallError> {
        let session = self.client.open_session(&self.token);
        let req = SlackApiUsersLookupByEmailRequest::new(email.to_owned().into());
        match session.users_lookup_by_email(&req).await {
            Ok(res) => Ok(Some(res.user.id.to_string())),
            Err(SlackClientError::ApiError(e)) if e.code == "users_not_found" => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// The id of a channel named `#name` (conversations.list needs channels:read, and
    /// groups:read for private channels).
    pub async fn channel_id(&self, name: &str) -> Result<Option<String>, SlackCallError> {
        let name = name.trim_start_matches('#');
        let session = self.client.open_session(&self.token);
        let mut cursor = None;
        for _ in 0..MAX_PAGES {
            let req = SlackApiConversationsListRequest::new()
                .with_limit(200)
                .with_exclude_archived(true)
                .with_types(vec![
                    SlackConversationType::Public,
                    SlackConversationType::Private,
                ])
                .opt_cursor(cursor);
            let res = session.conversations_list(&req).await.map_err(classify)?;
            if let Some(c) = res
                .channels
                .iter()
                .find(|c| c.name.as_deref() == Some(name))
            {
                return Ok(Some(c.id.to_string()));
            }
            cursor = res
                .response_metadata
                .and_then(|m| m.next_cursor)
                .filter(|c| !c.to_string().is_empty());
            if cursor.is_none() {
                break;
            }
        }
        Ok(None)
    }

    /// The ts of a message in `channel` (an id) posted since `oldest_secs` that carries `tag`
    /// (conversations.history with include_all_metadata; needs channels:history, or
    /// groups:history for private channels).
    pub async fn find_tagged(
        &self,
        channel: &str,
        tag: &Tag,
        oldest_secs: i64,
    ) -> Result<Option<String>, SlackCallError> {
        let session = self.client.open_session(&self.token);
        let mut cursor = None;
        for _ in 0..MAX_PAGES {
            let req = SlackApiConversationsHistoryRequest::new()
                .with_channel(channel.to_owned().into())
                .with_include_all_metadata(true)
                .with_limit(200)
                .with_oldest(format!("{}.000000", oldest_secs.max(0)).into())
                .opt_cursor(cursor);
            let res = session
                .conversations_history(&req)
                .await
                .map_err(classify)?;
            let found = res.messages.iter().find(|m| {
                m.content.metadata.as_ref().is_some_and(|md| {
                    md.event_type == tag.event_type
                        && md
                            .event_payload
                            .as_ref()
                            .and_then(|p| p.get(tag.key))
                            .is_some_and(|v| *v == tag.value)
                })
            });
            if let Some(m) = found {
                return Ok(Some(m.origin.ts.to_string()));
            }
            cursor = res
                .response_metadata
                .and_then(|m| m.next_cursor)
                .filter(|c| !c.to_string().is_empty());
            if cursor.is_none() {
                break;
            }
        }
        Ok(None)
    }

    /// `auth.test`: which workspace the bot token belongs to, and on Enterprise Grid which
    /// organization (slack-morphism's answer type has no `enterprise_id`).
    pub async fn auth_test(&self) -> Result<Installation, SlackCallError> {
        let session = self.client.open_session(&self.token);
        let found: Installation = session
            .http_session_api
            .http_get(
                "auth.test",
                &slack_morphism::SLACK_HTTP_EMPTY_GET_PARAMS.clone(),
                Some(&slack_morphism::api::AUTH_TEST_SPECIAL_LIMIT_RATE_CTL),
            )
            .await
            .map_err(classify)?;
        Ok(found)
    }
}
