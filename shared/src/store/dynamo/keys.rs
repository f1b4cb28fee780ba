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

pub(super) fn outcome_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}#OUTCOME")
}

pub(super) fn outcome_sk(cursor: &Cursor) -> String {
    format!("{:013}#{}", cursor.at.0, cursor.conversation_id)
}

pub(super) fn counter_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}#COUNTER")
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
