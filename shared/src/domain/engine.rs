//! One turn of the sales agent, decided without I/O: detect patterns, pick a strategy, write
//! the template reply. process_message wraps this with the store and the optional LLM.

use crate::domain::conversation::{
    ConversationState, ExchangeDraft, Reply, ReplySource, StrategyChoice,
};
use crate::domain::decision::{Decision, Playbook};
use crate::domain::detector::{Detector, LinearModel};
use crate::domain::experiments::{Assignment, Experiments};
use crate::domain::ids::{ConversationId, MessageId, TenantId};
use crate::domain::model::Model;
use crate::domain::patterns::{Catalog, DEFAULT_THRESHOLD};
use crate::domain::random::{Rng, stable_hash};
use crate::domain::time::Millis;

/// Everything a turn is decided with; built once per process.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The cue catalog and the learned model.
    pub detector: Detector,
    pub playbook: Playbook,
    pub experiments: Experiments,
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
            playbook: Playbook::builtin(),
            experiments: Experiments::builtin(),
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

    pub fn assign(&self, tenant: &TenantId, conversation: &ConversationId) -> Assignment {
        self.experiments
            .assign(tenant, conversation, self.threshold)
    }

    /// Decides the turn that follows `state`. The random draw is seeded by the message and
    /// its turn, so the same message in the same state always gets the same decision.
    pub fn plan(
        &self,
        message: &UserMessage<'_>,
        state: &ConversationState,
        model_version: u64,
        model: &Model,
        assignment: &Assignment,
    ) -> (ExchangeDraft, Decision) {
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
        let context = self.playbook.context(&steering, state);
        let turn = (state.turns() + 1).to_string();
        let seed = stable_hash(&[
            message.tenant.as_str(),
            message.conversation.as_str(),
            message.message_id.as_str(),
            &turn,
        ]) ^ self.seed;
        let mut rng = Rng::seeded(seed);
        let decision = self.playbook.decide(&context, model, treatment, &mut rng);
        let text = self
            .playbook
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
            experiments: assignment.variants.clone(),
            latency_us: 0,
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

    #[test]
    fn a_price_objection_gets_a_strategy_from_its_context_and_a_reply() {
        let engine = Engine::builtin();
        let ids = Ids::new("c-42");
        let message = ids.price_objection();
        let (tenant, conversation) = (&ids.tenant, &ids.conversation);
        let assignment = engine.assign(tenant, conversation);
        let (draft, decision) = engine.plan(
            &message,
            &ConversationState::New,
            0,
            &Model::default(),
            &assignment,
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
        // Replayable: same inputs, same decision.
        let (again, _) = engine.plan(
            &message,
            &ConversationState::New,
            0,
            &Model::default(),
            &assignment,
        );
        assert_eq!(again, draft);
    }

    #[test]
    fn an_experiment_threshold_steers_the_decision_but_every_detection_is_reported() {
        let engine = Engine::builtin();
        let ids = Ids::new("c-43");
        let message = ids.price_objection();
        let (tenant, conversation) = (&ids.tenant, &ids.conversation);
        let mut assignment = engine.assign(tenant, conversation);
        let plan = |assignment: &Assignment| {
            engine.plan(
                &message,
                &ConversationState::Open {
                    turns: 2,
                    summary: Default::default(),
                },
                0,
                &Model::default(),
                assignment,
            )
        };
        assignment.treatment.threshold = 0.7;
        let (lenient, decided) = plan(&assignment);
        assert_eq!(decided.context, "objection.price");
        // A bar above every detection's confidence: the same detections are reported, none
        // steers.
        assignment.treatment.threshold = 0.999;
        let (strict, decided) = plan(&assignment);
        assert_eq!(strict.patterns, lenient.patterns);
        assert!(lenient.patterns.iter().all(|d| d.confidence < 0.999));
        assert_eq!(decided.context, "none");
    }
}
