//! The four event types of the original system, in one versioned envelope. Events are views of
//! what the store keeps (an exchange, an outcome, a feedback run), so writing the record writes
//! its events in the same request, and their ids are derived, never random: a retry produces
//! the same ids, and nothing is recorded twice.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::conversation::{
    Exchange, Outcome, OutcomeRecord, Reply, StrategyChoice, StrategyUse,
};
use crate::domain::ids::{ConversationId, TenantId};
use crate::domain::learning::ExperimentResults;
use crate::domain::time::Millis;

/// Bumped when an event's shape changes incompatibly.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub schema_version: u32,
    pub event_id: String,
    pub tenant: TenantId,
    /// The conversation the event is about; `null` for the results of a feedback run.
    pub conversation_id: Option<ConversationId>,
    pub at: Millis,
    pub model_version: u64,
    #[serde(flatten)]
    pub body: EventBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum EventBody {
    MessageExchange(MessageExchange),
    PatternDetected(PatternDetected),
    ConversationOutcome(ConversationOutcome),
    AbTestResults(AbTestResults),
}

impl EventBody {
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::MessageExchange(_) => "message_exchange",
            EventBody::PatternDetected(_) => "pattern_detected",
            EventBody::ConversationOutcome(_) => "conversation_outcome",
            EventBody::AbTestResults(_) => "ab_test_results",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageExchange {
    pub turn: u32,
    pub message_id: String,
    pub user_text: String,
    pub reply: Reply,
    pub strategy: StrategyChoice,
    pub experiments: BTreeMap<String, String>,
    pub latency_us: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternDetected {
    pub turn: u32,
    pub pattern: String,
    pub confidence: f64,
    pub evidence: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationOutcome {
    pub outcome: Outcome,
    pub value: Option<f64>,
    pub reason: Option<String>,
    pub turns: u32,
    pub duration_ms: u64,
    pub patterns_seen: BTreeMap<String, u32>,
    pub strategies_used: Vec<StrategyUse>,
}

/// Either one conversation's contribution to an experiment, or a feedback run's results table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AbTestResults {
    Conversation {
        experiment: String,
        variant: String,
        outcome: Outcome,
    },
    Run {
        /// The model version the run published.
        run: u64,
        #[serde(flatten)]
        results: ExperimentResults,
    },
}

impl Event {
    /// The `ab_test_results` event of a feedback run for one experiment.
    pub fn run_results(
        tenant: &TenantId,
        version: u64,
        at: Millis,
        results: &ExperimentResults,
    ) -> Event {
        Event {
            schema_version: SCHEMA_VERSION,
            // One table per experiment and configuration version; version 0's keeps the id it
            // had before versions existed.
            event_id: match results.config_version {
                0 => format!("run/{version}/ab_test_results/{}", results.experiment),
                config => format!(
                    "run/{version}/ab_test_results/{}/config/{config}",
                    results.experiment
                ),
            },
            tenant: tenant.clone(),
            conversation_id: None,
            at,
            model_version: version,
            body: EventBody::AbTestResults(AbTestResults::Run {
                run: version,
                results: results.clone(),
            }),
        }
    }
}

impl Exchange {
    /// The `message_exchange` event and one `pattern_detected` event per detection.
    pub fn events(&self, tenant: &TenantId, conversation_id: &ConversationId) -> Vec<Event> {
        let draft = &self.draft;
        let envelope = |event_id: String, body: EventBody| Event {
            schema_version: SCHEMA_VERSION,
            event_id,
            tenant: tenant.clone(),
            conversation_id: Some(conversation_id.clone()),
            at: draft.at,
            model_version: draft.model_version,
            body,
        };
        let mut events = Vec::with_capacity(1 + draft.patterns.len());
        events.push(envelope(
            format!("{conversation_id}/{}/message_exchange", self.turn),
            EventBody::MessageExchange(MessageExchange {
                turn: self.turn,
                message_id: draft.message_id.to_string(),
                user_text: draft.user_text.clone(),
                reply: draft.reply.clone(),
                strategy: draft.strategy.clone(),
                experiments: draft.experiments.clone(),
                latency_us: draft.latency_us,
            }),
        ));
        for (i, detection) in draft.patterns.iter().enumerate() {
            events.push(envelope(
                format!("{conversation_id}/{}/pattern_detected/{i}", self.turn),
                EventBody::PatternDetected(PatternDetected {
                    turn: self.turn,
                    pattern: detection.pattern.clone(),
                    confidence: detection.confidence,
                    evidence: detection.evidence.clone(),
                }),
            ));
        }
        events
    }
}

impl OutcomeRecord {
    /// The `conversation_outcome` event and one `ab_test_results` event per experiment.
    pub fn events(&self, tenant: &TenantId) -> Vec<Event> {
        let conversation_id = &self.conversation_id;
        let envelope = |event_id: String, body: EventBody| Event {
            schema_version: SCHEMA_VERSION,
            event_id,
            tenant: tenant.clone(),
            conversation_id: Some(conversation_id.clone()),
            at: self.at,
            model_version: self.model_version,
            body,
        };
        let mut events = Vec::with_capacity(1 + self.experiments.len());
        events.push(envelope(
            format!("{conversation_id}/conversation_outcome"),
            EventBody::ConversationOutcome(ConversationOutcome {
                outcome: self.outcome,
                value: self.value,
                reason: self.reason.clone(),
                turns: self.turns,
                duration_ms: self.duration_ms,
                patterns_seen: self.patterns_seen.clone(),
                strategies_used: self.strategies_used.clone(),
            }),
        ));
        for (experiment, variant) in &self.experiments {
            events.push(envelope(
                format!("{conversation_id}/ab_test_results/{experiment}"),
                EventBody::AbTestResults(AbTestResults::Conversation {
                    experiment: experiment.clone(),
                    variant: variant.clone(),
                    outcome: self.outcome,
                }),
            ));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::conversation::{
        ConversationState, Detection, EndRequest, ExchangeDraft, ReplySource,
    };
    use crate::domain::ids::MessageId;

    fn draft(message: &str, patterns: &[&str]) -> ExchangeDraft {
        ExchangeDraft {
            message_id: MessageId::parse(message).unwrap(),
            at: Millis(1_700_000_000_000),
            model_version: 3,
            user_text: "too expensive for us".into(),
            reply: Reply {
                text: "Let me show you the value.".into(),
                source: ReplySource::Template,
            },
            strategy: StrategyChoice {
                name: "handle_price_objection".into(),
                probability: 0.62,
                context: "objection.price".into(),
            },
            patterns: patterns
                .iter()
                .map(|p| Detection {
                    pattern: (*p).into(),
                    confidence: 0.9,
                    evidence: "too expensive".into(),
                    start: 0,
                    end: 13,
                    calibrated: true,
                })
                .collect(),
            experiments: BTreeMap::from([("reply_tone".into(), "warm".into())]),
            latency_us: 120,
            config_version: 0,
            treatment: None,
            via: Default::default(),
        }
    }

    #[test]
    fn envelope_serializes_with_type_and_data_beside_the_common_fields() {
        let tenant = TenantId::parse("acme").unwrap();
        let conversation = ConversationId::parse("c-42").unwrap();
        let exchange = ConversationState::New.next_exchange(draft("m-1", &["objection.price"]));
        let events = exchange.events(&tenant, &conversation);
        assert_eq!(events.len(), 2);
        let json = serde_json::to_value(&events[1]).unwrap();
        assert_eq!(json["type"], "pattern_detected");
        assert_eq!(json["event_id"], "c-42/1/pattern_detected/0");
        assert_eq!(json["tenant"], "acme");
        assert_eq!(json["at"], 1_700_000_000_000u64);
        assert_eq!(json["model_version"], 3);
        assert_eq!(json["schema_version"], SCHEMA_VERSION);
        assert_eq!(json["data"]["pattern"], "objection.price");
        assert_eq!(json["data"]["turn"], 1);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, events[1]);
    }

    #[test]
    fn outcome_events_cover_the_conversation_and_each_experiment() {
        let tenant = TenantId::parse("acme").unwrap();
        let conversation = ConversationId::parse("c-42").unwrap();
        let first = ConversationState::New.next_exchange(draft("m-1", &["objection.price"]));
        let second = ConversationState::from(&first).next_exchange(draft("m-2", &[]));
        let record = OutcomeRecord::from_exchanges(
            conversation.clone(),
            EndRequest {
                outcome: Outcome::Won,
                value: Some(1200.0),
                reason: None,
                labels: vec![],
                at: Millis(1_700_000_060_000),
                model_version: 3,
            },
            &[first, second],
        );
        assert_eq!(record.turns, 2);
        assert_eq!(record.duration_ms, 60_000);
        assert_eq!(record.patterns_seen.get("objection.price"), Some(&1));
        assert_eq!(record.strategies_used.len(), 2);
        let events = record.events(&tenant);
        let types: Vec<_> = events.iter().map(|e| e.body.type_name()).collect();
        assert_eq!(types, ["conversation_outcome", "ab_test_results"]);
        let json = serde_json::to_value(&events[1]).unwrap();
        assert_eq!(json["data"]["variant"], "warm");
        assert_eq!(json["data"]["outcome"], "won");
    }
}
