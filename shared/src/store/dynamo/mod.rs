//! The DynamoDB adapter: one table, tenant-prefixed keys.
//!
//! | item | pk | sk | notes |
//! |---|---|---|---|
//! | exchange | `T#{tenant}#C#{conversation}` | `L#{turn:05}` | `mid` = message id (LSI `by_message`) |
//! | first exchange | same | `L#00001` | also `gsi2pk` = `T#{tenant}#CONVERSATION`, `gsi2sk` = `{started:013}#{conversation}#{model_version}` (GSI `by_start`, keys only): the tenant's conversation list |
//! | end | same | `L#{turns+1:05}` | `gsi1pk` = `T#{tenant}#OUTCOME` (shard k > 0 of `END_SHARDS`: `T#{tenant}#OUTCOME#{k}`), `gsi1sk` = `{at:013}#{conversation}` |
//! | label | same | `B#{turn:05}#{pattern}` | `gsi1pk` = `T#{tenant}#LABEL`, `gsi1sk` = `LabelCursor::key()` |
//! | counters | `T#{tenant}#COUNTER` | `ended_conversations` | `value` (shard 0 of the ended counter), `last_end_at`, `unrecorded_exchanges`, `recovered_exchanges`; `gsi1pk` = `TENANTS` lists tenants; `gsi2pk` = `PENDING` while the feedback run has not caught up (keys only) |
//! | counter shard k > 0 | `T#{tenant}#COUNTER#{k}` | `ended_conversations` | `value`, `last_end_at`, the same two list entries with sort key `{tenant}#{k}` (`END_SHARDS` > 1) |
//! | lease | `T#{tenant}#LEASE` | lease name | `holder`, `until` (ms) |
//! | model | `T#{tenant}#MODEL` | `V#{version:010}` | the whole history is kept |
//! | configuration | `T#{tenant}#CONFIG` | `V#{version:010}` | experiments and playbook; the whole history is kept |
//!
//! One file per concern: `keys` (key and item shapes), `errors` (lost races, unavailability,
//! the client's retry settings), `table` (creating it), `log` (exchanges and ends),
//! `conversations` (the tenant's list), `labels`, `counters`, `leases`, `outcomes`, `models` (models and configurations: versioned documents).

mod conversations;
mod counters;
mod errors;
mod keys;
mod labels;
mod leases;
mod log;
mod models;
mod outcomes;
mod table;

use std::time::Duration;

use aws_sdk_dynamodb::Client;

pub use errors::retry_settings;
pub use keys::{MAX_END_SHARDS, MESSAGE_INDEX, START_INDEX, TIME_INDEX};

use super::{
    ConversationEntry, ConversationLog, Lease, PendingMark, Store, StoreError, Tracked,
    TrackingCounts, Write,
};
use crate::domain::config::TenantConfig;
use crate::domain::conversation::{ConversationState, Cursor, Exchange, OutcomeRecord};
use crate::domain::ids::{ConversationId, MessageId, TenantId};
use crate::domain::labels::{LabelCursor, StoredLabel};
use crate::domain::learning::ModelVersion;
use crate::domain::model::ServedModel;
use crate::domain::time::Millis;
use errors::unavailable;
use keys::{config_pk, model_pk, s};

/// How the adapter is set up.
#[derive(Debug, Clone)]
pub struct DynamoStoreConfig {
    pub table: String,
    /// When set, exchanges and outcomes carry a TTL this far after they happen.
    pub retention: Option<Duration>,
    /// How many shards each tenant's ended counter and outcome index are spread over
    /// (`END_SHARDS`, 1 to [`MAX_END_SHARDS`]): 1 keeps one counter item and one outcome
    /// partition per tenant (about 500 ends a second at most); a tenant ending thousands a
    /// second needs more (docs/scale.md). Every function must be given the same number, and it
    /// may be raised, never lowered: outcomes in shards past it would not be read.
    pub end_shards: u32,
}

impl DynamoStoreConfig {
    /// One counter item and one outcome partition per tenant, no TTL.
    pub fn new(table: impl Into<String>) -> Self {
        DynamoStoreConfig {
            table: table.into(),
            retention: None,
            end_shards: 1,
        }
    }
}

/// A store in one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    config: DynamoStoreConfig,
}

impl DynamoStore {
    /// A store on `client`, which should carry [`retry_settings`].
    pub fn new(client: Client, config: DynamoStoreConfig) -> Self {
        DynamoStore { client, config }
    }

    /// A store whose client is built from the shared AWS SDK configuration with
    /// [`retry_settings`].
    pub fn with_sdk_config(sdk_config: &aws_config::SdkConfig, config: DynamoStoreConfig) -> Self {
        let client_config = retry_settings(aws_sdk_dynamodb::config::Builder::from(sdk_config));
        DynamoStore::new(Client::from_conf(client_config.build()), config)
    }

    pub fn table(&self) -> &str {
        &self.config.table
    }

