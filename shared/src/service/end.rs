//! Ending a conversation: read its log, decide (a first end, a repeat of the same outcome, a
//! conflicting outcome, or no such conversation), then one conditional write of the end and
//! the tenant's ended counter. A lost write means another end or another conversation's end
//! moved first: read again and decide again.

use super::{MAX_ATTEMPTS, ServiceError, back_off};
use crate::domain::conversation::{EndRequest, Exchange, OutcomeRecord};
use crate::domain::ids::{ConversationId, TenantId};
use crate::store::{Store, Write};

/// The result of ending a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub record: OutcomeRecord,
    /// False when the conversation had already ended with the same outcome: nothing was written.
    pub first_time: bool,
    /// The count of the tenant's ended-counter shard this end moved, after it, when this call
    /// ended the conversation. With one shard (the default) it is the tenant's count.
    pub ended_count: Option<u64>,
}

impl Ended {
    /// Whether this end made its counter shard reach a multiple of `every`. Each multiple of
    /// each shard is reported to exactly one caller: with one shard, one trigger per `every`
    /// ends of the tenant exactly; with k shards, one per multiple of each shard, which is one
    /// per `every` ends on average (docs/scale.md).
    pub fn crossed_multiple_of(&self, every: u64) -> bool {
        every > 0 && self.ended_count.is_some_and(|count| count % every == 0)
    }
}

/// What ending a conversation with this log means.
enum Decision {
    /// Write this record at the position after the last exchange.
    Write(OutcomeRecord),
    /// Already ended the same way: answer with the first record.
    Repeat(OutcomeRecord),
}

fn decide(
    conversation: &ConversationId,
    request: &EndRequest,
    exchanges: &[Exchange],
    existing_end: Option<OutcomeRecord>,
) -> Result<Decision, ServiceError> {
    if let Some(existing) = existing_end {
        return if existing.outcome == request.outcome {
            Ok(Decision::Repeat(existing))
        } else {
            Err(ServiceError::OutcomeConflict(Box::new(existing)))
        };
    }
    if exchanges.is_empty() {
        return Err(ServiceError::NotFound);
    }
    Ok(Decision::Write(OutcomeRecord::from_exchanges(
        conversation.clone(),
        request.clone(),
        exchanges,
    )))
}

/// Ends the conversation once, with its outcome event, counted in the tenant's ended counter
/// in the same write. Ending again with the same outcome returns the first record; with
/// another outcome it is [`ServiceError::OutcomeConflict`].
pub async fn end_conversation<S: Store>(
    store: &S,
    tenant: &TenantId,
    conversation: &ConversationId,
    request: EndRequest,
) -> Result<Ended, ServiceError> {
    for attempt in 0..MAX_ATTEMPTS {
        let log = store.conversation_log(tenant, conversation).await?;
        let record = match decide(conversation, &request, &log.exchanges, log.end)? {
            Decision::Repeat(record) => {
                return Ok(Ended {
                    record,
                    first_time: false,
                    ended_count: None,
                });
            }
            Decision::Write(record) => record,
        };
        let ended_before = store.shard_ended_count(tenant, conversation).await?;
        match store.append_end(tenant, &record, ended_before).await? {
            Write::Done => {
                return Ok(Ended {
                    record,
                    first_time: true,
                    ended_count: Some(ended_before + 1),
                });
            }
            Write::Lost => back_off(attempt).await,
        }
    }
    Err(ServiceError::Contention(MAX_ATTEMPTS))
}
