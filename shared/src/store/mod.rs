//! The store port: every read and write the three functions make, each with its guarantee,
//! and two adapters of it (DynamoDB for AWS, an embedded SQLite file for local runs).
//!
//! A conversation is an append-only log: position n holds turn n, and the position after the
//! last exchange may hold the conversation's end. Every append is conditional on its position
//! being free, which gives racing writers a single order with no gaps and no doubles.

mod any;
mod dynamo;
mod embedded;

use std::future::Future;

pub use any::AnyStore;
pub use dynamo::{DynamoStore, DynamoStoreConfig, MESSAGE_INDEX, TIME_INDEX, retry_settings};
pub use embedded::EmbeddedStore;

use crate::conversation::{
    ConversationState, Cursor, EndRequest, Exchange, ExchangeDraft, OutcomeRecord,
};
use crate::ids::{ConversationId, MessageId, TenantId};
use crate::model::ModelVersion;
use crate::time::Millis;

/// Why a store operation did not do what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or refused the call (throttling, outage, timeout); the
    /// caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Too many writers raced for the same item for too long; the caller may retry.
    #[error("gave up after {0} attempts lost to concurrent writers")]
    Contention(u32),
    #[error("conversation not found")]
    NotFound,
    #[error("conversation has ended")]
    Ended(Box<OutcomeRecord>),
    #[error("conversation has already ended with outcome {}", .0.outcome)]
    OutcomeConflict(Box<OutcomeRecord>),
    #[error(
        "conversation reached its limit of {} turns",
        crate::conversation::MAX_TURNS
    )]
    TooLong,
    #[error(
        "model version {expected} cannot be published: version {expected} or a later one exists, or its predecessor does not"
    )]
    VersionConflict { expected: u64 },
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether the same call may succeed if tried again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Contention(_))
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

/// The result of ending a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub record: OutcomeRecord,
    /// False when the conversation had already ended with the same outcome: nothing was written.
    pub first_time: bool,
    /// The tenant's count of ended conversations after this one, when this call ended it.
    pub ended_count: Option<u64>,
}

impl Ended {
    /// Whether this end made the tenant's ended-conversation count reach a multiple of `every`.
    /// Each multiple is reported to exactly one caller.
    pub fn crossed_multiple_of(&self, every: u64) -> bool {
        every > 0 && self.ended_count.is_some_and(|count| count % every == 0)
    }
}

/// A held lease. It expires at `until`; the holder renews by acquiring again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub tenant: TenantId,
    pub name: String,
    pub holder: String,
    pub until: Millis,
}

/// The operations the functions need, whatever keeps the data.
pub trait Store: Send + Sync {
    /// The conversation's current state, read from its newest log entry.
    fn conversation(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> impl Future<Output = Result<ConversationState, StoreError>> + Send;

    /// Every exchange of the conversation, in turn order.
    fn exchanges(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> impl Future<Output = Result<Vec<Exchange>, StoreError>> + Send;

    /// Appends the next exchange, with its events, in one atomic write.
    ///
    /// `build` is called with the conversation's state and returns the draft for the next turn;
    /// when a concurrent writer took that turn first, it is called again with the new state.
    /// If `message_id` is already recorded for this conversation, the first exchange is returned
    /// with `duplicate: true` and nothing is written, even if the conversation has ended since.
    fn record_exchange<F>(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        message_id: &MessageId,
        build: F,
    ) -> impl Future<Output = Result<Recorded, StoreError>> + Send
    where
        F: FnMut(&ConversationState) -> ExchangeDraft + Send;

    /// Ends the conversation once, with its outcome event, and counts it in the tenant's
    /// ended-conversation counter in the same atomic write. Ending again with the same outcome
    /// returns the first record; with another outcome it is an `OutcomeConflict`.
    fn end_conversation(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        request: EndRequest,
    ) -> impl Future<Output = Result<Ended, StoreError>> + Send;

    /// How many conversations of the tenant have ended.
    fn ended_count(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Tenants that have ended at least one conversation: the feedback loop's work list.
    fn tenants(&self) -> impl Future<Output = Result<Vec<TenantId>, StoreError>> + Send;

    /// Takes the named lease until `now + ttl_ms` if it is free, expired, or already held by
    /// `holder`. `None` when someone else holds it.
    fn acquire_lease(
        &self,
        tenant: &TenantId,
        name: &str,
        holder: &str,
        now: Millis,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<Option<Lease>, StoreError>> + Send;

    /// Gives the lease up if it is still ours; false when it had expired and another took it.
    fn release_lease(&self, lease: &Lease)
    -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Up to `limit` outcomes strictly after `after`, oldest first. Pass the last one's
    /// cursor to read the next page.
    fn outcomes_since(
        &self,
        tenant: &TenantId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OutcomeRecord>, StoreError>> + Send;

    /// The newest published model version, if any.
    fn current_model(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<Option<ModelVersion>, StoreError>> + Send;

    /// Publishes `model.version` only if `model.version - 1` is current (or, for version 1, if
    /// none exists): a compare-and-set, so of two racing publishers exactly one wins.
    fn publish_model(
        &self,
        tenant: &TenantId,
        model: &ModelVersion,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `limit` model versions, newest first.
    fn model_history(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ModelVersion>, StoreError>> + Send;
}

/// Serializes a stored record; our own types always serialize.
fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// What the end of a conversation is, given its log: the shared decision of both adapters.
enum EndDecision {
    /// Write this record at the position after the last exchange.
    Write(OutcomeRecord),
    /// Already ended the same way: answer with the first record.
    Repeat(OutcomeRecord),
}

fn decide_end(
    conversation: &ConversationId,
    request: &EndRequest,
    exchanges: &[Exchange],
    existing_end: Option<OutcomeRecord>,
) -> Result<EndDecision, StoreError> {
    if let Some(existing) = existing_end {
        return if existing.outcome == request.outcome {
            Ok(EndDecision::Repeat(existing))
        } else {
            Err(StoreError::OutcomeConflict(Box::new(existing)))
        };
    }
    if exchanges.is_empty() {
        return Err(StoreError::NotFound);
    }
    Ok(EndDecision::Write(OutcomeRecord::from_exchanges(
        conversation.clone(),
        request.clone(),
        exchanges,
    )))
}
