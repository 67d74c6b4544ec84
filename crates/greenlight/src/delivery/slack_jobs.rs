//! The worker's Slack jobs: posts (found again after a crash rather than posted twice),
//! updates, thread replies, ephemerals, digests and Home tabs, paced per channel and paused per
//! method on a 429.

use super::{Outcome, Step, WAIT_FOR_POST_MS, Worker};
use crate::domain::{Millis, Pace, RequestId, SlackRef, SlackUserId};
use crate::slack::{SlackCallError, Tag, render};
use crate::store::{DigestWindow, Effect, Job, JobState, StoreError};

/// Bounds on a 429's `Retry-After`: never a hot loop, never a day.
const MIN_PAUSE_MS: Millis = 1_000;
const MAX_PAUSE_MS: Millis = 15 * 60 * 1000;
/// One person's Home tab is published at most about once a second...
const HOME_PACE: Pace = Pace {
    per_second: 1.0,
    burst: 1,
};
/// ...and all of them within views.publish's tier (Tier 4: 100 a minute per workspace).
const HOME_PACE_ALL: Pace = Pace {
    per_second: 100.0 / 60.0,
    burst: 20,
};

/// A digest's summary may take at most this share of the time between its updates.
const DIGEST_COST_SHARE: i64 = 20;

/// The metadata every approval message carries, so that it can be found again.
fn post_tag(id: &RequestId) -> Tag {
    Tag {
        event_type: "greenlight_request",
        key: "request_id",
        value: id.to_string(),
    }
}

/// Most renderings of one message a single update job sends (see `update`).
const MAX_REWRITES: usize = 3;

