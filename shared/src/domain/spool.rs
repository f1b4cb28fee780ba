//! An exchange answered without a record, as it travels to the store later: through the spool
//! (an SQS FIFO queue) or, when the spool fails too, as one log line a command replays
//! (docs/spool.md). The record is the draft the prospect's answer came from, with the time it
//! was answered; the store gives it a turn when it is recorded.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::conversation::ExchangeDraft;
use crate::domain::ids::{ConversationId, TenantId};

/// The spooled record's schema version. A consumer refuses any other.
pub const SPOOL_SCHEMA: u32 = 1;

/// The field that marks a last-resort log line: `{"salesloop_unrecorded": 1, "record": {...}}`.
pub const LOG_MARKER: &str = "salesloop_unrecorded";

/// Where an exchange was recorded from. Exchanges recorded directly carry nothing (and every
/// exchange stored before the spool existed was).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    #[default]
    Direct,
    /// From the spool, by its consumer.
    Spool,
    /// From a last-resort log line, by the replay command.
    Replay,
}

impl Via {
    pub fn is_direct(&self) -> bool {
        *self == Via::Direct
    }
}

/// One unrecorded exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpooledExchange {
    pub schema: u32,
    pub tenant: TenantId,
    pub conversation_id: ConversationId,
    /// What was answered, stamped with its `message_id` and the time it was answered (`at`).
    /// Its text is the stored form (only a hash with `SALESLOOP_MESSAGE_TEXT=hash`).
    pub draft: ExchangeDraft,
}

/// Why a spooled record cannot be recorded, ever: it goes to the dead-letter queue with this
/// reason (or the replay command reports it), never to the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("unreadable record: {0}")]
    Unreadable(String),
    #[error("schema version {0}; this consumer reads {SPOOL_SCHEMA}")]
    Schema(u64),
    #[error("the conversation has ended")]
    Ended,
    #[error("the conversation reached its limit of turns")]
    TooLong,
    #[error("the message_id is recorded with a different text")]
    MessageIdReused,
    #[error("the store refuses the record: {0}")]
    Refused(String),
}

impl SpooledExchange {
    pub fn new(tenant: TenantId, conversation_id: ConversationId, draft: ExchangeDraft) -> Self {
        SpooledExchange {
            schema: SPOOL_SCHEMA,
            tenant,
            conversation_id,
            draft,
        }
    }

    /// Reads a record: another schema version, or anything that does not hold a whole,
    /// valid record, is refused.
    pub fn parse(raw: &str) -> Result<Self, Rejection> {
        let value: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| Rejection::Unreadable(e.to_string()))?;
        Self::from_value(value)
    }

    /// [`SpooledExchange::parse`] of a record already read as JSON.
    pub fn from_value(value: serde_json::Value) -> Result<Self, Rejection> {
        match value.get("schema").map(|v| v.as_u64()) {
            Some(Some(v)) if v == u64::from(SPOOL_SCHEMA) => {}
            Some(Some(v)) => return Err(Rejection::Schema(v)),
            _ => return Err(Rejection::Unreadable("no schema version".into())),
        }
        let record: SpooledExchange =
            serde_json::from_value(value).map_err(|e| Rejection::Unreadable(e.to_string()))?;
        if record.draft.user_text.is_empty() {
            return Err(Rejection::Unreadable("the message text is empty".into()));
        }
        Ok(record)
    }

    /// The FIFO message group: one per conversation, so a conversation's records keep their
    /// order and different conversations never wait on each other. A hash, because SQS allows
    /// 128 characters and two ids may take 129.
    pub fn group_id(&self) -> String {
        hex_digest(&[self.tenant.as_str(), self.conversation_id.as_str()])
    }

    /// The FIFO deduplication id: tenant, conversation and message id, so a message answered
    /// twice while the store was down is spooled once (within SQS's five-minute window; the
    /// consumer's idempotent append covers the rest).
    pub fn deduplication_id(&self) -> String {
        hex_digest(&[
            self.tenant.as_str(),
            self.conversation_id.as_str(),
            self.draft.message_id.as_str(),
        ])
    }

    /// The last-resort log line's core: one JSON object on one line, the record under
    /// `record` (process_message adds an EMF metric to it: docs/spool.md).
    pub fn log_line(&self) -> String {
        serde_json::json!({ LOG_MARKER: SPOOL_SCHEMA, "record": self }).to_string()
    }

    /// The record of a log line written by [`SpooledExchange::log_line`], found anywhere in
    /// `line` (a CloudWatch Logs export puts a timestamp before it; Lambda's JSON log format
    /// nests it as a string). `None` for a line that is not one.
    pub fn from_log_line(line: &str) -> Option<Result<Self, Rejection>> {
        if !line.contains(LOG_MARKER) {
            return None;
        }
        let start = line.find('{')?;
        // The first JSON value from there: an export may put more columns after it.
        let mut values =
            serde_json::Deserializer::from_str(&line[start..]).into_iter::<serde_json::Value>();
        let value = match values.next()? {
            Ok(value) => value,
            Err(e) => return Some(Err(Rejection::Unreadable(e.to_string()))),
        };
        let value = find_marked(value)?;
        Some(Self::from_value(value))
    }
}

