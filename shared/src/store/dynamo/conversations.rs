//! The tenant's conversation list: each conversation's first exchange writes itself into the
//! keys-only `by_start` index under `T#{tenant}#CONVERSATION`, its sort key
//! `{started:013}#{conversation}#{model_version}`, so the newest come from one descending Query
//! of small index entries: no scan, no item read, and no write beyond the first turn's.

use super::DynamoStore;
use super::errors::unavailable;
use super::keys::{Item, START_INDEX, conversation_index_pk, conversation_sk, s};
use crate::domain::conversation::Cursor;
use crate::domain::ids::{ConversationId, TenantId};
use crate::domain::time::Millis;
use crate::store::{ConversationEntry, StoreError};

/// The entry a `by_start` sort key holds.
fn entry(sk: &str) -> Result<ConversationEntry, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("conversation index key {sk:?}"));
    let mut parts = sk.splitn(3, '#');
    let (Some(at), Some(id), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(corrupt());
    };
    Ok(ConversationEntry {
        conversation_id: ConversationId::parse(id).map_err(|_| corrupt())?,
        started_at: Millis(at.parse().map_err(|_| corrupt())?),
        model_version: version.parse().map_err(|_| corrupt())?,
    })
}

impl DynamoStore {
    pub(super) async fn query_conversations(
        &self,
        tenant: &TenantId,
        since: Millis,
        before: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<ConversationEntry>, StoreError> {
        // `{since:013}` sorts before every key of a conversation that started at or after
        // `since`; `{at:013}#{id}#` before the key of the previous page's last entry, and after
        // every key that comes before it (BETWEEN is inclusive).
        let low = format!("{:013}", since.0);
        let high = before.map(conversation_sk);
        let (condition, bound) = match &high {
            Some(high) => ("gsi2pk = :pk AND gsi2sk BETWEEN :low AND :high", Some(high)),
            None => ("gsi2pk = :pk AND gsi2sk >= :low", None),
        };
        let mut found = Vec::with_capacity(limit.min(1_000));
        let mut start: Option<Item> = None;
        while found.len() < limit {
            let want = i32::try_from(limit - found.len()).unwrap_or(i32::MAX);
            let mut query = self
                .client
                .query()
                .table_name(&self.config.table)
                .index_name(START_INDEX)
                .key_condition_expression(condition)
                .expression_attribute_values(":pk", s(conversation_index_pk(tenant)))
                .expression_attribute_values(":low", s(low.as_str()))
                .scan_index_forward(false)
                .limit(want)
                .set_exclusive_start_key(start.take());
            if let Some(high) = bound {
                query = query.expression_attribute_values(":high", s(high.as_str()));
            }
            let output = query.send().await.map_err(unavailable)?;
            for item in output.items() {
                let sk = item
                    .get("gsi2sk")
                    .and_then(|v| v.as_s().ok())
                    .ok_or_else(|| {
                        StoreError::Corrupt("conversation index entry without key".into())
                    })?;
                if found.len() < limit {
                    found.push(entry(sk)?);
                }
            }
            match output.last_evaluated_key() {
                Some(next) => start = Some(next.clone()),
                None => break,
            }
        }
        Ok(found)
    }
}
