//! What a feedback run learns from a batch of outcomes, without I/O: the decision engine's
//! posteriors, the pattern calibration, the running tallies behind the metrics and A/B tables,
//! and the run's report.
//!
//! # Credit assignment
//!
//! A conversation's outcome is the only reward; it is credited to the decisions that could have
//! gone otherwise. Each turn whose context offered more than one strategy is one such decision,
//! and the `k` decisions of a conversation share one unit of credit: each adds `1/k` to the
//! alpha (won) or beta (lost, no decision) of its (context, strategy) posterior, which starts
//! from the playbook's prior. A long conversation thus weighs as much as a short one, and no
//! turn is singled out without evidence that it mattered more.
//!
//! The logged probabilities are not weights in this update. Thompson sampling's posterior is a
//! likelihood update, and the likelihood of an outcome does not depend on how the strategy was
//! chosen as long as the choice depended only on data already seen (it did: the policy reads the
//! published model and a seeded draw), so weighting by `1/p` would count exploratory turns
//! several times over. The probabilities are used where they are needed: the run's off-policy
//! estimate (`policy_value`) of what the newly published model's greedy choice would win,
//! self-normalised inverse-propensity weighting over the batch's decisions, reported beside
//! the logged policy's actual win rate and the effective sample size.
//!
//! # Calibration
//!
//! Clients may label detections when they end a conversation. Once a pattern has at least
//! [`CALIBRATION_MIN_LABELS`] labelled detections, its confidence multiplier becomes the
//! posterior mean precision, `(tp + 1) / (tp + fp + 2)`, divided by the mean uncalibrated
//! confidence of those detections, bounded to [0.5, 1.25]: a pattern that is right less often
//! than its confidence says is scaled down, and may fall below the threshold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::config::ConfigVersions;
use crate::domain::conversation::{Cursor, OutcomeRecord};
use crate::domain::decision::Playbook;
use crate::domain::detector::Weights;
use crate::domain::detector::layer::{self, LayerExample, LayerSettings};
use crate::domain::labels::{LabelCursor, StoredLabel};
use crate::domain::model::{DetectorLayer, Model};
use crate::domain::spool::TrackingCounts;
use crate::domain::stats::{
    Correlation, Proportion, chi_square_gof, lift, phi, probability_to_beat, wilson,
};
use crate::domain::time::Millis;

/// One entry of a tenant's model history. Versions start at 1 and grow by one; the watermark
/// records the last outcome this version has learned from, so publishing a version and advancing
/// the watermark are a single write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub version: u64,
    pub published_at: Millis,
    pub watermark: Option<Cursor>,
    /// The last label (of `POST /conversations/{id}/labels`) this version has learned from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_watermark: Option<LabelCursor>,
    /// Outcomes learned from, over the whole history.
    pub outcomes_learned: u64,
    pub model: Model,
    /// The running tallies the next run continues from.
    #[serde(default)]
    pub state: LearningState,
    /// The metrics and A/B tables of the run that published this version (for an activated
    /// version, those of the last run before it).
    #[serde(default)]
    pub report: Option<RunReport>,
    /// Set when an admin published this version as a copy of an older one's model (a rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_from: Option<u64>,
}

impl ModelVersion {
    /// Version 0: nothing published yet, the priors only.
    pub fn priors() -> ModelVersion {
        ModelVersion {
            version: 0,
            published_at: Millis(0),
            watermark: None,
            label_watermark: None,
            outcomes_learned: 0,
            model: Model::default(),
            state: LearningState::default(),
            report: None,
            activated_from: None,
        }
    }
}

/// Labelled detections a pattern needs before its confidence is recalibrated.
pub const CALIBRATION_MIN_LABELS: u64 = 30;
/// The uncalibrated confidence a miss counts with: the default threshold, the least a
/// detection that stands has.
const MISS_CONFIDENCE: f64 = crate::domain::patterns::DEFAULT_THRESHOLD;
/// Bounds of a calibration multiplier.
pub const CALIBRATION_RANGE: (f64, f64) = (0.5, 1.25);
/// Sample-ratio-mismatch p-values below this are flagged.
pub const SRM_ALPHA: f64 = 0.001;
/// Publish times kept for the update-frequency metric.
const PUBLISHES_KEPT: usize = 64;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Conversations and how many of them were won.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub conversations: u64,
    pub wins: u64,
}

impl Tally {
    fn add(&mut self, won: bool) {
        self.conversations += 1;
        self.wins += u64::from(won);
    }
}

/// Labelled detections of one pattern.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelTally {
    /// Detected and labelled correct.
    pub true_positives: u64,
    /// Detected and labelled wrong.
    pub false_positives: u64,
    /// Not detected, labelled as present.
    pub misses: u64,
    /// Sum of the uncalibrated confidences of the labelled detections the calibration scaled.
    pub raw_confidence_sum: f64,
    /// Labelled detections the calibration did not scale (the model's, over a tenant's detector
    /// layer), right and wrong: counted in precision, left out of the calibration's fit.
    #[serde(default)]
    pub unscaled_true_positives: u64,
    #[serde(default)]
    pub unscaled_false_positives: u64,
}

impl LabelTally {
    fn detected(&self) -> u64 {
        self.true_positives + self.false_positives
    }
}

/// Exchanges answered against exchanges recorded (docs/architecture.md, the event tracking
/// rate). Recorded: the `turns` exchanges of each outcome learned, wherever they were recorded
/// from (directly, the spool, a replayed log line). Answered adds the exchanges answered
/// `"recorded": false` that are still unrecorded: the growth of the tenant's backlog
/// (`TrackingCounts::backlog`, written by the code paths that answer and that recover).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTally {
    pub expected: u64,
    pub recorded: u64,
}

/// The running tallies a model version carries so that each run reads only new outcomes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LearningState {
    pub overall: Tally,
    /// Conversations in which the pattern was detected.
    pub by_pattern: BTreeMap<String, Tally>,
    /// Conversations in which a pattern of the family (the name before the dot) was detected.
    #[serde(default)]
    pub by_family: BTreeMap<String, Tally>,
    /// Conversations in which the strategy was used.
    pub by_strategy: BTreeMap<String, Tally>,
    /// Experiment to variant to its conversations, all time (every split mixed).
    pub experiments: BTreeMap<String, BTreeMap<String, Tally>>,
    /// The same per configuration version the conversations were assigned under: each one
    /// split, so a sample-ratio check never mixes two (the newest [`CONFIGS_KEPT`] versions).
    #[serde(default)]
    pub experiments_by_config: BTreeMap<u64, BTreeMap<String, BTreeMap<String, Tally>>>,
    /// Conversations by the model version that served them (the one pinned at their first
    /// message; for conversations older than pins, the version current at their end): the
    /// learning curve.
    #[serde(default)]
    pub by_model_version: BTreeMap<u64, Tally>,
    pub labels: BTreeMap<String, LabelTally>,
    /// Exchanges recorded, all time (models published before the spool counted writes, ends
    /// included, under another name: they start this tally at 0).
    #[serde(default)]
    pub exchanges: EventTally,
    /// The tenant's backlog of unrecorded exchanges as the previous run read it: a run counts
    /// its growth since as answered and not recorded.
    #[serde(default)]
    pub backlog_seen: u64,
    /// Publish times of the newest versions, oldest first.
    pub publishes: Vec<Millis>,
}

/// A feedback run's metrics and A/B tables, stored with the version it published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub version: u64,
    pub at: Millis,
    /// Outcomes learned in this run.
    pub outcomes: u64,
    pub tracking: Tracking,
    pub accuracy: Accuracy,
    pub updates: UpdateFrequency,
    pub correlation: Correlations,
    pub policy_value: PolicyValue,
    pub experiments: Vec<ExperimentResults>,
    /// The win rate of the conversations each model version served, all time, oldest version
    /// first (version 0: the priors, before the first publish). Reports stored before it
    /// existed have none.
    #[serde(default)]
    pub win_rate_by_version: Vec<VersionWinRate>,
}

