//! Outcomes in time order, from the sparse GSI `by_time` that end items write themselves into,
//! and the paged read of that index that labels share.

use std::collections::VecDeque;

use serde::de::DeserializeOwned;

use super::DynamoStore;
use super::errors::unavailable;
use super::keys::{
    BodyItem, Item, MAX_END_SHARDS, TIME_INDEX, from_item, outcome_pk, outcome_sk, s,
};
use crate::domain::conversation::{Cursor, OutcomeRecord};
use crate::domain::ids::TenantId;
use crate::store::{StoreError, from_json};

impl DynamoStore {
    /// Up to `limit` outcomes after `after`, in cursor order. With one shard, one partition
    /// read in pages; with more, a merge of the shards' partitions, each read in pages of
    /// about `2 × limit / shards` as the merge consumes them, so a page costs the outcomes it
    /// returns plus at most one short page per shard.
    pub(super) async fn query_outcomes(
        &self,
        tenant: &TenantId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<OutcomeRecord>, StoreError> {
        // "0" sorts before every `{at:013}#...` key, so no cursor means from the beginning.
        let after = after.map(outcome_sk).unwrap_or_else(|| "0".to_owned());
        let shards = self.config.end_shards.clamp(1, MAX_END_SHARDS);
        if shards == 1 {
            return self
                .query_time_index(outcome_pk(tenant, 0), after, limit)
                .await;
        }
        let page = (2 * limit).div_ceil(shards as usize).clamp(1, limit.max(1));
        let mut lanes: Vec<Lane> = (0..shards)
            .map(|shard| Lane {
                pk: outcome_pk(tenant, shard),
                after: after.clone(),
                buffered: VecDeque::new(),
                exhausted: false,
            })
            .collect();
        let mut merged = Vec::with_capacity(limit.min(1_000));
        while merged.len() < limit {
            // Every lane that may hold more has its next outcome buffered before one is taken,
            // so the smallest buffered key is the smallest left in any shard.
            for lane in lanes.iter_mut() {
                if lane.buffered.is_empty() && !lane.exhausted {
                    let read: Vec<OutcomeRecord> = self
                        .query_time_index(lane.pk.clone(), lane.after.clone(), page)
                        .await?;
                    lane.exhausted = read.len() < page;
                    if let Some(last) = read.last() {
                        lane.after = outcome_sk(&last.cursor());
                    }
                    lane.buffered
                        .extend(read.into_iter().map(|o| (outcome_sk(&o.cursor()), o)));
                }
            }
            let next = lanes
                .iter()
                .enumerate()
                .filter_map(|(i, lane)| lane.buffered.front().map(|(key, _)| (key, i)))
                .min()
                .map(|(_, i)| i);
            let Some(i) = next else { break };
            if let Some((_, outcome)) = lanes[i].buffered.pop_front() {
                merged.push(outcome);
            }
        }
        Ok(merged)
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

/// One shard's partition in a merged read: where it was read up to, and what was read of it
/// and not yet merged.
struct Lane {
    pk: String,
    after: String,
    buffered: VecDeque<(String, OutcomeRecord)>,
    exhausted: bool,
}
