//! Anomaly alerts (`[[alert]]`): counts over a sliding window, checked every few seconds.
//! Each alert (each requester, for a per-requester one) fires once, then stays quiet for a
//! window from when it fired; the claim, its audit entry (`alert.fired`) and its Slack post
//! are written in one transaction, so across replicas and restarts it fires exactly once.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Service, ServiceResult};
use crate::config::{Alert, AlertKind};
use crate::slack::{mrkdwn, render};
use crate::store::{Effect, NewAudit};

/// How often the counts are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

impl Service {
    /// Checks every alert once; returns how many fired.
    pub async fn check_alerts(&self) -> ServiceResult<usize> {
        let Some(channel) = self.alerts_channel.clone() else {
            return Ok(0);
        };
        let mut fired = 0;
        for alert in &self.alert_rules {
            fired += self.check_alert(alert, &channel).await?;
        }
        Ok(fired)
    }

    async fn check_alert(&self, alert: &Alert, channel: &str) -> ServiceResult<usize> {
        let now = self.now_ms();
        let within = alert.within.as_millis();
        let since = now.saturating_sub(within);
        let scope = alert
            .rule
            .clone()
            .or_else(|| alert.workflow.as_ref().map(|w| w.to_string()))
            .unwrap_or_default();
        let counts: Vec<(Option<String>, i64)> = match alert.kind {
            AlertKind::AutoDecisions => {
                vec![(None, self.store.count_decided_by(&scope, since).await?)]
            }
            AlertKind::Denials => vec![(None, self.store.count_denied(&scope, since).await?)],
            AlertKind::Requests if alert.per_requester => {
                self.store.count_created_by_requester(&scope, since).await?
            }
            AlertKind::Requests => vec![(None, self.store.count_created(&scope, since).await?)],
        };
        let mut fired = 0;
        for (requester, count) in counts {
            if count <= i64::from(alert.above) {
                continue;
            }
            let key = match (&requester, alert.per_requester) {
                (Some(r), true) => format!("{}\u{1f}{r}", alert.name),
                (None, true) => format!("{}\u{1f}", alert.name),
                _ => alert.name.clone(),
            };
            let what = describe(alert, &scope, requester.as_deref(), count);
            let text = format!(
                ":rotating_light: Alert *{}*: {what}",
                mrkdwn::escape_within(&alert.name, 100)
            );
            let audit = [NewAudit {
                request_id: None,
                event: "alert.fired",
                actor: "greenlight".into(),
                data: serde_json::json!({
                    "alert": alert.name,
                    "kind": alert.kind.as_str(),
                    "count": count,
                    "above": alert.above,
                    "within": alert.within,
                    "rule": alert.rule,
                    "workflow": alert.workflow,
                    "requester": requester,
                }),
            }];
            let effects = [Effect::SlackAlert {
                channel: channel.to_owned(),
                text,
                request_id: None,
            }];
            if self
                .store
                .claim_alert(&key, now, within, &audit, &effects)
                .await?
            {
                tracing::warn!(alert = %alert.name, kind = alert.kind.as_str(), count, above = alert.above, requester, "alert fired");
                metrics::counter!("greenlight_alerts_fired_total", "alert" => alert.name.clone())
                    .increment(1);
                self.outbox.notify_one();
                fired += 1;
            }
        }
        Ok(fired)
    }
}

/// What tripped it, in words (mrkdwn, escaped).
fn describe(alert: &Alert, scope: &str, requester: Option<&str>, count: i64) -> String {
    let scope = mrkdwn::escape_within(scope, 100);
    let within = alert.within;
    let above = alert.above;
    match alert.kind {
        AlertKind::AutoDecisions => format!(
            "{count} requests decided by rule *{scope}* in the last {within} (above {above})"
        ),
        AlertKind::Denials => format!(
            "{count} requests of workflow *{scope}* denied in the last {within} (above {above})"
        ),
        AlertKind::Requests => match (alert.per_requester, requester) {
            (true, Some(r)) => format!(
                "{} made {count} requests in workflow *{scope}* in the last {within} (above {above})",
                render::who(&mrkdwn::escape_within(r, 100))
            ),
            (true, None) => format!(
                "{count} requests without a requester in workflow *{scope}* in the last {within} (above {above})"
            ),
            _ => format!(
                "{count} requests in workflow *{scope}* in the last {within} (above {above})"
            ),
        },
    }
}

/// Checks the alerts until `shutdown`.
pub async fn keep_checking(service: Arc<Service>, shutdown: CancellationToken) {
    if service.alert_rules.is_empty() {
        return;
    }
    let mut checks = crate::store::Retrying::new("check the alerts");
    loop {
        let wait = match service.check_alerts().await {
            Ok(_) => {
                checks.succeeded();
                CHECK_EVERY
            }
            Err(e) => checks.failed(&e).max(CHECK_EVERY),
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