/// One point of the learning curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VersionWinRate {
    pub version: u64,
    pub win_rate: Proportion,
}

/// Event tracking rate: events found stored against events the outcomes imply.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tracking {
    pub run: Proportion,
    pub all_time: Proportion,
}

/// Pattern detection accuracy on the detections clients labelled, all time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub precision: Proportion,
    pub recall: Proportion,
    /// Labels received in this run.
    pub labels_in_run: u64,
    pub patterns: BTreeMap<String, PatternAccuracy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PatternAccuracy {
    pub precision: Proportion,
    pub recall: Proportion,
    /// The confidence multiplier the published model uses (1 until enough labels).
    pub calibration: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpdateFrequency {
    /// Versions published in the 24 hours up to this run, this one included.
    pub versions_last_24h: u64,
    /// Mean time between the newest kept versions; `None` for the first.
    pub mean_hours_between: Option<f64>,
    pub outcomes_per_update: f64,
}

/// How winning correlates with a pattern being seen, or a strategy being used, in a
/// conversation; all time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Correlations {
    pub patterns: BTreeMap<String, OutcomeCorrelation>,
    /// Per family (`objection`, `buying_signal`, `question`, ...): a pattern of it seen or not.
    #[serde(default)]
    pub families: BTreeMap<String, OutcomeCorrelation>,
    pub strategies: BTreeMap<String, OutcomeCorrelation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OutcomeCorrelation {
    pub win_rate_with: Proportion,
    pub win_rate_without: Proportion,
    /// `None` when phi is undefined (every conversation has it, or none won).
    pub phi: Option<Correlation>,
}

/// The off-policy estimate of the new model's greedy policy on this run's decisions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PolicyValue {
    /// Credit-weighted win rate of the decisions as they were made.
    pub logged: Option<f64>,
    /// Self-normalised inverse-propensity estimate for the new greedy policy.
    pub greedy_estimate: Option<f64>,
    /// Effective sample size of that estimate, `(Σw)² / Σw²`.
    pub effective_sample_size: f64,
    pub decisions: u64,
}

/// An experiment's results table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentResults {
    pub experiment: String,
    /// The configuration version whose conversations this table counts (0: the built-in one,
    /// and every table written before versions existed).
    #[serde(default)]
    pub config_version: u64,
    /// Every configuration version the table counts, newest first: those with the same split
    /// of this experiment (`config_version` is the first).
    #[serde(default)]
    pub config_versions: Vec<u64>,
    pub control: String,
    pub srm: Option<SampleRatio>,
    pub variants: Vec<VariantResult>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleRatio {
    pub chi_square: f64,
    pub p_value: f64,
    /// `p_value < 0.001`: the split does not follow the weights; distrust the table.
    pub mismatch: bool,
}

/// One row of an experiment's results table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantResult {
    pub variant: String,
    /// Configured weight; 0 for a variant no longer configured.
    pub weight: u32,
    pub conversations: u64,
    pub wins: u64,
    pub win_rate: f64,
    pub win_rate_interval: (f64, f64),
    /// `p / p_control - 1`; `None` for control, or when an arm has no win.
    pub lift: Option<f64>,
    pub lift_interval: Option<(f64, f64)>,
    pub probability_to_beat_control: Option<f64>,
}

/// The labels of one turn and the message they are about: what the detector layer learns.
#[derive(Debug, Clone, Default)]
struct TurnLabels {
    /// The message; `None` when the store keeps only hashes.
    text: Option<String>,
    /// The message's position: 0 for a conversation's first.
    position: u32,
    /// (pattern or family, correct).
    labels: Vec<(String, bool)>,
}

impl TurnLabels {
    fn add(&mut self, turn: u32, text: Option<&String>, pattern: &str, correct: bool) {
        self.position = turn.saturating_sub(1);
        if self.text.is_none() {
            self.text = text.cloned();
        }
        self.labels.push((pattern.to_owned(), correct));
    }
}

/// A label as the learner reads it, from an outcome or from the labels route.
struct LabelView<'l> {
    conversation: &'l str,
    turn: u32,
    pattern: &'l str,
    correct: bool,
    confidence: Option<f64>,
    calibrated: bool,
    text: Option<&'l String>,
}

/// Learns from a batch of outcomes on top of the previous model version.
#[derive(Debug, Clone)]
pub struct Learner<'a> {
    playbook: &'a Playbook,
    model: Model,
    state: LearningState,
    outcomes: u64,
    watermark: Option<Cursor>,
    run_events: EventTally,
    run_labels: u64,
    /// Credited decisions of the batch: (context, strategy, probability, credit, won).
    decisions: Vec<(String, String, f64, f64, bool)>,
    label_watermark: Option<LabelCursor>,
    /// The labelled messages of the batch, for the detector layer.
    labelled: Vec<TurnLabels>,
    /// The shipped detector weights the layer is learned over; none: no layer is learned.
    base: Option<Weights<'a>>,
    layer_settings: LayerSettings,
}

impl<'a> Learner<'a> {
    pub fn new(playbook: &'a Playbook, previous: Option<&ModelVersion>) -> Learner<'a> {
        let mut state: LearningState = previous.map(|v| v.state.clone()).unwrap_or_default();
        // Tallies kept before configuration versions existed were all assigned under the
        // built-in configuration, version 0.
        if state.experiments_by_config.is_empty() && !state.experiments.is_empty() {
            state
                .experiments_by_config
                .insert(0, state.experiments.clone());
        }
        Learner {
            playbook,
            model: previous.map(|v| v.model.clone()).unwrap_or_default(),
            state,
            outcomes: 0,
            watermark: previous.and_then(|v| v.watermark.clone()),
            run_events: EventTally::default(),
            run_labels: 0,
            decisions: Vec::new(),
            label_watermark: previous.and_then(|v| v.label_watermark.clone()),
            labelled: Vec::new(),
            base: None,
            layer_settings: LayerSettings::default(),
        }
    }

    /// How the detector layer learns (the defaults unless told).
    pub fn with_layer_settings(mut self, settings: LayerSettings) -> Learner<'a> {
        self.layer_settings = settings;
        self
    }

    /// Learns the tenant's detector layer over `base` from the batch's labels.
    pub fn with_detector(mut self, base: impl Into<Weights<'a>>) -> Learner<'a> {
        self.base = Some(base.into());
        self
    }

    /// Labels learned so far in this batch (with outcomes and on their own).
    pub fn labels(&self) -> u64 {
        self.run_labels
    }

    /// Learns labels stored after the fact; they must come in cursor order, each once.
    pub fn learn_labels(&mut self, labels: &[StoredLabel]) {
        for label in labels {
            self.label_watermark = Some(label.cursor());
        }
        self.take_labels(labels.iter().map(|l| LabelView {
            conversation: l.conversation_id.as_str(),
            turn: l.turn,
            pattern: &l.pattern,
            correct: l.correct,
            confidence: l.confidence,
            calibrated: l.calibrated,
            text: l.text.as_ref(),
        }));
    }

    /// Counts labels in the tallies, and keeps each labelled message, with its labels, for the
    /// detector layer.
    fn take_labels<'l>(&mut self, labels: impl Iterator<Item = LabelView<'l>>) {
        let mut turns: BTreeMap<(&str, u32), TurnLabels> = BTreeMap::new();
        for label in labels {
            self.count_label(
                label.pattern,
                label.correct,
                label.confidence,
                label.calibrated,
            );
            turns
                .entry((label.conversation, label.turn))
                .or_default()
                .add(label.turn, label.text, label.pattern, label.correct);
        }
        self.labelled
            .extend(turns.into_values().filter(|t| t.text.is_some()));
    }

    /// Outcomes learned so far in this batch.
    pub fn outcomes(&self) -> u64 {
        self.outcomes
    }

