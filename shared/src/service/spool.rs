//! Recording an exchange that was answered without a record: from the spool (its consumer) or
//! from a last-resort log line (the replay command). The same idempotent append as a direct
//! record: the turn is the next free position when it gets there, and a `message_id` already
//! recorded in the conversation writes nothing. What can never be recorded is a
//! [`Rejection`], with its reason; what may be recorded later is a retry.

use super::{PlanFn, ServiceError, back_off, record_message};
use crate::domain::conversation::Exchange;
use crate::domain::spool::{Rejection, SpooledExchange, Via};
use crate::store::{Store, StoreError, Tracked};

/// What recording a spooled exchange did.
#[derive(Debug, Clone, PartialEq)]
pub enum SpoolOutcome {
    /// Recorded now, at this turn.
    Recorded(Box<Exchange>),
    /// Its `message_id` was already recorded with the same text (the direct write landed
    /// after all, or the record came twice): nothing written.
    Duplicate,
}

/// Why a spooled exchange was not recorded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpoolFailure {
    /// It never can be: to the dead-letter queue (or the replay's report) with the reason.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// Not recorded now: try again later, and nothing after it in its conversation before it.
    /// `store_down`: the store did not answer (rather than writers racing for the
    /// conversation), so nothing else is worth trying now either.
    #[error("try again later: {why}")]
    Retry { why: String, store_down: bool },
}

/// Records `record` as an exchange recorded `via` the spool or a replay. The store counts it
/// as recovered in the same write (`Store::append_exchange`). When its `message_id` is found
/// recorded *directly* (the direct append landed after the budget ran out, so its answer was
/// counted unrecorded), it is counted here. A duplicate of a spooled or replayed record (the
/// spool's redelivery, a second replay, an append whose answer was lost) was counted by its
/// own write and is not counted again.
pub async fn record_spooled<S: Store>(
    store: &S,
    record: &SpooledExchange,
    via: Via,
) -> Result<SpoolOutcome, SpoolFailure> {
    let mut draft = record.draft.clone();
    draft.via = via;
    let text = draft.user_text.clone();
    let plan = PlanFn(move |_: &_| draft.clone());
    let recorded = record_message(
        store,
        &record.tenant,
        &record.conversation_id,
        &record.draft.message_id,
        &text,
        plan,
    )
    .await
    .map_err(failure)?;
    if !recorded.duplicate {
        return Ok(SpoolOutcome::Recorded(Box::new(recorded.exchange)));
    }
    if recorded.exchange.draft.via.is_direct() {
        count_recovered(store, record).await;
    }
    Ok(SpoolOutcome::Duplicate)
}

/// Adds one to the tenant's recovered counter, trying a few times: the record is in, so a
/// failure is not worth the record's redelivery. A count that cannot be written is logged: the
/// backlog then stays one too high.
async fn count_recovered<S: Store>(store: &S, record: &SpooledExchange) {
    let mut last = None;
    for attempt in 0..3 {
        match store
            .count_tracking(&record.tenant, Tracked::Recovered, 1)
            .await
        {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
        back_off(attempt).await;
    }
    if let Some(e) = last {
        tracing::error!(
            error = %e,
            "the recorded exchange could not be counted as recovered; the tenant's backlog stays one too high"
        );
    }
}

fn failure(error: ServiceError) -> SpoolFailure {
    match error {
        ServiceError::Ended(_) => Rejection::Ended.into(),
        ServiceError::TooLong => Rejection::TooLong.into(),
        ServiceError::MessageIdReused => Rejection::MessageIdReused.into(),
        ServiceError::Store(StoreError::Unavailable(why)) => SpoolFailure::Retry {
            why,
            store_down: true,
        },
        ServiceError::Contention(n) => SpoolFailure::Retry {
            why: format!("{n} attempts lost to concurrent writers"),
            store_down: false,
        },
        other => Rejection::Refused(other.to_string()).into(),
    }
}
