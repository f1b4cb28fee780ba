//! The store port: every read and write the three functions make, as plain operations, and two
//! adapters of it (DynamoDB for AWS; an embedded SQLite file for local runs and tests, behind
//! the `embedded` feature).
//!
//! A conversation is an append-only log: position n holds turn n, and the position after the
//! last exchange may hold the conversation's end. Every append is conditional on its position
//! being free; an append whose condition does not hold writes nothing and answers
//! [`Write::Lost`], a value, not an error. What to do then (read again, plan again) is the
//! service layer's decision: adapters never call back into the domain and never retry a lost
//! race themselves.

mod any;
mod dynamo;
#[cfg(feature = "embedded")]
mod embedded;

use std::future::Future;

pub use any::AnyStore;
pub use dynamo::{
    DynamoStore, DynamoStoreConfig, MAX_END_SHARDS, MESSAGE_INDEX, START_INDEX, TIME_INDEX,
    retry_settings,
};
#[cfg(feature = "embedded")]
pub use embedded::EmbeddedStore;

use crate::domain::config::TenantConfig;
use crate::domain::conversation::{ConversationState, Cursor, Exchange, OutcomeRecord};
use crate::domain::ids::{ConversationId, MessageId, TenantId};
use crate::domain::labels::{LabelCursor, StoredLabel};
use crate::domain::learning::ModelVersion;
use crate::domain::model::ServedModel;
pub use crate::domain::spool::TrackingCounts;
use crate::domain::time::Millis;

/// Why a store operation failed. Losing a race is not a failure: see [`Write`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or refused the call (throttling, outage, timeout); the
    /// same call may succeed later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data cannot be read back (or a record cannot be written as the store keeps it);
    /// trying again will not help.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether the same call may succeed if tried again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// What a conditional write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Write {
    Done,
    /// Its condition did not hold (another writer got there first, or a concurrent transaction
    /// touched the same item): nothing was written.
    Lost,
}

/// A conversation's whole log, in turn order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationLog {
    pub exchanges: Vec<Exchange>,
    pub end: Option<OutcomeRecord>,
}

/// A conversation in the tenant's list: when it started and which model version served its
/// first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationEntry {
    pub conversation_id: ConversationId,
    pub started_at: Millis,
    pub model_version: u64,
}

impl ConversationEntry {
    /// Where the list goes on after this entry.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            at: self.started_at,
            conversation_id: self.conversation_id.clone(),
        }
    }
}

/// The tenant's two tracking counters, the event tracking rate's inputs (service/tracking.rs):
/// exchanges answered without a record, and exchanges recorded late (from the spool or a
/// replayed log line). Both only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tracked {
    /// Answered `"recorded": false`: counted by process_message after its next write.
    Unrecorded,
    /// Recorded by the spool consumer or the replay command (or found already recorded).
    Recovered,
}

/// A tenant's mark in the pending list (one per counter shard that has had an end, or a label
/// post, since the tenant's feedback run last caught up): how many times the shard has been
/// marked, and the newest marking write's time, when the mark was read. The scheduled feedback
/// run starts runs only for marked tenants; a run clears a mark only if the shard still reads
/// `seq` (nothing came since) and `last_at` is older than what it learned up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingMark {
    pub shard: u32,
    pub seq: u64,
    pub last_at: Millis,
}

/// A held lease. It expires at `until`; the holder renews by acquiring again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub tenant: TenantId,
    pub name: String,
    pub holder: String,
    pub until: Millis,
}

