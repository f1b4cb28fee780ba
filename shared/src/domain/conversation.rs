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
///
/// It reads its full form (what the API answers) and its stored form ([`Exchange::stored`]),
/// which leaves out what the summary's pin already says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ReadExchange")]
pub struct Exchange {
    pub turn: u32,
    #[serde(flatten)]
    pub draft: ExchangeDraft,
    pub summary: ConversationSummary,
}

impl Exchange {
    /// The exchange as the stores keep it, without what the rest of the item already says, so
    /// that a typical item stays under one kilobyte (one write unit): the draft's model
    /// version, configuration version, variants and treatment where they are the summary's pin
    /// (every exchange of a pinned conversation, its first included, carries the pin); the
    /// summary's last strategy where it is the exchange's own; and, as on a conversation's
    /// first turn, its start, patterns seen and strategies used where the exchange alone gives
    /// them. Reading it back gives the same exchange.
    pub fn stored(&self) -> StoredExchange<'_> {
        let draft = &self.draft;
        let summary = &self.summary;
        let pin = summary.pin.as_ref();
        let unless_pinned =
            |same: fn(&Pin, &ExchangeDraft) -> bool| !pin.is_some_and(|p| same(p, draft));
        StoredExchange {
            turn: self.turn,
            message_id: &draft.message_id,
            at: draft.at,
            model_version: unless_pinned(|p, d| p.model_version == d.model_version)
                .then_some(draft.model_version),
            user_text: &draft.user_text,
            reply: &draft.reply,
            strategy: &draft.strategy,
            patterns: &draft.patterns,
            experiments: unless_pinned(|p, d| p.variants == d.experiments)
                .then_some(&draft.experiments),
            latency_us: draft.latency_us,
            config_version: unless_pinned(|p, d| p.config_version == d.config_version)
                .then_some(draft.config_version),
            // Under a pin, `null` when the draft has none; without one, absent then.
            treatment: match pin {
                Some(p) if draft.treatment.as_ref() == Some(&p.treatment) => None,
                Some(_) => Some(draft.treatment.as_ref()),
                None => draft.treatment.as_ref().map(Some),
            },
            via: draft.via,
            summary: StoredSummary {
                started_at: (summary.started_at != Some(draft.at)).then_some(summary.started_at),
                patterns_seen: (!only_patterns_of(&summary.patterns_seen, draft))
                    .then_some(&summary.patterns_seen),
                strategies_used: (!only_strategy_of(&summary.strategies_used, draft))
                    .then_some(&summary.strategies_used),
                // The summary after a turn names that turn's strategy as the last one.
                last_strategy: (summary.last_strategy.as_deref()
                    != Some(draft.strategy.name.as_str()))
                .then_some(summary.last_strategy.as_deref()),
                pin,
            },
        }
    }
}

/// Whether `seen` is exactly the set of `draft`'s patterns (what a conversation whose only
/// exchange is `draft`'s has seen), compared without building that set.
fn only_patterns_of(seen: &BTreeSet<String>, draft: &ExchangeDraft) -> bool {
    draft.patterns.iter().all(|d| seen.contains(&d.pattern))
        && seen
            .iter()
            .all(|p| draft.patterns.iter().any(|d| &d.pattern == p))
}

/// Whether `used` is `draft`'s strategy once and nothing else.
fn only_strategy_of(used: &BTreeMap<String, u32>, draft: &ExchangeDraft) -> bool {
    used.len() == 1 && used.get(&draft.strategy.name) == Some(&1)
}

/// [`Exchange::stored`]: a field that is absent is the pin's.
#[derive(Debug, Serialize)]
pub struct StoredExchange<'a> {
    turn: u32,
    message_id: &'a MessageId,
    at: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<u64>,
    user_text: &'a str,
    reply: &'a Reply,
    strategy: &'a StrategyChoice,
    patterns: &'a [Detection],
    #[serde(skip_serializing_if = "Option::is_none")]
    experiments: Option<&'a BTreeMap<String, String>>,
    latency_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    treatment: Option<Option<&'a Treatment>>,
    #[serde(skip_serializing_if = "Via::is_direct")]
    via: Via,
    summary: StoredSummary<'a>,
}

