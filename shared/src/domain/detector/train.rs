//! Fitting the detector's weights: L2-regularised logistic regression, one score per label,
//! by stochastic gradient steps with per-weight step sizes (AdaGrad), in an order drawn from a
//! seed, so that the same data and settings always give the same weights.

use std::collections::HashMap;

use super::features::Features;
use crate::domain::random::Rng;

/// A training sentence: its features and the labels it carries.
#[derive(Debug, Clone)]
pub struct Example {
    pub features: Features,
    /// Indices of the labels that hold for it; every other label is a negative.
    pub positive: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Passes over the data.
    pub epochs: usize,
    /// Inverse strength of the L2 penalty (as in the usual `C`: larger fits the data closer).
    pub c: f32,
    /// AdaGrad's base step.
    pub rate: f32,
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            epochs: 25,
            c: 8.0,
            rate: 0.5,
            seed: 7,
        }
    }
}

/// Fitted weights: a bias per label and a row per bucket that any example has.
#[derive(Debug, Clone, Default)]
pub struct Fitted {
    pub bias: Vec<f32>,
    pub rows: HashMap<u32, Vec<f32>>,
}

/// An example by bucket number: its (number, value) pairs and a 0/1 truth per label.
type Dense = (Vec<(usize, f32)>, Vec<f32>);

/// Fits `labels` weights on `examples`, starting from `start` when given (the shipped model a
/// tenant's weights move away from: the penalty then pulls toward it instead of toward zero).
pub fn fit(
    examples: &[Example],
    labels: usize,
    settings: &Settings,
    start: Option<&dyn Fn(u32) -> Option<Vec<f32>>>,
    start_bias: Option<&[f32]>,
) -> Fitted {
    let n = examples.len().max(1) as f32;
    // The buckets any example has, numbered densely, and each example's features by number.
    let mut number: HashMap<u32, usize> = HashMap::new();
    let mut buckets: Vec<u32> = Vec::new();
    let mut count: Vec<f32> = Vec::new();
    let dense: Vec<Dense> = examples
        .iter()
        .map(|example| {
            let features = example
                .features
                .iter()
                .map(|&(bucket, value)| {
                    let at = *number.entry(bucket).or_insert_with(|| {
                        buckets.push(bucket);
                        count.push(0.0);
                        buckets.len() - 1
                    });
                    count[at] += 1.0;
                    (at, value)
                })
                .collect();
            let truth = (0..labels)
                .map(|k| {
                    if example.positive.contains(&k) {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
            (features, truth)
        })
        .collect();
    let lambda = 1.0 / (settings.c * n);
    let mut bias = start_bias.map_or_else(|| vec![0.0; labels], <[f32]>::to_vec);
    let mut bias_g = vec![0.0f32; labels];
    // Row-major: bucket number `i`'s weights are `weights[i * labels..(i + 1) * labels]`.
    let mut anchors = vec![0.0f32; buckets.len() * labels];
    if let Some(start) = start {
        for (i, &bucket) in buckets.iter().enumerate() {
            if let Some(row) = start(bucket) {
                anchors[i * labels..(i + 1) * labels].copy_from_slice(&row);
            }
        }
    }
    let mut weights = anchors.clone();
    let mut grads = vec![0.0f32; buckets.len() * labels];
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = Rng::seeded(settings.seed);
    let mut residual = vec![0.0f32; labels];
    for _ in 0..settings.epochs {
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for &at in &order {
            let (features, truth) = &dense[at];
            // Logits, then (probability - truth) per label.
            residual.copy_from_slice(&bias);
            for &(i, value) in features {
                let row = &weights[i * labels..(i + 1) * labels];
                for (r, w) in residual.iter_mut().zip(row) {
                    *r += value * w;
                }
            }
            for (r, t) in residual.iter_mut().zip(truth) {
                *r = sigmoid(*r) - t;
            }
            for k in 0..labels {
                let g = residual[k];
                bias_g[k] += g * g;
                bias[k] -= settings.rate * g / (bias_g[k].sqrt() + 1e-6);
            }
            // The penalty is spread over the examples that touch a bucket, so that one pass
            // applies it once in expectation.
            for &(i, value) in features {
                let spread = lambda * n / count[i];
                for (k, r) in residual.iter().enumerate() {
                    let at = i * labels + k;
                    let g = r * value + spread * (weights[at] - anchors[at]);
                    grads[at] += g * g;
                    weights[at] -= settings.rate * g / (grads[at].sqrt() + 1e-6);
                }
            }
        }
    }
    let rows = buckets
        .iter()
        .enumerate()
        .map(|(i, &bucket)| (bucket, weights[i * labels..(i + 1) * labels].to_vec()))
        .collect();
    Fitted { bias, rows }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(buckets: &[u32], positive: &[usize]) -> Example {
        Example {
            features: buckets.iter().map(|&b| (b, 1.0)).collect(),
            positive: positive.to_vec(),
        }
    }

    fn score(fitted: &Fitted, buckets: &[u32], label: usize) -> f32 {
        fitted.bias[label]
            + buckets
                .iter()
                .map(|b| fitted.rows.get(b).map_or(0.0, |r| r[label]))
                .sum::<f32>()
    }

    #[test]
    fn a_separable_label_is_learned_and_the_fit_is_reproducible() {
        let data: Vec<Example> = (0..40)
            .map(|i| {
                if i % 2 == 0 {
                    example(&[1, 10 + i % 5], &[0])
                } else {
                    example(&[2, 10 + i % 5], &[1])
                }
            })
            .collect();
        let fitted = fit(&data, 2, &Settings::default(), None, None);
        assert!(score(&fitted, &[1, 11], 0) > 1.0);
        assert!(score(&fitted, &[1, 11], 1) < -1.0);
        assert!(score(&fitted, &[2, 12], 1) > 1.0);
        let again = fit(&data, 2, &Settings::default(), None, None);
        assert_eq!(fitted.rows[&1], again.rows[&1]);
    }

    #[test]
    fn a_strong_penalty_keeps_weights_near_the_start() {
        let data = vec![example(&[5], &[0]); 10];
        let start = |b: u32| (b == 5).then(|| vec![-2.0]);
        let settings = Settings {
            c: 0.001,
            ..Settings::default()
        };
        let held = fit(&data, 1, &settings, Some(&start), Some(&[0.0]));
        let free = fit(
            &data,
            1,
            &Settings {
                c: 100.0,
                ..settings
            },
            Some(&start),
            Some(&[0.0]),
        );
        assert!((held.rows[&5][0] + 2.0).abs() < 0.5, "{:?}", held.rows[&5]);
        assert!(free.rows[&5][0] > held.rows[&5][0] + 1.0);
    }
}