/// The `record` of the object carrying [`LOG_MARKER`], in `value` or a JSON string inside it.
fn find_marked(value: serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value;
    match value {
        Value::Object(mut map) => {
            if map.contains_key(LOG_MARKER) {
                return map.remove("record");
            }
            map.into_iter().find_map(|(_, v)| find_marked(v))
        }
        Value::String(text) if text.contains(LOG_MARKER) => {
            let start = text.find('{')?;
            find_marked(serde_json::from_str(&text[start..]).ok()?)
        }
        _ => None,
    }
}

fn hex_digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The tenant's tracking counters, all time (both only grow): exchanges answered
/// `"recorded": false`, and exchanges recorded late (from the spool or a replayed log line,
/// or found already recorded when they got there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackingCounts {
    pub unrecorded: u64,
    pub recovered: u64,
}

impl TrackingCounts {
    /// Exchanges answered and not (yet) recorded, as the counters know them.
    pub fn backlog(&self) -> u64 {
        self.unrecorded.saturating_sub(self.recovered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::conversation::ConversationState;
    use crate::domain::engine::{Engine, UserMessage};
    use crate::domain::ids::MessageId;
    use crate::domain::model::Model;
    use crate::domain::time::Millis;

    fn record(message_id: &str) -> SpooledExchange {
        let (t, c) = (
            TenantId::parse("acme").unwrap(),
            ConversationId::parse("c-1").unwrap(),
        );
        let m = MessageId::parse(message_id).unwrap();
        let message = UserMessage {
            tenant: &t,
            conversation: &c,
            message_id: &m,
            text: "too expensive for us",
            at: Millis(1_764_720_000_000),
        };
        let (draft, _) = Engine::builtin().plan(
            &message,
            &ConversationState::New,
            0,
            &Model::default(),
            &crate::domain::config::TenantConfig::builtin(),
        );
        SpooledExchange::new(t.clone(), c.clone(), draft)
    }

    #[test]
    fn a_record_round_trips_through_its_body_and_its_log_line() {
        let record = record("m-1");
        let body = serde_json::to_string(&record).unwrap();
        assert_eq!(SpooledExchange::parse(&body), Ok(record.clone()));
        let line = record.log_line();
        assert!(!line.contains('\n'));
        assert_eq!(
            SpooledExchange::from_log_line(&line),
            Some(Ok(record.clone()))
        );
        // A CloudWatch Logs export puts a timestamp first.
        let exported = format!("2026-12-03T02:00:00.000Z {line}\t1764727200000\tlog-stream");
        assert_eq!(
            SpooledExchange::from_log_line(&exported),
            Some(Ok(record.clone()))
        );
        // Lambda's JSON log format nests the line in a string.
        let nested =
            serde_json::json!({"time": "2026-12-03T02:00:00Z", "message": line}).to_string();
        assert_eq!(SpooledExchange::from_log_line(&nested), Some(Ok(record)));
        assert_eq!(SpooledExchange::from_log_line("START RequestId: 1"), None);
    }

    #[test]
    fn another_schema_or_a_broken_record_is_refused_with_its_reason() {
        let mut value = serde_json::to_value(record("m-1")).unwrap();
        value["schema"] = 2.into();
        assert_eq!(
            SpooledExchange::parse(&value.to_string()),
            Err(Rejection::Schema(2))
        );
        value["schema"] = 1.into();
        value["tenant"] = "no#such".into();
        assert!(matches!(
            SpooledExchange::parse(&value.to_string()),
            Err(Rejection::Unreadable(_))
        ));
        assert!(matches!(
            SpooledExchange::parse("{\"schema\": 1"),
            Err(Rejection::Unreadable(_))
        ));
        assert!(matches!(
            SpooledExchange::parse("{}"),
            Err(Rejection::Unreadable(_))
        ));
    }

    #[test]
    fn group_and_deduplication_ids_fit_sqs_and_tell_messages_apart() {
        let (a, b) = (record("m-1"), record("m-2"));
        assert_eq!(a.group_id(), b.group_id());
        assert_ne!(a.deduplication_id(), b.deduplication_id());
        assert_ne!(a.group_id(), a.deduplication_id());
        for id in [a.group_id(), a.deduplication_id()] {
            assert_eq!(id.len(), 64);
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        // Parts are separated: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(hex_digest(&["ab", "c"]), hex_digest(&["a", "bc"]));
    }

    #[test]
    fn the_backlog_is_what_was_answered_and_not_yet_recovered() {
        let counts = TrackingCounts {
            unrecorded: 5,
            recovered: 3,
        };
        assert_eq!(counts.backlog(), 2);
        let over = TrackingCounts {
            unrecorded: 1,
            recovered: 3,
        };
        assert_eq!(over.backlog(), 0);
    }
}
