//! One turn of the sales agent, decided without I/O: detect patterns, pick a strategy, write
//! the template reply. process_message wraps this with the store and the optional LLM.

use crate::domain::config::TenantConfig;
use crate::domain::conversation::{
    ConversationState, ExchangeDraft, Reply, ReplySource, StrategyChoice,
};
use crate::domain::decision::Decision;
use crate::domain::detector::{Detector, LinearModel};
use crate::domain::experiments::Assignment;
use crate::domain::ids::{ConversationId, MessageId, TenantId};
use crate::domain::model::Model;
use crate::domain::patterns::{Catalog, DEFAULT_THRESHOLD};
use crate::domain::random::{Rng, stable_hash};
use crate::domain::time::Millis;

/// What a turn is decided with besides the tenant's configuration and model; built once per
/// process.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The cue catalog and the learned model.
    pub detector: Detector,
    /// The detection threshold outside experiments that change it.
    pub threshold: f64,
    /// Mixed into every decision's seed; fixed in tests, so decisions can be replayed.
    pub seed: u64,
}

/// A catalog or detector file that configuration named but that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Catalog(String),
    #[error("{0}")]
    Detector(String),
}

/// One user message, parsed.
#[derive(Debug, Clone)]
pub struct UserMessage<'a> {
    pub tenant: &'a TenantId,
    pub conversation: &'a ConversationId,
    pub message_id: &'a MessageId,
    pub text: &'a str,
    pub at: Millis,
}

impl Engine {
    pub fn builtin() -> Engine {
        Engine {
            detector: Detector::builtin(),
            threshold: DEFAULT_THRESHOLD,
            seed: 0,
        }
    }

    /// The built-in engine with `threshold` and, when given, the catalog in `catalog_json`
    /// and the detector weights in `detector_file` instead of the built-in ones.
    pub fn new(
        threshold: f64,
        catalog_json: Option<&str>,
        detector_file: Option<&[u8]>,
    ) -> Result<Engine, EngineError> {
        let mut engine = Engine::builtin();
        engine.threshold = threshold;
        if let Some(raw) = catalog_json {
            engine.detector.catalog =
                Catalog::from_json(raw).map_err(|e| EngineError::Catalog(e.to_string()))?;
        }
        if let Some(bytes) = detector_file {
            let model =
                LinearModel::from_bytes(bytes).map_err(|e| EngineError::Detector(e.to_string()))?;
            engine.detector.model = std::sync::Arc::new(model);
        }
        Ok(engine)
    }

    /// The variants and settings of a conversation's next message: the pinned ones of its
    /// first message when it has them (`conversation::Pin`), else those `config` gives a new
    /// conversation.
    pub fn assign(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        state: &ConversationState,
        config: &TenantConfig,
    ) -> Assignment {
        match state.summary().and_then(|s| s.pin.as_ref()) {
            Some(pin) => Assignment {
                variants: pin.variants.clone(),
                treatment: pin.treatment.clone(),
            },
            None => config.assign(tenant, conversation, self.threshold),
        }
    }