/// The operations the functions need, whatever keeps the data. Reads of a conversation are
/// strongly consistent.
pub trait Store: Send + Sync {
    /// The conversation's current state, read from its newest log entry.
    fn conversation(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> impl Future<Output = Result<ConversationState, StoreError>> + Send;

    /// The exchange recorded under `message_id` in this conversation, if any.
    fn find_message(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        message_id: &MessageId,
    ) -> impl Future<Output = Result<Option<Exchange>, StoreError>> + Send;

    /// The conversation's whole log.
    fn conversation_log(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> impl Future<Output = Result<ConversationLog, StoreError>> + Send;

    /// Every exchange of the conversation, in turn order.
    fn exchanges(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> impl Future<Output = Result<Vec<Exchange>, StoreError>> + Send {
        async move { Ok(self.conversation_log(tenant, conversation).await?.exchanges) }
    }

    /// Writes `exchange`, with its events, at position `exchange.turn` in one atomic write, if
    /// that position is free and its message id is not recorded in the conversation. An
    /// exchange recorded late (`via` the spool or a replay) also adds one to the tenant's
    /// recovered counter in the same write.
    fn append_exchange(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        exchange: &Exchange,
    ) -> impl Future<Output = Result<Write, StoreError>> + Send;

    /// How many conversations of the tenant have ended (all counter shards).
    fn ended_count(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The count of the ended-counter shard this conversation's end moves: what
    /// [`Store::append_end`]'s `ended_before` is compared with. A store with one counter per
    /// tenant answers [`Store::ended_count`].
    fn shard_ended_count(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let _ = conversation;
        self.ended_count(tenant)
    }

    /// Writes the end at position `record.turns + 1`, with its outcome and A/B events, and
    /// moves the conversation's ended-counter shard from `ended_before` to `ended_before + 1`,
    /// in one atomic write, if the position is free and the shard still reads `ended_before`.
    /// The same write marks the tenant pending (see [`PendingMark`]).
    fn append_end(
        &self,
        tenant: &TenantId,
        record: &OutcomeRecord,
        ended_before: u64,
    ) -> impl Future<Output = Result<Write, StoreError>> + Send;

    /// Adds `count` to one of the tenant's tracking counters (one atomic add, no condition).
    fn count_tracking(
        &self,
        tenant: &TenantId,
        what: Tracked,
        count: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The tenant's tracking counters, all time.
    fn tracking_counts(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<TrackingCounts, StoreError>> + Send;

    /// Tenants that have ended at least one conversation.
    fn tenants(&self) -> impl Future<Output = Result<Vec<TenantId>, StoreError>> + Send;

    /// Tenants with a pending mark: those that ended a conversation since their feedback run
    /// last caught up, in tenant order, each once. Reads the marks only, never a tenant's data.
    fn pending_tenants(&self) -> impl Future<Output = Result<Vec<TenantId>, StoreError>> + Send;

    /// The tenant's pending marks, read strongly consistent.
    fn pending_marks(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<Vec<PendingMark>, StoreError>> + Send;

    /// Clears each mark whose shard still reads `mark.seq`; a shard marked since keeps its mark.
    /// Answers how many were cleared.
    fn clear_pending(
        &self,
        tenant: &TenantId,
        marks: &[PendingMark],
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

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

    /// Every label stored for the conversation, in (turn, pattern) order.
    fn labels(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> impl Future<Output = Result<Vec<StoredLabel>, StoreError>> + Send;

    /// Stores `labels` (of this conversation, at most MAX_LABELS_PER_REQUEST, no (turn, pattern)
    /// twice) in one atomic write, each conditional on its (turn, pattern) being free:
    /// `Write::Lost`, and nothing written, when any is taken. The tenant is marked pending
    /// first (a mark without labels costs the next run nothing).
    fn put_labels(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        labels: &[StoredLabel],
    ) -> impl Future<Output = Result<Write, StoreError>> + Send;

    /// Up to `limit` of the tenant's labels strictly after `after` (from the first when None),
    /// in cursor order (`LabelCursor`'s Ord, which `LabelCursor::key()` strings follow).
    fn labels_since(
        &self,
        tenant: &TenantId,
        after: Option<&LabelCursor>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredLabel>, StoreError>> + Send;

    /// The newest published model version, if any, whole.
    fn current_model(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<Option<ModelVersion>, StoreError>> + Send;

    /// The newest published version's number and model only: what the API functions use.
    fn served_model(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<Option<ServedModel>, StoreError>> + Send;

    /// Writes `model` if `model.version - 1` is the newest version (or, for version 1, if none
    /// exists): a compare-and-set, so of two racing publishers exactly one gets `Done`.
    fn publish_model(
        &self,
        tenant: &TenantId,
        model: &ModelVersion,
    ) -> impl Future<Output = Result<Write, StoreError>> + Send;

    /// Up to `limit` model versions, newest first; only versions below `before` when given.
    fn model_history(
        &self,
        tenant: &TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ModelVersion>, StoreError>> + Send;

    /// One published model version, whole; `None` when the tenant has no such version.
    fn model_version(
        &self,
        tenant: &TenantId,
        version: u64,
    ) -> impl Future<Output = Result<Option<ModelVersion>, StoreError>> + Send;

    /// The tenant's newest configuration version, if it has published any (else the built-in
    /// version 0 applies).
    fn current_config(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<Option<TenantConfig>, StoreError>> + Send;

    /// One published configuration version; `None` when the tenant has no such version.
    fn config_version(
        &self,
        tenant: &TenantId,
        version: u64,
    ) -> impl Future<Output = Result<Option<TenantConfig>, StoreError>> + Send;

    /// Up to `limit` configuration versions, newest first; only versions below `before` when
    /// given.
    fn config_history(
        &self,
        tenant: &TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<TenantConfig>, StoreError>> + Send;

    /// Writes `config` if `config.version - 1` is the newest version (or, for version 1, if
    /// none exists): a compare-and-set, so of two racing admins exactly one gets `Done`.
    fn publish_config(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
    ) -> impl Future<Output = Result<Write, StoreError>> + Send;

    /// Up to `limit` of the tenant's conversations that started at or after `since`, newest
    /// first (by start, then by id, both descending); only those strictly before `before` when
    /// given (the last entry's cursor of the previous page). A conversation is listed from its
    /// first recorded message on.
    fn conversations(
        &self,
        tenant: &TenantId,
        since: Millis,
        before: Option<&Cursor>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ConversationEntry>, StoreError>> + Send;
}

/// Refuses a `put_labels` call outside its contract (another conversation's label, too many,
/// a (turn, pattern) twice): a defect of the caller, never worth a retry.
fn check_label_batch(
    conversation: &ConversationId,
    labels: &[StoredLabel],
) -> Result<(), StoreError> {
    use crate::domain::labels::MAX_LABELS_PER_REQUEST;
    if labels.len() > MAX_LABELS_PER_REQUEST {
        return Err(StoreError::Corrupt(format!(
            "{} labels in one write; at most {MAX_LABELS_PER_REQUEST}",
            labels.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for label in labels {
        if &label.conversation_id != conversation {
            return Err(StoreError::Corrupt(
                "a label of another conversation in the write".into(),
            ));
        }
        if !seen.insert((label.turn, label.pattern.as_str())) {
            return Err(StoreError::Corrupt(
                "the same (turn, pattern) twice in one write".into(),
            ));
        }
    }
    Ok(())
}

/// Serializes a stored record; a failure is a defect in the record, never worth a retry.
fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}