/// The summary of [`Exchange::stored`]: `last_strategy` is absent when it is the exchange's;
/// `started_at`, `patterns_seen` and `strategies_used` when they are what the exchange alone
/// gives (its time, its patterns, its strategy once).
#[derive(Debug, Serialize)]
struct StoredSummary<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<Option<Millis>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patterns_seen: Option<&'a BTreeSet<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strategies_used: Option<&'a BTreeMap<String, u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_strategy: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin: Option<&'a Pin>,
}

/// A summary as [`ReadExchange`] reads it (either form).
#[derive(Deserialize)]
struct ReadSummary {
    /// Absent (the stored form only): the exchange's time.
    #[serde(default, deserialize_with = "present")]
    started_at: Option<Option<Millis>>,
    /// Absent (the stored form only): the exchange's patterns.
    #[serde(default)]
    patterns_seen: Option<BTreeSet<String>>,
    /// Absent (the stored form only): the exchange's strategy, once.
    #[serde(default)]
    strategies_used: Option<BTreeMap<String, u32>>,
    /// Absent: the exchange's strategy.
    #[serde(default, deserialize_with = "present")]
    last_strategy: Option<Option<String>>,
    #[serde(default)]
    pin: Option<Pin>,
}

/// What an exchange is read from: its full form, or its stored form with the pin's fields
/// left out.
#[derive(Deserialize)]
struct ReadExchange {
    turn: u32,
    message_id: MessageId,
    at: Millis,
    model_version: Option<u64>,
    user_text: String,
    reply: Reply,
    strategy: StrategyChoice,
    patterns: Vec<Detection>,
    experiments: Option<BTreeMap<String, String>>,
    latency_us: u64,
    config_version: Option<u64>,
    /// Absent: the pin's (or none without a pin); `null`: none.
    #[serde(default, deserialize_with = "present")]
    treatment: Option<Option<Treatment>>,
    #[serde(default)]
    via: Via,
    summary: ReadSummary,
}

