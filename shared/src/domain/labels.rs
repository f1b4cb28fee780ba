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

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::domain::conversation::{Detection, MAX_TURNS};
use crate::domain::detector::{FAMILIES, family};
use crate::domain::ids::ConversationId;
use crate::domain::time::Millis;

/// Labels one request may carry.
pub const MAX_LABELS_PER_REQUEST: usize = 100;

/// Why a list of labels is refused as a whole, before anything is read or written. The same
/// rules hold for the labels of an end and for `POST /conversations/{id}/labels`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("at least one label")]
    Empty,
    #[error("at most {MAX_LABELS_PER_REQUEST} labels")]
    TooMany,
    #[error("labels[{0}].turn must be from 1 to {MAX_TURNS}")]
    TurnOutOfRange(usize),
    #[error("labels[{0}].pattern is neither a pattern of the catalog nor a family")]
    UnknownPattern(usize),
    #[error("labels[{0}] repeats a turn and pattern")]
    Repeated(usize),
}

/// Whether a label may name `pattern`: a pattern of the catalog (`in_catalog`), or a family
/// (`objection`, `buying_signal`, `question`), which says whether any pattern of it was there.
pub fn is_label_pattern(pattern: &str, in_catalog: &dyn Fn(&str) -> bool) -> bool {
    in_catalog(pattern) || FAMILIES.contains(&pattern)
}

/// Checks a list of labels on its own: at most [`MAX_LABELS_PER_REQUEST`], each turn from 1
/// to [`MAX_TURNS`], each pattern one a label may name, no (turn, pattern) twice. The first
/// label that breaks a rule is named. An empty list passes (an end need carry no labels).
pub fn check_labels(
    labels: &[LabelRequest],
    in_catalog: &dyn Fn(&str) -> bool,
) -> Result<(), LabelError> {
    if labels.len() > MAX_LABELS_PER_REQUEST {
        return Err(LabelError::TooMany);
    }
    let mut seen = BTreeSet::new();
    for (i, label) in labels.iter().enumerate() {
        if label.turn == 0 || label.turn > MAX_TURNS {
            return Err(LabelError::TurnOutOfRange(i));
        }
        if !is_label_pattern(&label.pattern, in_catalog) {
            return Err(LabelError::UnknownPattern(i));
        }
        if !seen.insert((label.turn, label.pattern.as_str())) {
            return Err(LabelError::Repeated(i));
        }
    }
    Ok(())
}

/// What the detector said about `pattern` in a turn with these detections: the confidence of
/// the detection of that exact name, or for a family name the highest confidence among the
/// family's detections; `None` when it was not detected (a `correct` label is then a miss).
pub fn label_confidence(detections: &[Detection], pattern: &str) -> Option<f64> {
    label_detection(detections, pattern).map(|d| d.confidence)
}

/// The detection [`label_confidence`] reads: of that exact name, or for a family name the
/// family's most confident one.
pub fn label_detection<'d>(detections: &'d [Detection], pattern: &str) -> Option<&'d Detection> {
    let family_label = FAMILIES.contains(&pattern);
    detections
        .iter()
        .filter(|d| d.pattern == pattern || (family_label && family(&d.pattern) == pattern))
        .reduce(|a, b| if b.confidence > a.confidence { b } else { a })
}

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
    /// Whether that detection's confidence was scaled by the calibration
    /// ([`Detection::calibrated`]); true when nothing was detected.
    #[serde(
        default = "crate::domain::conversation::yes",
        skip_serializing_if = "crate::domain::conversation::is_yes"
    )]
    pub calibrated: bool,
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

    fn in_catalog(name: &str) -> bool {
        matches!(name, "objection.price" | "question.product" | "pain_point")
    }

    fn label(turn: u32, pattern: &str) -> LabelRequest {
        LabelRequest {
            turn,
            pattern: pattern.into(),
            correct: true,
        }
    }

    #[test]
    fn labels_may_name_catalog_patterns_and_families_only() {
        let ok = [
            label(1, "objection.price"),
            label(1, "objection"),
            label(1, "buying_signal"),
            label(MAX_TURNS, "question"),
            label(2, "objection.price"),
        ];
        assert_eq!(check_labels(&ok, &in_catalog), Ok(()));
        assert_eq!(check_labels(&[], &in_catalog), Ok(()));
        let refused = [
            (vec![label(0, "objection")], LabelError::TurnOutOfRange(0)),
            (
                vec![label(1, "pain_point"), label(MAX_TURNS + 1, "pain_point")],
                LabelError::TurnOutOfRange(1),
            ),
            (
                vec![label(1, "objection.vibes")],
                LabelError::UnknownPattern(0),
            ),
            (vec![label(1, "Objection")], LabelError::UnknownPattern(0)),
            (vec![label(1, "")], LabelError::UnknownPattern(0)),
            (
                vec![
                    label(1, "question"),
                    label(2, "question"),
                    label(1, "question"),
                ],
                LabelError::Repeated(2),
            ),
            (
                (1..=MAX_LABELS_PER_REQUEST as u32 + 1)
                    .map(|turn| label(turn, "question"))
                    .collect(),
                LabelError::TooMany,
            ),
        ];
        for (labels, error) in refused {
            assert_eq!(check_labels(&labels, &in_catalog), Err(error));
        }
    }

    #[test]
    fn a_family_label_takes_the_strongest_detection_of_its_family() {
        let detection = |pattern: &str, confidence| Detection {
            pattern: pattern.into(),
            confidence,
            evidence: String::new(),
            start: 0,
            end: 0,
            calibrated: true,
        };
        let found = [
            detection("objection.price", 0.8),
            detection("objection.timing", 0.9),
            detection("question.product", 0.75),
        ];
        assert_eq!(label_confidence(&found, "objection.price"), Some(0.8));
        assert_eq!(label_confidence(&found, "objection"), Some(0.9));
        assert_eq!(label_confidence(&found, "question"), Some(0.75));
        assert_eq!(label_confidence(&found, "buying_signal"), None);
        assert_eq!(label_confidence(&found, "objection.trust"), None);
        // The learned detector may report a family by its own name.
        let by_model = [
            detection("objection", 0.7),
            detection("objection.price", 0.6),
        ];
        assert_eq!(label_confidence(&by_model, "objection"), Some(0.7));
        assert_eq!(label_confidence(&by_model, "objection.price"), Some(0.6));
    }

    #[test]
    fn cursor_keys_sort_as_cursors_do() {
        let conversation = |id: &str| ConversationId::parse(id).unwrap();
        let mut cursors = [
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