    /// Learns from one outcome; outcomes must come in cursor order, each once.
    pub fn learn(&mut self, outcome: &OutcomeRecord) {
        let won = outcome.outcome.is_win();
        self.outcomes += 1;
        self.watermark = Some(outcome.cursor());

        self.state.overall.add(won);
        self.state
            .by_model_version
            .entry(outcome.model_version)
            .or_default()
            .add(won);
        for pattern in outcome.patterns_seen.keys() {
            self.state
                .by_pattern
                .entry(pattern.clone())
                .or_default()
                .add(won);
        }
        let families: std::collections::BTreeSet<&str> = outcome
            .patterns_seen
            .keys()
            .map(|p| crate::domain::detector::family(p))
            .collect();
        for name in families {
            self.state
                .by_family
                .entry(name.to_owned())
                .or_default()
                .add(won);
        }
        let mut strategies: Vec<&str> = outcome
            .strategies_used
            .iter()
            .map(|u| u.strategy.as_str())
            .collect();
        strategies.sort_unstable();
        strategies.dedup();
        for strategy in strategies {
            self.state
                .by_strategy
                .entry(strategy.to_owned())
                .or_default()
                .add(won);
        }
        for (experiment, variant) in &outcome.experiments {
            self.state
                .experiments
                .entry(experiment.clone())
                .or_default()
                .entry(variant.clone())
                .or_default()
                .add(won);
            self.state
                .experiments_by_config
                .entry(outcome.config_version)
                .or_default()
                .entry(experiment.clone())
                .or_default()
                .entry(variant.clone())
                .or_default()
                .add(won);
        }
        while self.state.experiments_by_config.len() > CONFIGS_KEPT {
            self.state.experiments_by_config.pop_first();
        }
        // A model version is one DynamoDB item (400 KB): the oldest versions' tallies go first.
        while self.state.experiments_by_config.len() > 1
            && json_len(&self.state.experiments_by_config) > MAX_TALLY_BYTES
        {
            self.state.experiments_by_config.pop_first();
        }

        self.count_events(outcome);
        self.credit(outcome, won);
        self.count_labels(outcome);
    }

    fn count_events(&mut self, outcome: &OutcomeRecord) {
        // The exchanges at log positions 1..=turns: each was recorded and answered, or the
        // outcome could not have been built from them.
        let exchanges = u64::from(outcome.turns);
        for tally in [&mut self.run_events, &mut self.state.exchanges] {
            tally.expected += exchanges;
            tally.recorded += exchanges;
        }
    }

    /// Takes the tenant's tracking counters as read now. The backlog's growth since the
    /// previous run counts as answered and not recorded in this run; the all-time rate sets
    /// every exchange recorded against those and the backlog as it stands, so recovering the
    /// backlog (the spool drained, a log replayed) brings it back to 1.
    pub fn note_tracking(&mut self, counts: TrackingCounts) {
        let backlog = counts.backlog();
        self.run_events.expected += backlog.saturating_sub(self.state.backlog_seen);
        self.state.backlog_seen = backlog;
    }

    fn credit(&mut self, outcome: &OutcomeRecord, won: bool) {
        let choices: Vec<(&str, &str, f64)> = outcome
            .strategies_used
            .iter()
            .filter_map(|u| {
                let context = if u.context.is_empty() {
                    u.patterns
                        .iter()
                        .find(|p| self.playbook.candidates(p).is_some())
                        .map_or("none", String::as_str)
                } else {
                    u.context.as_str()
                };
                let candidates = self.playbook.candidates(context)?;
                (candidates.len() > 1 && candidates.contains(&u.strategy)).then_some((
                    context,
                    u.strategy.as_str(),
                    u.probability,
                ))
            })
            .collect();
        if choices.is_empty() {
            return;
        }
        let credit = 1.0 / choices.len() as f64;
        for (context, strategy, probability) in choices {
            let prior = self.playbook.posterior(&self.model, context, strategy);
            let posterior = self
                .model
                .posteriors
                .entry(context.to_owned())
                .or_default()
                .entry(strategy.to_owned())
                .or_insert(prior);
            if won {
                posterior.alpha += credit;
            } else {
                posterior.beta += credit;
            }
            self.decisions.push((
                context.to_owned(),
                strategy.to_owned(),
                probability,
                credit,
                won,
            ));
        }
    }

    fn count_labels(&mut self, outcome: &OutcomeRecord) {
        let conversation = outcome.conversation_id.as_str();
        self.take_labels(outcome.labels.iter().map(|l| LabelView {
            conversation,
            turn: l.turn,
            pattern: &l.pattern,
            correct: l.correct,
            confidence: l.confidence,
            calibrated: l.calibrated,
            text: l.text.as_ref(),
        }));
    }

    fn count_label(
        &mut self,
        pattern: &str,
        correct: bool,
        confidence: Option<f64>,
        calibrated: bool,
    ) {
        self.run_labels += 1;
        let scale = self.model.calibration.get(pattern).copied().unwrap_or(1.0);
        let tally = self.state.labels.entry(pattern.to_owned()).or_default();
        match (confidence, correct) {
            (Some(confidence), correct) => {
                if correct {
                    tally.true_positives += 1;
                } else {
                    tally.false_positives += 1;
                }
                if calibrated {
                    tally.raw_confidence_sum += confidence / scale;
                } else if correct {
                    tally.unscaled_true_positives += 1;
                } else {
                    tally.unscaled_false_positives += 1;
                }
            }
            (None, true) => tally.misses += 1,
            // Not detected and not there: nothing to count.
            (None, false) => {}
        }
    }

    /// The layer after this batch's labelled messages, over the previous one.
    fn learn_layer(&mut self) {
        let Some(base) = self.base else {
            return;
        };
        if self.labelled.is_empty() {
            return;
        }
        let base = base.get();
        let examples: Vec<LayerExample> = self
            .labelled
            .drain(..)
            .filter_map(|turn| {
                let named: Vec<(&str, bool)> =
                    turn.labels.iter().map(|(p, c)| (p.as_str(), *c)).collect();
                Some(LayerExample {
                    targets: layer::targets(base, &named),
                    text: turn.text?,
                    turn: turn.position,
                })
            })
            .filter(|e| !e.targets.is_empty())
            .collect();
        if examples.is_empty() {
            return;
        }
        let previous = self.model.detector.as_ref();
        let learned = previous.map_or(0, |d| d.labels_learned);
        // A layer learned over other weights (or unreadable) is not built on.
        let start = previous
            .and_then(DetectorLayer::model)
            .filter(|l| l.version == layer::layer_version(base) && l.labels == base.labels);
        let next = layer::learn(base, start, &examples, self.layer_settings);
        self.model.detector = Some(DetectorLayer::new(&next, learned + examples.len() as u64));
    }

    fn recalibrate(&mut self) {
        for (pattern, tally) in &self.state.labels {
            // A miss is an instance the pattern's confidence understated: it counts as a right
            // detection, at the threshold's confidence at least, so a pattern scaled below the
            // threshold comes back when labels keep saying it was missed.
            let scaled_right = tally
                .true_positives
                .saturating_sub(tally.unscaled_true_positives);
            let detected = tally
                .detected()
                .saturating_sub(tally.unscaled_true_positives + tally.unscaled_false_positives);
            let instances = detected + tally.misses;
            if instances < CALIBRATION_MIN_LABELS {
                continue;
            }
            let right = scaled_right + tally.misses;
            let precision = (right as f64 + 1.0) / (instances as f64 + 2.0);
            let confidence_sum = tally.raw_confidence_sum + MISS_CONFIDENCE * tally.misses as f64;
            if confidence_sum <= 0.0 {
                continue;
            }
            let mean_confidence = confidence_sum / instances as f64;
            let scale =
                (precision / mean_confidence).clamp(CALIBRATION_RANGE.0, CALIBRATION_RANGE.1);
            self.model
                .calibration
                .insert(pattern.clone(), (scale * 1000.0).round() / 1000.0);
        }
    }