/// A field that is there, `null` or not: `Some` of what it holds.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl TryFrom<ReadExchange> for Exchange {
    type Error = &'static str;

    fn try_from(read: ReadExchange) -> Result<Exchange, &'static str> {
        let ReadSummary {
            started_at,
            patterns_seen,
            strategies_used,
            last_strategy,
            pin,
        } = read.summary;
        let last_strategy = last_strategy.unwrap_or_else(|| Some(read.strategy.name.clone()));
        let summary = ConversationSummary {
            started_at: started_at.unwrap_or(Some(read.at)),
            patterns_seen: patterns_seen
                .unwrap_or_else(|| read.patterns.iter().map(|d| d.pattern.clone()).collect()),
            strategies_used: strategies_used
                .unwrap_or_else(|| BTreeMap::from([(read.strategy.name.clone(), 1)])),
            last_strategy,
            pin,
        };
        let pin = summary.pin.as_ref();
        Ok(Exchange {
            turn: read.turn,
            draft: ExchangeDraft {
                message_id: read.message_id,
                at: read.at,
                // Only the stored form leaves it out, and only under a pin.
                model_version: read
                    .model_version
                    .or(pin.map(|p| p.model_version))
                    .ok_or("missing field `model_version`")?,
                user_text: read.user_text,
                reply: read.reply,
                strategy: read.strategy,
                patterns: read.patterns,
                experiments: read
                    .experiments
                    .or_else(|| pin.map(|p| p.variants.clone()))
                    .ok_or("missing field `experiments`")?,
                latency_us: read.latency_us,
                config_version: read
                    .config_version
                    .or(pin.map(|p| p.config_version))
                    .unwrap_or_default(),
                treatment: match read.treatment {
                    Some(treatment) => treatment,
                    None => pin.map(|p| p.treatment.clone()),
                },
                via: read.via,
            },
            summary,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::TenantConfig;
    use crate::domain::engine::{Engine, UserMessage};
    use crate::domain::ids::TenantId;
    use crate::domain::model::Model;

    /// Two turns of one conversation, as the engine plans them under the built-in configuration.
    fn two_turns() -> (Exchange, Exchange) {
        let engine = Engine::builtin();
        let config = TenantConfig::builtin();
        let tenant = TenantId::parse("acme").unwrap();
        let conversation = ConversationId::parse("c-42").unwrap();
        let message_id = MessageId::parse("m-1").unwrap();
        let message = UserMessage {
            tenant: &tenant,
            conversation: &conversation,
            message_id: &message_id,
            text: "Honestly this looks too expensive for us, we would need a discount first.",
            at: Millis(1_764_000_000_000),
        };
        let new = ConversationState::New;
        let (draft, _) = engine.plan(&message, &new, 3, &Model::default(), &config);
        let first = new.next_exchange(draft);
        let open = ConversationState::from(&first);
        let (draft, _) = engine.plan(&message, &open, 3, &Model::default(), &config);
        let second = open.next_exchange(draft);
        (first, second)
    }

    fn stored_json(exchange: &Exchange) -> serde_json::Value {
        serde_json::to_value(exchange.stored()).unwrap()
    }

    fn read_back(value: serde_json::Value) -> Exchange {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_stored_form_leaves_out_what_the_pin_says_and_reads_back_the_same() {
        let (first, second) = two_turns();
        for exchange in [&first, &second] {
            assert!(exchange.summary.pin.is_some());
            let stored = stored_json(exchange);
            for field in [
                "model_version",
                "experiments",
                "config_version",
                "treatment",
            ] {
                assert!(stored.get(field).is_none(), "{field} in {stored}");
            }
            let full = serde_json::to_string(exchange).unwrap();
            let compact = stored.to_string();
            assert!(
                compact.len() + 200 < full.len(),
                "{} against {}",
                compact.len(),
                full.len()
            );
            assert_eq!(&read_back(stored), exchange);
            // The full form (the API's, and every item stored before) still reads.
            assert_eq!(&serde_json::from_str::<Exchange>(&full).unwrap(), exchange);
        }
    }

    #[test]
    fn what_differs_from_the_pin_is_kept() {
        let (_, mut second) = two_turns();
        second.draft.model_version = 9;
        second.draft.config_version = 4;
        second.draft.experiments.insert("extra".into(), "b".into());
        second.draft.treatment = None;
        second.summary.last_strategy = None;
        let stored = stored_json(&second);
        assert!(stored["summary"]["last_strategy"].is_null());
        assert!(stored["summary"].get("last_strategy").is_some());
        assert_eq!(stored["model_version"], 9);
        assert_eq!(stored["config_version"], 4);
        assert_eq!(stored["experiments"]["extra"], "b");
        assert!(stored["treatment"].is_null() && stored.get("treatment").is_some());
        assert_eq!(read_back(stored), second);
        // Without a pin, nothing is left out.
        second.summary.pin = None;
        let stored = stored_json(&second);
        assert_eq!(stored["model_version"], 9);
        assert!(stored.get("experiments").is_some());
        assert!(stored.get("treatment").is_none());
        assert_eq!(read_back(stored), second);
    }

    #[test]
    fn a_first_turn_leaves_out_the_summary_its_exchange_gives() {
        let (first, mut second) = two_turns();
        assert!(!first.draft.patterns.is_empty());
        let stored = stored_json(&first);
        for field in ["started_at", "patterns_seen", "strategies_used"] {
            assert!(
                stored["summary"].get(field).is_none(),
                "{field} in {stored}"
            );
        }
        assert_eq!(read_back(stored), first);
        // A later turn's summary is more than its exchange: it is kept, and read as it is.
        second.draft.at = Millis(first.draft.at.0 + 5_000);
        second.summary.strategies_used.insert("other".into(), 2);
        let stored = stored_json(&second);
        assert_eq!(
            stored["summary"]["started_at"],
            serde_json::json!(first.draft.at)
        );
        assert!(stored["summary"]["strategies_used"]["other"] == 2);
        assert_eq!(read_back(stored), second);
        // A summary without a start says so (`null`), rather than taking the exchange's time.
        second.summary.started_at = None;
        let stored = stored_json(&second);
        assert!(stored["summary"]["started_at"].is_null());
        assert_eq!(read_back(stored), second);
    }

    #[test]
    fn an_item_without_a_pin_must_say_its_model_version_and_variants() {
        let (_, mut second) = two_turns();
        second.summary.pin = None;
        for field in ["model_version", "experiments"] {
            let mut stored = stored_json(&second);
            stored.as_object_mut().unwrap().remove(field);
            let error = serde_json::from_value::<Exchange>(stored).unwrap_err();
            assert!(error.to_string().contains(field), "{error}");
        }
    }
}
