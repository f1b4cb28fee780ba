//! The store a function runs on, chosen at start-up from configuration.

use super::{DynamoStore, EmbeddedStore, Ended, Lease, Recorded, Store, StoreError};
use crate::conversation::{
    ConversationState, Cursor, EndRequest, Exchange, ExchangeDraft, OutcomeRecord,
};
use crate::ids::{ConversationId, MessageId, TenantId};
use crate::model::ModelVersion;
use crate::time::Millis;

/// Either adapter, so that a binary can pick one at run time and stay generic over `Store`.
pub enum AnyStore {
    Dynamo(DynamoStore),
    Embedded(EmbeddedStore),
}

macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Dynamo($store) => $call.await,
            AnyStore::Embedded($store) => $call.await,
        }
    };
}

impl AnyStore {
    /// Opens the store's network connection during init (DynamoDB only; see
    /// `DynamoStore::warm_up`).
    pub async fn warm_up(&self) {
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

    async fn exchanges(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<Vec<Exchange>, StoreError> {
        delegate!(self, store => store.exchanges(tenant, conversation))
    }

    async fn record_exchange<F>(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        message_id: &MessageId,
        build: F,
    ) -> Result<Recorded, StoreError>
    where
        F: FnMut(&ConversationState) -> ExchangeDraft + Send,
    {
        delegate!(self, store => store.record_exchange(tenant, conversation, message_id, build))
    }

    async fn end_conversation(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        request: EndRequest,
    ) -> Result<Ended, StoreError> {
        delegate!(self, store => store.end_conversation(tenant, conversation, request))
    }

    async fn ended_count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        delegate!(self, store => store.ended_count(tenant))
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        delegate!(self, store => store.tenants())
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

    async fn current_model(&self, tenant: &TenantId) -> Result<Option<ModelVersion>, StoreError> {
        delegate!(self, store => store.current_model(tenant))
    }

    async fn publish_model(
        &self,
        tenant: &TenantId,
        model: &ModelVersion,
    ) -> Result<(), StoreError> {
        delegate!(self, store => store.publish_model(tenant, model))
    }

    async fn model_history(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<Vec<ModelVersion>, StoreError> {
        delegate!(self, store => store.model_history(tenant, limit))
    }
}
