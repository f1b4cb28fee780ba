//! A conversation as the store keeps it: an ordered log of exchanges that may close with one
//! outcome. Turns are assigned by the store, so the domain builds drafts and the store stamps them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::experiments::Treatment;
use crate::domain::ids::{ConversationId, MessageId};
use crate::domain::labels::label_detection;
use crate::domain::spool::Via;
use crate::domain::time::Millis;

/// The longest conversation we keep; the outcome item lists every turn, and DynamoDB items stop
/// at 400 KB.
pub const MAX_TURNS: u32 = 1_000;

/// How a conversation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Won,
    Lost,
    NoDecision,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Won => "won",
            Outcome::Lost => "lost",
            Outcome::NoDecision => "no_decision",
        }
    }

    pub fn is_win(self) -> bool {
        self == Outcome::Won
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("outcome must be one of won, lost, no_decision")]
pub struct OutcomeError;

impl FromStr for Outcome {
    type Err = OutcomeError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "won" => Ok(Outcome::Won),
            "lost" => Ok(Outcome::Lost),
            "no_decision" => Ok(Outcome::NoDecision),
            _ => Err(OutcomeError),
        }
    }
}

/// One pattern found in a user message, with the span of text that triggered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub pattern: String,
    pub confidence: f64,
    pub evidence: String,
    /// Byte offsets of the evidence in the user's text.
    pub start: usize,
    pub end: usize,
    /// Whether the tenant's calibration multiplier scaled this confidence: every cue detection
    /// and model detection, except the model's once the tenant has a detector layer (which
    /// moves the model's scores itself). The feedback loop fits the multipliers on the
    /// detections they scaled only.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub calibrated: bool,
}

/// serde's default for a flag that is true unless stored otherwise.
pub(crate) fn yes() -> bool {
    true
}

/// serde's test for leaving such a flag out when it is true.
#[allow(clippy::trivially_copy_pass_by_ref)]
pub(crate) fn is_yes(value: &bool) -> bool {
    *value
}

/// The strategy the decision engine chose and the probability with which it chose it, kept so
/// that policies can be evaluated offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyChoice {
    pub name: String,
    pub probability: f64,
    /// The decision context the strategy was chosen in (the posterior it was drawn from).
    #[serde(default)]
    pub context: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplySource {
    Template,
    Llm,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub text: String,
    pub source: ReplySource,
}

/// What the domain decided for one user message, before the store gives it a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeDraft {
    pub message_id: MessageId,
    pub at: Millis,
    pub model_version: u64,
    pub user_text: String,
    pub reply: Reply,
    pub strategy: StrategyChoice,
    pub patterns: Vec<Detection>,
    pub experiments: BTreeMap<String, String>,
    pub latency_us: u64,
    /// The tenant configuration version the conversation runs under (0: the built-in one).
    #[serde(default)]
    pub config_version: u64,
    /// The settings the conversation's variants gave (exchanges stored before it have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub treatment: Option<Treatment>,
    /// Where the exchange was recorded from: directly (absent), the spool, or a replayed log
    /// line. Its `at` is the time it was answered either way.
    #[serde(default, skip_serializing_if = "Via::is_direct")]
    pub via: Via,
}

/// What a conversation keeps from its first message for its whole life: the configuration
/// version and model version it started under, its variants and their settings. Later messages
/// are decided under the same (docs/steering.md), so a change an admin makes reaches new
/// conversations only, and one conversation never mixes two splits or two models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    pub config_version: u64,
    pub model_version: u64,
    pub variants: BTreeMap<String, String>,
    pub treatment: Treatment,
}

/// What a conversation has seen up to and including some turn; every exchange carries it, so
/// the newest exchange alone tells the decision engine the conversation so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationSummary {
    pub started_at: Option<Millis>,
    pub patterns_seen: BTreeSet<String>,
    pub strategies_used: BTreeMap<String, u32>,
    pub last_strategy: Option<String>,
    /// Set by the first exchange; absent in conversations that started before pins existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Pin>,
}

