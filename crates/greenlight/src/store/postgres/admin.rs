//! PostgreSQL: meta values, shutdown, shared coordination, and decisions other replicas
//! announce (LISTEN); backups are pg_dump's.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use super::*;

#[async_trait]
impl Admin for PostgresStore {
    async fn meta_get_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        // Two statements, two snapshots: the SELECT sees a row another replica inserted first.
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn close(&self) {
        self.pool.close().await;
        self.coordination.close().await;
    }

    fn coordination(&self) -> Arc<dyn Coordination> {
        self.coordination.clone()
    }

    async fn follow_decisions(&self, feed: DecisionFeed, stop: CancellationToken) {
        let mut first = true;
        while !stop.is_cancelled() {
            let listener = async {
                let mut l = PgListener::connect_with(&self.pool).await?;
                l.listen(DECIDED_CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            let mut listener = match listener.await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for decisions; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if !std::mem::take(&mut first) {
                // Decisions made while the listener was away were not heard: look again.
                feed(None);
            }
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    n = listener.try_recv() => n,
                };
                match next {
                    Ok(Some(n)) => {
                        for id in n.payload().split(',') {
                            match id.parse() {
                                Ok(id) => feed(Some(id)),
                                Err(_) => tracing::warn!(payload = id, "odd decision notice"),
                            }
                        }
                    }
                    // The connection was lost; the next call reconnects and listens again.
                    Ok(None) => {
                        tracing::warn!("lost the decision listener's connection; reconnecting");
                        feed(None);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "decision listener failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn probe_write(&self, now: Millis) -> StoreResult<()> {
        sqlx::query(crate::store::rows::PROBE_WRITE)
            .bind(now.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn backup(&self, _path: &std::path::Path) -> StoreResult<()> {
        Err(StoreError::Unsupported(
            "greenlight backup copies SQLite databases; back up PostgreSQL with pg_dump (see docs/operations.md)",
        ))
    }
}
