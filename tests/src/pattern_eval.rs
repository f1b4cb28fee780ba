//! Precision and recall of the pattern detector on labelled utterances written for salesloop:
//! `tests/fixtures/patterns/labelled.jsonl` (320 lines; the catalog was tuned on it, 43 lines
//! negate a cue that must not count) and `heldout.jsonl` (written afterwards, by someone who had
//! not seen the catalog or the first set: the honest estimate for new conversations).

use std::collections::{BTreeMap, BTreeSet};

use salesloop::domain::conversation::Detection;
use salesloop::domain::detector::Detector;
use salesloop::domain::patterns::{Catalog, DEFAULT_THRESHOLD};
use salesloop::domain::stats::wilson;
use serde_json::Value;

/// Counts for one pattern, or for all together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub true_positives: u32,
    pub false_positives: u32,
    pub false_negatives: u32,
}

impl Tally {
    pub fn precision(&self) -> f64 {
        let detected = self.true_positives + self.false_positives;
        if detected == 0 {
            1.0
        } else {
            f64::from(self.true_positives) / f64::from(detected)
        }
    }

    pub fn recall(&self) -> f64 {
        let labelled = self.true_positives + self.false_negatives;
        if labelled == 0 {
            1.0
        } else {
            f64::from(self.true_positives) / f64::from(labelled)
        }
    }
}

/// The evaluation of a catalog on the labelled set.
#[derive(Debug, Default)]
pub struct Evaluation {
    pub utterances: usize,
    pub per_pattern: BTreeMap<String, Tally>,
    pub overall: Tally,
    /// Utterances where detection and labels disagree: (text, missed, extra).
    pub mistakes: Vec<(String, Vec<String>, Vec<String>)>,
}

/// The set the catalog was tuned on.
pub const TUNING_SET: &str = "labelled.jsonl";
/// The set written blind to the catalog.
pub const HELDOUT_SET: &str = "heldout.jsonl";

pub fn labelled_set(file: &str) -> Vec<(String, BTreeSet<String>)> {
    let path = crate::workspace_root()
        .join("tests/fixtures/patterns")
        .join(file);
    let raw = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    raw.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect("labelled line is JSON");
            let text = value["text"].as_str().expect("text").to_owned();
            let patterns = value["patterns"]
                .as_array()
                .expect("patterns")
                .iter()
                .map(|p| p.as_str().expect("pattern name").to_owned())
                .collect();
            (text, patterns)
        })
        .collect()
}

pub fn evaluate(catalog: &Catalog, file: &str) -> Evaluation {
    let no_calibration = BTreeMap::new();
    evaluate_by(file, |text| {
        catalog.detect(text, DEFAULT_THRESHOLD, &no_calibration)
    })
}

/// The evaluation of the learned detector (cues and model) on a labelled set. An utterance is
/// detected as a conversation's second message (turn 1): these stand-alone lines have no place
/// in a conversation.
pub fn evaluate_with(detector: &Detector, file: &str) -> Evaluation {
    let no_calibration = BTreeMap::new();
    evaluate_by(file, |text| {
        detector.detect(text, 1, DEFAULT_THRESHOLD, &no_calibration)
    })
}

fn evaluate_by(file: &str, detect: impl Fn(&str) -> Vec<Detection>) -> Evaluation {
    let mut evaluation = Evaluation::default();
    for (text, labels) in labelled_set(file) {
        evaluation.utterances += 1;
        let found: BTreeSet<String> = detect(&text).into_iter().map(|d| d.pattern).collect();
        for name in labels.union(&found) {
            let tally = evaluation.per_pattern.entry(name.clone()).or_default();
            match (labels.contains(name), found.contains(name)) {
                (true, true) => tally.true_positives += 1,
                (false, true) => tally.false_positives += 1,
                (true, false) => tally.false_negatives += 1,
                (false, false) => {}
            }
        }
        let missed: Vec<String> = labels.difference(&found).cloned().collect();
        let extra: Vec<String> = found.difference(&labels).cloned().collect();
        if !missed.is_empty() || !extra.is_empty() {
            evaluation.mistakes.push((text, missed, extra));
        }
    }
    for tally in evaluation.per_pattern.values() {
        evaluation.overall.true_positives += tally.true_positives;
        evaluation.overall.false_positives += tally.false_positives;
        evaluation.overall.false_negatives += tally.false_negatives;
    }
    evaluation
}

/// The table that `make eval-patterns` prints: precision and recall with their Wilson 95%
/// intervals, F1 and the counts, per pattern and over all.
pub fn report(evaluation: &Evaluation) -> String {
    let mut out = format!(
        "{} labelled utterances, threshold {DEFAULT_THRESHOLD}\n{:<26} {:>21} {:>21} {:>6} {:>4} {:>4} {:>4}\n",
        evaluation.utterances, "pattern", "precision (95%)", "recall (95%)", "F1", "tp", "fp", "fn"
    );
    let row = |name: &str, t: &Tally| {
        let tp = u64::from(t.true_positives);
        let p = wilson(tp, tp + u64::from(t.false_positives));
        let r = wilson(tp, tp + u64::from(t.false_negatives));
        let f1 = if t.precision() + t.recall() == 0.0 {
            0.0
        } else {
            2.0 * t.precision() * t.recall() / (t.precision() + t.recall())
        };
        format!(
            "{name:<26} {:>21} {:>21} {f1:>6.3} {:>4} {:>4} {:>4}\n",
            format!("{:.3} ({:.2}-{:.2})", t.precision(), p.0, p.1),
            format!("{:.3} ({:.2}-{:.2})", t.recall(), r.0, r.1),
            t.true_positives,
            t.false_positives,
            t.false_negatives
        )
    };
    for (name, tally) in &evaluation.per_pattern {
        out.push_str(&row(name, tally));
    }
    out.push_str(&row("overall (micro)", &evaluation.overall));
    out
}
