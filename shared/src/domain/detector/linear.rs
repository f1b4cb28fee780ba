//! A linear model over hashed features, one logistic score per label, and its file: a line
//! naming the format, a line of JSON (version, labels, biases, how the weights are scaled) and
//! the weights, one row per bucket that training saw, each weight one signed byte.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::features::{BUCKETS, Features};

/// The first line of every model file.
const MAGIC: &[u8] = b"salesloop-detector 1\n";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelFileError {
    #[error("not a salesloop detector file (it must start with \"salesloop-detector 1\")")]
    Magic,
    #[error("detector header: {0}")]
    Header(String),
    #[error("detector weights: {0}")]
    Weights(&'static str),
}

/// What the header line of a model file says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Names this set of weights (what a detection's model was).
    pub version: String,
    pub buckets: u32,
    pub labels: Vec<String>,
    pub bias: Vec<f32>,
    /// A stored weight of label `k` is `byte * scale[k]`.
    pub scale: Vec<f32>,
    pub rows: u32,
    /// Free text: the data and settings the weights were trained with.
    #[serde(default)]
    pub trained: BTreeMap<String, String>,
}

/// Weights in memory: a row of one weight per label for each bucket that has any.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearModel {
    pub version: String,
    pub labels: Vec<String>,
    pub bias: Vec<f32>,
    /// For each bucket, its row plus one (0: no row).
    index: Vec<u32>,
    weights: Vec<f32>,
    pub trained: BTreeMap<String, String>,
}

impl LinearModel {
    /// A model from a bias per label and sparse rows (bucket, one weight per label).
    pub fn new(
        version: String,
        labels: Vec<String>,
        bias: Vec<f32>,
        rows: impl IntoIterator<Item = (u32, Vec<f32>)>,
        trained: BTreeMap<String, String>,
    ) -> LinearModel {
        let k = labels.len();
        let mut index = vec![0u32; BUCKETS as usize];
        let mut weights = Vec::new();
        for (bucket, row) in rows {
            assert_eq!(row.len(), k, "a row has one weight per label");
            let slot = &mut index[bucket as usize];
            if *slot == 0 {
                weights.extend_from_slice(&row);
                *slot = (weights.len() / k) as u32;
            } else {
                let at = (*slot as usize - 1) * k;
                weights[at..at + k].copy_from_slice(&row);
            }
        }
        LinearModel {
            version,
            labels,
            bias,
            index,
            weights,
            trained,
        }
    }

