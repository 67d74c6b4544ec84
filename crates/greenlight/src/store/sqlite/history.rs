//! SQLite: counts and lookups over past requests, with the shared statements.

use async_trait::async_trait;
use rusqlite::params;

use super::rows::{all, one};
use super::*;
use crate::domain::Millis;
use crate::store::rows as shared;

shared_sql! {
    COUNT_CREATED = shared::COUNT_CREATED;
    COUNT_CREATED_BY_REQUESTER = shared::COUNT_CREATED_BY_REQUESTER;
    COUNT_DENIED = shared::COUNT_DENIED;
    COUNT_DECIDED_BY = shared::COUNT_DECIDED_BY;
}

#[async_trait]
impl History for SqliteStore {
    async fn approved_with(
        &self,
        workflow: &str,
        param: &str,
        value: &serde_json::Value,
    ) -> StoreResult<bool> {
        if param.contains('"') {
            return Ok(false);
        }
        let (workflow, path, value) = (
            workflow.to_owned(),
            format!("$.\"{param}\""),
            value.to_string(),
        );
        // The param as SQLite reads it from each request, against the value read the same way.
        self.readers
            .read(move |conn| {
                one(
                    conn,
                    "SELECT EXISTS (SELECT 1 FROM requests WHERE workflow = ?1 \
                     AND status = 'approved' AND json_extract(params, ?2) = json_extract(?3, '$'))",
                    params![workflow, path, value],
                )
            })
            .await
    }

    async fn count_created(&self, workflow: &str, since: Millis) -> StoreResult<i64> {
        let workflow = workflow.to_owned();
        self.readers
            .read(move |conn| {
                one(
                    conn,
                    &COUNT_CREATED,
                    params![workflow, shared::first_id_at(since)],
                )
            })
            .await
    }

    async fn count_created_by_requester(
        &self,
        workflow: &str,
        since: Millis,
    ) -> StoreResult<Vec<(Option<String>, i64)>> {
        let workflow = workflow.to_owned();
        self.readers
            .read(move |conn| {
                all(
                    conn,
                    &COUNT_CREATED_BY_REQUESTER,
                    params![workflow, shared::first_id_at(since)],
                )
            })
            .await
    }

    async fn count_denied(&self, workflow: &str, since: Millis) -> StoreResult<i64> {
        let workflow = workflow.to_owned();
        self.readers
            .read(move |conn| one(conn, &COUNT_DENIED, params![workflow, since]))
            .await
    }

    async fn count_decided_by(&self, rule: &str, since: Millis) -> StoreResult<i64> {
        let rule = rule.to_owned();
        self.readers
            .read(move |conn| one(conn, &COUNT_DECIDED_BY, params![rule, since]))
            .await
    }
}
