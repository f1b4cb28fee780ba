//! Training and honest evaluation of the learned detector on the corpora the project ships:
//! PersuasionForGood's annotated half (`shared/corpora/p4g/`: prospects' sentences with
//! annotated acts mapped to families) and the labelled sales utterances
//! (`tests/fixtures/patterns/labelled.jsonl`; `heldout.jsonl` is never trained on).
//!
//! `train` fits the weights, chooses each family's operating point on out-of-fold scores of
//! its own training data (never on what it is evaluated on) and moves it to 0.7.
//! `cross_validate` runs `train` inside dialogue-level folds and scores the held fold through
//! `Detector::detect`, exactly as process_message detects.

use std::collections::{BTreeMap, BTreeSet};

use salesloop::domain::detector::linear::logit;
use salesloop::domain::detector::train::{Example, Settings, fit};
use salesloop::domain::detector::{Detector, FAMILIES, LinearModel, family, sentence_features};
use salesloop::domain::patterns::{Catalog, DEFAULT_THRESHOLD};
use salesloop::domain::stats::wilson;
use serde::Deserialize;

use crate::pattern_eval::{TUNING_SET, labelled_set};

/// The least micro precision an operating point may have on the out-of-fold scores.
pub const MIN_PRECISION: f64 = 0.73;

/// Folds of the dialogue-level cross-validation (outer and inner).
pub const FOLDS: usize = 5;