/// A recorded exchange: the draft with its turn and the summary after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub turn: u32,
    #[serde(flatten)]
    pub draft: ExchangeDraft,
    pub summary: ConversationSummary,
}

/// A client's verdict on one detection, for the pattern accuracy metric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectionLabel {
    pub turn: u32,
    pub pattern: String,
    pub correct: bool,
}

/// One strategy decision of a conversation, as the outcome remembers it for credit assignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyUse {
    pub turn: u32,
    pub strategy: String,
    pub probability: f64,
    /// The decision context; the feedback loop credits the outcome to (context, strategy).
    #[serde(default)]
    pub context: String,
    pub patterns: Vec<String>,
}

/// A client's label checked against what was detected at that turn: with the detection's
/// confidence when the pattern was detected (for a family name, its family's strongest; see
/// [`label_confidence`]), `None` when it was not (a `correct` label on an undetected pattern is
/// a miss, which is what recall counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelledDetection {
    pub turn: u32,
    pub pattern: String,
    pub correct: bool,
    pub confidence: Option<f64>,
    /// Whether that detection's confidence was scaled by the calibration (see
    /// [`Detection::calibrated`]).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub calibrated: bool,
    /// The prospect's message at that turn, when the store keeps texts: what the tenant's
    /// detector layer learns from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// What the client says when it ends a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndRequest {
    pub outcome: Outcome,
    pub value: Option<f64>,
    pub reason: Option<String>,
    pub labels: Vec<DetectionLabel>,
    pub at: Millis,
    pub model_version: u64,
}

/// The recorded end of a conversation: the `conversation_outcome` event's data and the
/// experiments it counts in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    pub conversation_id: ConversationId,
    pub at: Millis,
    pub model_version: u64,
    pub outcome: Outcome,
    pub value: Option<f64>,
    pub reason: Option<String>,
    pub turns: u32,
    pub duration_ms: u64,
    /// Pattern name to the number of turns in which it was detected.
    pub patterns_seen: BTreeMap<String, u32>,
    pub strategies_used: Vec<StrategyUse>,
    pub experiments: BTreeMap<String, String>,
    /// The configuration version its experiments were assigned under (0: the built-in one, and
    /// every outcome recorded before versions existed).
    #[serde(default)]
    pub config_version: u64,
    /// The client's labels on turns of this conversation (labels for other turns are dropped).
    pub labels: Vec<LabelledDetection>,
}

