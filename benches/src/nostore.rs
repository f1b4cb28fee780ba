//! A store that keeps nothing: every message is the first of a new conversation and is built
//! exactly as the real stores build it (the handler's closure runs on the state), but nothing is
//! written. process_message over it costs what process_message itself costs.

use salesloop::conversation::{ConversationState, Cursor, EndRequest, Exchange, ExchangeDraft};
use salesloop::{
    ConversationId, Ended, Lease, MessageId, Millis, ModelVersion, Recorded, Store, StoreError,
    TenantId,
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

    async fn exchanges(
        &self,
        _: &TenantId,
        _: &ConversationId,
    ) -> Result<Vec<Exchange>, StoreError> {
        Ok(Vec::new())
    }

    async fn record_exchange<F>(
        &self,
        _: &TenantId,
        _: &ConversationId,
        _: &MessageId,
        mut build: F,
    ) -> Result<Recorded, StoreError>
    where
        F: FnMut(&ConversationState) -> ExchangeDraft + Send,
    {
        let state = ConversationState::New;
        let draft = build(&state);
        Ok(Recorded {
            exchange: state.next_exchange(draft),
            duplicate: false,
        })
    }

    async fn end_conversation(
        &self,
        _: &TenantId,
        _: &ConversationId,
        _: EndRequest,
    ) -> Result<Ended, StoreError> {
        nothing()
    }

    async fn ended_count(&self, _: &TenantId) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        Ok(Vec::new())
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
    ) -> Result<Vec<salesloop::conversation::OutcomeRecord>, StoreError> {
        Ok(Vec::new())
    }

    async fn current_model(&self, _: &TenantId) -> Result<Option<ModelVersion>, StoreError> {
        Ok(None)
    }

    async fn publish_model(&self, _: &TenantId, _: &ModelVersion) -> Result<(), StoreError> {
        nothing()
    }

    async fn model_history(&self, _: &TenantId, _: usize) -> Result<Vec<ModelVersion>, StoreError> {
        Ok(Vec::new())
    }
}

/// process_message's app over the store that keeps nothing, as its `main` builds it.
pub fn app() -> process_message::handler::App<NoStore> {
    app_with(NoStore)
}

/// process_message's app over `store`, as its `main` builds it.
pub fn app_with<S>(store: S) -> process_message::handler::App<S> {
    process_message::handler::App {
        store,
        engine: salesloop::engine::Engine::builtin(),
        models: salesloop::model_cache::ModelCache::new(std::time::Duration::from_secs(30)),
        tenants: salesloop::http::TenantSource {
            claim: "tenant_id".to_owned(),
            local: false,
        },
        llm: None,
        text_storage: salesloop::privacy::TextStorage::Text,
    }
}