/// A prospect's sentence as the annotators cut it.
#[derive(Debug, Clone, Deserialize)]
pub struct Unit {
    pub text: String,
    pub labels: Vec<String>,
    pub families: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Turn {
    pub turn: u32,
    pub units: Vec<Unit>,
}

impl Turn {
    /// The turn's message as process_message receives it.
    pub fn text(&self) -> String {
        self.units
            .iter()
            .map(|u| u.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The families annotated anywhere in the turn.
    pub fn gold(&self) -> BTreeSet<String> {
        self.units
            .iter()
            .flat_map(|u| u.families.iter().cloned())
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Dialogue {
    pub dialogue_id: String,
    pub donation: f64,
    pub outcome: String,
    pub turns: Vec<Turn>,
}

/// The annotated dialogues the project ships.
pub fn annotated_dialogues() -> Vec<Dialogue> {
    let path = crate::workspace_root().join("shared/corpora/p4g/annotated_dev.jsonl");
    let raw = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    raw.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("an annotated dialogue"))
        .collect()
}

/// The pattern an annotated act stands for, where one does: what a detection of the act's
/// family is named after.
pub fn act_pattern(act: &str) -> Option<&'static str> {
    Some(match act {
        "ask-donation-procedure" => "buying_signal.process",
        "agree-donation"
        | "agree-donation-more"
        | "confirm-donation"
        | "provide-donation-amount" => "buying_signal.commitment",
        "ask-org-info" | "task-related-inquiry" | "ask-persuader-donation-intention" => {
            "question.product"
        }
        "negative-reaction-to-donation" | "disagree-donation" | "disagree-donation-more" => {
            "objection.need"
        }
        _ => return None,
    })
}

/// The labels the model scores: the families, then the catalog's patterns of those families.
pub fn model_labels(catalog: &Catalog) -> Vec<String> {
    let mut labels: Vec<String> = FAMILIES.iter().map(|f| (*f).to_owned()).collect();
    labels.extend(
        catalog
            .pattern_names()
            .iter()
            .filter(|p| FAMILIES.contains(&family(p)))
            .cloned(),
    );
    labels
}

fn positives(labels: &[String], names: impl IntoIterator<Item = String>) -> Vec<usize> {
    let mut out: Vec<usize> = names
        .into_iter()
        .filter_map(|n| labels.iter().position(|l| *l == n))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The training sentences of some dialogues.
pub fn dialogue_examples(labels: &[String], dialogues: &[&Dialogue]) -> Vec<Example> {
    let mut out = Vec::new();
    for dialogue in dialogues {
        for turn in &dialogue.turns {
            for unit in &turn.units {
                let names = unit.families.iter().cloned().chain(
                    unit.labels
                        .iter()
                        .filter_map(|a| act_pattern(a))
                        .map(str::to_owned),
                );
                out.push(Example {
                    features: sentence_features(&unit.text, Some(turn.turn)),
                    positive: positives(labels, names),
                });
            }
        }
    }
    out
}

/// The labelled sales utterances the catalog was tuned on, as training sentences (their
/// position in a conversation is unknown).
pub fn sales_examples(labels: &[String], lines: &[(String, BTreeSet<String>)]) -> Vec<Example> {
    lines
        .iter()
        .map(|(text, patterns)| Example {
            features: sentence_features(text, None),
            positive: positives(
                labels,
                patterns
                    .iter()
                    .flat_map(|p| [p.clone(), family(p).to_owned()]),
            ),
        })
        .collect()
}

/// What one turn looked like to a detector: the gold families, the families a cue fired for,
/// and the model's best sentence probability per family.
#[derive(Debug, Clone)]
struct Scored {
    gold: [bool; 3],
    cue: [bool; 3],
    model: [f32; 3],
}

fn scored_turns(detector: &Detector, dialogues: &[&Dialogue]) -> Vec<Scored> {
    let none = BTreeMap::new();
    let labels: Vec<usize> = FAMILIES
        .iter()
        .map(|f| detector.model.label(f).expect("a family label"))
        .collect();
    let mut out = Vec::new();
    for dialogue in dialogues {
        for turn in &dialogue.turns {
            let text = turn.text();
            let cues = detector.catalog.detect(&text, DEFAULT_THRESHOLD, &none);
            let cue = FAMILIES.map(|f| cues.iter().any(|d| family(&d.pattern) == f));
            let gold = turn.gold();
            let scores = detector.score(&text, turn.turn);
            let mut model = [0.0f32; 3];
            for (slot, &label) in model.iter_mut().zip(&labels) {
                *slot = scores
                    .iter()
                    .map(|s| s.probabilities[label])
                    .fold(0.0, f32::max);
            }
            out.push(Scored {
                gold: FAMILIES.map(|f| gold.contains(f)),
                cue,
                model,
            });
        }
    }
    out
}

/// The per-family thresholds with the best macro F1 (the mean of the families' F1: a rare
/// family is not given up for a common one) whose micro precision is at least
/// `MIN_PRECISION`, on a grid of 0.025 steps: each family's counts at each step first, then
/// every combination of steps from those.
fn operating_point(turns: &[Scored]) -> [f32; 3] {
    let grid: Vec<f32> = (4..=38).map(|i| i as f32 * 0.025).collect();
    let counts: Vec<Vec<Tally>> = (0..FAMILIES.len())
        .map(|f| {
            grid.iter()
                .map(|&threshold| {
                    let mut tally = Tally::default();
                    for turn in turns {
                        tally.add(turn.cue[f] || turn.model[f] >= threshold, turn.gold[f]);
                    }
                    tally
                })
                .collect()
        })
        .collect();
    let mut best = ([0.5f32; 3], -1.0f64);
    for (a, ta) in counts[0].iter().enumerate() {
        for (b, tb) in counts[1].iter().enumerate() {
            for (c, tc) in counts[2].iter().enumerate() {
                let mut tally = *ta;
                tally.merge(*tb);
                tally.merge(*tc);
                let macro_f1 = (ta.f1() + tb.f1() + tc.f1()) / 3.0;
                if tally.precision() >= MIN_PRECISION && macro_f1 > best.1 {
                    best = ([grid[a], grid[b], grid[c]], macro_f1);
                }
            }
        }
    }
    best.0
}

/// A model fitted on the given material, with the family biases moved so that each family's
/// out-of-fold operating point lands on 0.7.
pub fn train(
    catalog: &Catalog,
    dialogues: &[&Dialogue],
    sales: &[(String, BTreeSet<String>)],
    settings: &Settings,
    version: &str,
) -> (LinearModel, [f32; 3]) {
    let labels = model_labels(catalog);
    let fitted_model = |dialogues: &[&Dialogue]| {
        let mut examples = dialogue_examples(&labels, dialogues);
        examples.extend(sales_examples(&labels, sales));
        let fitted = fit(&examples, labels.len(), settings, None, None);
        LinearModel::new(
            version.to_owned(),
            labels.clone(),
            fitted.bias,
            fitted.rows,
            BTreeMap::new(),
        )
    };
    // Out-of-fold scores of the training dialogues choose the operating point.
    let mut out_of_fold = Vec::new();
    for fold in 0..FOLDS {
        let (held, rest) = split(dialogues, fold);
        let detector = Detector {
            catalog: catalog.clone(),
            model: std::sync::Arc::new(fitted_model(&rest)),
        };
        out_of_fold.extend(scored_turns(&detector, &held));
    }
    let thresholds = operating_point(&out_of_fold);
    let mut model = fitted_model(dialogues);
    for (i, f) in FAMILIES.iter().enumerate() {
        let label = model.label(f).expect("a family label");
        model.bias[label] += logit(DEFAULT_THRESHOLD as f32) - logit(thresholds[i]);
    }
    (model, thresholds)
}

/// Fold `fold` of `FOLDS` (dialogue `i` is in fold `i % FOLDS`) and the rest.
pub fn split<'a>(
    dialogues: &[&'a Dialogue],
    fold: usize,
) -> (Vec<&'a Dialogue>, Vec<&'a Dialogue>) {
    let (held, rest): (Vec<_>, Vec<_>) = dialogues
        .iter()
        .enumerate()
        .partition(|(i, _)| i % FOLDS == fold);
    (
        held.into_iter().map(|(_, d)| *d).collect(),
        rest.into_iter().map(|(_, d)| *d).collect(),
    )
}

/// Decision counts: detected or not, against labelled or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub true_positives: u64,
    pub false_positives: u64,
    pub false_negatives: u64,
}

impl Tally {
    pub fn add(&mut self, said: bool, gold: bool) {
        match (said, gold) {
            (true, true) => self.true_positives += 1,
            (true, false) => self.false_positives += 1,
            (false, true) => self.false_negatives += 1,
            (false, false) => {}
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.true_positives += other.true_positives;
        self.false_positives += other.false_positives;
        self.false_negatives += other.false_negatives;
    }

    pub fn precision(&self) -> f64 {
        let said = self.true_positives + self.false_positives;
        if said == 0 {
            0.0
        } else {
            self.true_positives as f64 / said as f64
        }
    }

    pub fn recall(&self) -> f64 {
        let gold = self.true_positives + self.false_negatives;
        if gold == 0 {
            0.0
        } else {
            self.true_positives as f64 / gold as f64
        }
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// Wilson 95% intervals of precision and recall.
    pub fn intervals(&self) -> ((f64, f64), (f64, f64)) {
        (
            wilson(
                self.true_positives,
                self.true_positives + self.false_positives,
            ),
            wilson(
                self.true_positives,
                self.true_positives + self.false_negatives,
            ),
        )
    }
}

/// Scores of one way of detecting, per family and per pattern name, and the micro total.
#[derive(Debug, Clone, Default)]
pub struct Scores {
    pub per_family: BTreeMap<String, Tally>,
    pub micro: Tally,
    /// How often each pattern name was detected, and how often its family was right then.
    pub named: BTreeMap<String, Tally>,
}

impl Scores {
    pub fn add_turn(&mut self, said: &BTreeSet<String>, names: &[String], gold: &BTreeSet<String>) {
        for f in FAMILIES {
            let mut one = Tally::default();
            one.add(said.contains(f), gold.contains(f));
            self.per_family.entry(f.to_owned()).or_default().merge(one);
            self.micro.merge(one);
        }
        for name in names {
            let mut one = Tally::default();
            one.add(true, gold.contains(family(name)));
            self.named.entry(name.clone()).or_default().merge(one);
        }
    }
}

/// The three-regex rule the issue measured against: "?" a question; no, not, don't, can't,
/// won't an objection; "$" or "donat" a buying signal.
pub fn three_regexes(text: &str) -> BTreeSet<String> {
    let lower = text.to_lowercase().replace('\u{2019}', "'");
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .collect();
    let mut out = BTreeSet::new();
    if text.contains('?') {
        out.insert("question".to_owned());
    }
    if words.iter().any(|w| {
        matches!(
            *w,
            "no" | "not" | "don't" | "dont" | "can't" | "cant" | "won't" | "wont"
        )
    }) {
        out.insert("objection".to_owned());
    }
    if text.contains('$') || lower.contains("donat") {
        out.insert("buying_signal".to_owned());
    }
    out
}

/// What `cross_validate` measured: the learned detector (cues and model), the cues alone and
/// the three regexes, on the same held folds.
#[derive(Debug, Clone, Default)]
pub struct CrossValidation {
    pub detector: Scores,
    pub cues: Scores,
    pub regexes: Scores,
    /// Each outer fold's operating point (chosen on its own training folds).
    pub thresholds: Vec<[f32; 3]>,
    pub turns: usize,
}

/// Dialogue-level cross-validation: each fold's dialogues are detected by a model trained
/// (and its operating point chosen) on the other folds only.
pub fn cross_validate(
    catalog: &Catalog,
    dialogues: &[&Dialogue],
    sales: &[(String, BTreeSet<String>)],
    settings: &Settings,
) -> CrossValidation {
    let none = BTreeMap::new();
    let mut out = CrossValidation::default();
    for fold in 0..FOLDS {
        let (held, rest) = split(dialogues, fold);
        let (model, thresholds) = train(catalog, &rest, sales, settings, "cv");
        out.thresholds.push(thresholds);
        let detector = Detector {
            catalog: catalog.clone(),
            model: std::sync::Arc::new(model),
        };
        for dialogue in held {
            for turn in &dialogue.turns {
                let text = turn.text();
                let gold = turn.gold();
                out.turns += 1;
                let found = detector.detect(&text, turn.turn, DEFAULT_THRESHOLD, &none);
                let names: Vec<String> = found.iter().map(|d| d.pattern.clone()).collect();
                let said = names.iter().map(|n| family(n).to_owned()).collect();
                out.detector.add_turn(&said, &names, &gold);
                let cue = catalog.detect(&text, DEFAULT_THRESHOLD, &none);
                let cue_names: Vec<String> = cue.iter().map(|d| d.pattern.clone()).collect();
                let cue_said = cue_names.iter().map(|n| family(n).to_owned()).collect();
                out.cues.add_turn(&cue_said, &cue_names, &gold);
                out.regexes.add_turn(&three_regexes(&text), &[], &gold);
            }
        }
    }
    out
}

/// The sales utterances the catalog was tuned on.
pub fn sales_training_set() -> Vec<(String, BTreeSet<String>)> {
    labelled_set(TUNING_SET)
}

/// A dialogue of the unannotated half: text and the real outcome only.
#[derive(Debug, Clone, Deserialize)]
pub struct PlainDialogue {
    pub dialogue_id: String,
    pub donation: f64,
    pub outcome: String,
    pub turns: Vec<PlainTurn>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PlainTurn {
    pub turn: u32,
    pub text: String,
}

/// The dialogues of PersuasionForGood that have real outcomes but no act annotations.
pub fn unannotated_dialogues() -> Vec<PlainDialogue> {
    let path = crate::workspace_root().join("shared/corpora/p4g/unannotated.jsonl");
    let raw = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    raw.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("an unannotated dialogue"))
        .collect()
}

/// Per family, phi of "the family appears in the dialogue" against "the prospect donated",
/// from (families seen, won) per dialogue.
pub fn family_correlations(
    dialogues: impl IntoIterator<Item = (BTreeSet<String>, bool)>,
) -> BTreeMap<String, Option<salesloop::domain::stats::Correlation>> {
    let mut tables: BTreeMap<&str, [u64; 4]> = FAMILIES.iter().map(|f| (*f, [0; 4])).collect();
    for (seen, won) in dialogues {
        for (family, table) in tables.iter_mut() {
            let at = match (seen.contains(*family), won) {
                (true, true) => 0,
                (true, false) => 1,
                (false, true) => 2,
                (false, false) => 3,
            };
            table[at] += 1;
        }
    }
    tables
        .into_iter()
        .map(|(f, t)| {
            (
                f.to_owned(),
                salesloop::domain::stats::phi(t[0], t[1], t[2], t[3]),
            )
        })
        .collect()
}

/// Families as the annotations give them, per annotated dialogue, with the outcome.
pub fn annotated_families(dialogues: &[Dialogue]) -> Vec<(BTreeSet<String>, bool)> {
    dialogues
        .iter()
        .map(|d| {
            let seen = d.turns.iter().flat_map(|t| t.gold()).collect();
            (seen, d.outcome == "won")
        })
        .collect()
}

/// Families as a detector hears them, per unannotated dialogue (each turn detected at its
/// position, as process_message would), with the outcome.
pub fn detected_families(
    detector: &Detector,
    dialogues: &[PlainDialogue],
) -> Vec<(BTreeSet<String>, bool)> {
    let none = BTreeMap::new();
    dialogues
        .iter()
        .map(|d| {
            let seen = d
                .turns
                .iter()
                .flat_map(|t| detector.detect(&t.text, t.turn, DEFAULT_THRESHOLD, &none))
                .map(|found| family(&found.pattern).to_owned())
                .collect();
            (seen, d.outcome == "won")
        })
        .collect()
}