    /// Decides the turn that follows `state` under `config` (the conversation's pinned version,
    /// or the current one for a new conversation). The random draw is seeded by the message and
    /// its turn, so the same message in the same state always gets the same decision.
    pub fn plan(
        &self,
        message: &UserMessage<'_>,
        state: &ConversationState,
        model_version: u64,
        model: &Model,
        config: &TenantConfig,
    ) -> (ExchangeDraft, Decision) {
        let assignment = self.assign(message.tenant, message.conversation, state, config);
        let playbook = &config.playbook;
        let treatment = &assignment.treatment;
        // The message's position: 0 for a conversation's first.
        // Detections count at the configured threshold in every arm: the answer, the events and
        // the metrics keep one meaning of "detected". An experiment's threshold decides which of
        // them steer the decision (it can raise that bar, not lower it below what counts).
        let patterns = self.detector.detect_with(
            message.text,
            state.turns(),
            self.threshold,
            &model.calibration,
            model.detector.as_ref().and_then(|layer| layer.model()),
        );
        let steering: Vec<_> = patterns
            .iter()
            .filter(|d| d.confidence >= treatment.threshold)
            .cloned()
            .collect();
        let context = playbook.context(&steering, state);
        let turn = (state.turns() + 1).to_string();
        let seed = stable_hash(&[
            message.tenant.as_str(),
            message.conversation.as_str(),
            message.message_id.as_str(),
            &turn,
        ]) ^ self.seed;
        let mut rng = Rng::seeded(seed);
        let decision = playbook.decide(&context, model, treatment, &mut rng);
        let text = playbook
            .template(&decision.strategy, &treatment.tone, seed)
            .unwrap_or("Thanks, tell me more.")
            .to_owned();
        let draft = ExchangeDraft {
            message_id: message.message_id.clone(),
            at: message.at,
            model_version,
            user_text: message.text.to_owned(),
            reply: Reply {
                text,
                source: ReplySource::Template,
            },
            strategy: StrategyChoice {
                name: decision.strategy.clone(),
                probability: decision.probability,
                context: decision.context.clone(),
            },
            patterns,
            experiments: assignment.variants,
            latency_us: 0,
            config_version: state
                .summary()
                .and_then(|s| s.pin.as_ref())
                .map_or(config.version, |pin| pin.config_version),
            treatment: Some(assignment.treatment),
            via: Default::default(),
        };
        (draft, decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant, conversation and message id, for messages that borrow them.
    struct Ids {
        tenant: TenantId,
        conversation: ConversationId,
        message_id: MessageId,
    }

    impl Ids {
        fn new(conversation: &str) -> Ids {
            Ids {
                tenant: TenantId::parse("acme").unwrap(),
                conversation: ConversationId::parse(conversation).unwrap(),
                message_id: MessageId::parse("m-1").unwrap(),
            }
        }

        fn price_objection(&self) -> UserMessage<'_> {
            UserMessage {
                tenant: &self.tenant,
                conversation: &self.conversation,
                message_id: &self.message_id,
                text: "Honestly this looks too expensive for us.",
                at: Millis(1),
            }
        }
    }

    /// An open conversation of two turns pinned to `treatment`.
    fn pinned(treatment: crate::domain::experiments::Treatment) -> ConversationState {
        ConversationState::Open {
            turns: 2,
            summary: crate::domain::conversation::ConversationSummary {
                pin: Some(crate::domain::conversation::Pin {
                    config_version: 3,
                    model_version: 0,
                    variants: [("reply_tone".to_owned(), "warm".to_owned())].into(),
                    treatment,
                }),
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_price_objection_gets_a_strategy_from_its_context_and_a_reply() {
        let engine = Engine::builtin();
        let config = TenantConfig::builtin();
        let ids = Ids::new("c-42");
        let message = ids.price_objection();
        let (tenant, conversation) = (&ids.tenant, &ids.conversation);
        let assignment = engine.assign(tenant, conversation, &ConversationState::New, &config);
        let (draft, decision) = engine.plan(
            &message,
            &ConversationState::New,
            0,
            &Model::default(),
            &config,
        );
        assert_eq!(decision.context, "objection.price");
        assert_eq!(draft.patterns[0].pattern, "objection.price");
        assert!(
            [
                "handle_price_objection",
                "social_proof",
                "ask_discovery_question"
            ]
            .contains(&draft.strategy.name.as_str())
        );
        assert!(draft.strategy.probability > 0.0 && draft.strategy.probability <= 1.0);
        assert!(!draft.reply.text.is_empty());
        assert_eq!(draft.experiments, assignment.variants);
        assert_eq!(draft.treatment.as_ref(), Some(&assignment.treatment));
        assert_eq!(draft.config_version, 0);
        // Replayable: same inputs, same decision.
        let (again, _) = engine.plan(
            &message,
            &ConversationState::New,
            0,
            &Model::default(),
            &config,
        );
        assert_eq!(again, draft);
    }

    #[test]
    fn a_pinned_conversation_keeps_its_variants_and_version_whatever_the_configuration() {
        let engine = Engine::builtin();
        let ids = Ids::new("c-44");
        let message = ids.price_objection();
        let treatment = crate::domain::experiments::Treatment {
            tone: "warm".into(),
            policy: crate::domain::experiments::PolicyName::Thompson,
            epsilon: 0.1,
            threshold: 0.7,
        };
        let state = pinned(treatment.clone());
        // A configuration whose every variant would say otherwise.
        let mut config = TenantConfig::builtin();
        config.version = 9;
        for experiment in &mut config.experiments {
            experiment.status = crate::domain::experiments::Status::Stopped;
        }
        let (draft, _) = engine.plan(&message, &state, 0, &Model::default(), &config);
        assert_eq!(draft.experiments["reply_tone"], "warm");
        assert_eq!(draft.experiments.len(), 1);
        assert_eq!(draft.treatment, Some(treatment));
        assert_eq!(draft.config_version, 3);
        // The next exchange carries the pin on.
        let next = state.next_exchange(draft);
        assert_eq!(next.summary.pin.unwrap().config_version, 3);
        // A new conversation follows the configuration.
        let (fresh, _) = engine.plan(
            &message,
            &ConversationState::New,
            0,
            &Model::default(),
            &config,
        );
        assert_eq!(fresh.experiments["reply_tone"], "neutral");
        assert_eq!(fresh.config_version, 9);
        let first = ConversationState::New.next_exchange(fresh);
        assert_eq!(first.summary.pin.unwrap().config_version, 9);
    }

    #[test]
    fn an_experiment_threshold_steers_the_decision_but_every_detection_is_reported() {
        let engine = Engine::builtin();
        let config = TenantConfig::builtin();
        let ids = Ids::new("c-43");
        let message = ids.price_objection();
        let mut treatment = crate::domain::experiments::Treatment {
            tone: "neutral".into(),
            policy: crate::domain::experiments::PolicyName::Thompson,
            epsilon: 0.1,
            threshold: 0.7,
        };
        let plan = |treatment: &crate::domain::experiments::Treatment| {
            engine.plan(
                &message,
                &pinned(treatment.clone()),
                0,
                &Model::default(),
                &config,
            )
        };
        let (lenient, decided) = plan(&treatment);
        assert_eq!(decided.context, "objection.price");
        // A bar above every detection's confidence: the same detections are reported, none
        // steers.
        treatment.threshold = 0.999;
        let (strict, decided) = plan(&treatment);
        assert_eq!(strict.patterns, lenient.patterns);
        assert!(lenient.patterns.iter().all(|d| d.confidence < 0.999));
        assert_eq!(decided.context, "none");
    }
}
