//! Signals: facts machines report for rules to read (`POST /v1/signals`). A set is a
//! compare-and-set on when the signal was last set, so two reporters racing never lose a
//! change or its audit entry; a change of value is audited, a refresh with the same value is
//! not (it only moves `updated_at` and the ttl). They are bounded: at most `[limits]
//! max_signals` are stored (the store checks it in the insert's own transaction), and one past
//! its ttl for longer than `[limits] signal_retention` is deleted, as one deleted through the
//! API is, with an audit entry.

use serde::Serialize;

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{DurationSpec, Signal, SignalName};
use crate::store::{ApiKey, NewAudit, SignalWrite};

/// Largest signal value, as JSON text.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Shortest ttl: shorter would lapse between two reports of any real reporter.
pub const MIN_TTL_MS: i64 = 1_000;
/// Lapsed signals deleted per purge: a full batch makes the next purge come at once.
pub const PURGE_BATCH: u32 = 100;
/// Who deletes a signal past its retention, in the audit.
pub const RETENTION_ACTOR: &str = "greenlight";

/// A signal as the API shows it: with whether it counts now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SignalView {
    #[serde(flatten)]
    pub signal: Signal,
    /// Set and within its ttl: rules see it.
    pub live: bool,
}

/// What a reporter asked to set, checked.
#[derive(Debug, Clone)]
pub struct SetSignal {
    pub name: SignalName,
    pub value: serde_json::Value,
    pub ttl: Option<DurationSpec>,
}

impl SetSignal {
    /// Checks the value and the ttl; the name was checked as it was read.
    pub fn new(
        name: SignalName,
        value: serde_json::Value,
        ttl: Option<DurationSpec>,
    ) -> Result<Self, String> {
        if value.is_null() {
            return Err("value is required (a string, number, bool, list or object)".into());
        }
        super::intake::storable_json("value", &value).map_err(|e| e.message)?;
        let size = value.to_string().len();
        if size > MAX_VALUE_BYTES {
            return Err(format!(
                "value is {size} bytes as JSON; at most {MAX_VALUE_BYTES}"
            ));
        }
        if let Some(ttl) = ttl
            && ttl.as_millis() < MIN_TTL_MS
        {
            return Err("ttl must be at least 1s".into());
        }
        Ok(Self { name, value, ttl })
    }
}

impl Service {
    /// Sets a signal for `key`; returns it and whether its value changed.
    pub async fn set_signal(
        &self,
        input: SetSignal,
        key: &ApiKey,
    ) -> ServiceResult<(SignalView, bool)> {
        self.take_create(key)?;
        loop {
            let previous = self.store.signal(&input.name).await?;
            // Strictly after the last set, so that the compare-and-set always tells two sets apart.
            let mut now = self.now();
            if let Some(p) = &previous
                && p.updated_at >= now
            {
                now = jiff::Timestamp::from_millisecond(p.updated_at.as_millisecond() + 1)
                    .unwrap_or(now);
            }
            let (signal, changed) = Signal::set(
                previous.as_ref(),
                input.name.clone(),
                input.value.clone(),
                input.ttl.map(|t| t.as_millis()),
                &key.name,
                now,
            );
            let audit = if changed {
                let was = previous
                    .as_ref()
                    .filter(|p| p.is_live(now))
                    .map(|p| p.value.clone());
                vec![NewAudit {
                    request_id: None,
                    event: "signal.changed",
                    actor: key.name.clone(),
                    data: serde_json::json!({
                        "name": signal.name,
                        "value": signal.value,
                        "previous": was,
                        "ttl": input.ttl,
                        "api_key": key.id,
                    }),
                }]
            } else {
                Vec::new()
            };
            let expected = previous.as_ref().map(|p| p.updated_at.as_millisecond());
            let written = self
                .store
                .put_signal(
                    &signal,
                    expected,
                    self.limits.max_signals,
                    &audit,
                    now.as_millisecond(),
                )
                .await?;
            if written == SignalWrite::Full {
                metrics::counter!("greenlight_signals_refused_total").increment(1);
                return Err(ServiceError::TooManySignals(self.limits.max_signals));
            }
            if written == SignalWrite::Written {
                if changed {
                    tracing::info!(signal = %signal.name, by = %key.name, value = %signal.value, "signal changed");
                    metrics::counter!("greenlight_signal_changes_total").increment(1);
                }
                let live = signal.is_live(self.now());
                return Ok((SignalView { signal, live }, changed));
            }
        }
    }

