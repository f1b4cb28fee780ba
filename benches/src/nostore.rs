//! A store that keeps nothing: every conversation reads as new and every append succeeds, but
//! nothing is written. process_message's flow runs over it as over a real store (read the
//! state, look for the message id, plan, append), so its cost is process_message's own.

use salesloop::domain::config::TenantConfig;
use salesloop::domain::conversation::{ConversationState, Cursor, Exchange, OutcomeRecord};
use salesloop::domain::labels::{LabelCursor, StoredLabel};
use salesloop::domain::model::ServedModel;
use salesloop::store::{ConversationEntry, ConversationLog, Tracked, TrackingCounts};
use salesloop::{
    ConversationId, Lease, MessageId, Millis, ModelVersion, Store, StoreError, TenantId, Write,
};

pub struct NoStore;

fn nothing<T>() -> Result<T, StoreError> {
    Err(StoreError::Unavailable(
        "the benchmark store keeps nothing".into(),
    ))
}

impl Store for NoStore {
    async fn conversation(
        &self,
        _: &TenantId,
        _: &ConversationId,
    ) -> Result<ConversationState, StoreError> {
        Ok(ConversationState::New)
    }

    async fn find_message(
        &self,
        _: &TenantId,
        _: &ConversationId,
        _: &MessageId,
    ) -> Result<Option<Exchange>, StoreError> {
        Ok(None)
    }

    async fn conversation_log(
        &self,
        _: &TenantId,
        _: &ConversationId,
    ) -> Result<ConversationLog, StoreError> {
        Ok(ConversationLog::default())
    }

    async fn append_exchange(
        &self,
        _: &TenantId,
        _: &ConversationId,
        _: &Exchange,
    ) -> Result<Write, StoreError> {
        Ok(Write::Done)
    }

    async fn ended_count(&self, _: &TenantId) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn append_end(
        &self,
        _: &TenantId,
        _: &OutcomeRecord,
        _: u64,
    ) -> Result<Write, StoreError> {
        nothing()
    }

    async fn count_tracking(&self, _: &TenantId, _: Tracked, _: u64) -> Result<(), StoreError> {
        nothing()
    }

    async fn tracking_counts(&self, _: &TenantId) -> Result<TrackingCounts, StoreError> {
        Ok(TrackingCounts::default())
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        Ok(Vec::new())
    }

    async fn pending_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        Ok(Vec::new())
    }

    async fn pending_marks(&self, _: &TenantId) -> Result<Vec<salesloop::PendingMark>, StoreError> {
        Ok(Vec::new())
    }

    async fn clear_pending(
        &self,
        _: &TenantId,
        _: &[salesloop::PendingMark],
    ) -> Result<usize, StoreError> {
        Ok(0)
    }

    async fn acquire_lease(
        &self,
        _: &TenantId,
        _: &str,
        _: &str,
        _: Millis,
        _: u64,
    ) -> Result<Option<Lease>, StoreError> {
        nothing()
    }

    async fn release_lease(&self, _: &Lease) -> Result<bool, StoreError> {
        nothing()
    }

    async fn outcomes_since(
        &self,
        _: &TenantId,
        _: Option<&Cursor>,
        _: usize,
    ) -> Result<Vec<OutcomeRecord>, StoreError> {
        Ok(Vec::new())
    }

    async fn labels(
        &self,
        _: &TenantId,
        _: &ConversationId,
    ) -> Result<Vec<StoredLabel>, StoreError> {
        Ok(Vec::new())
    }

    async fn put_labels(
        &self,
        _: &TenantId,
        _: &ConversationId,
        _: &[StoredLabel],
    ) -> Result<Write, StoreError> {
        nothing()
    }

    async fn labels_since(
        &self,
        _: &TenantId,
        _: Option<&LabelCursor>,
        _: usize,
    ) -> Result<Vec<StoredLabel>, StoreError> {
        Ok(Vec::new())
    }

    async fn current_model(&self, _: &TenantId) -> Result<Option<ModelVersion>, StoreError> {
        Ok(None)
    }

    async fn served_model(&self, _: &TenantId) -> Result<Option<ServedModel>, StoreError> {
        Ok(None)
    }

    async fn publish_model(&self, _: &TenantId, _: &ModelVersion) -> Result<Write, StoreError> {
        nothing()
    }

    async fn model_history(
        &self,
        _: &TenantId,
        _: Option<u64>,
        _: usize,
    ) -> Result<Vec<ModelVersion>, StoreError> {
        Ok(Vec::new())
    }

    async fn model_version(
        &self,
        _: &TenantId,
        _: u64,
    ) -> Result<Option<ModelVersion>, StoreError> {
        Ok(None)
    }

    async fn current_config(&self, _: &TenantId) -> Result<Option<TenantConfig>, StoreError> {
        Ok(None)
    }

    async fn config_version(
        &self,
        _: &TenantId,
        _: u64,
    ) -> Result<Option<TenantConfig>, StoreError> {
        Ok(None)
    }

    async fn config_history(
        &self,
        _: &TenantId,
        _: Option<u64>,
        _: usize,
    ) -> Result<Vec<TenantConfig>, StoreError> {
        Ok(Vec::new())
    }

    async fn publish_config(&self, _: &TenantId, _: &TenantConfig) -> Result<Write, StoreError> {
        nothing()
    }

    async fn conversations(
        &self,
        _: &TenantId,
        _: Millis,
        _: Option<&Cursor>,
        _: usize,
    ) -> Result<Vec<ConversationEntry>, StoreError> {
        Ok(Vec::new())
    }
}

/// process_message's app over the store that keeps nothing, as its `main` builds it.
pub fn app() -> process_message::handler::App<NoStore> {
    app_with(NoStore)
}

/// The runtime the per-message timings drive the app on, one message at a time: a timer is
/// enabled, since process_message bounds the store's time with one (handler::within_budget).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// process_message's app over `store`, as its `main` builds it.
pub fn app_with<S>(store: S) -> process_message::handler::App<S> {
    process_message::handler::App {
        store,
        engine: salesloop::domain::engine::Engine::builtin(),
        models: salesloop::service::ModelCache::new(std::time::Duration::from_secs(30)),
        configs: salesloop::service::ConfigCache::new(std::time::Duration::from_secs(30)),
        tenants: salesloop::edge::http::TenantSource {
            claim: "tenant_id".to_owned(),
            local: false,
        },
        llm: None,
        text_storage: salesloop::domain::privacy::TextStorage::Text,
        unrecorded: Default::default(),
        record_budget: std::time::Duration::from_millis(
            salesloop::edge::settings::DEFAULT_RECORD_BUDGET_MS,
        ),
        spool: None,
        last_resort: Default::default(),
    }
}