impl Worker {
    fn method(effect: &Effect) -> &'static str {
        match effect {
            Effect::SlackUpdate { .. }
            | Effect::SlackUpdateAt { .. }
            | Effect::SlackDigest { .. } => "chat.update",
            Effect::SlackEphemeral { .. } => "chat.postEphemeral",
            Effect::SlackHomeRefresh { .. } => "views.publish",
            _ => "chat.postMessage",
        }
    }

    /// Takes a chat.postMessage slot for `channel`, or says when this post's own slot is.
    async fn take_token(
        &self,
        channel: &str,
        now: Millis,
    ) -> Result<Result<(), Millis>, SlackCallError> {
        let pace = Pace {
            per_second: self.settings.posts_per_second,
            burst: self.settings.post_burst,
        };
        self.take_slot(channel, now, pace).await
    }

    /// Takes a slot of the bucket `key` (a channel, a person's Home tab, a method).
    async fn take_slot(
        &self,
        key: &str,
        now: Millis,
        pace: Pace,
    ) -> Result<Result<(), Millis>, SlackCallError> {
        self.shared
            .take_post_slot(key, now, pace)
            .await
            .map_err(|e| SlackCallError::Transient(e.to_string()))
    }

    pub(super) async fn slack_job(&self, job: &Job) -> Outcome {
        let method = Self::method(&job.effect);
        let now = self.now();
        match self.shared.paused_until(method, now).await {
            Ok(Some(until)) => return Outcome::wait(until, format!("{method} rate limited")),
            Ok(None) => {}
            Err(e) => return self.retry_or_give_up(job, now, e.to_string()),
        }
        let message = match &job.effect {
            Effect::SlackPost { request_id }
            | Effect::SlackUpdate { request_id }
            | Effect::SlackUpdateAt { request_id, .. }
            | Effect::SlackDmCopies { request_id, .. } => Some(request_id.to_string()),
            Effect::SlackDigest { key, .. } => Some(format!("digest:{key}")),
            Effect::SlackHomeRefresh { user, .. } => Some(format!("home:{user}")),
            _ => None,
        };
        // One task at a time posts or updates a message (or publishes a Home tab), across
        // replicas: so an older rendering can never land after a newer one.
        let lease_owner = format!("{}:{}", self.owner, job.id);
        if let Some(message) = &message {
            let until = now + self.settings.lease_ms;
            match self
                .shared
                .lease_message(message, &lease_owner, until, now)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    return Outcome::wait(
                        now + WAIT_FOR_POST_MS,
                        "another delivery for this message is in flight",
                    );
                }
                Err(e) => return self.retry_or_give_up(job, now, e.to_string()),
            }
        }
        let outcome = self.slack_call(job, method, now).await;
        if let Some(message) = &message
            && let Err(e) = self.shared.release_message(message, &lease_owner).await
        {
            tracing::warn!(error = %e, message, "cannot release a message lease; it will run out");
        }
        outcome
    }

    async fn slack_call(&self, job: &Job, method: &'static str, now: Millis) -> Outcome {
        let res = match &job.effect {
            Effect::SlackPost { request_id } => self.post(job, request_id, now).await,
            Effect::SlackUpdate { request_id } | Effect::SlackUpdateAt { request_id, .. } => {
                self.update(request_id).await
            }
            Effect::SlackThreadReply { request_id, text } => {
                self.thread_reply(request_id, text, now).await
            }
            Effect::SlackDirectMessage { to, text, .. } => self.direct_message(to, text).await,
            Effect::SlackDmCopies {
                request_id,
                approvers,
            } => self.dm_copies(request_id, approvers).await,
            Effect::SlackEphemeral {
                channel,
                user,
                text,
            } => self
                .slack
                .post_ephemeral(channel, user, text.clone())
                .await
                .map(|()| Step::Sent),
            Effect::SlackAlert { channel, text, .. } => match self.take_token(channel, now).await {
                Err(e) => Err(e),
                Ok(Err(at)) => Ok(Step::Wait(
                    at,
                    "paced: one message a second per channel".into(),
                )),
                Ok(Ok(())) => self
                    .slack
                    .post_message(channel, text.clone(), render::notice(text))
                    .await
                    .map(|_| Step::Sent),
            },
            Effect::SlackDigest { key, channel } => self.digest(job, key, channel, now).await,
            Effect::SlackHomeRefresh { user, notice } => {
                self.publish_home(user, notice.as_deref(), now).await
            }
            Effect::Webhook { .. } | Effect::ActionHook { .. } | Effect::GithubReview { .. } => {
                return Outcome::dead("not a Slack job");
            }
        };
        match res {
            Ok(Step::Sent) => Outcome::done("ok"),
            Ok(Step::Posted(message)) => Outcome {
                posted: Some(message),
                ..Outcome::done("ok")
            },
            Ok(Step::Wait(at, why)) => Outcome::wait(at, why),
            Ok(Step::Pointless(why)) => Outcome {
                alert: false,
                attempted: false,
                ..Outcome::dead(why)
            },
            Err(SlackCallError::RateLimited { retry_after }) => {
                let pause = i64::try_from(retry_after.as_millis())
                    .unwrap_or(MAX_PAUSE_MS)
                    .clamp(MIN_PAUSE_MS, MAX_PAUSE_MS);
                let until = self.now() + pause;
                if let Err(e) = self.shared.pause(method, until).await {
                    tracing::warn!(error = %e, method, "cannot share a 429 pause with other replicas");
                }
                if now - job.created_at > self.settings.max_age_ms {
                    return Outcome::dead(format!("{method} still rate limited after max_age"));
                }
                Outcome {
                    attempted: true,
                    ..Outcome::wait(until, format!("{method} rate limited for {retry_after:?}"))
                }
            }
            Err(SlackCallError::Permanent(e)) => Outcome {
                // A notice to one person that cannot be shown is not worth waking anyone.
                alert: !matches!(job.effect, Effect::SlackEphemeral { .. }),
                ..Outcome::dead(e)
            },
            Err(SlackCallError::Transient(e)) => self.retry_or_give_up(job, now, e),
        }
    }

    async fn post(&self, job: &Job, id: &RequestId, now: Millis) -> Result<Step, SlackCallError> {
        let Some(request) = self.load(id).await? else {
            return Err(SlackCallError::Permanent(format!("request {id} not found")));
        };
        if request.slack.is_some() {
            return Ok(Step::Sent);
        }
        let tag = post_tag(id);
        // Claimed before: that worker may have posted and died before saving the ts.
        if job.claims > 1
            && let Some((channel, ts)) = self
                .earlier_copy(request.channel.as_str(), &tag, job.created_at)
                .await?
        {
            tracing::info!(request = %id, ts, "adopted the message an interrupted attempt posted");
            return Ok(Step::Posted(SlackRef { channel, ts }));
        }
        if let Err(at) = self.take_token(request.channel.as_str(), now).await? {
            return Ok(Step::Wait(
                at,
                "paced: one message a second per channel".into(),
            ));
        }
        let blocks = self.blocks(&request).await?;
        let (channel, ts) = self
            .slack
            .post_tagged(
                request.channel.as_str(),
                render::fallback_text(&request),
                blocks,
                Some(&tag),
            )
            .await?;
        if request.channel.as_str().starts_with('#')
            && let Ok(mut ids) = self.channel_ids.lock()
        {
            ids.insert(request.channel.as_str().to_owned(), channel.clone());
        }
        Ok(Step::Posted(SlackRef { channel, ts }))
    }

    /// Posts the digest `key`, or updates it in place, rendered from its requests now. Like a
    /// request's message, an interrupted post is found again by its metadata.
    async fn digest(
        &self,
        job: &Job,
        key: &str,
        target: &str,
        now: Millis,
    ) -> Result<Step, SlackCallError> {
        let transient = |e: StoreError| SlackCallError::Transient(e.to_string());
        let Some(window) = DigestWindow::parse(key) else {
            return Err(SlackCallError::Permanent(format!(
                "{key:?} is not a digest key"
            )));
        };
        // Summing up a digest reads all its requests: one of a million rows must not be read
        // every two seconds. Each update waits at least twenty times what the last summary cost.
        let next = self
            .digest_costs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|(at, cost)| at + cost * DIGEST_COST_SHARE);
        if let Some(next) = next
            && next > now
        {
            return Ok(Step::Wait(
                next,
                "a large digest: updated less often".into(),
            ));
        }
        let started = self.now();
        let summary = self.digests.digest_summary(key).await.map_err(transient)?;
        let cost = self.now() - started;
        {
            let mut costs = self.digest_costs.lock().unwrap_or_else(|e| e.into_inner());
            if costs.len() > 1000 {
                // Windows long closed are done with.
                costs
                    .retain(|k, _| DigestWindow::parse(k).is_some_and(|w| w.end > now - 3_600_000));
            }
            costs.insert(key.to_owned(), (started, cost));
        }
        let (text, blocks) = render::digest(&window, &summary, self.settings.public_url.as_deref());
        let posted = self.digests.digest_message(key).await.map_err(transient)?;
        match posted {
            Some(at) => {
                self.slack
                    .update_message(&at.channel, &at.ts, text, blocks)
                    .await?;
            }
            None => {
                let tag = Tag {
                    event_type: "greenlight_digest",
                    key: "digest_key",
                    value: key.to_owned(),
                };
                let earlier = if job.claims > 1 {
                    self.earlier_copy(target, &tag, job.created_at).await?
                } else {
                    None
                };
                if let Some((channel, ts)) = earlier {
                    tracing::info!(
                        digest = key,
                        ts,
                        "adopted the digest an interrupted attempt posted"
                    );
                    self.digests
                        .set_digest_message(&window, &channel, &ts)
                        .await
                        .map_err(transient)?;
                    self.slack
                        .update_message(&channel, &ts, text, blocks)
                        .await?;
                } else {
                    if let Err(at) = self.take_token(target, now).await? {
                        return Ok(Step::Wait(
                            at,
                            "paced: one message a second per channel".into(),
                        ));
                    }
                    let (channel, ts) = self
                        .slack
                        .post_tagged(target, text, blocks, Some(&tag))
                        .await?;
                    self.digests
                        .set_digest_message(&window, &channel, &ts)
                        .await
                        .map_err(transient)?;
                }
            }
        }
        // A decision that committed while this rendering was under way may have collapsed
        // into this job: render again rather than leave the message behind.
        let after = self.digests.digest_summary(key).await.map_err(transient)?;
        if after.total != summary.total {
            return Ok(Step::Wait(
                self.now() + crate::store::DIGEST_UPDATE_DELAY_MS,
                "more auto-decisions arrived while the digest was sent".into(),
            ));
        }
        Ok(Step::Sent)
    }

    /// The message an earlier attempt posted for this request, found by its metadata in the
    /// channel's recent history. Without the scopes for that (channels:history and
    /// channels:read, or groups:* for private channels) it says so once and lets the post go
    /// ahead, as before: maybe a second copy, never a lost message.
    async fn earlier_copy(
        &self,
        target: &str,
        tag: &Tag,
        since: Millis,
    ) -> Result<Option<(String, String)>, SlackCallError> {
        let cached = self
            .channel_ids
            .lock()
            .ok()
            .and_then(|ids| ids.get(target).cloned());
        let channel = match (target.starts_with('#'), cached) {
            (false, _) => Some(target.to_owned()),
            (true, Some(id)) => Some(id),
            (true, None) => match self.slack.channel_id(target).await {
                Ok(found) => found,
                Err(SlackCallError::Permanent(e)) => return Ok(self.cannot_look(&e)),
                Err(e) => return Err(e),
            },
        };
        let Some(channel) = channel else {
            return Ok(None);
        };
        // A minute of slack for clocks; the job was written before any attempt to post it.
        let oldest = since / 1000 - 60;
        match self.slack.find_tagged(&channel, tag, oldest).await {
            Ok(found) => Ok(found.map(|ts| (channel, ts))),
            Err(SlackCallError::Permanent(e)) => Ok(self.cannot_look(&e)),
            Err(e) => Err(e),
        }
    }

    fn cannot_look(&self, error: &str) -> Option<(String, String)> {
        if !self
            .warned_no_history
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                error,
                "cannot look for a message an interrupted attempt may have posted (give the bot channels:history and channels:read, or groups:history and groups:read for private channels); posting again, which may show it twice"
            );
        }
        None
    }

    /// The message for a request: its state, plus what its action hooks did.
    async fn blocks(
        &self,
        request: &crate::domain::Request,
    ) -> Result<Vec<slack_morphism::prelude::SlackBlock>, SlackCallError> {
        let look = self
            .settings
            .looks
            .get(request.workflow.as_str())
            .cloned()
            .unwrap_or_default();
        let mut blocks = render::blocks_with(request, &look);
        // Only a workflow with action hooks has their results to show (and a read spared on
        // every message update of the others).
        if look.action_hooks && request.status.is_final() {
            let results = self
                .outbox
                .action_results(&request.id)
                .await
                .map_err(|e| SlackCallError::Transient(e.to_string()))?;
            blocks.extend(render::action_results(&results));
        }
        // An approval may have granted a standing approval ("Approve for…"): only workflows
        // that allow them look.
        if look.approve_for.is_some() && request.status == crate::domain::Status::Approved {
            let granted = self
                .standing
                .standing_of_request(&request.id)
                .await
                .map_err(|e| SlackCallError::Transient(e.to_string()))?;
            blocks.extend(render::standing_blocks(&granted, self.clock.now()));
        }
        Ok(blocks)
    }

    /// Posts the request's message, with its buttons, in each approver's direct message (user
    /// groups expanded) and keeps each copy on the request, so that every rewrite of the
    /// message rewrites them too (this job holds the message's lease, so no rewrite runs
    /// meanwhile). A retry skips the people who have their copy already.
    async fn dm_copies(
        &self,
        id: &RequestId,
        approvers: &[String],
    ) -> Result<Step, SlackCallError> {
        let Some(request) = self.load(id).await? else {
            return Err(SlackCallError::Permanent(format!("request {id} not found")));
        };
        let mut people: Vec<String> = Vec::new();
        for approver in approvers {
            let members = if SlackUserId::looks_like(approver) {
                vec![approver.clone()]
            } else {
                self.slack.usergroup_members(approver).await?
            };
            for person in members {
                if !people.contains(&person) {
                    people.push(person);
                }
            }
        }
        let blocks = self.blocks(&request).await?;
        for person in people {
            let channel = self.slack.open_dm(&person).await?;
            if request.slack_copies.iter().any(|c| c.channel == channel) {
                continue;
            }
            let text = render::fallback_text(&request);
            let (channel, ts) = self
                .slack
                .post_message(&channel, text, blocks.clone())
                .await?;
            self.requests
                .add_slack_copy(id, &channel, &ts)
                .await
                .map_err(|e| SlackCallError::Transient(e.to_string()))?;
        }
        Ok(Step::Sent)
    }

    /// Tells one person something in the app's direct message with them; an email nobody in
    /// Slack has leaves nobody to tell.
    async fn direct_message(&self, to: &str, text: &str) -> Result<Step, SlackCallError> {
        let user = if SlackUserId::looks_like(to) {
            to.to_owned()
        } else {
            match self.slack.user_by_email(to).await? {
                Some(user) => user,
                None => return Ok(Step::Sent),
            }
        };
        let channel = self.slack.open_dm(&user).await?;
        self.slack
            .post_message(&channel, text.to_owned(), render::notice(text))
            .await
            .map(|_| Step::Sent)
    }

    /// A reply in the request's thread; waits for the message to be posted first.
    async fn thread_reply(
        &self,
        id: &RequestId,
        text: &str,
        now: Millis,
    ) -> Result<Step, SlackCallError> {
        let Some(request) = self.load(id).await? else {
            return Err(SlackCallError::Permanent(format!("request {id} not found")));
        };
        let Some(slack) = &request.slack else {
            return Ok(Step::Wait(
                now + WAIT_FOR_POST_MS,
                "waiting for the message to be posted".into(),
            ));
        };
        if let Err(at) = self.take_token(&slack.channel, now).await? {
            return Ok(Step::Wait(
                at,
                "paced: one message a second per channel".into(),
            ));
        }
        self.slack
            .post_thread_reply(&slack.channel, &slack.ts, text.to_owned())
            .await
            .map(|()| Step::Sent)
    }

    /// Publishes `user`'s Home tab as it is now, paced per person and for the whole app.
    async fn publish_home(
        &self,
        user: &str,
        notice: Option<&str>,
        now: Millis,
    ) -> Result<Step, SlackCallError> {
        let paced = |at| {
            Ok(Step::Wait(
                at,
                "paced: Home tabs are published about once a second per person".into(),
            ))
        };
        if let Err(at) = self
            .take_slot(&format!("home:{user}"), now, HOME_PACE)
            .await?
        {
            return paced(at);
        }
        if let Err(at) = self.take_slot("views.publish", now, HOME_PACE_ALL).await? {
            return paced(at);
        }
        let view = self
            .home
            .home_view(user, notice)
            .await
            .map_err(SlackCallError::Transient)?;
        let published = self.slack.publish_home(user, view).await;
        let outcome = if published.is_ok() { "ok" } else { "failed" };
        metrics::counter!("greenlight_home_publishes_total", "outcome" => outcome).increment(1);
        published.map(|()| Step::Sent)
    }

    async fn update(&self, id: &RequestId) -> Result<Step, SlackCallError> {
        let Some(mut request) = self.load(id).await? else {
            return Err(SlackCallError::Permanent(format!("request {id} not found")));
        };
        if request.slack.is_none() {
            let post = self
                .outbox
                .deliveries(id)
                .await
                .map_err(|e| SlackCallError::Transient(e.to_string()))?
                .into_iter()
                .find(|d| d.kind == "slack_post");
            match post.map(|d| d.state) {
                Some(JobState::Pending) => {
                    return Ok(Step::Wait(
                        self.now() + WAIT_FOR_POST_MS,
                        "waiting for the message to be posted".into(),
                    ));
                }
                // The post's result and its message are written together: a post that
                // finished between the two reads above left its message on the request.
                Some(JobState::Done) => {
                    request = self.load(id).await?.ok_or_else(|| {
                        SlackCallError::Permanent(format!("request {id} not found"))
                    })?;
                }
                _ => {}
            }
        }
        if request.slack.is_none() {
            // The post failed for good (and raised its own alert): nothing to update.
            return Ok(Step::Pointless("the message was never posted".into()));
        }
        // A change committed while this job was being claimed may have counted on it (its
        // update collapsed into this one) yet not be in what was read: read again after the
        // rewrite and rewrite once more while the request moves on.
        for _ in 0..MAX_REWRITES {
            self.rewrite(id, &request).await?;
            match self.load(id).await? {
                Some(latest) if latest.version != request.version => request = latest,
                _ => break,
            }
        }
        Ok(Step::Sent)
    }

    /// Rewrites the request's message, and every copy of it in direct messages, to show it.
    async fn rewrite(
        &self,
        id: &RequestId,
        request: &crate::domain::Request,
    ) -> Result<(), SlackCallError> {
        let Some(slack) = &request.slack else {
            return Ok(());
        };
        let blocks = self.blocks(request).await?;
        let text = render::fallback_text(request);
        self.slack
            .update_message(&slack.channel, &slack.ts, text.clone(), blocks.clone())
            .await?;
        // Every copy in a direct message shows the same; one Slack refuses for good (the
        // person left) does not hold back the others.
        for copy in &request.slack_copies {
            let updated = self
                .slack
                .update_message(&copy.channel, &copy.ts, text.clone(), blocks.clone())
                .await;
            match updated {
                Err(SlackCallError::Permanent(e)) => {
                    tracing::warn!(request = %id, channel = %copy.channel, error = %e, "cannot rewrite a direct-message copy");
                }
                other => other?,
            }
        }
        Ok(())
    }

    pub(super) async fn load(
        &self,
        id: &RequestId,
    ) -> Result<Option<crate::domain::Request>, SlackCallError> {
        self.requests
            .get_request(id)
            .await
            .map_err(|e| SlackCallError::Transient(e.to_string()))
    }
}
