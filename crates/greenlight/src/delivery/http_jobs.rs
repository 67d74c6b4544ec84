//! The worker's HTTP jobs: signed callbacks to the waiting machine (SSRF-guarded, a bounded
//! number in flight per host) and the operators' action hooks.

use std::collections::HashMap;

use super::{Outcome, WAIT_FOR_POST_MS, Worker};
use crate::delivery::outbound::OutgoingRequest;
use crate::domain::RequestId;
use crate::policy::hooks::ActionHook;
use crate::store::{Effect, Job};

/// A place among a host's callbacks in flight, given back when dropped.
struct HostSlot<'a> {
    hosts: &'a std::sync::Mutex<HashMap<String, usize>>,
    host: String,
}

impl Drop for HostSlot<'_> {
    fn drop(&mut self) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = hosts.get_mut(&self.host) {
            *n -= 1;
            if *n == 0 {
                hosts.remove(&self.host);
            }
        }
    }
}

impl Worker {
    fn host_slot(&self, host: &str) -> Option<HostSlot<'_>> {
        let mut hosts = self
            .callback_hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = hosts.entry(host.to_owned()).or_default();
        if *n >= self.settings.callback_host_concurrency {
            return None;
        }
        *n += 1;
        Some(HostSlot {
            hosts: &self.callback_hosts,
            host: host.to_owned(),
        })
    }

    /// A signed callback. The body and `webhook-id` were fixed with the event; the timestamp
    /// and signature are the attempt's own.
    pub(super) async fn webhook(&self, job: &Job) -> Outcome {
        let Effect::Webhook {
            url,
            guarded,
            webhook_id,
            body,
            ..
        } = &job.effect
        else {
            return Outcome::dead("not a webhook");
        };
        let now = self.now();
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return Outcome::dead("the URL does not parse");
        };
        // A requester's slow host holds only a few of the callback lane's places.
        let _slot = match (*guarded, parsed.host_str()) {
            (true, Some(host)) => match self.host_slot(host) {
                Some(slot) => Some(slot),
                None => {
                    return Outcome::wait(
                        now + WAIT_FOR_POST_MS,
                        format!(
                            "{} callbacks to {host} in flight",
                            self.settings.callback_host_concurrency
                        ),
                    );
                }
            },
            _ => None,
        };
        let timestamp = self.clock.now().as_second();
        let signature = self
            .settings
            .webhook_secret
            .sign(webhook_id, timestamp, body);
        let req = OutgoingRequest {
            method: reqwest::Method::POST,
            url: parsed,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("webhook-id".into(), webhook_id.clone()),
                ("webhook-timestamp".into(), timestamp.to_string()),
                ("webhook-signature".into(), signature),
            ],
            body: Some(body.clone()),
            guarded: *guarded,
        };
        match self.settings.outbound.send(req).await {
            Ok(status) => Outcome::done(format!("HTTP {status}")),
            Err(e) if e.is_permanent() => Outcome::dead(e.to_string()),
            Err(e) => self.retry_or_give_up(job, now, e.to_string()),
        }
    }

    /// An action hook, rendered now with `${VAR}` from the environment. Only the status (or
    /// the kind of failure) is kept: never the URL, headers or response body.
    pub(super) async fn action(&self, job: &Job, id: &RequestId, hook: &ActionHook) -> Outcome {
        let now = self.now();
        let request = match self.load(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Outcome::dead(format!("request {id} not found")),
            Err(e) => return self.retry_or_give_up(job, now, e.to_string()),
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let rendered = match hook.render(&request, &env) {
            Ok(r) => r,
            Err(e) => return Outcome::dead(e.to_string()),
        };
        let secrets: Vec<String> = hook.env_vars().iter().filter_map(|k| env(k)).collect();
        let req = OutgoingRequest {
            method: rendered.method,
            url: rendered.url,
            headers: rendered.headers,
            body: rendered.body,
            guarded: false,
        };
        match self.settings.outbound.send(req).await {
            Ok(status) => Outcome::done(format!("HTTP {status}")),
            Err(e) => {
                let mut text = e.to_string();
                for s in secrets.iter().filter(|s| s.len() >= 4) {
                    text = text.replace(s.as_str(), "***");
                }
                if e.is_permanent() {
                    Outcome::dead(text)
                } else {
                    self.retry_or_give_up(job, now, text)
                }
            }
        }
    }
}