impl OutcomeRecord {
    /// Builds the record from the request and every exchange of the conversation, in turn order.
    pub fn from_exchanges(
        conversation_id: ConversationId,
        request: EndRequest,
        exchanges: &[Exchange],
    ) -> Self {
        let mut patterns_seen = BTreeMap::new();
        let mut strategies_used = Vec::with_capacity(exchanges.len());
        for exchange in exchanges {
            let mut names: Vec<String> = exchange
                .draft
                .patterns
                .iter()
                .map(|d| d.pattern.clone())
                .collect();
            names.sort();
            names.dedup();
            for name in &names {
                *patterns_seen.entry(name.clone()).or_insert(0) += 1;
            }
            strategies_used.push(StrategyUse {
                turn: exchange.turn,
                strategy: exchange.draft.strategy.name.clone(),
                probability: exchange.draft.strategy.probability,
                context: exchange.draft.strategy.context.clone(),
                patterns: names,
            });
        }
        let started = exchanges.first().map(|e| e.draft.at).unwrap_or(request.at);
        // What the conversation is pinned to (its first exchange's split): an exchange answered
        // while the store was down may have been decided under another (docs/spool.md), and it
        // must not move the conversation to another split. Conversations older than pins
        // count under their last exchange's.
        let pin = exchanges.last().and_then(|e| e.summary.pin.as_ref());
        let experiments = match pin {
            Some(pin) => pin.variants.clone(),
            None => exchanges
                .last()
                .map(|e| e.draft.experiments.clone())
                .unwrap_or_default(),
        };
        let config_version = match pin {
            Some(pin) => pin.config_version,
            None => exchanges.last().map_or(0, |e| e.draft.config_version),
        };
        // A pinned conversation was served by one model version from start to end: its outcome
        // counts for that version. Older conversations count for the version current at the end.
        let model_version = exchanges
            .last()
            .and_then(|e| e.summary.pin.as_ref())
            .map_or(request.model_version, |pin| pin.model_version);
        let labels = request
            .labels
            .into_iter()
            .filter_map(|label| {
                let exchange = exchanges.iter().find(|e| e.turn == label.turn)?;
                let found = label_detection(&exchange.draft.patterns, &label.pattern);
                let stored = &exchange.draft.user_text;
                Some(LabelledDetection {
                    turn: label.turn,
                    pattern: label.pattern,
                    correct: label.correct,
                    confidence: found.map(|d| d.confidence),
                    calibrated: found.is_none_or(|d| d.calibrated),
                    text: (!crate::domain::privacy::is_hashed(stored)).then(|| stored.clone()),
                })
            })
            .collect();
        OutcomeRecord {
            conversation_id,
            at: request.at,
            model_version,
            outcome: request.outcome,
            value: request.value,
            reason: request.reason,
            turns: exchanges.last().map(|e| e.turn).unwrap_or(0),
            duration_ms: request.at.saturating_sub(started),
            patterns_seen,
            strategies_used,
            experiments,
            config_version,
            labels,
        }
    }

    /// Where this outcome sits in the time-ordered outcome index.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            at: self.at,
            conversation_id: self.conversation_id.clone(),
        }
    }
}

/// A position in the time-ordered outcome index: outcomes are ordered by time, then by
/// conversation id, so two outcomes in the same millisecond still have a strict order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cursor {
    pub at: Millis,
    pub conversation_id: ConversationId,
}

/// Where a conversation stands, read from its newest log entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ConversationState {
    /// No message yet: the conversation does not exist.
    #[default]
    New,
    Open {
        turns: u32,
        summary: ConversationSummary,
    },
    Ended(Box<OutcomeRecord>),
}

impl ConversationState {
    pub fn turns(&self) -> u32 {
        match self {
            ConversationState::New => 0,
            ConversationState::Open { turns, .. } => *turns,
            ConversationState::Ended(record) => record.turns,
        }
    }

    pub fn summary(&self) -> Option<&ConversationSummary> {
        match self {
            ConversationState::Open { summary, .. } => Some(summary),
            _ => None,
        }
    }

    /// Stamps a draft as the next turn of an open (or new) conversation.
    pub fn next_exchange(&self, draft: ExchangeDraft) -> Exchange {
        let mut summary = self.summary().cloned().unwrap_or_default();
        summary.started_at.get_or_insert(draft.at);
        for detection in &draft.patterns {
            summary.patterns_seen.insert(detection.pattern.clone());
        }
        *summary
            .strategies_used
            .entry(draft.strategy.name.clone())
            .or_insert(0) += 1;
        summary.last_strategy = Some(draft.strategy.name.clone());
        if summary.pin.is_none()
            && let Some(treatment) = &draft.treatment
        {
            summary.pin = Some(Pin {
                config_version: draft.config_version,
                model_version: draft.model_version,
                variants: draft.experiments.clone(),
                treatment: treatment.clone(),
            });
        }
        Exchange {
            turn: self.turns() + 1,
            draft,
            summary,
        }
    }
}

impl From<&Exchange> for ConversationState {
    fn from(tail: &Exchange) -> Self {
        ConversationState::Open {
            turns: tail.turn,
            summary: tail.summary.clone(),
        }
    }
}
