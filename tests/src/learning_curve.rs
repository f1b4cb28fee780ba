//! The learning curve of a tenant's detector layer in a new domain: CaSiNo's campsite
//! negotiations (`shared/corpora/casino`), with the strategies that carry a family's meaning
//! mapped to it. The tenant starts from the shipped weights; labelled conversations arrive a
//! few at a time, each step one feedback run (`Learner::learn_labels`, then `finish`, the code
//! the feedback loop runs), and after each run detection (the published layer through
//! `Detector::detect_with`, as process_message detects) is measured on the domain's other
//! conversations, which no run learns from.
//!
//! The labels are what a client reviewing each conversation would send: for every detection of
//! a turn, whether its family is there; for every family there that was not detected, the
//! family's name as a miss. The dialogues alternate between the two halves, so both speakers of
//! a dialogue land in the same half.

use std::collections::{BTreeMap, BTreeSet};

use salesloop::domain::ids::ConversationId;
use salesloop::domain::decision::Playbook;
use salesloop::domain::detector::{Detector, FAMILIES, family};
use salesloop::domain::experiments::Experiments;
use salesloop::domain::labels::StoredLabel;
use salesloop::domain::learning::{Learner, ModelVersion};
use salesloop::domain::patterns::DEFAULT_THRESHOLD;
use salesloop::domain::time::Millis;
use serde::Deserialize;

use crate::detector_training::{Scores, Tally};
use crate::workspace_root;

/// The family a CaSiNo strategy carries, where one does.
pub fn strategy_family(strategy: &str) -> Option<&'static str> {
    match strategy {
        "elicit-pref" => Some("question"),
        "uv-part" => Some("objection"),
        "promote-coordination" => Some("buying_signal"),
        _ => None,
    }
}

#[derive(Debug, Clone, Deserialize)]
struct RawTurn {
    text: String,
    strategies: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawConversation {
    dialogue_id: u64,
    speaker: String,
    turns: Vec<RawTurn>,
}

/// One speaker's side of a dialogue: each message with the families its strategies carry.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub dialogue_id: u64,
    pub speaker: String,
    pub turns: Vec<(String, BTreeSet<String>)>,
}

/// Every conversation of the shipped CaSiNo file, in file order.
pub fn conversations() -> Vec<Conversation> {
    let path = workspace_root().join("shared/corpora/casino/annotated.jsonl");
    let raw = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    raw.lines()
        .map(|line| {
            let c: RawConversation = serde_json::from_str(line).expect("a CaSiNo line");
            Conversation {
                dialogue_id: c.dialogue_id,
                speaker: c.speaker,
                turns: c
                    .turns
                    .into_iter()
                    .map(|t| {
                        let families = t
                            .strategies
                            .iter()
                            .filter_map(|s| strategy_family(s))
                            .map(str::to_owned)
                            .collect();
                        (t.text, families)
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The conversations labels arrive from, and the unseen ones detection is measured on:
/// dialogues alternate between the two, in file order.
pub fn halves(all: &[Conversation]) -> (Vec<&Conversation>, Vec<&Conversation>) {
    let mut ids: Vec<u64> = all.iter().map(|c| c.dialogue_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let arriving: BTreeSet<u64> = ids.iter().step_by(2).copied().collect();
    all.iter().partition(|c| arriving.contains(&c.dialogue_id))
}

/// The families a detection list names.
fn said(detections: &[salesloop::domain::conversation::Detection]) -> BTreeSet<String> {
    detections
        .iter()
        .map(|d| family(&d.pattern).to_owned())
        .filter(|f| FAMILIES.contains(&f.as_str()))
        .collect()
}

/// Detection with the version's layer and calibration, scored on `conversations`.
pub fn measure(
    detector: &Detector,
    version: &ModelVersion,
    conversations: &[&Conversation],
) -> Scores {
    let layer = version.model.detector.as_ref().and_then(|l| l.model());
    let mut scores = Scores::default();
    for conversation in conversations {
        for (turn, (text, gold)) in conversation.turns.iter().enumerate() {
            let found = detector.detect_with(
                text,
                turn as u32,
                DEFAULT_THRESHOLD,
                &version.model.calibration,
                layer,
            );
            let names: Vec<String> = found.iter().map(|d| d.pattern.clone()).collect();
            scores.add_turn(&said(&found), &names, gold);
        }
    }
    scores
}

/// The labels a client reviewing `conversation` sends, given what the version detected there.
pub fn review(
    detector: &Detector,
    version: &ModelVersion,
    conversation: &Conversation,
    id: &ConversationId,
    at: Millis,
) -> Vec<StoredLabel> {
    let layer = version.model.detector.as_ref().and_then(|l| l.model());
    let mut labels = Vec::new();
    for (index, (text, gold)) in conversation.turns.iter().enumerate() {
        let found = detector.detect_with(
            text,
            index as u32,
            DEFAULT_THRESHOLD,
            &version.model.calibration,
            layer,
        );
        let mut named = BTreeMap::new();
        for d in &found {
            named
                .entry(d.pattern.clone())
                .or_insert((gold.contains(family(&d.pattern)), Some(d.confidence)));
        }
        let detected = said(&found);
        for f in gold.difference(&detected) {
            named.insert(f.clone(), (true, None));
        }
        for (pattern, (correct, confidence)) in named {
            labels.push(StoredLabel {
                conversation_id: id.clone(),
                turn: index as u32 + 1,
                pattern,
                correct,
                at,
                text: Some(text.clone()),
                confidence,
            });
        }
    }
    labels
}

/// One point of the curve: the run after `conversations` labelled conversations.
#[derive(Debug, Clone)]
pub struct Point {
    pub conversations: usize,
    pub labels: u64,
    pub version: u64,
    pub scores: Scores,
    /// Size of the published layer's weights in the model version (base64), bytes.
    pub layer_bytes: usize,
}

impl Point {
    pub fn micro(&self) -> Tally {
        self.scores.micro
    }
}

/// The curve at each number of labelled conversations in `steps` (increasing; 0 is the shipped
/// model), one feedback run a step.
pub fn curve(steps: &[usize]) -> Vec<Point> {
    let all = conversations();
    let (arriving, unseen) = halves(&all);
    let detector = Detector::builtin();
    let playbook = Playbook::builtin();
    let experiments = Experiments::builtin();
    let mut version = ModelVersion::priors();
    let mut done = 0usize;
    let mut labels_sent = 0u64;
    let mut points = Vec::new();
    for (run, &step) in steps.iter().enumerate() {
        let step = step.min(arriving.len());
        if step > done {
            let mut learner = Learner::new(&playbook, Some(&version)).with_detector(&detector.model);
            let mut labels = Vec::new();
            for (i, conversation) in arriving[done..step].iter().enumerate() {
                let id = ConversationId::parse(&format!(
                    "casino-{}-{}",
                    conversation.dialogue_id, conversation.speaker
                ))
                .expect("a conversation id");
                let at = Millis(1_000 * (run as u64 + 1) + i as u64);
                labels.extend(review(&detector, &version, conversation, &id, at));
            }
            labels.sort_by_key(StoredLabel::cursor);
            labels_sent += labels.len() as u64;
            learner.learn_labels(&labels);
            version = learner.finish(&experiments, Some(&version), Millis(1_000 * (run as u64 + 1)));
            done = step;
        }
        points.push(Point {
            conversations: done,
            labels: labels_sent,
            version: version.version,
            scores: measure(&detector, &version, &unseen),
            layer_bytes: version
                .model
                .detector
                .as_ref()
                .map_or(0, |l| l.weights.len()),
        });
    }
    points
}