    /// The version that follows `previous`, with this batch learned, and its report.
    pub fn finish(
        mut self,
        configs: &ConfigVersions,
        previous: Option<&ModelVersion>,
        now: Millis,
    ) -> ModelVersion {
        self.recalibrate();
        self.learn_layer();
        let version = previous.map_or(1, |v| v.version + 1);
        self.state.publishes.push(now);
        if self.state.publishes.len() > PUBLISHES_KEPT {
            let excess = self.state.publishes.len() - PUBLISHES_KEPT;
            self.state.publishes.drain(..excess);
        }
        let outcomes_learned = previous.map_or(0, |v| v.outcomes_learned) + self.outcomes;
        let report = RunReport {
            version,
            at: now,
            outcomes: self.outcomes,
            tracking: Tracking {
                run: Proportion::new(self.run_events.recorded, self.run_events.expected),
                all_time: Proportion::new(
                    self.state.exchanges.recorded,
                    self.state.exchanges.expected + self.state.backlog_seen,
                ),
            },
            accuracy: accuracy(&self.state, &self.model, self.run_labels),
            updates: update_frequency(&self.state.publishes, now, version, outcomes_learned),
            correlation: correlations(&self.state),
            policy_value: policy_value(self.playbook, &self.model, &self.decisions),
            experiments: experiment_results(configs, &self.state),
            win_rate_by_version: self
                .state
                .by_model_version
                .iter()
                .map(|(&version, tally)| VersionWinRate {
                    version,
                    win_rate: Proportion::new(tally.wins, tally.conversations),
                })
                .collect(),
        };
        ModelVersion {
            version,
            published_at: now,
            watermark: self.watermark,
            label_watermark: self.label_watermark,
            outcomes_learned,
            model: self.model,
            state: self.state,
            report: Some(report),
            activated_from: None,
        }
    }
}

fn accuracy(state: &LearningState, model: &Model, labels_in_run: u64) -> Accuracy {
    let mut total = LabelTally::default();
    let mut patterns = BTreeMap::new();
    for (pattern, tally) in &state.labels {
        total.true_positives += tally.true_positives;
        total.false_positives += tally.false_positives;
        total.misses += tally.misses;
        patterns.insert(
            pattern.clone(),
            PatternAccuracy {
                precision: Proportion::new(tally.true_positives, tally.detected()),
                recall: Proportion::new(tally.true_positives, tally.true_positives + tally.misses),
                calibration: model.calibration.get(pattern).copied().unwrap_or(1.0),
            },
        );
    }
    Accuracy {
        precision: Proportion::new(total.true_positives, total.detected()),
        recall: Proportion::new(total.true_positives, total.true_positives + total.misses),
        labels_in_run,
        patterns,
    }
}

fn update_frequency(
    publishes: &[Millis],
    now: Millis,
    version: u64,
    outcomes_learned: u64,
) -> UpdateFrequency {
    let day_ago = now.0.saturating_sub(DAY_MS);
    let versions_last_24h = publishes.iter().filter(|t| t.0 >= day_ago).count() as u64;
    let mean_hours_between = match (publishes.first(), publishes.last()) {
        (Some(first), Some(last)) if publishes.len() > 1 => {
            Some(last.0.saturating_sub(first.0) as f64 / (publishes.len() - 1) as f64 / 3_600_000.0)
        }
        _ => None,
    };
    UpdateFrequency {
        versions_last_24h,
        mean_hours_between,
        outcomes_per_update: outcomes_learned as f64 / version.max(1) as f64,
    }
}

fn correlation(feature: Tally, overall: Tally) -> OutcomeCorrelation {
    let without = Tally {
        conversations: overall.conversations.saturating_sub(feature.conversations),
        wins: overall.wins.saturating_sub(feature.wins),
    };
    OutcomeCorrelation {
        win_rate_with: Proportion::new(feature.wins, feature.conversations),
        win_rate_without: Proportion::new(without.wins, without.conversations),
        phi: phi(
            feature.wins,
            feature.conversations - feature.wins,
            without.wins,
            without.conversations - without.wins,
        ),
    }
}

fn correlations(state: &LearningState) -> Correlations {
    let table = |tallies: &BTreeMap<String, Tally>| {
        tallies
            .iter()
            .map(|(name, tally)| (name.clone(), correlation(*tally, state.overall)))
            .collect()
    };
    Correlations {
        patterns: table(&state.by_pattern),
        families: table(&state.by_family),
        strategies: table(&state.by_strategy),
    }
}

fn policy_value(
    playbook: &Playbook,
    model: &Model,
    decisions: &[(String, String, f64, f64, bool)],
) -> PolicyValue {
    let mut greedy: BTreeMap<&str, Option<String>> = BTreeMap::new();
    let (mut logged_sum, mut logged_weight) = (0.0, 0.0);
    let (mut ips_sum, mut ips_weight, mut ips_square) = (0.0, 0.0, 0.0);
    for (context, strategy, probability, credit, won) in decisions {
        let reward = if *won { 1.0 } else { 0.0 };
        logged_sum += credit * reward;
        logged_weight += credit;
        let best = greedy.entry(context.as_str()).or_insert_with(|| {
            playbook.candidates(context).and_then(|candidates| {
                candidates
                    .iter()
                    .max_by(|a, b| {
                        let (a, b) = (
                            playbook.posterior(model, context, a).mean(),
                            playbook.posterior(model, context, b).mean(),
                        );
                        a.total_cmp(&b)
                    })
                    .cloned()
            })
        });
        if best.as_deref() == Some(strategy.as_str()) && *probability > 0.0 {
            let w = credit / probability;
            ips_sum += w * reward;
            ips_weight += w;
            ips_square += w * w;
        }
    }
    PolicyValue {
        logged: (logged_weight > 0.0).then(|| logged_sum / logged_weight),
        greedy_estimate: (ips_weight > 0.0).then(|| ips_sum / ips_weight),
        effective_sample_size: if ips_square > 0.0 {
            ips_weight * ips_weight / ips_square
        } else {
            0.0
        },
        decisions: decisions.len() as u64,
    }
}

/// Configuration versions whose tallies a model version keeps, the newest, within
/// [`MAX_TALLY_BYTES`].
pub const CONFIGS_KEPT: usize = 20;
/// Configuration versions a report shows tables for, the newest with conversations, within
/// [`MAX_RESULTS_BYTES`].
pub const CONFIGS_REPORTED: usize = 10;
/// The most JSON the per-version tallies and the report's A/B tables may take in a model
/// version (a DynamoDB item holds 400 KB, and the rest of the version needs room): past it,
/// the oldest configuration versions are left out (the current one always stays).
pub const MAX_TALLY_BYTES: usize = 60_000;
pub const MAX_RESULTS_BYTES: usize = 120_000;

fn json_len<T: Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
}

