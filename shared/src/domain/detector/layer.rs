//! A tenant's layer over the shipped detector, learned from the tenant's labels.
//!
//! The layer is a second linear model with the shipped model's labels: its logits are added to
//! the shipped model's, so with no layer (or an empty one) detection is exactly the shipped
//! model's. Each feedback run with new labels updates the layer online: a few passes of
//! stochastic gradient descent on the logistic loss of the sum, over the new labels only, each
//! step pulling the weights it touches toward zero (toward the shipped model) by an L2 term.
//! The layer is then cut to at most [`MAX_LAYER_ROWS`] buckets (the rows with the least weight
//! go) and kept in the model version as a model file, so it stays one small part of one item.
//!
//! # What a label teaches
//!
//! Labels name a pattern or a family at a turn. For each output of the model:
//! - a label on that output's own name teaches it directly (`correct` is the target);
//! - a `correct` label on a pattern of a family says the family is present;
//! - a wrong label on a pattern says its family is absent, unless another label of the same
//!   turn says a pattern of that family is present (the family detection is named after a
//!   pattern, and "wrong" on it is how a client says the family detection was wrong).
//!
//! A message has several sentences and a family detection stands on its best one. A positive
//! target is learned on the sentence that scores highest for it; a negative one on every
//! sentence.

use std::collections::{BTreeMap, HashMap};

use super::features::sentence_features;
use super::linear::{LinearModel, sigmoid};
use super::{family, sentences};

/// Buckets a layer keeps at most: 4,096 rows of 13 labels are 70 KB as a model file, about
/// 94 KB as base64 in the model version, well inside DynamoDB's 400 KB item.
pub const MAX_LAYER_ROWS: usize = 4_096;

/// How a layer learns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerSettings {
    /// Passes over each run's new examples.
    pub epochs: usize,
    /// The step size.
    pub rate: f32,
    /// The pull of each touched weight toward zero (toward the shipped model), per step.
    pub l2: f32,
    /// How much more a present target weighs than an absent one. The families are rare (a
    /// few in a hundred messages), and detection stands at a confidence of 0.7: weighing the
    /// present ones 8 times puts 0.7 where a plain logistic fit would say about 0.23, the
    /// region where the shipped model's operating points were chosen.
    pub present_weight: f32,
}

impl Default for LayerSettings {
    fn default() -> Self {
        LayerSettings {
            epochs: 4,
            rate: 0.3,
            l2: 0.01,
            present_weight: 8.0,
        }
    }
}

/// One labelled message as the layer learns it: its text, its turn (0 for the first), and a
/// target (output of the model, present or not) per output the labels speak of.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerExample {
    pub text: String,
    pub turn: u32,
    pub targets: Vec<(usize, bool)>,
}

/// The targets the labels of one turn set on the model's outputs (see the module docs), in
/// output order. Labels on names the model has no output for, and whose family it has none
/// for either, teach nothing here.
pub fn targets(model: &LinearModel, labels: &[(&str, bool)]) -> Vec<(usize, bool)> {
    let mut out: BTreeMap<usize, bool> = BTreeMap::new();
    let set = |output: usize, present: bool, out: &mut BTreeMap<usize, bool>| {
        // Present wins over absent: some label of the turn says so.
        let entry = out.entry(output).or_insert(present);
        *entry |= present;
    };
    for &(name, correct) in labels {
        if let Some(output) = model.label(name) {
            set(output, correct, &mut out);
        }
        let family_name = family(name);
        if family_name == name {
            continue;
        }
        let Some(output) = model.label(family_name) else {
            continue;
        };
        let family_present = labels
            .iter()
            .any(|&(other, right)| right && family(other) == family_name);
        if correct || !family_present {
            set(output, correct, &mut out);
        }
    }
    out.into_iter().collect()
}

