//! Pattern detection: the cue catalog (`patterns`) and a learned linear model side by side.
//!
//! A cue that fires is precise: its detection stands as the catalog scores it. The model
//! supplies recall: it scores each sentence of the message for each pattern family (and each
//! pattern it has data for); the family's best sentence becomes a detection, named after the
//! family's highest-scoring pattern, with that sentence as its evidence, when it is more
//! confident than any cue of the family and reaches the threshold. The model's family scores are
//! calibrated at training time so that 0.7 is the operating point chosen on held-out folds:
//! the threshold keeps its meaning for both sources, and the feedback loop's per-pattern
//! calibration scales both alike.

pub mod features;
pub mod layer;
pub mod linear;
pub mod train;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::domain::conversation::Detection;
use crate::domain::patterns::Catalog;
pub use features::{sentence_features, sentences};
pub use linear::{LinearModel, MAX_LABELS, ModelFileError, Sums};

/// The families the model scores; a pattern belongs to the family its name starts with.
pub const FAMILIES: [&str; 3] = ["objection", "buying_signal", "question"];

/// The weights that ship with salesloop (`make train-detector` writes them).
pub const DEFAULT_MODEL: &[u8] = include_bytes!("../../../catalog/detector.bin");

/// The family of a pattern name: what comes before its first dot.
pub fn family(pattern: &str) -> &str {
    pattern.split('.').next().unwrap_or(pattern)
}

/// The shipped weights, parsed on first use and kept for the process.
pub fn shipped_model() -> &'static Arc<LinearModel> {
    static MODEL: std::sync::OnceLock<Arc<LinearModel>> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        // The shipped file is checked by a unit test; failing here is a build defect.
        Arc::new(
            LinearModel::from_bytes(DEFAULT_MODEL)
                .unwrap_or_else(|e| panic!("built-in detector: {e}")),
        )
    })
}

/// Detector weights that a caller may never need: the shipped ones are parsed only when first
/// asked for, so a process that never learns a layer never pays for them.
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    Shipped,
    Given(&'a LinearModel),
}

impl<'a> Weights<'a> {
    pub fn get(self) -> &'a LinearModel {
        match self {
            Weights::Shipped => shipped_model(),
            Weights::Given(model) => model,
        }
    }
}

impl<'a> From<&'a LinearModel> for Weights<'a> {
    fn from(model: &'a LinearModel) -> Weights<'a> {
        Weights::Given(model)
    }
}

/// One sentence's scores: its span in the message and the model's probability per label.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceScores {
    pub start: usize,
    pub end: usize,
    pub probabilities: Vec<f32>,
}

/// The cue catalog and the model; cheap to clone.
#[derive(Debug, Clone)]
pub struct Detector {
    pub catalog: Catalog,
    pub model: Arc<LinearModel>,
}

impl Detector {
    /// The built-in catalog and weights, loaded once per process.
    pub fn builtin() -> Detector {
        Detector {
            catalog: Catalog::builtin(),
            model: shipped_model().clone(),
        }
    }

    /// The model's probabilities for each sentence of a message at `turn` (0: the first).
    pub fn score(&self, text: &str, turn: u32) -> Vec<SentenceScores> {
        self.score_with(text, turn, None)
    }

    /// [`Detector::score`] with a tenant's layer added to the model (see [`layer`]); a layer
    /// learned over other weights, or with other labels, is left out.
    pub fn score_with(
        &self,
        text: &str,
        turn: u32,
        layer: Option<&LinearModel>,
    ) -> Vec<SentenceScores> {
        self.score_fitted(text, turn, layer.filter(|l| self.fits(l)))
    }

    /// [`Detector::score_with`] with a layer already known to fit (or none).
    fn score_fitted(
        &self,
        text: &str,
        turn: u32,
        layer: Option<&LinearModel>,
    ) -> Vec<SentenceScores> {
        sentences(text)
            .into_iter()
            .map(|(start, end)| {
                let mut sums: Sums = [0.0; MAX_LABELS];
                let mut extra: Sums = [0.0; MAX_LABELS];
                features::for_each_block(&text[start..end], Some(turn), |value, block| {
                    self.model.accumulate_block(&mut sums, value, block);
                    if let Some(layer) = layer {
                        layer.accumulate_block(&mut extra, value, block);
                    }
                });
                let mut logits = self.model.finish(sums);
                if let Some(layer) = layer {
                    for (logit, more) in logits.iter_mut().zip(layer.finish(extra)) {
                        *logit += more;
                    }
                }
                let probabilities = logits.into_iter().map(linear::sigmoid).collect();
                SentenceScores {
                    start,
                    end,
                    probabilities,
                }
            })
            .collect()
    }

    /// Whether `layer` was learned over this detector's weights.
    pub fn fits(&self, layer: &LinearModel) -> bool {
        layer.version == layer::layer_version(&self.model) && layer.labels == self.model.labels
    }

    /// Every pattern found in `text`, the message at `turn`, with a confidence at or above
    /// `threshold`, strongest first. `calibration` scales a pattern's confidence.
    ///
    /// Every cue detection stands. The model's detection of a family stands when it is more
    /// confident than every cue detection of that family (and replaces a cue detection of the
    /// same pattern). Which detections stand does not depend on the threshold, which is applied
    /// last: a higher threshold keeps a subset.
    pub fn detect(
        &self,
        text: &str,
        turn: u32,
        threshold: f64,
        calibration: &BTreeMap<String, f64>,
    ) -> Vec<Detection> {
        self.detect_with(text, turn, threshold, calibration, None)
    }

