//! Recording a message: read the conversation's newest position, then look for the message
//! id, plan the turn once, append it conditionally. A lost append means another message took
//! the turn: read again and plan again (the plan is pure and cheap; the LLM's reply, already
//! written, is reused by the planner when the strategy holds).

use std::future::Future;

use super::{MAX_ATTEMPTS, ServiceError, back_off};
use crate::domain::conversation::{ConversationState, Exchange, ExchangeDraft, MAX_TURNS};
use crate::domain::ids::{ConversationId, MessageId, TenantId};
use crate::store::{Store, Write};

/// Decides the draft of the turn that follows a conversation's state. Called once per
/// attempt: once, unless the append lost a race.
pub trait Plan: Send {
    /// The draft, or why the turn cannot be planned now (what it is decided with could not be
    /// read): then nothing is written.
    fn plan(
        &mut self,
        state: &ConversationState,
    ) -> impl Future<Output = Result<ExchangeDraft, ServiceError>> + Send;
}

/// A plan from a plain closure (tests, tools).
pub struct PlanFn<F>(pub F);

impl<F> Plan for PlanFn<F>
where
    F: FnMut(&ConversationState) -> ExchangeDraft + Send,
{
    async fn plan(&mut self, state: &ConversationState) -> Result<ExchangeDraft, ServiceError> {
        Ok((self.0)(state))
    }
}

/// The result of recording an exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub exchange: Exchange,
    /// True when the message id was already recorded: `exchange` is the first one and nothing
    /// was written.
    pub duplicate: bool,
}

/// Appends the next exchange of the conversation, planned by `plan` on the state it follows.
/// If `message_id` is already recorded in the conversation, the first exchange is returned
/// with `duplicate: true` and nothing is written, even if the conversation has ended since.
/// The draft is stamped with `message_id`.
pub async fn record_exchange<S: Store>(
    store: &S,
    tenant: &TenantId,
    conversation: &ConversationId,
    message_id: &MessageId,
    mut plan: impl Plan,
) -> Result<Recorded, ServiceError> {
    for attempt in 0..MAX_ATTEMPTS {
        // Order matters: the newest position first, then the message id (see store/dynamo/log.rs).
        let state = store.conversation(tenant, conversation).await?;
        if let Some(first) = store.find_message(tenant, conversation, message_id).await? {
            return Ok(Recorded {
                exchange: first,
                duplicate: true,
            });
        }
        if let ConversationState::Ended(record) = state {
            return Err(ServiceError::Ended(record));
        }
        if state.turns() >= MAX_TURNS {
            return Err(ServiceError::TooLong);
        }
        let mut draft = plan.plan(&state).await?;
        draft.message_id = message_id.clone();
        let exchange = state.next_exchange(draft);
        match store
            .append_exchange(tenant, conversation, &exchange)
            .await?
        {
            Write::Done => {
                return Ok(Recorded {
                    exchange,
                    duplicate: false,
                });
            }
            Write::Lost => back_off(attempt).await,
        }
    }
    Err(ServiceError::Contention(MAX_ATTEMPTS))
}

/// [`record_exchange`] for a user's message whose text is kept as `stored_text`: a repeated
/// `message_id` answers with the first exchange only when it carried the same text; with
/// another text it is [`ServiceError::MessageIdReused`].
pub async fn record_message<S: Store>(
    store: &S,
    tenant: &TenantId,
    conversation: &ConversationId,
    message_id: &MessageId,
    stored_text: &str,
    plan: impl Plan,
) -> Result<Recorded, ServiceError> {
    let recorded = record_exchange(store, tenant, conversation, message_id, plan).await?;
    if recorded.duplicate && recorded.exchange.draft.user_text != stored_text {
        return Err(ServiceError::MessageIdReused);
    }
    Ok(recorded)
}