/// The layer after learning `examples`, starting from `previous` (none: from zero).
pub fn learn(
    base: &LinearModel,
    previous: Option<&LinearModel>,
    examples: &[LayerExample],
    settings: LayerSettings,
) -> LinearModel {
    let k = base.labels.len();
    let mut bias = previous.map_or_else(|| vec![0.0; k], |p| p.bias.clone());
    let mut rows: HashMap<u32, Vec<f32>> = previous.map(|p| p.rows().collect()).unwrap_or_default();
    // Each example's sentences and their features, computed once.
    let prepared: Vec<Vec<Vec<(u32, f32)>>> = examples
        .iter()
        .map(|e| {
            sentences(&e.text)
                .into_iter()
                .map(|(a, b)| sentence_features(&e.text[a..b], Some(e.turn)))
                .collect()
        })
        .collect();
    for _ in 0..settings.epochs {
        for (example, sentences) in examples.iter().zip(&prepared) {
            if sentences.is_empty() {
                continue;
            }
            let logits: Vec<Vec<f32>> = sentences
                .iter()
                .map(|features| {
                    let mut logits = base.logits(features);
                    for (logit, b) in logits.iter_mut().zip(&bias) {
                        *logit += b;
                    }
                    for &(bucket, value) in features {
                        if let Some(row) = rows.get(&bucket) {
                            for (logit, w) in logits.iter_mut().zip(row) {
                                *logit += value * w;
                            }
                        }
                    }
                    logits
                })
                .collect();
            for &(output, present) in &example.targets {
                let chosen: Vec<usize> = if present {
                    let best = (0..sentences.len())
                        .max_by(|&a, &b| logits[a][output].total_cmp(&logits[b][output]))
                        .unwrap_or(0);
                    vec![best]
                } else {
                    (0..sentences.len()).collect()
                };
                for s in chosen {
                    let gradient = if present {
                        (sigmoid(logits[s][output]) - 1.0) * settings.present_weight
                    } else {
                        sigmoid(logits[s][output])
                    };
                    bias[output] -= settings.rate * gradient;
                    for &(bucket, value) in &sentences[s] {
                        let row = rows.entry(bucket).or_insert_with(|| vec![0.0; k]);
                        let w = &mut row[output];
                        *w -= settings.rate * (gradient * value + settings.l2 * *w);
                    }
                }
            }
        }
    }
    // Keep the rows that carry the most weight.
    let mut kept: Vec<(u32, Vec<f32>)> = rows
        .into_iter()
        .filter(|(_, row)| row.iter().any(|w| *w != 0.0))
        .collect();
    if kept.len() > MAX_LAYER_ROWS {
        kept.sort_by(|a, b| {
            let norm = |row: &[f32]| row.iter().map(|w| w.abs()).sum::<f32>();
            norm(&b.1)
                .total_cmp(&norm(&a.1))
                .then_with(|| a.0.cmp(&b.0))
        });
        kept.truncate(MAX_LAYER_ROWS);
    }
    LinearModel::new(
        layer_version(base),
        base.labels.clone(),
        bias,
        kept,
        BTreeMap::new(),
    )
}

/// What a layer over `base` calls itself: it is used only over that base.
pub fn layer_version(base: &LinearModel) -> String {
    format!("layer over {}", base.version)
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding: how a layer's model file travels inside a JSON item.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The bytes of [`base64_encode`]'s output; `None` for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for (c, chunk) in text.chunks(4).enumerate() {
        let last = c == text.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for (i, &b) in chunk[..4 - pad].iter().enumerate() {
            let v = u32::from(match b {
                b'A'..=b'Z' => b - b'A',
                b'a'..=b'z' => b - b'a' + 26,
                b'0'..=b'9' => b - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            });
            n |= v << (18 - 6 * i);
        }
        for i in 0..3 - pad {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_round_trips_and_refuses_what_it_did_not_write() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64_encode(&bytes);
            assert_eq!(base64_decode(&text), Some(bytes), "{text}");
        }
        assert_eq!(base64_encode(b"salesloop"), "c2FsZXNsb29w");
        assert_eq!(base64_encode(b"ab"), "YWI=");
        for bad in ["abc", "a*cd", "YQ==YWI=", "Y==="] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    use super::*;
    use crate::domain::detector::Detector;

    fn model() -> LinearModel {
        (*Detector::builtin().model).clone()
    }

    #[test]
    fn labels_set_the_outputs_they_speak_of() {
        let m = model();
        let at = |name: &str| m.label(name).unwrap();
        // A confirmed pattern: itself and its family.
        assert_eq!(targets(&m, &[("objection.price", true)]), {
            let mut v = vec![(at("objection"), true), (at("objection.price"), true)];
            v.sort();
            v
        });
        // A wrong pattern: itself and its family absent...
        let mut v = vec![(at("objection"), false), (at("objection.price"), false)];
        v.sort();
        assert_eq!(targets(&m, &[("objection.price", false)]), v);
        // ...unless the turn has another pattern of the family.
        let mut v = vec![
            (at("objection"), true),
            (at("objection.price"), false),
            (at("objection.timing"), true),
        ];
        v.sort();
        assert_eq!(
            targets(
                &m,
                &[("objection.price", false), ("objection.timing", true)]
            ),
            v
        );
        // A family name teaches the family alone; an unknown name nothing.
        assert_eq!(
            targets(&m, &[("question", true)]),
            vec![(at("question"), true)]
        );
        assert_eq!(targets(&m, &[("nothing.here", true)]), vec![]);
    }

    #[test]
    fn a_layer_learns_what_the_labels_say_and_fits_one_item() {
        let base = model();
        let question = base.label("question").unwrap();
        let text = "we could pitch the tents by the lake";
        let probability = |layer: Option<&LinearModel>| {
            let features = sentence_features(text, Some(2));
            let mut logit = base.logits(&features)[question];
            if let Some(layer) = layer {
                logit += layer.logits(&features)[question];
            }
            sigmoid(logit)
        };
        let before = probability(None);
        let examples = vec![
            LayerExample {
                text: text.to_owned(),
                turn: 2,
                targets: vec![(question, true)],
            };
            5
        ];
        let layer = learn(&base, None, &examples, LayerSettings::default());
        let after = probability(Some(&layer));
        assert!(after > before + 0.2, "{before} -> {after}");
        assert!(layer.row_count() <= MAX_LAYER_ROWS);
        assert!(layer.to_bytes().len() < 100_000);
        // Learning the opposite from there brings it back down.
        let undo: Vec<LayerExample> = examples
            .iter()
            .map(|e| LayerExample {
                targets: vec![(question, false)],
                ..e.clone()
            })
            .collect();
        let layer = learn(&base, Some(&layer), &undo, LayerSettings::default());
        assert!(probability(Some(&layer)) < after - 0.2);
    }
}