/// The results tables: one per experiment and split, where a split is what a configuration
/// version gave new conversations of that experiment (its variants and the weight each got:
/// all to the control once stopped, all to the shipped variant once shipped). Versions with the
/// same split of an experiment (a playbook change leaves every split as it was) count in one
/// table; versions with different splits never do, so no sample-ratio check mixes two. The
/// current version's tables come first, with every experiment it configures (empty rows before
/// conversations arrive), then older splits with conversations, newest first. A table lists its
/// variants first, with their weights, then any variant seen but not configured (weight 0).
/// A version the run could not read, or an experiment no longer configured, gets a table of its
/// own with weight 0 everywhere and no sample-ratio check.
pub fn experiment_results(
    configs: &ConfigVersions,
    state: &LearningState,
) -> Vec<ExperimentResults> {
    /// Tables being filled: (experiment, split: (variant, weight) in order, or none), control,
    /// rows, and the versions counted, newest first.
    type Pool = (
        String,
        Option<Vec<(String, u32)>>,
        String,
        Vec<(String, u32, Tally)>,
        Vec<u64>,
    );
    let (empty, none) = (BTreeMap::new(), BTreeMap::new());
    let current = configs.current().version;
    let mut versions: Vec<u64> = vec![current];
    versions.extend(
        state
            .experiments_by_config
            .keys()
            .rev()
            .copied()
            .filter(|&v| v != current)
            .take(CONFIGS_REPORTED.saturating_sub(1)),
    );
    let mut pools: Vec<Pool> = Vec::new();
    let add = |pools: &mut Vec<Pool>, pool: Pool| {
        let (experiment, split, _, rows, versions) = &pool;
        let same = pools
            .iter_mut()
            .find(|p| split.is_some() && &p.0 == experiment && &p.1 == split);
        match same {
            Some(existing) => {
                for (name, weight, tally) in rows {
                    match existing.3.iter_mut().find(|r| &r.0 == name) {
                        Some(row) => {
                            row.2.conversations += tally.conversations;
                            row.2.wins += tally.wins;
                        }
                        None => existing.3.push((name.clone(), *weight, *tally)),
                    }
                }
                existing.4.extend(versions.iter().copied());
            }
            None => pools.push(pool),
        }
    };
    for version in versions {
        if version != current && json_len(&pools) > MAX_RESULTS_BYTES {
            break;
        }
        let tallies = state.experiments_by_config.get(&version).unwrap_or(&empty);
        let configured = configs
            .get(version)
            .map(|c| c.experiments.as_slice())
            .unwrap_or_default();
        for experiment in configured {
            let seen = tallies.get(&experiment.name).unwrap_or(&none);
            if version != current && seen.is_empty() {
                continue;
            }
            let control = experiment
                .control()
                .map(|v| v.name.clone())
                .unwrap_or_default();
            let split: Vec<(String, u32)> = experiment
                .variants
                .iter()
                .map(|v| (v.name.clone(), experiment.effective_weight(v)))
                .collect();
            let mut rows: Vec<(String, u32, Tally)> = split
                .iter()
                .map(|(name, weight)| {
                    (
                        name.clone(),
                        *weight,
                        seen.get(name).copied().unwrap_or_default(),
                    )
                })
                .collect();
            for (name, tally) in seen {
                if !rows.iter().any(|(n, _, _)| n == name) {
                    rows.push((name.clone(), 0, *tally));
                }
            }
            add(
                &mut pools,
                (
                    experiment.name.clone(),
                    Some(split),
                    control,
                    rows,
                    vec![version],
                ),
            );
        }
        for (name, seen) in tallies {
            if configured.iter().any(|e| &e.name == name) {
                continue;
            }
            let rows: Vec<(String, u32, Tally)> = seen
                .iter()
                .map(|(variant, tally)| (variant.clone(), 0, *tally))
                .collect();
            let control = rows.first().map(|r| r.0.clone()).unwrap_or_default();
            add(
                &mut pools,
                (name.clone(), None, control, rows, vec![version]),
            );
        }
    }
    pools
        .into_iter()
        .map(|(experiment, _, control, rows, versions)| {
            let mut results = table(&experiment, versions[0], &control, &rows);
            results.config_versions = versions;
            results
        })
        .collect()
}

