//! Labelling detections after the fact: check the labels on their own, read the conversation's
//! log and the labels it has, decide (store these, these are stored already, one contradicts a
//! stored label, no such conversation or turn), then one conditional write of the new labels. A
//! lost write means a concurrent request stored some of the same (turn, pattern)s first: read
//! again and decide again, so a repeat is counted and a contradiction refused, never both kept.

use std::collections::BTreeMap;

use super::{MAX_ATTEMPTS, ServiceError, back_off};
use crate::domain::conversation::Exchange;
use crate::domain::ids::{ConversationId, TenantId};
use crate::domain::labels::{LabelError, LabelRequest, StoredLabel, check_labels, label_detection};
use crate::domain::privacy::TextStorage;
use crate::domain::time::Millis;
use crate::store::{Store, Write};

/// What recording a request's labels did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelsRecorded {
    /// Labels written by this request.
    pub stored: usize,
    /// Labels that were stored before, with the same verdict: not written again.
    pub already_stored: usize,
}

/// What to do with a request's labels, given the conversation's log and stored labels.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    new: Vec<StoredLabel>,
    already_stored: usize,
}

fn decide(
    conversation: &ConversationId,
    requests: &[LabelRequest],
    exchanges: &[Exchange],
    stored: &[StoredLabel],
    text_storage: TextStorage,
    now: Millis,
) -> Result<Plan, ServiceError> {
    if exchanges.is_empty() {
        return Err(ServiceError::NotFound);
    }
    // The log is in turn order.
    let exchange_at = |turn: u32| {
        exchanges
            .binary_search_by_key(&turn, |e| e.turn)
            .ok()
            .map(|i| &exchanges[i])
    };
    if let Some(missing) = requests.iter().find(|r| exchange_at(r.turn).is_none()) {
        return Err(ServiceError::TurnNotFound(missing.turn));
    }
    let verdicts: BTreeMap<(u32, &str), bool> = stored
        .iter()
        .map(|l| ((l.turn, l.pattern.as_str()), l.correct))
        .collect();
    let mut plan = Plan {
        new: Vec::new(),
        already_stored: 0,
    };
    for request in requests {
        match verdicts.get(&(request.turn, request.pattern.as_str())) {
            Some(&correct) if correct == request.correct => plan.already_stored += 1,
            Some(_) => {
                return Err(ServiceError::LabelConflict {
                    turn: request.turn,
                    pattern: request.pattern.clone(),
                });
            }
            None => {
                let Some(exchange) = exchange_at(request.turn) else {
                    return Err(ServiceError::TurnNotFound(request.turn));
                };
                let found = label_detection(&exchange.draft.patterns, &request.pattern);
                plan.new.push(StoredLabel {
                    conversation_id: conversation.clone(),
                    turn: request.turn,
                    pattern: request.pattern.clone(),
                    correct: request.correct,
                    at: now,
                    // With hashes kept, the stored `user_text` is the hash: no text to learn from.
                    text: (text_storage == TextStorage::Text)
                        .then(|| exchange.draft.user_text.clone()),
                    confidence: found.map(|d| d.confidence),
                    calibrated: found.is_none_or(|d| d.calibrated),
                });
            }
        }
    }
    Ok(plan)
}