    pub fn label(&self, name: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == name)
    }

    /// The row of a bucket, if training gave it weights.
    pub fn row(&self, bucket: u32) -> Option<&[f32]> {
        let slot = *self.index.get(bucket as usize)?;
        if slot == 0 {
            return None;
        }
        let k = self.labels.len();
        let at = (slot as usize - 1) * k;
        Some(&self.weights[at..at + k])
    }

    /// Each label's logit for a sentence's features.
    pub fn logits(&self, features: &Features) -> Vec<f32> {
        let mut out = self.bias.clone();
        for &(bucket, value) in features {
            if let Some(row) = self.row(bucket) {
                for (o, w) in out.iter_mut().zip(row) {
                    *o += value * w;
                }
            }
        }
        out
    }

    /// Every row, in bucket order.
    pub fn rows(&self) -> impl Iterator<Item = (u32, &[f32])> + '_ {
        (0..BUCKETS).filter_map(|b| self.row(b).map(|r| (b, r)))
    }

    /// The model file: weights rounded to one signed byte each, scaled per label.
    pub fn to_bytes(&self) -> Vec<u8> {
        let k = self.labels.len();
        let rows: Vec<(u32, &[f32])> = self.rows().collect();
        let scale: Vec<f32> = (0..k)
            .map(|j| {
                let max = rows.iter().map(|r| r.1[j].abs()).fold(0.0f32, f32::max);
                if max > 0.0 { max / 127.0 } else { 1.0 }
            })
            .collect();
        let header = Header {
            version: self.version.clone(),
            buckets: BUCKETS,
            labels: self.labels.clone(),
            bias: self.bias.clone(),
            scale: scale.clone(),
            rows: rows.len() as u32,
            trained: self.trained.clone(),
        };
        let mut out = MAGIC.to_vec();
        out.extend(serde_json::to_vec(&header).expect("a header serializes"));
        out.push(b'\n');
        for (bucket, row) in rows {
            out.extend(bucket.to_le_bytes());
            for (w, s) in row.iter().zip(&scale) {
                out.push((w / s).round().clamp(-127.0, 127.0) as i8 as u8);
            }
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<LinearModel, ModelFileError> {
        let rest = bytes.strip_prefix(MAGIC).ok_or(ModelFileError::Magic)?;
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(ModelFileError::Header("no end of line".into()))?;
        let header: Header = serde_json::from_slice(&rest[..end])
            .map_err(|e| ModelFileError::Header(e.to_string()))?;
        let k = header.labels.len();
        if header.buckets != BUCKETS {
            return Err(ModelFileError::Header(format!(
                "made for {} buckets, this build hashes into {BUCKETS}",
                header.buckets
            )));
        }
        if k == 0 || header.bias.len() != k || header.scale.len() != k {
            return Err(ModelFileError::Header(
                "labels, bias and scale must have one entry per label".into(),
            ));
        }
        let body = &rest[end + 1..];
        let width = 4 + k;
        if body.len() != header.rows as usize * width {
            return Err(ModelFileError::Weights(
                "length does not match the rows in the header",
            ));
        }
        let mut rows = Vec::with_capacity(header.rows as usize);
        for chunk in body.chunks_exact(width) {
            let bucket = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            if bucket >= BUCKETS {
                return Err(ModelFileError::Weights("a bucket is out of range"));
            }
            let row = chunk[4..]
                .iter()
                .zip(&header.scale)
                .map(|(&b, s)| f32::from(b as i8) * s)
                .collect();
            rows.push((bucket, row));
        }
        Ok(LinearModel::new(
            header.version,
            header.labels,
            header.bias,
            rows,
            header.trained,
        ))
    }
}

/// The logistic function.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Its inverse.
pub fn logit(p: f32) -> f32 {
    (p / (1.0 - p)).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> LinearModel {
        LinearModel::new(
            "t1".into(),
            vec!["a".into(), "b".into()],
            vec![-1.0, 0.5],
            [(7, vec![2.0, -0.5]), (BUCKETS - 1, vec![0.25, 1.0])],
            BTreeMap::new(),
        )
    }

    #[test]
    fn logits_add_the_rows_of_the_features_to_the_bias() {
        let model = small();
        let logits = model.logits(&vec![(7, 0.5), (8, 3.0), (BUCKETS - 1, 2.0)]);
        assert_eq!(logits, vec![-1.0 + 1.0 + 0.5, 0.5 - 0.25 + 2.0]);
    }

    #[test]
    fn the_file_round_trips_within_a_byte_of_precision() {
        let model = small();
        let back = LinearModel::from_bytes(&model.to_bytes()).unwrap();
        assert_eq!(back.labels, model.labels);
        assert_eq!(back.bias, model.bias);
        for (bucket, row) in model.rows() {
            let other = back.row(bucket).unwrap();
            for (a, b) in row.iter().zip(other) {
                assert!((a - b).abs() <= 2.0 / 127.0, "{a} vs {b}");
            }
        }
        assert_eq!(back.rows().count(), 2);
    }

    #[test]
    fn a_damaged_file_is_refused_with_a_reason() {
        let bytes = small().to_bytes();
        assert_eq!(LinearModel::from_bytes(b"nope"), Err(ModelFileError::Magic));
        assert!(matches!(
            LinearModel::from_bytes(&bytes[..bytes.len() - 1]),
            Err(ModelFileError::Weights(_))
        ));
    }
}
