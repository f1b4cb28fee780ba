//! One batch of the spool, as the SQS event source delivers it (FIFO: each conversation's
//! records in the order they were spooled). Each record is recorded through the same idempotent
//! append as a direct one (`service::record_spooled`), in order. What happens to each:
//!
//! - recorded, or already recorded (a duplicate): done, deleted from the queue;
//! - never recordable (unreadable, another schema version, the conversation ended or full, its
//!   message id recorded with another text): sent to the dead-letter queue with its reason in
//!   a `reason` attribute and in the log, then done: it never blocks its conversation;
//! - not recorded now (the store did not answer, or writers kept racing): reported as a batch
//!   item failure, and so is every later record of the same conversation in the batch,
//!   unattempted, so a conversation's records are never recorded out of order; when the store
//!   did not answer, every later record of the batch too. SQS delivers them again after the
//!   visibility timeout.
//!
//! Nothing is deleted unless it is done: a consumer killed mid-batch leaves every record of the
//! batch to be delivered again, and those it had recorded are then duplicates.

use std::collections::HashSet;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use salesloop::Store;
use salesloop::clients::sqs::FifoQueue;
use salesloop::domain::spool::{Rejection, SpooledExchange, Via};
use salesloop::service::{SpoolFailure, SpoolOutcome, record_spooled};

/// What a process keeps between batches.
pub struct App<S> {
    pub store: S,
    /// Where a record that can never be recorded goes; `None` (local runs): it stays in the
    /// spool, reported failed, until the queue's redrive policy moves it.
    pub dead_letters: Option<FifoQueue>,
}

/// What one batch did, for the log and the tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchSummary {
    pub recorded: u32,
    pub duplicates: u32,
    pub dead_lettered: u32,
    /// Reported failed: the store did not answer, or a record waited behind one that failed.
    pub retried: u32,
}

pub async fn handle<S: Store>(app: &App<S>, event: SqsEvent) -> SqsBatchResponse {
    let (response, summary) = handle_batch(app, event).await;
    tracing::info!(
        recorded = summary.recorded,
        duplicates = summary.duplicates,
        dead_lettered = summary.dead_lettered,
        retried = summary.retried,
        "spool batch done"
    );
    response
}

/// [`handle`], with what it did.
pub async fn handle_batch<S: Store>(
    app: &App<S>,
    event: SqsEvent,
) -> (SqsBatchResponse, BatchSummary) {
    let mut response = SqsBatchResponse::default();
    let mut summary = BatchSummary::default();
    // Conversations (message groups) with a record left for later in this batch; once the
    // store does not answer, every record left (each would wait out the store's timeouts, and
    // the batch its function's).
    let mut held: HashSet<String> = HashSet::new();
    let mut store_down = false;
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let group = attribute(&message, "MessageGroupId").unwrap_or_default();
        let fail = |response: &mut SqsBatchResponse| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id.clone();
            response.batch_item_failures.push(failure);
        };
        if store_down || held.contains(&group) {
            summary.retried += 1;
            fail(&mut response);
            continue;
        }
        let body = message.body.as_deref().unwrap_or_default();
        let result = match SpooledExchange::parse(body) {
            Ok(record) => record_spooled(&app.store, &record, Via::Spool).await,
            Err(rejection) => Err(SpoolFailure::Rejected(rejection)),
        };
        match result {
            Ok(SpoolOutcome::Recorded(exchange)) => {
                summary.recorded += 1;
                tracing::info!(message = %id, turn = exchange.turn, "spooled exchange recorded");
            }
            Ok(SpoolOutcome::Duplicate) => {
                summary.duplicates += 1;
                tracing::info!(message = %id, "spooled exchange was already recorded");
            }
            Err(SpoolFailure::Rejected(reason)) => {
                match dead_letter(app, &message, &group, &reason).await {
                    Ok(()) => summary.dead_lettered += 1,
                    Err(e) => {
                        tracing::error!(message = %id, reason = %reason, error = %e,
                            "a record that cannot be recorded could not be dead-lettered; retried");
                        held.insert(group);
                        summary.retried += 1;
                        fail(&mut response);
                    }
                }
            }
            Err(SpoolFailure::Retry {
                why,
                store_down: down,
            }) => {
                tracing::warn!(message = %id, error = %why, "spooled exchange not recorded yet");
                store_down |= down;
                held.insert(group);
                summary.retried += 1;
                fail(&mut response);
            }
        }
    }
    (response, summary)
}

/// Sends the message, as it came, to the dead-letter queue with `reason`; logs the reason.
async fn dead_letter<S>(
    app: &App<S>,
    message: &SqsMessage,
    group: &str,
    reason: &Rejection,
) -> Result<(), String> {
    let id = message.message_id.as_deref().unwrap_or_default();
    let queue = app
        .dead_letters
        .as_ref()
        .ok_or("no dead-letter queue is configured (SPOOL_DEAD_LETTER_QUEUE_URL)")?;
    // The spool message's own id: a record dead-lettered twice (its batch delivered again
    // after the consumer stopped) is kept once, and it never collides with the deduplication
    // id the queue's redrive would carry over.
    let deduplication = id.to_owned();
    // A group id is required on a FIFO queue; an unreadable record may have come without one.
    let group = if group.is_empty() {
        "unreadable"
    } else {
        group
    };
    queue
        .send(
            message.body.clone().unwrap_or_default(),
            group.to_owned(),
            deduplication,
            Some(&reason.to_string()),
        )
        .await?;
    tracing::error!(message = %id, reason = %reason, "spooled record dead-lettered");
    Ok(())
}

fn attribute(message: &SqsMessage, name: &str) -> Option<String> {
    message.attributes.get(name).cloned()
}