    /// Opens the connection to DynamoDB during init, so that the first request a user sends
    /// does not pay for the TCP and TLS handshakes (and the first use of the TLS library's
    /// random generator): one eventually consistent read of a key no tenant can have (tenant
    /// keys start with `T#`), 0.5 read units per cold start. Best effort: a failure is logged
    /// and the first real request connects as usual. One attempt, never retried.
    pub async fn warm_up(&self) {
        let read = self
            .client
            .get_item()
            .table_name(&self.config.table)
            .key("pk", s("WARMUP"))
            .key("sk", s("WARMUP"))
            .projection_expression("pk")
            .customize()
            .config_override(
                aws_sdk_dynamodb::Config::builder()
                    .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled()),
            )
            .send();
        match tokio::time::timeout(Duration::from_secs(2), read).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %unavailable(e), "warming the DynamoDB connection failed")
            }
            Err(_) => tracing::warn!("warming the DynamoDB connection timed out"),
        }
    }

    fn expires_at(&self, at: Millis) -> Option<u64> {
        let retention = self.config.retention?;
        let ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        Some(at.saturating_add_ms(ms).as_epoch_seconds())
    }
}

impl Store for DynamoStore {
    async fn conversation(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<ConversationState, StoreError> {
        self.read_tail(tenant, conversation).await
    }

    async fn find_message(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        message_id: &MessageId,
    ) -> Result<Option<Exchange>, StoreError> {
        self.read_message(tenant, conversation, message_id).await
    }

    async fn conversation_log(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<ConversationLog, StoreError> {
        self.read_log(tenant, conversation).await
    }

    async fn append_exchange(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        exchange: &Exchange,
    ) -> Result<Write, StoreError> {
        self.put_exchange(tenant, conversation, exchange).await
    }

    async fn ended_count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        self.read_ended_count(tenant).await
    }

    async fn shard_ended_count(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<u64, StoreError> {
        self.read_shard_count(tenant, conversation).await
    }

    async fn append_end(
        &self,
        tenant: &TenantId,
        record: &OutcomeRecord,
        ended_before: u64,
    ) -> Result<Write, StoreError> {
        self.put_end(tenant, record, ended_before).await
    }

    async fn count_tracking(
        &self,
        tenant: &TenantId,
        what: Tracked,
        count: u64,
    ) -> Result<(), StoreError> {
        self.add_tracking(tenant, what, count).await
    }

    async fn tracking_counts(&self, tenant: &TenantId) -> Result<TrackingCounts, StoreError> {
        self.read_tracking(tenant).await
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        self.list_tenants().await
    }

    async fn pending_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        self.list_pending().await
    }

    async fn pending_marks(&self, tenant: &TenantId) -> Result<Vec<PendingMark>, StoreError> {
        self.read_pending_marks(tenant).await
    }

    async fn clear_pending(
        &self,
        tenant: &TenantId,
        marks: &[PendingMark],
    ) -> Result<usize, StoreError> {
        self.remove_pending(tenant, marks).await
    }

    async fn acquire_lease(
        &self,
        tenant: &TenantId,
        name: &str,
        holder: &str,
        now: Millis,
        ttl_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        self.put_lease(tenant, name, holder, now, ttl_ms).await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.delete_lease(lease).await
    }

    async fn outcomes_since(
        &self,
        tenant: &TenantId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<OutcomeRecord>, StoreError> {
        self.query_outcomes(tenant, after, limit).await
    }

    async fn labels(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<Vec<StoredLabel>, StoreError> {
        self.read_labels(tenant, conversation).await
    }

    async fn put_labels(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        labels: &[StoredLabel],
    ) -> Result<Write, StoreError> {
        self.write_labels(tenant, conversation, labels).await
    }

    async fn labels_since(
        &self,
        tenant: &TenantId,
        after: Option<&LabelCursor>,
        limit: usize,
    ) -> Result<Vec<StoredLabel>, StoreError> {
        self.query_labels(tenant, after, limit).await
    }

    async fn current_model(&self, tenant: &TenantId) -> Result<Option<ModelVersion>, StoreError> {
        let newest = self.query_versions(model_pk(tenant), None, 1).await?;
        Ok(newest.into_iter().next())
    }

    async fn served_model(&self, tenant: &TenantId) -> Result<Option<ServedModel>, StoreError> {
        let newest = self.query_versions(model_pk(tenant), None, 1).await?;
        Ok(newest.into_iter().next())
    }

    async fn publish_model(
        &self,
        tenant: &TenantId,
        model: &ModelVersion,
    ) -> Result<Write, StoreError> {
        self.put_version(model_pk(tenant), model.version, model)
            .await
    }

    async fn model_history(
        &self,
        tenant: &TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ModelVersion>, StoreError> {
        self.query_versions(model_pk(tenant), before, limit).await
    }

    async fn model_version(
        &self,
        tenant: &TenantId,
        version: u64,
    ) -> Result<Option<ModelVersion>, StoreError> {
        self.get_version(model_pk(tenant), version).await
    }

    async fn current_config(&self, tenant: &TenantId) -> Result<Option<TenantConfig>, StoreError> {
        let newest = self.query_versions(config_pk(tenant), None, 1).await?;
        Ok(newest.into_iter().next())
    }

    async fn config_version(
        &self,
        tenant: &TenantId,
        version: u64,
    ) -> Result<Option<TenantConfig>, StoreError> {
        self.get_version(config_pk(tenant), version).await
    }

    async fn config_history(
        &self,
        tenant: &TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<TenantConfig>, StoreError> {
        self.query_versions(config_pk(tenant), before, limit).await
    }

    async fn publish_config(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
    ) -> Result<Write, StoreError> {
        self.put_version(config_pk(tenant), config.version, config)
            .await
    }

    async fn conversations(
        &self,
        tenant: &TenantId,
        since: Millis,
        before: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<ConversationEntry>, StoreError> {
        self.query_conversations(tenant, since, before, limit).await
    }
}
