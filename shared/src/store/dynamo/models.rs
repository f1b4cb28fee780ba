//! Model versions: `V#{version:010}` items under the tenant's model partition, the whole
//! history kept; a new version is written only beside its predecessor (compare-and-set).

use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem};
use serde::de::DeserializeOwned;

use super::DynamoStore;
use super::errors::{lost_race, malformed, unavailable};
use super::keys::{BodyItem, from_item, key, model_pk, model_sk, s};
use crate::domain::ids::TenantId;
use crate::domain::learning::ModelVersion;
use crate::store::{StoreError, Write, from_json, to_json};

impl DynamoStore {
    /// Up to `limit` versions, newest first, below `before` when given, each read as `T` (the
    /// whole version, or the part the API functions use).
    pub(super) async fn query_models<T: DeserializeOwned>(
        &self,
        tenant: &TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        if limit == 0 || before == Some(0) {
            return Ok(Vec::new());
        }
        let query = self
            .client
            .query()
            .table_name(&self.config.table)
            .expression_attribute_values(":pk", s(model_pk(tenant)));
        let query = match before {
            Some(before) => query
                .key_condition_expression("pk = :pk AND sk < :before")
                .expression_attribute_values(":before", s(model_sk(before))),
            None => query.key_condition_expression("pk = :pk"),
        };
        let output = query
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output
            .items()
            .iter()
            .map(|item| from_json(&from_item::<BodyItem>(item.clone())?.body))
            .collect()
    }

    /// One version, whole, read strongly consistently.
    pub(super) async fn get_model(
        &self,
        tenant: &TenantId,
        version: u64,
    ) -> Result<Option<ModelVersion>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(key(model_pk(tenant), model_sk(version))))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output
            .item
            .map(|item| from_json(&from_item::<BodyItem>(item)?.body))
            .transpose()
    }

    pub(super) async fn put_model(
        &self,
        tenant: &TenantId,
        model: &ModelVersion,
    ) -> Result<Write, StoreError> {
        if model.version == 0 {
            return Ok(Write::Lost);
        }
        let pk = model_pk(tenant);
        let mut item = key(pk.clone(), model_sk(model.version));
        item.insert("body".to_owned(), s(to_json(model)?));
        let put = Put::builder()
            .table_name(&self.config.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(malformed)?;
        let mut transaction = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build());
        // Version n+1 may only follow version n: check that it exists in the same transaction.
        if model.version > 1 {
            let predecessor = ConditionCheck::builder()
                .table_name(&self.config.table)
                .set_key(Some(key(pk, model_sk(model.version - 1))))
                .condition_expression("attribute_exists(pk)")
                .build()
                .map_err(malformed)?;
            transaction = transaction.transact_items(
                TransactWriteItem::builder()
                    .condition_check(predecessor)
                    .build(),
            );
        }
        match transaction.send().await {
            Ok(_) => Ok(Write::Done),
            Err(e) if lost_race(&e) => Ok(Write::Lost),
            Err(e) => Err(unavailable(e)),
        }
    }
}