/// Stores the client's labels on detections of the conversation, each (turn, pattern) once.
///
/// Refused before anything is read: no labels, too many, a turn out of range, a pattern that
/// is neither in the catalog (`in_catalog`) nor a family, a (turn, pattern) twice
/// ([`ServiceError::InvalidLabels`]). Refused before anything is written: a conversation with
/// no exchange ([`ServiceError::NotFound`]), a turn it does not have
/// ([`ServiceError::TurnNotFound`]), a label contradicting a stored one
/// ([`ServiceError::LabelConflict`]). A label stored before with the same verdict is counted in
/// `already_stored` and not written again. Ended conversations take labels too.
pub async fn record_labels<S: Store>(
    store: &S,
    tenant: &TenantId,
    conversation: &ConversationId,
    requests: Vec<LabelRequest>,
    in_catalog: &(dyn Fn(&str) -> bool + Sync),
    text_storage: TextStorage,
    now: Millis,
) -> Result<LabelsRecorded, ServiceError> {
    if requests.is_empty() {
        return Err(ServiceError::InvalidLabels(LabelError::Empty));
    }
    check_labels(&requests, in_catalog).map_err(ServiceError::InvalidLabels)?;
    for attempt in 0..MAX_ATTEMPTS {
        let log = store.conversation_log(tenant, conversation).await?;
        let stored = store.labels(tenant, conversation).await?;
        let plan = decide(
            conversation,
            &requests,
            &log.exchanges,
            &stored,
            text_storage,
            now,
        )?;
        let recorded = LabelsRecorded {
            stored: plan.new.len(),
            already_stored: plan.already_stored,
        };
        if plan.new.is_empty() {
            return Ok(recorded);
        }
        match store.put_labels(tenant, conversation, &plan.new).await? {
            Write::Done => return Ok(recorded),
            Write::Lost => back_off(attempt).await,
        }
    }
    Err(ServiceError::Contention(MAX_ATTEMPTS))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::conversation::{
        ConversationSummary, Detection, ExchangeDraft, Reply, ReplySource, StrategyChoice,
    };
    use crate::domain::ids::MessageId;

    fn conversation() -> ConversationId {
        ConversationId::parse("c-1").unwrap()
    }

    fn exchange(turn: u32, text: &str, detected: &[(&str, f64)]) -> Exchange {
        Exchange {
            turn,
            draft: ExchangeDraft {
                message_id: MessageId::parse(&format!("m-{turn}")).unwrap(),
                at: Millis(u64::from(turn)),
                model_version: 0,
                user_text: text.into(),
                reply: Reply {
                    text: "reply".into(),
                    source: ReplySource::Template,
                },
                strategy: StrategyChoice {
                    name: "ask_discovery_question".into(),
                    probability: 0.5,
                    context: "none".into(),
                },
                patterns: detected
                    .iter()
                    .map(|(pattern, confidence)| Detection {
                        pattern: (*pattern).into(),
                        confidence: *confidence,
                        evidence: String::new(),
                        start: 0,
                        end: 0,
                        calibrated: true,
                    })
                    .collect(),
                experiments: BTreeMap::new(),
                latency_us: 0,
                config_version: 0,
                treatment: None,
                via: Default::default(),
            },
            summary: ConversationSummary::default(),
        }
    }

    fn log() -> Vec<Exchange> {
        vec![
            exchange(
                1,
                "too expensive, and not now",
                &[("objection.price", 0.9), ("objection.timing", 0.8)],
            ),
            exchange(2, "how does it work?", &[("question.product", 0.85)]),
        ]
    }

    fn request(turn: u32, pattern: &str, correct: bool) -> LabelRequest {
        LabelRequest {
            turn,
            pattern: pattern.into(),
            correct,
        }
    }

    fn stored(turn: u32, pattern: &str, correct: bool) -> StoredLabel {
        StoredLabel {
            conversation_id: conversation(),
            turn,
            pattern: pattern.into(),
            correct,
            at: Millis(1),
            text: None,
            confidence: None,
            calibrated: true,
        }
    }

    #[test]
    fn new_labels_carry_the_turns_text_and_the_detections_confidence() {
        let requests = [
            request(1, "objection.price", true),
            request(1, "objection", false),
            request(2, "buying_signal", true),
        ];
        let plan = decide(
            &conversation(),
            &requests,
            &log(),
            &[],
            TextStorage::Text,
            Millis(42),
        )
        .unwrap();
        assert_eq!(plan.already_stored, 0);
        let got: Vec<_> = plan
            .new
            .iter()
            .map(|l| {
                (
                    l.turn,
                    l.pattern.as_str(),
                    l.correct,
                    l.text.as_deref(),
                    l.confidence,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    1,
                    "objection.price",
                    true,
                    Some("too expensive, and not now"),
                    Some(0.9)
                ),
                (
                    1,
                    "objection",
                    false,
                    Some("too expensive, and not now"),
                    Some(0.9)
                ),
                // A miss: nothing of the family was detected at turn 2.
                (2, "buying_signal", true, Some("how does it work?"), None),
            ]
        );
        assert!(
            plan.new
                .iter()
                .all(|l| l.at == Millis(42) && l.conversation_id == conversation())
        );
    }

    #[test]
    fn with_hashes_kept_no_text_is_copied_into_a_label() {
        let plan = decide(
            &conversation(),
            &[request(2, "question", true)],
            &log(),
            &[],
            TextStorage::Hash,
            Millis(1),
        )
        .unwrap();
        assert_eq!(plan.new[0].text, None);
        assert_eq!(plan.new[0].confidence, Some(0.85));
    }

    #[test]
    fn a_repeat_is_counted_and_only_the_rest_is_written() {
        let plan = decide(
            &conversation(),
            &[
                request(1, "objection.price", true),
                request(2, "question.product", false),
            ],
            &log(),
            &[stored(1, "objection.price", true)],
            TextStorage::Text,
            Millis(1),
        )
        .unwrap();
        assert_eq!(plan.already_stored, 1);
        assert_eq!(plan.new.len(), 1);
        assert_eq!(plan.new[0].pattern, "question.product");
    }

    #[test]
    fn refusals_name_the_missing_conversation_the_missing_turn_or_the_contradiction() {
        let decide_on =
            |requests: &[LabelRequest], exchanges: &[Exchange], labels: &[StoredLabel]| {
                decide(
                    &conversation(),
                    requests,
                    exchanges,
                    labels,
                    TextStorage::Text,
                    Millis(1),
                )
            };
        assert_eq!(
            decide_on(&[request(1, "objection", true)], &[], &[]),
            Err(ServiceError::NotFound)
        );
        assert_eq!(
            decide_on(
                &[request(1, "objection", true), request(3, "objection", true)],
                &log(),
                &[]
            ),
            Err(ServiceError::TurnNotFound(3))
        );
        // A contradiction refuses the whole request, its new labels too.
        assert_eq!(
            decide_on(
                &[
                    request(2, "question", true),
                    request(1, "objection.price", false)
                ],
                &log(),
                &[stored(1, "objection.price", true)]
            ),
            Err(ServiceError::LabelConflict {
                turn: 1,
                pattern: "objection.price".into()
            })
        );
        // A missing turn is reported before a contradiction.
        assert_eq!(
            decide_on(
                &[
                    request(1, "objection.price", false),
                    request(7, "question", true)
                ],
                &log(),
                &[stored(1, "objection.price", true)]
            ),
            Err(ServiceError::TurnNotFound(7))
        );
    }
}
