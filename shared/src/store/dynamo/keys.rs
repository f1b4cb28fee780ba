//! The table's keys and item shapes: every partition key starts with the tenant, and no id can
//! hold the `#` that separates key parts, so two tenants' keys never meet.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use crate::domain::conversation::Cursor;
use crate::domain::ids::{ConversationId, TenantId};
use crate::store::StoreError;

pub(super) type Item = HashMap<String, AttributeValue>;

pub const MESSAGE_INDEX: &str = "by_message";
pub const TIME_INDEX: &str = "by_time";
/// The tenant's conversations by start: a sparse, keys-only GSI on `gsi2pk`/`gsi2sk`.
pub const START_INDEX: &str = "by_start";
pub(super) const TTL_ATTRIBUTE: &str = "expires_at";
pub(super) const TENANTS_PARTITION: &str = "TENANTS";
/// The `by_start` partition of the pending list: one keys-only entry per counter shard that
/// has ended a conversation since its tenant's feedback run last caught up.
pub(super) const PENDING_PARTITION: &str = "PENDING";
/// On a counter shard: the newest marking write's time, and how many marking writes there
/// have been (an end, a label post): what a run's clearing of the mark is conditional on.
pub(super) const LAST_AT: &str = "last_at";
pub(super) const MARKED: &str = "marked";
/// The most counter and outcome shards a tenant's ends may be spread over (`END_SHARDS`).
pub const MAX_END_SHARDS: u32 = 128;
pub(super) const ENDED_COUNTER: &str = "ended_conversations";
pub(super) const UNRECORDED_EXCHANGES: &str = "unrecorded_exchanges";
pub(super) const RECOVERED_EXCHANGES: &str = "recovered_exchanges";
pub(super) const KIND_EXCHANGE: &str = "exchange";
pub(super) const KIND_END: &str = "end";
pub(super) const KIND_LABEL: &str = "label";
/// The sort key prefix of label items. Log items start with `L#`, and every log query asks for
/// that prefix, so no log read can meet a label.
pub(super) const LABEL_PREFIX: &str = "B#";

/// The attributes every log item has, as stored.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct LogItem {
    pub pk: String,
    pub sk: String,
    pub kind: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gsi1pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gsi1sk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gsi2pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gsi2sk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct BodyItem {
    pub body: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct LeaseItem {
    pub pk: String,
    pub sk: String,
    pub holder: String,
    pub until: u64,
}

pub(super) fn conversation_pk(tenant: &TenantId, conversation: &ConversationId) -> String {
    format!("T#{tenant}#C#{conversation}")
}

pub(super) fn log_sk(position: u32) -> String {
    format!("L#{position:05}")
}

pub(super) fn label_sk(turn: u32, pattern: &str) -> String {
    format!("{LABEL_PREFIX}{turn:05}#{pattern}")
}

/// The `by_time` partition of the tenant's labels, sorted by `LabelCursor::key()`.
pub(super) fn label_index_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}#LABEL")
}

/// The `by_start` partition of the tenant's conversations: each conversation's first exchange,
/// sorted by [`conversation_sk`].
pub(super) fn conversation_index_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}#CONVERSATION")
}

/// A conversation's place in its tenant's list, `{started:013}#{conversation}#`, followed by the
/// model version that served its first message (the index keeps keys only, so the list reads
/// everything it shows from the key). No id holds `#`, which sorts below every character an
/// id may hold, so the keys sort as (start, conversation) do.
pub(super) fn conversation_sk(cursor: &Cursor) -> String {
    format!("{:013}#{}#", cursor.at.0, cursor.conversation_id)
}

/// The `by_time` partition of one shard of the tenant's outcomes. Shard 0 is the key every
/// outcome had before ends were sharded, so a table with `END_SHARDS=1` is unchanged.
pub(super) fn outcome_pk(tenant: &TenantId, shard: u32) -> String {
    match shard {
        0 => format!("T#{tenant}#OUTCOME"),
        k => format!("T#{tenant}#OUTCOME#{k}"),
    }
}

/// The shard of the tenant's ended counter and outcome index a conversation's end goes to:
/// FNV-1a of its id, so every function (and every version) places it alike.
pub(super) fn end_shard(conversation: &ConversationId, shards: u32) -> u32 {
    if shards <= 1 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in conversation.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(shards)) as u32
}

/// A counter shard's entry in the tenants and pending lists: the tenant, then `#k` for shard
/// k > 0 (no tenant id holds `#`).
pub(super) fn shard_entry(tenant: &TenantId, shard: u32) -> String {
    match shard {
        0 => tenant.as_str().to_owned(),
        k => format!("{tenant}#{k}"),
    }
}

pub(super) fn parse_shard_entry(raw: &str) -> Result<TenantId, StoreError> {
    let tenant = raw.split('#').next().unwrap_or(raw);
    TenantId::parse(tenant).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn outcome_sk(cursor: &Cursor) -> String {
    format!("{:013}#{}", cursor.at.0, cursor.conversation_id)
}

/// The tenant's counter item (shard 0 of its ended counter, and the tracking counters).
pub(super) fn counter_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}#COUNTER")
}

/// Shard k of the tenant's ended counter: shard 0 is the counter item itself.
pub(super) fn counter_shard_pk(tenant: &TenantId, shard: u32) -> String {
    match shard {
        0 => counter_pk(tenant),
        k => format!("T#{tenant}#COUNTER#{k}"),
    }
}

pub(super) fn lease_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}#LEASE")
}

pub(super) fn model_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}#MODEL")
}

pub(super) fn config_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}#CONFIG")
}

/// The sort key of version `version` of a versioned document (a model or a configuration).
pub(super) fn model_sk(version: u64) -> String {
    format!("V#{version:010}")
}

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn key(pk: String, sk: String) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

pub(super) fn to_item<T: Serialize>(value: &T) -> Result<Item, StoreError> {
    serde_dynamo::to_item(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn from_item<T: for<'de> Deserialize<'de>>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A number attribute of an item, if it is there and readable.
pub(super) fn number(item: Option<&Item>, name: &str) -> Option<u64> {
    item.and_then(|item| item.get(name))
        .and_then(|value| value.as_n().ok())
        .and_then(|value| value.parse::<u64>().ok())
}
