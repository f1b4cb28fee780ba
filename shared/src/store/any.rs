//! The store a function runs on, chosen at start-up from its settings.

#[cfg(feature = "embedded")]
use super::EmbeddedStore;
use super::{
    ConversationEntry, ConversationLog, DynamoStore, Lease, PendingMark, Store, StoreError,
    Tracked, TrackingCounts, Write,
};
use crate::domain::config::TenantConfig;
use crate::domain::conversation::{ConversationState, Cursor, Exchange, OutcomeRecord};
use crate::domain::ids::{ConversationId, MessageId, TenantId};
use crate::domain::labels::{LabelCursor, StoredLabel};
use crate::domain::learning::ModelVersion;
use crate::domain::model::ServedModel;
use crate::domain::time::Millis;

/// Either adapter, so that a binary can pick one at run time and stay generic over `Store`.
/// Without the `embedded` feature (the Lambda build) only DynamoDB is there.
pub enum AnyStore {
    Dynamo(DynamoStore),
    #[cfg(feature = "embedded")]
    Embedded(EmbeddedStore),
}

macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Dynamo($store) => $call.await,
            #[cfg(feature = "embedded")]
            AnyStore::Embedded($store) => $call.await,
        }
    };
}

impl AnyStore {
    /// Opens the store's network connection during init (DynamoDB only; see
    /// `DynamoStore::warm_up`).
    pub async fn warm_up(&self) {
        #[allow(irrefutable_let_patterns)]
        if let AnyStore::Dynamo(store) = self {
            store.warm_up().await;
        }
    }
}

impl Store for AnyStore {
    async fn conversation(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<ConversationState, StoreError> {
        delegate!(self, store => store.conversation(tenant, conversation))
    }

    async fn find_message(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        message_id: &MessageId,
    ) -> Result<Option<Exchange>, StoreError> {
        delegate!(self, store => store.find_message(tenant, conversation, message_id))
    }

    async fn conversation_log(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<ConversationLog, StoreError> {
        delegate!(self, store => store.conversation_log(tenant, conversation))
    }

    async fn append_exchange(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        exchange: &Exchange,
    ) -> Result<Write, StoreError> {
        delegate!(self, store => store.append_exchange(tenant, conversation, exchange))
    }

    async fn ended_count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        delegate!(self, store => store.ended_count(tenant))
    }

    async fn shard_ended_count(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<u64, StoreError> {
        delegate!(self, store => store.shard_ended_count(tenant, conversation))
    }

    async fn append_end(
        &self,
        tenant: &TenantId,
        record: &OutcomeRecord,
        ended_before: u64,
    ) -> Result<Write, StoreError> {
        delegate!(self, store => store.append_end(tenant, record, ended_before))
    }

    async fn count_tracking(
        &self,
        tenant: &TenantId,
        what: Tracked,
        count: u64,
    ) -> Result<(), StoreError> {
        delegate!(self, store => store.count_tracking(tenant, what, count))
    }

    async fn tracking_counts(&self, tenant: &TenantId) -> Result<TrackingCounts, StoreError> {
        delegate!(self, store => store.tracking_counts(tenant))
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        delegate!(self, store => store.tenants())
    }

    async fn pending_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        delegate!(self, store => store.pending_tenants())
    }

    async fn pending_marks(&self, tenant: &TenantId) -> Result<Vec<PendingMark>, StoreError> {
        delegate!(self, store => store.pending_marks(tenant))
    }

    async fn clear_pending(
        &self,
        tenant: &TenantId,
        marks: &[PendingMark],
    ) -> Result<usize, StoreError> {
        delegate!(self, store => store.clear_pending(tenant, marks))
    }

    async fn acquire_lease(
        &self,
        tenant: &TenantId,
        name: &str,
        holder: &str,
        now: Millis,
        ttl_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        delegate!(self, store => store.acquire_lease(tenant, name, holder, now, ttl_ms))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        delegate!(self, store => store.release_lease(lease))
    }

    async fn outcomes_since(
        &self,
        tenant: &TenantId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<OutcomeRecord>, StoreError> {
        delegate!(self, store => store.outcomes_since(tenant, after, limit))
    }

    async fn labels(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<Vec<StoredLabel>, StoreError> {
        delegate!(self, store => store.labels(tenant, conversation))
    }

    async fn put_labels(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        labels: &[StoredLabel],
    ) -> Result<Write, StoreError> {
        delegate!(self, store => store.put_labels(tenant, conversation, labels))
    }

    async fn labels_since(
        &self,
        tenant: &TenantId,
        after: Option<&LabelCursor>,
        limit: usize,
    ) -> Result<Vec<StoredLabel>, StoreError> {
        delegate!(self, store => store.labels_since(tenant, after, limit))
    }

    async fn current_model(&self, tenant: &TenantId) -> Result<Option<ModelVersion>, StoreError> {
        delegate!(self, store => store.current_model(tenant))
    }

    async fn served_model(&self, tenant: &TenantId) -> Result<Option<ServedModel>, StoreError> {
        delegate!(self, store => store.served_model(tenant))
    }

    async fn publish_model(
        &self,
        tenant: &TenantId,
        model: &ModelVersion,
    ) -> Result<Write, StoreError> {
        delegate!(self, store => store.publish_model(tenant, model))
    }

    async fn model_history(
        &self,
        tenant: &TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ModelVersion>, StoreError> {
        delegate!(self, store => store.model_history(tenant, before, limit))
    }

    async fn model_version(
        &self,
        tenant: &TenantId,
        version: u64,
    ) -> Result<Option<ModelVersion>, StoreError> {
        delegate!(self, store => store.model_version(tenant, version))
    }

    async fn current_config(&self, tenant: &TenantId) -> Result<Option<TenantConfig>, StoreError> {
        delegate!(self, store => store.current_config(tenant))
    }

    async fn config_version(
        &self,
        tenant: &TenantId,
        version: u64,
    ) -> Result<Option<TenantConfig>, StoreError> {
        delegate!(self, store => store.config_version(tenant, version))
    }

    async fn config_history(
        &self,
        tenant: &TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<TenantConfig>, StoreError> {
        delegate!(self, store => store.config_history(tenant, before, limit))
    }

    async fn publish_config(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
    ) -> Result<Write, StoreError> {
        delegate!(self, store => store.publish_config(tenant, config))
    }

    async fn conversations(
        &self,
        tenant: &TenantId,
        since: Millis,
        before: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<ConversationEntry>, StoreError> {
        delegate!(self, store => store.conversations(tenant, since, before, limit))
    }
}
