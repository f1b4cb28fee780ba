//! The tenant's conversation list: each conversation's first exchange writes itself into the
//! `by_time` index under `T#{tenant}#CONVERSATION`, sorted by start and id, so the newest come
//! from one descending Query of the index: no scan, and no write beyond the first turn's.

use serde::Deserialize;

use super::DynamoStore;
use super::errors::unavailable;
use super::keys::{
    BodyItem, Item, TIME_INDEX, conversation_index_pk, conversation_sk, from_item, s,
};
use crate::domain::conversation::Cursor;
use crate::domain::ids::{ConversationId, TenantId};
use crate::domain::time::Millis;
use crate::store::{ConversationEntry, StoreError, from_json};

/// The parts of a first exchange the list shows.
#[derive(Deserialize)]
struct FirstExchange {
    at: Millis,
    model_version: u64,
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
        // `since`. The upper bound is the previous page's last entry itself (BETWEEN is
        // inclusive), skipped when it comes back.
        let low = format!("{:013}", since.0);
        let high = before.map(conversation_sk);
        let (condition, bound) = match &high {
            Some(high) => ("gsi1pk = :pk AND gsi1sk BETWEEN :low AND :high", Some(high)),
            None => ("gsi1pk = :pk AND gsi1sk >= :low", None),
        };
        let mut found = Vec::with_capacity(limit.min(1_000));
        let mut start: Option<Item> = None;
        while found.len() < limit {
            let want = i32::try_from(limit - found.len() + usize::from(bound.is_some()))
                .unwrap_or(i32::MAX);
            let mut query = self
                .client
                .query()
                .table_name(&self.config.table)
                .index_name(TIME_INDEX)
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
                    .get("gsi1sk")
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default();
                if bound == Some(&sk) {
                    continue;
                }
                let Some((_, id)) = sk.split_once('#') else {
                    return Err(StoreError::Corrupt(format!(
                        "conversation index key {sk:?}"
                    )));
                };
                let conversation_id = ConversationId::parse(id)
                    .map_err(|e| StoreError::Corrupt(format!("conversation index key: {e}")))?;
                let first: FirstExchange = from_json(&from_item::<BodyItem>(item.clone())?.body)?;
                if found.len() < limit {
                    found.push(ConversationEntry {
                        conversation_id,
                        started_at: first.at,
                        model_version: first.model_version,
                    });
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
