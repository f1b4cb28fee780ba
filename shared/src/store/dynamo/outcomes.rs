//! Outcomes in time order, from the sparse GSI `by_time` that end items write themselves into,
//! and the paged read of that index that labels share.

use serde::de::DeserializeOwned;

use super::DynamoStore;
use super::errors::unavailable;
use super::keys::{BodyItem, Item, TIME_INDEX, from_item, outcome_pk, outcome_sk, s};
use crate::domain::conversation::{Cursor, OutcomeRecord};
use crate::domain::ids::TenantId;
use crate::store::{StoreError, from_json};

impl DynamoStore {
    pub(super) async fn query_outcomes(
        &self,
        tenant: &TenantId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<OutcomeRecord>, StoreError> {
        // "0" sorts before every `{at:013}#...` key, so no cursor means from the beginning.
        let after = after.map(outcome_sk).unwrap_or_else(|| "0".to_owned());
        self.query_time_index(outcome_pk(tenant), after, limit)
            .await
    }

    /// Up to `limit` bodies of the `by_time` partition `pk` with sort keys after `after`, in
    /// order. A page of the index may hold fewer than asked (1 MB cap): it keeps reading.
    pub(super) async fn query_time_index<T: DeserializeOwned>(
        &self,
        pk: String,
        after: String,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        let mut found = Vec::with_capacity(limit.min(1_000));
        let mut start: Option<Item> = None;
        while found.len() < limit {
            let want = i32::try_from(limit - found.len()).unwrap_or(i32::MAX);
            let output = self
                .client
                .query()
                .table_name(&self.config.table)
                .index_name(TIME_INDEX)
                .key_condition_expression("gsi1pk = :pk AND gsi1sk > :after")
                .expression_attribute_values(":pk", s(pk.as_str()))
                .expression_attribute_values(":after", s(after.as_str()))
                .limit(want)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in output.items() {
                found.push(from_json(&from_item::<BodyItem>(item.clone())?.body)?);
            }
            match output.last_evaluated_key() {
                Some(next) => start = Some(next.clone()),
                None => break,
            }
        }
        Ok(found)
    }
}
