//! The service's flows as methods on any store, so that the contract and end-to-end tests read
//! as they did when the store ran them itself: `store.record_exchange(...)` is
//! `salesloop::service::record_exchange(&store, ...)`, nothing more.

use std::future::Future;

use salesloop::service::{self, Ended, PlanFn, Recorded, ServiceError};
use salesloop::{
    ConversationId, ConversationState, EndRequest, ExchangeDraft, MessageId, Store, TenantId,
};

pub trait Flows: Store + Sized {
    fn record_exchange<F>(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        message_id: &MessageId,
        build: F,
    ) -> impl Future<Output = Result<Recorded, ServiceError>> + Send
    where
        F: FnMut(&ConversationState) -> ExchangeDraft + Send,
    {
        service::record_exchange(self, tenant, conversation, message_id, PlanFn(build))
    }

    fn end_conversation(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        request: EndRequest,
    ) -> impl Future<Output = Result<Ended, ServiceError>> + Send {
        service::end_conversation(self, tenant, conversation, request)
    }
}

impl<S: Store> Flows for S {}
