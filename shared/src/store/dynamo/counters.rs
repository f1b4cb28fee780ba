//! The tenant's counter item: conversations ended (moved only by an end's transaction, see
//! `log.rs`) and the tracking counters (exchanges answered without a record, exchanges
//! recorded late: `service/tracking.rs`). Each shard of the ended counter (shard 0 is the
//! counter item) is an entry in the tenants list and, while its tenant's feedback run has not
//! caught up with it, in the pending list the scheduled run reads.

use super::DynamoStore;
use aws_sdk_dynamodb::types::{TransactWriteItem, Update};

use super::errors::{is_condition_failure, malformed, unavailable};
use super::keys::{
    ENDED_COUNTER, Item, LAST_AT, MARKED, MAX_END_SHARDS, PENDING_PARTITION, RECOVERED_EXCHANGES,
    START_INDEX, TENANTS_PARTITION, TIME_INDEX, UNRECORDED_EXCHANGES, counter_pk, counter_shard_pk,
    end_shard, key, n, number, parse_shard_entry, s,
};
use crate::domain::ids::{ConversationId, TenantId};
use crate::domain::time::Millis;
use crate::store::{PendingMark, StoreError, Tracked, TrackingCounts};

impl DynamoStore {
    async fn read_counters(&self, tenant: &TenantId) -> Result<Option<Item>, StoreError> {
        self.read_shard(tenant, 0).await
    }

    /// Shard `shard` of the tenant's ended counter (shard 0: the counter item), consistent.
    async fn read_shard(&self, tenant: &TenantId, shard: u32) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(key(
                counter_shard_pk(tenant, shard),
                ENDED_COUNTER.to_owned(),
            )))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.item)
    }

    fn shards(&self) -> u32 {
        self.config.end_shards.clamp(1, MAX_END_SHARDS)
    }

    /// The tenant's ended conversations: the sum of its counter shards.
    pub(super) async fn read_ended_count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let mut total = 0;
        for shard in 0..self.shards() {
            total += number(self.read_shard(tenant, shard).await?.as_ref(), "value").unwrap_or(0);
        }
        Ok(total)
    }

    /// The count of the shard the conversation's end moves.
    pub(super) async fn read_shard_count(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<u64, StoreError> {
        let shard = end_shard(conversation, self.shards());
        Ok(number(self.read_shard(tenant, shard).await?.as_ref(), "value").unwrap_or(0))
    }

    /// The marks of the tenant's shards that carry one (their `gsi2pk`), read consistently.
    pub(super) async fn read_pending_marks(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<PendingMark>, StoreError> {
        let mut marks = Vec::new();
        for shard in 0..self.shards() {
            let Some(item) = self.read_shard(tenant, shard).await? else {
                continue;
            };
            if !item.contains_key("gsi2pk") {
                continue;
            }
            marks.push(PendingMark {
                shard,
                seq: number(Some(&item), MARKED).unwrap_or(0),
                last_at: Millis(number(Some(&item), LAST_AT).unwrap_or(0)),
            });
        }
        Ok(marks)
    }

    /// Removes each mark's list entry on the condition that its shard has not been marked
    /// again since the mark was read.
    pub(super) async fn remove_pending(
        &self,
        tenant: &TenantId,
        marks: &[PendingMark],
    ) -> Result<usize, StoreError> {
        let mut cleared = 0;
        for mark in marks {
            let removed = self
                .client
                .update_item()
                .table_name(&self.config.table)
                .set_key(Some(key(
                    counter_shard_pk(tenant, mark.shard),
                    ENDED_COUNTER.to_owned(),
                )))
                .update_expression("REMOVE gsi2pk, gsi2sk")
                .condition_expression("#marked = :seen")
                .expression_attribute_names("#marked", MARKED)
                .expression_attribute_values(":seen", n(mark.seq))
                .send()
                .await;
            match removed {
                Ok(_) => cleared += 1,
                Err(e) if is_condition_failure(&e) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(cleared)
    }

    /// Marks the tenant pending on its counter item (shard 0) before its labels are written
    /// (labels cannot share their transaction: it may hold 100 of them already).
    pub(super) async fn mark_pending(
        &self,
        tenant: &TenantId,
        at: Millis,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.config.table)
            .set_key(Some(key(counter_pk(tenant), ENDED_COUNTER.to_owned())))
            .update_expression(
                "SET gsi2pk = :pending, gsi2sk = :entry, #last = :at ADD #marked :one",
            )
            .expression_attribute_names("#last", LAST_AT)
            .expression_attribute_names("#marked", MARKED)
            .expression_attribute_values(":pending", s(PENDING_PARTITION))
            .expression_attribute_values(":entry", s(tenant.as_str()))
            .expression_attribute_values(":at", n(at.0))
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The tenants in the pending list: one Query per page of the keys-only `by_start`
    /// partition, each tenant once however many of its shards are marked.
    pub(super) async fn list_pending(&self) -> Result<Vec<TenantId>, StoreError> {
        self.list_entries(START_INDEX, "gsi2pk", "gsi2sk", PENDING_PARTITION)
            .await
    }

    pub(super) async fn read_tracking(
        &self,
        tenant: &TenantId,
    ) -> Result<TrackingCounts, StoreError> {
        let item = self.read_counters(tenant).await?;
        Ok(TrackingCounts {
            unrecorded: number(item.as_ref(), UNRECORDED_EXCHANGES).unwrap_or(0),
            recovered: number(item.as_ref(), RECOVERED_EXCHANGES).unwrap_or(0),
        })
    }

    /// One `ADD` on the counter item, in a transaction of one: the SDK gives it a client
    /// request token, so an attempt it retries after a dropped connection (the add carried out,
    /// its answer lost) is not added twice (DynamoDB keeps the token ten minutes). It does not
    /// list the tenant (only an end does), so the feedback run's work list stays the tenants
    /// with outcomes.
    pub(super) async fn add_tracking(
        &self,
        tenant: &TenantId,
        what: Tracked,
        count: u64,
    ) -> Result<(), StoreError> {
        let attribute = match what {
            Tracked::Unrecorded => UNRECORDED_EXCHANGES,
            Tracked::Recovered => RECOVERED_EXCHANGES,
        };
        let add = Update::builder()
            .table_name(&self.config.table)
            .set_key(Some(key(counter_pk(tenant), ENDED_COUNTER.to_owned())))
            .update_expression("ADD #counter :count")
            .expression_attribute_names("#counter", attribute)
            .expression_attribute_values(":count", n(count))
            .build()
            .map_err(malformed)?;
        self.client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(add).build())
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(super) async fn list_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        self.list_entries(TIME_INDEX, "gsi1pk", "gsi1sk", TENANTS_PARTITION)
            .await
    }

    /// The tenants of a list partition whose sort keys are shard entries, each once, in order.
    async fn list_entries(
        &self,
        index: &str,
        pk: &str,
        sk: &str,
        partition: &str,
    ) -> Result<Vec<TenantId>, StoreError> {
        let mut tenants = std::collections::BTreeSet::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.config.table)
                .index_name(index)
                .key_condition_expression("#pk = :partition")
                .expression_attribute_names("#pk", pk)
                .expression_attribute_values(":partition", s(partition))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in output.items() {
                let raw = item
                    .get(sk)
                    .and_then(|v| v.as_s().ok())
                    .ok_or_else(|| StoreError::Corrupt("list entry without a name".into()))?;
                tenants.insert(parse_shard_entry(raw)?);
            }
            match output.last_evaluated_key() {
                Some(next) => start = Some(next.clone()),
                None => return Ok(tenants.into_iter().collect()),
            }
        }
    }
}
