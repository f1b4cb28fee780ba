//! Versioned documents (model versions, configuration versions): `V#{version:010}` items under
//! one of the tenant's partitions, the whole history kept; a new version is written only beside
//! its predecessor (compare-and-set).

use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::DynamoStore;
use super::errors::{lost_race, malformed, unavailable};
use super::keys::{BodyItem, from_item, key, model_sk, s};
use crate::store::{StoreError, Write, from_json, to_json};

impl DynamoStore {
    /// Up to `limit` versions of the partition `pk`, newest first, below `before` when given,
    /// each read as `T` (the whole version, or the part the API functions use).
    pub(super) async fn query_versions<T: DeserializeOwned>(
        &self,
        pk: String,
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
            .expression_attribute_values(":pk", s(pk));
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

    /// One version of the partition `pk`, whole, read strongly consistently.
    pub(super) async fn get_version<T: DeserializeOwned>(
        &self,
        pk: String,
        version: u64,
    ) -> Result<Option<T>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(key(pk, model_sk(version))))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output
            .item
            .map(|item| from_json(&from_item::<BodyItem>(item)?.body))
            .transpose()
    }

    /// Writes `body` as version `version` of the partition `pk` if `version - 1` is its newest
    /// (or, for version 1, if it has none).
    pub(super) async fn put_version<T: Serialize>(
        &self,
        pk: String,
        version: u64,
        body: &T,
    ) -> Result<Write, StoreError> {
        if version == 0 {
            return Ok(Write::Lost);
        }
        let mut item = key(pk.clone(), model_sk(version));
        item.insert("body".to_owned(), s(to_json(body)?));
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
        if version > 1 {
            let predecessor = ConditionCheck::builder()
                .table_name(&self.config.table)
                .set_key(Some(key(pk, model_sk(version - 1))))
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
