//! The tenant's counter item: conversations ended (moved only by an end's transaction, see
//! `log.rs`) and the tracking counters (exchanges answered without a record, exchanges
//! recorded late: `service/tracking.rs`); it is also the entry
//! in the tenants list the scheduled feedback run walks.

use super::DynamoStore;
use aws_sdk_dynamodb::types::{TransactWriteItem, Update};

use super::errors::{malformed, unavailable};
use super::keys::{
    ENDED_COUNTER, Item, RECOVERED_EXCHANGES, TENANTS_PARTITION, TIME_INDEX, UNRECORDED_EXCHANGES,
    counter_pk, key, n, number, s,
};
use crate::domain::ids::TenantId;
use crate::store::{StoreError, Tracked, TrackingCounts};

impl DynamoStore {
    async fn read_counters(&self, tenant: &TenantId) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(key(counter_pk(tenant), ENDED_COUNTER.to_owned())))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.item)
    }

    pub(super) async fn read_ended_count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        Ok(number(self.read_counters(tenant).await?.as_ref(), "value").unwrap_or(0))
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
        let mut tenants = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.config.table)
                .index_name(TIME_INDEX)
                .key_condition_expression("gsi1pk = :tenants")
                .expression_attribute_values(":tenants", s(TENANTS_PARTITION))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in output.items() {
                let raw = item
                    .get("gsi1sk")
                    .and_then(|v| v.as_s().ok())
                    .ok_or_else(|| StoreError::Corrupt("tenant entry without a name".into()))?;
                tenants.push(TenantId::parse(raw).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            }
            match output.last_evaluated_key() {
                Some(next) => start = Some(next.clone()),
                None => return Ok(tenants),
            }
        }
    }
}
