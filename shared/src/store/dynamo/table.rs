//! Creating the table as `infra/template.yaml` declares it, for tests and local servers.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    LocalSecondaryIndex, Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

use super::DynamoStore;
use super::errors::{malformed, unavailable};
use super::keys::{MESSAGE_INDEX, START_INDEX, TIME_INDEX, TTL_ATTRIBUTE};
use crate::store::StoreError;

impl DynamoStore {
    /// Creates the table with its indexes and TTL, as `infra/template.yaml` does; for tests and
    /// local servers.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(malformed)
        };
        let key_part = |name: &str, key_type: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .map_err(malformed)
        };
        let message_index = LocalSecondaryIndex::builder()
            .index_name(MESSAGE_INDEX)
            .key_schema(key_part("pk", KeyType::Hash)?)
            .key_schema(key_part("mid", KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::KeysOnly)
                    .build(),
            )
            .build()
            .map_err(malformed)?;
        let global_index = |name: &str, pk: &str, sk: &str, projection: Projection| {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key_part(pk, KeyType::Hash)?)
                .key_schema(key_part(sk, KeyType::Range)?)
                .projection(projection)
                .build()
                .map_err(malformed)
        };
        let time_index = global_index(
            TIME_INDEX,
            "gsi1pk",
            "gsi1sk",
            Projection::builder()
                .projection_type(ProjectionType::Include)
                .non_key_attributes("body")
                .build(),
        )?;
        let start_index = global_index(
            START_INDEX,
            "gsi2pk",
            "gsi2sk",
            Projection::builder()
                .projection_type(ProjectionType::KeysOnly)
                .build(),
        )?;
        self.client
            .create_table()
            .table_name(&self.config.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute("pk")?)
            .attribute_definitions(attribute("sk")?)
            .attribute_definitions(attribute("mid")?)
            .attribute_definitions(attribute("gsi1pk")?)
            .attribute_definitions(attribute("gsi1sk")?)
            .attribute_definitions(attribute("gsi2pk")?)
            .attribute_definitions(attribute("gsi2sk")?)
            .key_schema(key_part("pk", KeyType::Hash)?)
            .key_schema(key_part("sk", KeyType::Range)?)
            .local_secondary_indexes(message_index)
            .global_secondary_indexes(time_index)
            .global_secondary_indexes(start_index)
            .send()
            .await
            .map_err(unavailable)?;
        self.client
            .update_time_to_live()
            .table_name(&self.config.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(TTL_ATTRIBUTE)
                    .enabled(true)
                    .build()
                    .map_err(malformed)?,
            )
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