    /// [`Detector::detect`] with a tenant's layer over the model (see [`layer`]).
    pub fn detect_with(
        &self,
        text: &str,
        turn: u32,
        threshold: f64,
        calibration: &BTreeMap<String, f64>,
        layer: Option<&LinearModel>,
    ) -> Vec<Detection> {
        // Detections below the threshold are never built: one below it can neither stand nor
        // keep a more confident one from standing, so leaving them out early changes nothing.
        let mut detections = self.catalog.detect(text, threshold, calibration);
        let layer = layer.filter(|l| self.fits(l));
        let scores = self.score_fitted(text, turn, layer);
        // A tenant's layer is learned from the same labels as the calibration, and moves the
        // model's scores itself: the multipliers then scale the cues only, and the model's
        // detections say they were not scaled.
        let none = BTreeMap::new();
        let model_calibration = if layer.is_some() { &none } else { calibration };
        for family_name in FAMILIES {
            let Some(mut found) =
                self.model_detection(text, &scores, family_name, model_calibration, threshold)
            else {
                continue;
            };
            found.calibrated = layer.is_none();
            let strongest_cue = detections
                .iter()
                .filter(|d| family(&d.pattern) == family_name)
                .map(|d| d.confidence)
                .fold(f64::NEG_INFINITY, f64::max);
            if found.confidence <= strongest_cue {
                continue;
            }
            match detections.iter_mut().find(|d| d.pattern == found.pattern) {
                Some(same) => *same = found,
                None => detections.push(found),
            }
        }
        detections.retain(|d| d.confidence >= threshold);
        detections.sort_by(|a, b| {
            b.confidence
                .total_cmp(&a.confidence)
                .then_with(|| a.pattern.cmp(&b.pattern))
        });
        detections
    }

    /// The model's detection of a family: its best sentence, named after the family's
    /// best-scoring pattern there; none below `threshold`.
    fn model_detection(
        &self,
        text: &str,
        scores: &[SentenceScores],
        family_name: &str,
        calibration: &BTreeMap<String, f64>,
        threshold: f64,
    ) -> Option<Detection> {
        let model = &*self.model;
        let label = model.label(family_name)?;
        let best = scores
            .iter()
            .max_by(|a, b| a.probabilities[label].total_cmp(&b.probabilities[label]))?;
        let pattern = model
            .labels
            .iter()
            .enumerate()
            .filter(|(_, name)| name.contains('.') && family(name) == family_name)
            .max_by(|a, b| best.probabilities[a.0].total_cmp(&best.probabilities[b.0]))
            .map_or(family_name, |(_, name)| name.as_str());
        let scale = calibration.get(pattern).copied().unwrap_or(1.0);
        let confidence = (f64::from(best.probabilities[label]) * scale).clamp(0.0, 1.0);
        // Reported to three decimals, and the threshold applies to what is reported.
        let confidence = (confidence * 1000.0).round() / 1000.0;
        if confidence < threshold {
            return None;
        }
        Some(Detection {
            pattern: pattern.to_owned(),
            confidence,
            evidence: text[best.start..best.end].to_owned(),
            start: best.start,
            end: best.end,
            calibrated: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::patterns::DEFAULT_THRESHOLD;

    #[test]
    fn the_shipped_model_loads_and_scores_every_family() {
        let detector = Detector::builtin();
        for family_name in FAMILIES {
            assert!(detector.model.label(family_name).is_some(), "{family_name}");
        }
        assert!(detector.model.row_count() > 1000);
    }

    #[test]
    fn a_cue_keeps_its_detection_and_the_model_adds_what_the_cues_miss() {
        let detector = Detector::builtin();
        let none = BTreeMap::new();
        let text = "This is way too expensive for us. How does the donation work?";
        let found = detector.detect(text, 2, DEFAULT_THRESHOLD, &none);
        let cue = detector.catalog.detect(text, DEFAULT_THRESHOLD, &none);
        // Every cue detection stands, or a more confident model detection of its pattern.
        for c in &cue {
            assert!(
                found
                    .iter()
                    .any(|d| d.pattern == c.pattern && d.confidence >= c.confidence),
                "{c:?} in {found:?}"
            );
        }
        assert!(found.iter().any(|d| family(&d.pattern) == "objection"));
        for d in &found {
            assert!(d.confidence >= DEFAULT_THRESHOLD);
            assert_eq!(&text[d.start..d.end], d.evidence);
        }
    }

    #[test]
    fn calibration_can_push_a_model_detection_below_the_threshold_and_back() {
        let detector = Detector::builtin();
        let text = "ok how much of my payment would go to the charity?";
        let none = BTreeMap::new();
        let found = detector.detect(text, 3, DEFAULT_THRESHOLD, &none);
        let model_found: Vec<&Detection> = found
            .iter()
            .filter(|d| !detector.catalog.detect(text, 0.0, &none).contains(d))
            .collect();
        let first = model_found.first().expect("the model hears this question");
        let damp = BTreeMap::from([(first.pattern.clone(), 0.1)]);
        assert!(
            !detector
                .detect(text, 3, DEFAULT_THRESHOLD, &damp)
                .iter()
                .any(|d| d.pattern == first.pattern)
        );
        let lift = BTreeMap::from([(first.pattern.clone(), 1.0)]);
        assert!(
            detector
                .detect(text, 3, DEFAULT_THRESHOLD, &lift)
                .iter()
                .any(|d| d.pattern == first.pattern)
        );
    }
}