    pub async fn signal(&self, name: &SignalName) -> ServiceResult<SignalView> {
        let signal = self
            .store
            .signal(name)
            .await?
            .ok_or_else(|| ServiceError::NoSuchSignal(name.to_string()))?;
        let live = signal.is_live(self.now());
        Ok(SignalView { signal, live })
    }

    /// Up to `limit` signals by name, after `after`.
    pub async fn signals(
        &self,
        after: Option<&SignalName>,
        limit: u32,
    ) -> ServiceResult<Vec<SignalView>> {
        let now = self.now();
        Ok(self
            .store
            .list_signals(after, limit)
            .await?
            .into_iter()
            .map(|signal| SignalView {
                live: signal.is_live(now),
                signal,
            })
            .collect())
    }

    /// Deletes a signal for `key`, audited; returns it as it was. Rules no longer see it, and
    /// its name no longer counts against `[limits] max_signals`.
    pub async fn delete_signal(
        &self,
        name: &SignalName,
        key: &ApiKey,
    ) -> ServiceResult<SignalView> {
        loop {
            let signal = self
                .store
                .signal(name)
                .await?
                .ok_or_else(|| ServiceError::NoSuchSignal(name.to_string()))?;
            let now = self.now();
            let live = signal.is_live(now);
            let audit = [NewAudit {
                request_id: None,
                event: "signal.deleted",
                actor: key.name.clone(),
                data: serde_json::json!({
                    "name": signal.name,
                    "value": signal.value,
                    "live": live,
                    "reason": "deleted through the API",
                    "api_key": key.id,
                }),
            }];
            let at = signal.updated_at.as_millisecond();
            if self
                .store
                .delete_signal(name, at, &audit, now.as_millisecond())
                .await?
            {
                tracing::info!(signal = %name, by = %key.name, "signal deleted");
                metrics::counter!("greenlight_signals_deleted_total", "reason" => "api")
                    .increment(1);
                return Ok(SignalView { signal, live });
            }
            // Set again in between: delete what it is now (or find it gone).
        }
    }

    /// Deletes up to `PURGE_BATCH` signals past their ttl for longer than `[limits]
    /// signal_retention`, each with an audit entry saying so; returns how many it looked at.
    /// One set again in between is kept (the delete is a compare-and-set).
    pub async fn purge_lapsed_signals(&self) -> ServiceResult<usize> {
        let now = self.now();
        let retention = self.limits.signal_retention;
        let before = now.as_millisecond().saturating_sub(retention.as_millis());
        let lapsed = self.store.lapsed_signals(before, PURGE_BATCH).await?;
        for signal in &lapsed {
            let audit = [NewAudit {
                request_id: None,
                event: "signal.deleted",
                actor: RETENTION_ACTOR.to_owned(),
                data: serde_json::json!({
                    "name": signal.name,
                    "value": signal.value,
                    "live": false,
                    "expires_at": signal.expires_at,
                    "reason": format!("past its ttl for longer than [limits] signal_retention ({retention})"),
                }),
            }];
            let at = signal.updated_at.as_millisecond();
            if self
                .store
                .delete_signal(&signal.name, at, &audit, now.as_millisecond())
                .await?
            {
                tracing::info!(signal = %signal.name, expired_at = ?signal.expires_at, "lapsed signal deleted after its retention");
                metrics::counter!("greenlight_signals_deleted_total", "reason" => "retention")
                    .increment(1);
            }
        }
        Ok(lapsed.len())
    }
}
