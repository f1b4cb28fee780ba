//! Labels a client gives after the fact: `POST /conversations/{id}/labels` with
//! `[{turn, pattern, correct}]`. A label says whether `pattern` (a catalog pattern or a family
//! name) was present in the prospect's message at `turn`: `correct: true` on a detected pattern
//! confirms it, on an undetected one reports a miss; `correct: false` says the detection was
//! wrong (or, on an undetected pattern, agrees it was absent).
//!
//! A conversation holds at most one label per (turn, pattern): the first one stored stands, a
//! repeat of it changes nothing, a contradicting one is refused. Stored labels are read back by
//! the feedback loop in the order they were stored ([`LabelCursor`]): it counts them in the
//! pattern accuracy metric and calibration, and learns the tenant's detector layer from them.

use serde::{Deserialize, Serialize};

use crate::domain::ids::ConversationId;
use crate::domain::time::Millis;

/// Labels one request may carry.
pub const MAX_LABELS_PER_REQUEST: usize = 100;

/// One label as the client sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelRequest {
    pub turn: u32,
    pub pattern: String,
    pub correct: bool,
}

/// A label as stored: one per (conversation, turn, pattern).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredLabel {
    pub conversation_id: ConversationId,
    pub turn: u32,
    pub pattern: String,
    pub correct: bool,
    /// When it was stored; the label index is ordered by it.
    pub at: Millis,
    /// The prospect's message at that turn, when the store keeps texts (`None` when it keeps
    /// only hashes: such a label counts in the metrics, but the detector cannot learn from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The detection's confidence at that turn, when the pattern (or, for a family name, a
    /// pattern of the family) was detected; `None` when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

impl StoredLabel {
    pub fn cursor(&self) -> LabelCursor {
        LabelCursor {
            at: self.at,
            conversation_id: self.conversation_id.clone(),
            turn: self.turn,
            pattern: self.pattern.clone(),
        }
    }
}

/// A position in a tenant's label index: labels are ordered by the time they were stored, then
/// by conversation, turn and pattern, so labels stored in the same millisecond keep an order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LabelCursor {
    pub at: Millis,
    pub conversation_id: ConversationId,
    pub turn: u32,
    pub pattern: String,
}

impl LabelCursor {
    /// The cursor as one string that sorts as the cursor does (fixed-width numbers; no id or
    /// pattern name holds `#`): the label index's sort key.
    pub fn key(&self) -> String {
        format!(
            "{:013}#{}#{:05}#{}",
            self.at.0, self.conversation_id, self.turn, self.pattern
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_keys_sort_as_cursors_do() {
        let conversation = |id: &str| ConversationId::parse(id).unwrap();
        let mut cursors = vec![
            LabelCursor {
                at: Millis(20),
                conversation_id: conversation("a"),
                turn: 1,
                pattern: "question".into(),
            },
            LabelCursor {
                at: Millis(3),
                conversation_id: conversation("b"),
                turn: 12,
                pattern: "objection.price".into(),
            },
            LabelCursor {
                at: Millis(3),
                conversation_id: conversation("b"),
                turn: 2,
                pattern: "objection.price".into(),
            },
            LabelCursor {
                at: Millis(3),
                conversation_id: conversation("a"),
                turn: 2,
                pattern: "question.product".into(),
            },
        ];
        let mut keys: Vec<String> = cursors.iter().map(LabelCursor::key).collect();
        cursors.sort();
        keys.sort();
        assert_eq!(
            keys,
            cursors.iter().map(LabelCursor::key).collect::<Vec<_>>()
        );
    }
}