/// One experiment's table from its rows (variant, weight, tally). The sample-ratio check covers
/// the variants with a configured weight.
pub fn table(
    experiment: &str,
    config_version: u64,
    control: &str,
    rows: &[(String, u32, Tally)],
) -> ExperimentResults {
    let configured: Vec<&(String, u32, Tally)> = rows.iter().filter(|r| r.1 > 0).collect();
    let srm = chi_square_gof(
        &configured
            .iter()
            .map(|r| r.2.conversations)
            .collect::<Vec<_>>(),
        &configured
            .iter()
            .map(|r| f64::from(r.1))
            .collect::<Vec<_>>(),
    )
    .map(|(chi_square, p_value)| SampleRatio {
        chi_square,
        p_value,
        mismatch: p_value < SRM_ALPHA,
    });
    let control_tally = rows
        .iter()
        .find(|r| r.0 == control)
        .map(|r| r.2)
        .unwrap_or_default();
    let variants = rows
        .iter()
        .map(|(variant, weight, tally)| {
            let is_control = variant == control;
            let lifted = (!is_control)
                .then(|| {
                    lift(
                        tally.wins,
                        tally.conversations,
                        control_tally.wins,
                        control_tally.conversations,
                    )
                })
                .flatten();
            VariantResult {
                variant: variant.clone(),
                weight: *weight,
                conversations: tally.conversations,
                wins: tally.wins,
                win_rate: Proportion::new(tally.wins, tally.conversations).rate,
                win_rate_interval: wilson(tally.wins, tally.conversations),
                lift: lifted.map(|l| l.value),
                lift_interval: lifted.map(|l| l.interval),
                probability_to_beat_control: (!is_control
                    && tally.conversations > 0
                    && control_tally.conversations > 0)
                    .then(|| {
                        probability_to_beat(
                            tally.wins,
                            tally.conversations,
                            control_tally.wins,
                            control_tally.conversations,
                        )
                    }),
            }
        })
        .collect();
    ExperimentResults {
        experiment: experiment.to_owned(),
        config_version,
        config_versions: vec![config_version],
        control: control.to_owned(),
        srm,
        variants,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::conversation::{LabelledDetection, Outcome, StrategyUse};
    use crate::domain::ids::ConversationId;
    use crate::domain::model::Beta;

    const CLOSE: f64 = 1e-12;

    #[track_caller]
    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < CLOSE,
            "{actual} where {expected} was expected"
        );
    }

    /// One strategy use: `context` empty stands for a record written before contexts were kept.
    fn used(turn: u32, context: &str, strategy: &str, probability: f64) -> StrategyUse {
        StrategyUse {
            turn,
            strategy: strategy.into(),
            probability,
            context: context.into(),
            patterns: Vec::new(),
        }
    }

    fn outcome(n: u64, outcome: Outcome, strategies_used: Vec<StrategyUse>) -> OutcomeRecord {
        OutcomeRecord {
            conversation_id: ConversationId::parse(&format!("c-{n}")).unwrap(),
            at: Millis(1_000 + n),
            model_version: 0,
            outcome,
            value: None,
            reason: None,
            turns: strategies_used.len() as u32,
            duration_ms: 0,
            patterns_seen: BTreeMap::new(),
            strategies_used,
            experiments: BTreeMap::new(),
            config_version: 0,
            labels: Vec::new(),
        }
    }

    fn labelled(n: u64, pattern: &str, correct: bool, confidence: Option<f64>) -> OutcomeRecord {
        let mut record = outcome(n, Outcome::Lost, Vec::new());
        record.labels = vec![LabelledDetection {
            turn: 1,
            pattern: pattern.into(),
            correct,
            confidence,
            calibrated: true,
            text: None,
        }];
        record
    }

    /// Learns `outcomes` on top of `previous` and publishes the next version.
    fn run(
        playbook: &Playbook,
        previous: Option<&ModelVersion>,
        outcomes: &[OutcomeRecord],
    ) -> ModelVersion {
        let mut learner = Learner::new(playbook, previous);
        for outcome in outcomes {
            learner.learn(outcome);
        }
        learner.finish(&ConfigVersions::builtin(), previous, Millis(10_000))
    }

    fn posterior(version: &ModelVersion, context: &str, strategy: &str) -> Beta {
        version.model.posteriors[context][strategy]
    }

    #[test]
    fn the_decisions_of_a_conversation_share_one_unit_of_credit() {
        let playbook = Playbook::builtin();
        // The built-in playbook's contexts used here (the first strategy is preferred and starts
        // at Beta(2, 1), the others at Beta(1, 1)):
        //   objection.price: handle_price_objection, social_proof, ask_discovery_question
        //   none:            ask_discovery_question, propose_demo, social_proof
        //   opening:         ask_discovery_question, social_proof
        //   momentum:        close, propose_demo, explain_next_steps
        let mut legacy = used(4, "", "handle_price_objection", 0.6);
        legacy.patterns = vec!["objection.price".into()];
        let batch = [
            // Won, k = 3 decisions: turns 1, 2 and 4 (turn 4 has no logged context; its first
            // pattern the playbook knows, objection.price, is the context). Turn 3's strategy
            // is not one of its context's, and turn 5's context is unknown: neither is a
            // decision. Each decision gets 1/3:
            //   objection.price/social_proof           Beta(1, 1) -> Beta(1 + 1/3, 1)
            //   none/propose_demo                      Beta(1, 1) -> Beta(1 + 1/3, 1)
            //   objection.price/handle_price_objection Beta(2, 1) -> Beta(2 + 1/3, 1)
            outcome(
                1,
                Outcome::Won,
                vec![
                    used(1, "objection.price", "social_proof", 0.3),
                    used(2, "none", "propose_demo", 0.2),
                    used(3, "opening", "close", 1.0),
                    legacy,
                    used(5, "no.such.context", "close", 1.0),
                ],
            ),
            // Lost, k = 1: the whole unit to beta.
            //   objection.price/social_proof  Beta(4/3, 1) -> Beta(4/3, 2)
            outcome(
                2,
                Outcome::Lost,
                vec![used(1, "objection.price", "social_proof", 0.3)],
            ),
            // No decision counts as not won, k = 2: 1/2 to each beta.
            //   opening/social_proof  Beta(1, 1) -> Beta(1, 3/2)
            //   momentum/close        Beta(2, 1) -> Beta(2, 3/2)
            outcome(
                3,
                Outcome::NoDecision,
                vec![
                    used(1, "opening", "social_proof", 0.5),
                    used(2, "momentum", "close", 0.9),
                ],
            ),
            // Won, but no turn was a decision: no posterior moves.
            outcome(4, Outcome::Won, vec![used(1, "opening", "close", 1.0)]),
        ];
        let v1 = run(&playbook, None, &batch);
        let third = 1.0 / 3.0;
        let expected = [
            ("objection.price", "social_proof", 1.0 + third, 2.0),
            ("none", "propose_demo", 1.0 + third, 1.0),
            (
                "objection.price",
                "handle_price_objection",
                2.0 + third,
                1.0,
            ),
            ("opening", "social_proof", 1.0, 1.5),
            ("momentum", "close", 2.0, 1.5),
        ];
        for (context, strategy, alpha, beta) in expected {
            let got = posterior(&v1, context, strategy);
            close(got.alpha, alpha);
            close(got.beta, beta);
        }
        // Nothing else was credited: five posteriors in four contexts.
        let stored: usize = v1.model.posteriors.values().map(BTreeMap::len).sum();
        assert_eq!(stored, 5, "{:?}", v1.model.posteriors);
        // Each conversation with a decision added exactly one unit over the priors (1 + 1 + 1),
        // the one without added none: (4/3 + 2) + (4/3 + 1) + (7/3 + 1) + (1 + 3/2) + (2 + 3/2)
        // minus the priors 2 + 2 + 3 + 2 + 3 is 3.
        let playbook = &playbook;
        let added: f64 = v1
            .model
            .posteriors
            .iter()
            .flat_map(|(context, strategies)| {
                strategies.iter().map(move |(strategy, b)| {
                    let prior = playbook.posterior(&Model::default(), context, strategy);
                    b.alpha + b.beta - prior.alpha - prior.beta
                })
            })
            .sum();
        close(added, 3.0);
        assert_eq!(
            v1.state.overall,
            Tally {
                conversations: 4,
                wins: 2
            }
        );
        let report = v1.report.as_ref().unwrap();
        assert_eq!(
            report.policy_value.decisions, 6,
            "3 + 1 + 2 credited decisions"
        );

        // The next run starts from the published posterior, not from the prior again:
        // a win with k = 1 moves objection.price/social_proof from Beta(4/3, 2) to Beta(7/3, 2).
        let v2 = run(
            playbook,
            Some(&v1),
            &[outcome(
                5,
                Outcome::Won,
                vec![used(1, "objection.price", "social_proof", 0.3)],
            )],
        );
        let moved = posterior(&v2, "objection.price", "social_proof");
        close(moved.alpha, 2.0 + third);
        close(moved.beta, 2.0);
        assert_eq!(
            posterior(&v2, "momentum", "close"),
            posterior(&v1, "momentum", "close")
        );
    }

    #[test]
    fn calibration_is_the_labelled_precision_over_the_mean_raw_confidence() {
        let playbook = Playbook::builtin();
        let mut batch = Vec::new();
        let mut n = 0;
        let mut add = |pattern: &str, times: usize, correct: bool, confidence: Option<f64>| {
            for _ in 0..times {
                n += 1;
                batch.push(labelled(n, pattern, correct, confidence));
            }
        };
        // objection.price: 30 detections labelled right and 10 wrong, all at confidence 0.8;
        // 5 labelled present but not detected (misses, each right at confidence 0.7); 3 not
        // detected and not present (counted nowhere). 45 >= 30 labelled instances, 35 right:
        //   posterior mean precision (35 + 1) / (45 + 2) = 36/47 = 0.765957...
        //   mean raw confidence (40 x 0.8 + 5 x 0.7) / 45 = 0.788888...
        //   multiplier 0.765957 / 0.788888 = 0.970932... -> 0.971
        //   precision 30/40 = 0.75, recall 30/(30 + 5) = 0.857142...
        add("objection.price", 30, true, Some(0.8));
        add("objection.price", 10, false, Some(0.8));
        add("objection.price", 5, true, None);
        add("objection.price", 3, false, None);
        // pain_point: 30 right at confidence 0.5: (30 + 1) / 32 / 0.5 = 1.9375, bounded to 1.25.
        add("pain_point", 30, true, Some(0.5));
        // objection.timing: 29 wrong at 0.9, one short of the minimum: no multiplier yet.
        add("objection.timing", 29, false, Some(0.9));
        let v1 = run(&playbook, None, &batch);
        let calibration = &v1.model.calibration;
        assert_eq!(calibration.get("objection.price"), Some(&0.971));
        assert_eq!(calibration.get("pain_point"), Some(&1.25));
        assert_eq!(calibration.get("objection.timing"), None);
        let accuracy = &v1.report.as_ref().unwrap().accuracy;
        assert_eq!(accuracy.labels_in_run, 48 + 30 + 29);
        let price = accuracy.patterns["objection.price"];
        assert_eq!(
            (price.precision.successes, price.precision.trials),
            (30, 40)
        );
        assert_eq!((price.recall.successes, price.recall.trials), (30, 35));
        close(price.precision.rate, 0.75);
        close(price.recall.rate, 30.0 / 35.0);
        assert_eq!(price.calibration, 0.971);
        assert_eq!(accuracy.patterns["objection.timing"].calibration, 1.0);
        // All patterns: tp 30 + 30 + 0, detections 40 + 30 + 29, misses 5.
        assert_eq!(
            (accuracy.precision.successes, accuracy.precision.trials),
            (60, 99)
        );
        assert_eq!(
            (accuracy.recall.successes, accuracy.recall.trials),
            (60, 65)
        );

        // The next run: detections made under the 0.971 multiplier report 0.8 x 0.971 = 0.7768;
        // the learner divides the multiplier out again, so the raw mean stays 0.8.
        // objection.price gets 4 more wrong labels: tp = 30, fp = 14, misses 5:
        //   (35 + 1) / (49 + 2) = 0.705882..., over (44 x 0.8 + 5 x 0.7) / 49 = 0.789795...
        //   = 0.893765... -> 0.894
        // objection.timing gets its 30th label (wrong, 0.9, no multiplier yet):
        //   (0 + 1) / (30 + 2) = 0.03125, / 0.9 = 0.0347..., bounded to 0.5
        let mut next = Vec::new();
        for i in 0..4 {
            next.push(labelled(
                1_000 + i,
                "objection.price",
                false,
                Some(0.8 * 0.971),
            ));
        }
        next.push(labelled(2_000, "objection.timing", false, Some(0.9)));
        let v2 = run(&playbook, Some(&v1), &next);
        assert_eq!(v2.model.calibration.get("objection.price"), Some(&0.894));
        assert_eq!(v2.model.calibration.get("objection.timing"), Some(&0.5));
        assert_eq!(v2.model.calibration.get("pain_point"), Some(&1.25));
        let tally = v2.state.labels["objection.price"];
        assert_eq!(
            (tally.true_positives, tally.false_positives, tally.misses),
            (30, 14, 5)
        );
        close(tally.raw_confidence_sum / 44.0, 0.8);
        assert_eq!(v2.report.as_ref().unwrap().accuracy.labels_in_run, 5);
    }

    #[test]
    fn the_learning_curve_counts_conversations_by_the_version_that_served_them() {
        let playbook = Playbook::builtin();
        // Version 0 served 4 (1 won); version 1 served 3 (2 won), learned over two runs.
        let served = |n: u64, version: u64, won: bool| {
            let mut record = outcome(n, if won { Outcome::Won } else { Outcome::Lost }, vec![]);
            record.model_version = version;
            record
        };
        let first: Vec<OutcomeRecord> = (0..4).map(|n| served(n, 0, n == 0)).collect();
        let v1 = run(&playbook, None, &first);
        let second = vec![
            served(10, 1, true),
            served(11, 1, false),
            served(12, 1, true),
        ];
        let v2 = run(&playbook, Some(&v1), &second);
        let curve = &v2.report.as_ref().unwrap().win_rate_by_version;
        let points: Vec<(u64, u64, u64)> = curve
            .iter()
            .map(|p| (p.version, p.win_rate.successes, p.win_rate.trials))
            .collect();
        assert_eq!(points, vec![(0, 1, 4), (1, 2, 3)]);
        assert_eq!(
            curve[1].win_rate.interval,
            crate::domain::stats::wilson(2, 3)
        );
    }

    #[test]
    fn detections_the_calibration_did_not_scale_count_in_precision_but_not_in_its_fit() {
        let playbook = Playbook::builtin();
        // 30 cue detections at 0.9, 27 right: (27 + 1) / 32 / 0.9 = 0.972.
        let mut batch: Vec<OutcomeRecord> = (0..30)
            .map(|i| labelled(i, "objection.price", i >= 3, Some(0.9)))
            .collect();
        // 40 of the model's over a detector layer, at 0.99 and all wrong: unscaled, so they
        // would drag the multiplier down for the cues if they were fitted.
        for i in 0..40 {
            let mut record = labelled(100 + i, "objection.price", false, Some(0.99));
            record.labels[0].calibrated = false;
            batch.push(record);
        }
        let v1 = run(&playbook, None, &batch);
        assert_eq!(v1.model.calibration.get("objection.price"), Some(&0.972));
        let price = v1.report.unwrap().accuracy.patterns["objection.price"];
        assert_eq!(
            (price.precision.successes, price.precision.trials),
            (27, 70)
        );
    }

    #[test]
    fn a_family_counts_once_per_conversation_whichever_of_its_patterns_was_seen() {
        let playbook = Playbook::builtin();
        let seen = |n: u64, won: bool, patterns: &[&str]| {
            let mut record = outcome(n, if won { Outcome::Won } else { Outcome::Lost }, vec![]);
            record.patterns_seen = patterns.iter().map(|p| (p.to_string(), 1)).collect();
            record
        };
        let batch = [
            seen(1, false, &["objection.price", "objection.need"]),
            seen(2, false, &["objection.trust"]),
            seen(3, true, &["buying_signal.commitment"]),
            seen(4, true, &[]),
        ];
        let v1 = run(&playbook, None, &batch);
        let objection = v1.state.by_family["objection"];
        assert_eq!((objection.conversations, objection.wins), (2, 0));
        let report = v1.report.unwrap();
        let row = report.correlation.families["objection"];
        assert_eq!(
            (row.win_rate_with.trials, row.win_rate_without.successes),
            (2, 2)
        );
        assert!(row.phi.unwrap().phi < 0.0);
        assert_eq!(
            report.correlation.families["buying_signal"]
                .win_rate_with
                .successes,
            1
        );
    }

    #[test]
    fn a_pattern_scaled_below_the_threshold_comes_back_when_labels_say_it_was_missed() {
        let playbook = Playbook::builtin();
        // 40 detections at 0.8, 35 of them wrong: (5 + 1) / 42 / 0.8 = 0.18, bounded to 0.5.
        let mut batch = Vec::new();
        for i in 0..40 {
            batch.push(labelled(i, "objection.trust", i < 5, Some(0.8)));
        }
        let v1 = run(&playbook, None, &batch);
        assert_eq!(v1.model.calibration.get("objection.trust"), Some(&0.5));
        // Scaled to 0.5, nothing reaches 0.7: from now on the pattern is only ever missed. The
        // labels keep saying so, and the multiplier climbs back over 0.7 / 0.8 = 0.875.
        let mut version = v1;
        let mut back = None;
        for run_index in 0..10 {
            let misses: Vec<OutcomeRecord> = (0..20)
                .map(|i| labelled(1_000 * (run_index + 1) + i, "objection.trust", true, None))
                .collect();
            version = run(&playbook, Some(&version), &misses);
            let scale = version.model.calibration["objection.trust"];
            if scale * 0.8 >= 0.7 {
                back = Some(run_index + 1);
                break;
            }
        }
        assert!(back.is_some(), "{:?}", version.model.calibration);
    }

    #[test]
    fn the_policy_value_is_the_self_normalised_ips_estimate_of_the_new_greedy_choice() {
        let playbook = Playbook::builtin();
        let lost = Outcome::Lost;
        let batch = [
            outcome(
                1,
                Outcome::Won,
                vec![used(1, "opening", "social_proof", 0.25)],
            ),
            outcome(
                2,
                Outcome::Won,
                vec![used(1, "opening", "social_proof", 0.5)],
            ),
            outcome(
                3,
                lost,
                vec![used(1, "opening", "ask_discovery_question", 0.75)],
            ),
            outcome(
                4,
                lost,
                vec![used(1, "opening", "ask_discovery_question", 0.5)],
            ),
            outcome(5, lost, vec![used(1, "opening", "social_proof", 0.2)]),
            outcome(
                6,
                lost,
                vec![
                    used(1, "opening", "social_proof", 0.5),
                    used(2, "none", "ask_discovery_question", 0.8),
                ],
            ),
        ];
        // The new model after this batch (credit 1 each, 1/2 each for conversation 6):
        //   opening/social_proof           Beta(1, 1) + 2 wins, 1 + 1/2 losses = Beta(3, 2.5),
        //                                  mean 0.545
        //   opening/ask_discovery_question Beta(2, 1) + 2 losses = Beta(2, 3), mean 0.4
        //   none/ask_discovery_question    Beta(2, 1) + 1/2 loss = Beta(2, 1.5), mean 0.571,
        //                                  against the priors Beta(1, 1) (0.5) of the other two
        // so the greedy policy picks social_proof in opening and ask_discovery_question in none.
        //
        // Decisions (context, strategy, p, credit, reward), weight w = credit / p where the
        // decision matches the greedy choice:
        //   1 opening social_proof           0.25 1   1  greedy  w = 4
        //   2 opening social_proof           0.5  1   1  greedy  w = 2
        //   3 opening ask_discovery_question 0.75 1   0  -
        //   4 opening ask_discovery_question 0.5  1   0  -
        //   5 opening social_proof           0.2  1   0  greedy  w = 5
        //   6 opening social_proof           0.5  1/2 0  greedy  w = 1
        //   6 none    ask_discovery_question 0.8  1/2 0  greedy  w = 0.625
        // logged     = sum(credit x reward) / sum(credit) = 2 / 6 = 1/3
        // SNIPS      = sum(w x reward) / sum(w) = (4 + 2) / 12.625 = 48/101 = 0.475247...
        // ESS        = sum(w)^2 / sum(w^2) = 12.625^2 / (16 + 4 + 25 + 1 + 0.390625)
        //            = 159.390625 / 46.390625 = 10201/2969 = 3.435836...
        // (the unweighted win rate of the greedy-matching decisions would be 2/5 = 0.4)
        let v1 = run(&playbook, None, &batch);
        let sp = posterior(&v1, "opening", "social_proof");
        close(sp.alpha, 3.0);
        close(sp.beta, 2.5);
        let value = v1.report.as_ref().unwrap().policy_value;
        assert_eq!(value.decisions, 7);
        close(value.logged.unwrap(), 1.0 / 3.0);
        close(value.greedy_estimate.unwrap(), 48.0 / 101.0);
        close(value.effective_sample_size, 10_201.0 / 2_969.0);

        // One won decision of ask_discovery_question in opening: Beta(2, 1) -> Beta(3, 1)
        // (mean 0.75) against the prior Beta(1, 1) of social_proof: greedy is
        // ask_discovery_question, and the one decision matches it: w = 2, SNIPS 2/2 = 1, ESS 1.
        let v2 = run(
            &playbook,
            None,
            &[outcome(
                7,
                Outcome::Won,
                vec![used(1, "opening", "ask_discovery_question", 0.5)],
            )],
        );
        let value = v2.report.as_ref().unwrap().policy_value;
        close(value.greedy_estimate.unwrap(), 1.0);
        close(value.effective_sample_size, 1.0);
        // Two lost ones: Beta(2, 3) (mean 0.4) against Beta(1, 1) (0.5): greedy is social_proof,
        // which no decision used, so there is no estimate and no effective sample.
        let v3 = run(
            &playbook,
            None,
            &[
                outcome(
                    8,
                    lost,
                    vec![used(1, "opening", "ask_discovery_question", 0.5)],
                ),
                outcome(
                    9,
                    lost,
                    vec![used(1, "opening", "ask_discovery_question", 0.5)],
                ),
            ],
        );
        let value = v3.report.as_ref().unwrap().policy_value;
        assert_eq!(value.greedy_estimate, None);
        assert_eq!(value.effective_sample_size, 0.0);
        assert_eq!(value.logged, Some(0.0));
    }

    #[test]
    fn each_configuration_version_gets_its_own_table_and_sample_ratio_check() {
        use crate::domain::config::{ConfigVersions, TenantConfig};
        // Version 1 moves reply_tone from 50/50 to 90/10.
        let v1 = TenantConfig::builtin()
            .next(Millis(1), |config| {
                let tone = &mut config.experiments[0];
                assert_eq!(tone.name, "reply_tone");
                tone.variants[0].weight = 90;
                tone.variants[1].weight = 10;
                Ok(())
            })
            .unwrap();
        let configs = ConfigVersions::new(vec![v1]);
        let playbook = Playbook::builtin();
        let mut learner = Learner::new(&playbook, None);
        // 200 conversations under version 0, split 100/100; 200 under version 1, split 180/20.
        let mut n = 0;
        for (config_version, neutral, warm) in [(0, 100, 100), (1, 180, 20)] {
            for i in 0..(neutral + warm) {
                n += 1;
                let mut record = outcome(n, Outcome::Won, Vec::new());
                record.config_version = config_version;
                let variant = if i < neutral { "neutral" } else { "warm" };
                record.experiments = [("reply_tone".to_owned(), variant.to_owned())].into();
                learner.learn(&record);
            }
        }
        let version = learner.finish(&configs, None, Millis(10_000));
        let tables: Vec<&ExperimentResults> = version
            .report
            .as_ref()
            .unwrap()
            .experiments
            .iter()
            .filter(|t| t.experiment == "reply_tone")
            .collect();
        // The current version first, then the older one.
        let versions: Vec<u64> = tables.iter().map(|t| t.config_version).collect();
        assert_eq!(versions, [1, 0]);
        for table in &tables {
            let srm = table.srm.expect("a check");
            assert!(!srm.mismatch, "{table:?}");
            assert_eq!(
                table.variants.iter().map(|v| v.conversations).sum::<u64>(),
                200
            );
        }
        assert_eq!(
            (tables[0].variants[0].weight, tables[1].variants[0].weight),
            (90, 50)
        );
        // Mixed into one sample, either split's weights would call the split broken.
        let all = &version.state.experiments["reply_tone"];
        let mixed: Vec<(String, u32, Tally)> = [("neutral", 90), ("warm", 10)]
            .iter()
            .map(|(v, w)| ((*v).to_owned(), *w, all[*v]))
            .collect();
        assert!(
            table("reply_tone", 1, "neutral", &mixed)
                .srm
                .unwrap()
                .mismatch
        );
    }

    #[test]
    fn a_stopped_experiment_checks_no_split() {
        use crate::domain::config::{ConfigVersions, TenantConfig};
        let v1 = TenantConfig::builtin()
            .next(Millis(1), |config| {
                config.experiments[0].status = crate::domain::experiments::Status::Stopped;
                Ok(())
            })
            .unwrap();
        let configs = ConfigVersions::new(vec![v1]);
        let playbook = Playbook::builtin();
        let mut learner = Learner::new(&playbook, None);
        for n in 0..50 {
            let mut record = outcome(n, Outcome::Lost, Vec::new());
            record.config_version = 1;
            record.experiments = [("reply_tone".to_owned(), "neutral".to_owned())].into();
            learner.learn(&record);
        }
        let version = learner.finish(&configs, None, Millis(10_000));
        let report = version.report.unwrap();
        let tone = report
            .experiments
            .iter()
            .find(|t| t.experiment == "reply_tone" && t.config_version == 1)
            .unwrap();
        // Every new conversation goes to the control by design: no sample-ratio check applies.
        assert_eq!(tone.srm, None, "{tone:?}");
        let weights: Vec<u32> = tone.variants.iter().map(|v| v.weight).collect();
        assert_eq!(weights, [1, 0]);
    }

    #[test]
    fn versions_that_left_a_split_alone_count_in_one_table() {
        use crate::domain::config::{ConfigVersions, TenantConfig};
        // Version 1 changes the playbook only (a prior): every split stays as version 0's.
        let v1 = TenantConfig::builtin()
            .next(Millis(1), |config| {
                let mut playbook = serde_json::to_value(&config.playbook).unwrap();
                playbook["priors"] =
                    serde_json::json!({"none": {"social_proof": {"alpha": 3.0, "beta": 1.0}}});
                config.playbook = serde_json::from_value(playbook).unwrap();
                Ok(())
            })
            .unwrap();
        assert_eq!(v1.changes, ["playbook replaced"]);
        let configs = ConfigVersions::new(vec![v1]);
        let playbook = Playbook::builtin();
        let mut learner = Learner::new(&playbook, None);
        for n in 0..40u64 {
            let mut record = outcome(n, Outcome::Won, Vec::new());
            record.config_version = n % 2;
            let variant = if n % 4 < 2 { "neutral" } else { "warm" };
            record.experiments = [("reply_tone".to_owned(), variant.to_owned())].into();
            learner.learn(&record);
        }
        let version = learner.finish(&configs, None, Millis(10_000));
        let tables: Vec<&ExperimentResults> = version
            .report
            .as_ref()
            .unwrap()
            .experiments
            .iter()
            .filter(|t| t.experiment == "reply_tone")
            .collect();
        assert_eq!(tables.len(), 1, "{tables:?}");
        assert_eq!(tables[0].config_version, 1);
        assert_eq!(tables[0].config_versions, [1, 0]);
        let counted: Vec<u64> = tables[0].variants.iter().map(|v| v.conversations).collect();
        assert_eq!(counted, [20, 20]);
        assert!(!tables[0].srm.unwrap().mismatch);
    }
}
