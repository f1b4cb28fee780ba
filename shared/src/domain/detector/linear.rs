//! A linear model over hashed features, one logistic score per label, and its file: a line
//! naming the format, a line of JSON (version, labels, biases, how the weights are scaled) and
//! the weights, one row per bucket that training saw, each weight one signed byte.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::features::{BUCKETS, Features};

/// Labels a model may have at most: each row is kept padded to this many bytes, so adding a
/// row to the sums is one fixed-width loop the compiler turns into vector instructions.
pub const MAX_LABELS: usize = 16;

/// Per-label sums of one sentence's features times the rows, before scaling
/// ([`LinearModel::accumulate`], then [`LinearModel::finish`]).
pub type Sums = [f32; MAX_LABELS];

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

/// Weights in memory, as the file keeps them: a row of one signed byte per label for each
/// bucket that has any, and a scale per label.
///
/// Laid out for the cache and without branches: which buckets have a row is one bit each (32 KB
/// for 2^18 buckets), with the number of rows before every 64 buckets beside it (16 KB), so a
/// bucket's row number is a count of bits; a bucket without a row reads row 0, all zeros. The
/// rows take a byte a weight, each padded to 16 bytes (355 KB for the shipped model). Looking
/// rows up is most of detection's memory traffic: a two-byte row number per bucket (512 KB)
/// measured slower, from cache misses, and f32 rows behind a four-byte index took 2.2 MB.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearModel {
    pub version: String,
    pub labels: Vec<String>,
    pub bias: Vec<f32>,
    /// A stored weight of label `k` is `byte * scale[k]`.
    pub scale: Vec<f32>,
    /// Bit `b % 64` of word `b / 64`: whether bucket `b` has a row.
    present: Vec<u64>,
    /// The row number of the first row at or after word `w`'s buckets (row 0 is the zeros).
    before: Vec<u32>,
    /// The rows, each padded with zeros to `MAX_LABELS` bytes; row 0 is all zeros.
    weights: Vec<i8>,
    pub trained: BTreeMap<String, String>,
}

impl LinearModel {
    /// A model from a bias per label and sparse rows (bucket, one weight per label), the
    /// weights rounded to one signed byte each, scaled per label so that the largest weight of
    /// a label is 127 times its scale: the model as its file will hold it. A bucket given twice
    /// keeps its last row.
    pub fn new(
        version: String,
        labels: Vec<String>,
        bias: Vec<f32>,
        rows: impl IntoIterator<Item = (u32, Vec<f32>)>,
        trained: BTreeMap<String, String>,
    ) -> LinearModel {
        let k = labels.len();
        assert!(k <= MAX_LABELS, "at most {MAX_LABELS} labels");
        let mut sparse: BTreeMap<u32, Vec<f32>> = BTreeMap::new();
        for (bucket, row) in rows {
            assert_eq!(row.len(), k, "a row has one weight per label");
            assert!(bucket < BUCKETS, "a bucket is in range");
            sparse.insert(bucket, row);
        }
        let scale: Vec<f32> = (0..k)
            .map(|j| {
                let max = sparse.values().map(|r| r[j].abs()).fold(0.0f32, f32::max);
                if max > 0.0 { max / 127.0 } else { 1.0 }
            })
            .collect();
        let quantized: Vec<(u32, [i8; MAX_LABELS])> = sparse
            .into_iter()
            .map(|(bucket, row)| {
                let mut bytes = [0i8; MAX_LABELS];
                for ((byte, w), s) in bytes.iter_mut().zip(&row).zip(&scale) {
                    *byte = (w / s).round().clamp(-127.0, 127.0) as i8;
                }
                (bucket, bytes)
            })
            .collect();
        LinearModel::from_quantized(version, labels, bias, scale, quantized, trained)
    }

    /// A model from rows already in bytes, in increasing bucket order.
    fn from_quantized(
        version: String,
        labels: Vec<String>,
        bias: Vec<f32>,
        scale: Vec<f32>,
        rows: impl IntoIterator<Item = (u32, [i8; MAX_LABELS])>,
        trained: BTreeMap<String, String>,
    ) -> LinearModel {
        let words = (BUCKETS as usize).div_ceil(64);
        let mut present = vec![0u64; words];
        let rows = rows.into_iter();
        // Row 0 is all zeros: a bucket without a row reads it, so looking a row up never
        // branches on whether the bucket has one.
        let mut weights = Vec::with_capacity((1 + rows.size_hint().0) * MAX_LABELS);
        weights.extend_from_slice(&[0i8; MAX_LABELS]);
        for (bucket, padded) in rows {
            present[bucket as usize / 64] |= 1 << (bucket % 64);
            weights.extend_from_slice(&padded);
        }
        let mut before = Vec::with_capacity(words);
        let mut count = 1u32;
        for word in &present {
            before.push(count);
            count += word.count_ones();
        }
        LinearModel {
            version,
            labels,
            bias,
            scale,
            present,
            before,
            weights,
            trained,
        }
    }

    pub fn label(&self, name: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == name)
    }

    /// The row of a bucket in bytes (weight `j` is `byte * scale[j]`), if training gave it
    /// weights.
    #[inline]
    pub fn row_bytes(&self, bucket: u32) -> Option<&[i8]> {
        self.padded_row(bucket).map(|row| &row[..self.labels.len()])
    }

    /// A bucket's row with its padding.
    #[inline]
    fn padded_row(&self, bucket: u32) -> Option<&[i8; MAX_LABELS]> {
        let b = bucket as usize;
        let word = *self.present.get(b / 64)?;
        (word & (1u64 << (b % 64)) != 0).then(|| self.row_or_zeros(bucket))
    }

    /// A bucket's row with its padding, or the row of zeros (no branch on which).
    #[inline]
    fn row_or_zeros(&self, bucket: u32) -> &[i8; MAX_LABELS] {
        let b = (bucket % BUCKETS) as usize;
        let word = self.present[b / 64];
        let bit = 1u64 << (b % 64);
        let has = u32::from(word & bit != 0);
        let number = (self.before[b / 64] + (word & (bit - 1)).count_ones()) * has;
        let at = number as usize * MAX_LABELS;
        self.weights[at..at + MAX_LABELS]
            .try_into()
            .unwrap_or(&[0; MAX_LABELS])
    }

    /// Adds, for each label, `value` times the sum of the rows of `buckets` to `sums`: one
    /// block of a sentence's features, which all have the same value. The rows are added up in
    /// integers first.
    pub fn accumulate_block(&self, sums: &mut Sums, value: f32, buckets: &[u32]) {
        let mut ints = [0i32; MAX_LABELS];
        for &bucket in buckets {
            let row = self.row_or_zeros(bucket);
            for (int, &w) in ints.iter_mut().zip(row) {
                *int += i32::from(w);
            }
        }
        for (sum, int) in sums.iter_mut().zip(ints) {
            *sum += value * int as f32;
        }
    }

    /// The weights of a bucket, if training gave it any.
    pub fn row(&self, bucket: u32) -> Option<Vec<f32>> {
        self.row_bytes(bucket).map(|row| {
            row.iter()
                .zip(&self.scale)
                .map(|(&w, s)| f32::from(w) * s)
                .collect()
        })
    }

    /// Each label's logit for a sentence's features.
    pub fn logits(&self, features: &Features) -> Vec<f32> {
        let mut sums: Sums = [0.0; MAX_LABELS];
        for &(bucket, value) in features {
            self.accumulate(&mut sums, bucket, value);
        }
        self.finish(sums)
    }

    /// Adds `value` times a bucket's row, in bytes, to `sums`.
    #[inline]
    pub fn accumulate(&self, sums: &mut Sums, bucket: u32, value: f32) {
        if let Some(row) = self.padded_row(bucket) {
            for (sum, &w) in sums.iter_mut().zip(row) {
                *sum += value * f32::from(w);
            }
        }
    }

    /// The logits from sums of [`LinearModel::accumulate`]: each scaled, plus the bias.
    pub fn finish(&self, sums: Sums) -> Vec<f32> {
        sums.iter()
            .zip(&self.scale)
            .zip(&self.bias)
            .map(|((sum, s), b)| sum * s + b)
            .collect()
    }

    /// Every bucket that has a row, in order.
    pub fn buckets(&self) -> impl Iterator<Item = u32> + '_ {
        self.present.iter().enumerate().flat_map(|(w, &word)| {
            (0..64u32)
                .filter(move |bit| word & (1 << bit) != 0)
                .map(move |bit| w as u32 * 64 + bit)
        })
    }

    /// Every row, in bucket order.
    pub fn rows(&self) -> impl Iterator<Item = (u32, Vec<f32>)> + '_ {
        self.buckets().filter_map(|b| self.row(b).map(|r| (b, r)))
    }

    /// The memory the parsed model holds: its vectors' capacity (the bucket bitmap and index
    /// are fixed in size, whatever the rows), and its names.
    pub fn resident_bytes(&self) -> usize {
        let strings = |v: &[String]| v.iter().map(|s| s.capacity() + 24).sum::<usize>();
        self.present.capacity() * 8
            + self.before.capacity() * 4
            + self.weights.capacity()
            + (self.bias.capacity() + self.scale.capacity()) * 4
            + strings(&self.labels)
            + self
                .trained
                .iter()
                .map(|(k, v)| k.capacity() + v.capacity() + 48)
                .sum::<usize>()
            + std::mem::size_of::<LinearModel>()
    }

    /// How many buckets have a row.
    pub fn row_count(&self) -> usize {
        self.weights.len() / MAX_LABELS - 1
    }

    /// The model file: exactly the bytes and scales in memory.
    pub fn to_bytes(&self) -> Vec<u8> {
        let k = self.labels.len();
        let header = Header {
            version: self.version.clone(),
            buckets: BUCKETS,
            labels: self.labels.clone(),
            bias: self.bias.clone(),
            scale: self.scale.clone(),
            rows: self.row_count() as u32,
            trained: self.trained.clone(),
        };
        let mut out = MAGIC.to_vec();
        out.extend(serde_json::to_vec(&header).expect("a header serializes"));
        out.push(b'\n');
        for (i, bucket) in self.buckets().enumerate() {
            out.extend(bucket.to_le_bytes());
            let at = (i + 1) * MAX_LABELS;
            let row = &self.weights[at..at + k];
            out.extend(row.iter().map(|&w| w as u8));
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
        if k == 0 || k > MAX_LABELS || header.bias.len() != k || header.scale.len() != k {
            return Err(ModelFileError::Header(
                "1 to 16 labels, and bias and scale with one entry per label".into(),
            ));
        }
        if !header.bias.iter().all(|b| b.is_finite())
            || !header.scale.iter().all(|s| s.is_finite() && *s > 0.0)
        {
            return Err(ModelFileError::Header(
                "bias must be finite and scale finite and positive".into(),
            ));
        }
        let body = &rest[end + 1..];
        let width = 4 + k;
        if body.len() != header.rows as usize * width {
            return Err(ModelFileError::Weights(
                "length does not match the rows in the header",
            ));
        }
        // Loaded on every cold start: each row goes straight into its padded place, with no
        // allocation of its own.
        let bucket_of = |chunk: &[u8]| u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let mut last = None;
        for chunk in body.chunks_exact(width) {
            let bucket = bucket_of(chunk);
            if bucket >= BUCKETS {
                return Err(ModelFileError::Weights("a bucket is out of range"));
            }
            if last.is_some_and(|l| l >= bucket) {
                return Err(ModelFileError::Weights("the rows are not in bucket order"));
            }
            last = Some(bucket);
        }
        let rows = body.chunks_exact(width).map(|chunk| {
            let mut padded = [0i8; MAX_LABELS];
            for (byte, &b) in padded.iter_mut().zip(&chunk[4..]) {
                *byte = b as i8;
            }
            (bucket_of(chunk), padded)
        });
        Ok(LinearModel::from_quantized(
            header.version,
            header.labels,
            header.bias,
            header.scale,
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
        // 2.0 and 1.0 are each label's largest weight (127 times its scale); 0.25 is an eighth
        // of 2.0, which a byte rounds to 16/127 of it, and -0.5 half of 1.0, -64/127 of it.
        let want = [
            -1.0 + 0.5 * 2.0 + 2.0 * 2.0 * 16.0 / 127.0,
            0.5 + 0.5 * -64.0 / 127.0 + 2.0 * 1.0,
        ];
        for (got, want) in logits.iter().zip(want) {
            assert!((got - want).abs() < 1e-5, "{logits:?} vs {want:?}");
        }
        assert_eq!(model.row(8), None);
        assert_eq!(model.buckets().collect::<Vec<_>>(), vec![7, BUCKETS - 1]);
    }

    #[test]
    fn the_file_holds_exactly_the_model_in_memory() {
        let model = small();
        let bytes = model.to_bytes();
        let back = LinearModel::from_bytes(&bytes).unwrap();
        assert_eq!(back, model);
        assert_eq!(back.to_bytes(), bytes);
        for (bucket, row) in [(7, [2.0f32, -0.5]), (BUCKETS - 1, [0.25, 1.0])] {
            for (a, b) in row.iter().zip(back.row(bucket).unwrap()) {
                assert!((a - b).abs() <= 1.0 / 127.0, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn rows_are_found_through_the_index_and_the_rest_read_zeros() {
        // Buckets on both sides of word boundaries, and a dense run.
        let buckets: Vec<u32> = [0, 1, 63, 64, 65, 127, 128, 4000, BUCKETS - 64, BUCKETS - 1]
            .into_iter()
            .chain(200..300)
            .collect();
        let rows = buckets.iter().map(|&b| (b, vec![(b % 250) as f32 - 125.0]));
        let model = LinearModel::new(
            "r".into(),
            vec!["a".into()],
            vec![0.0],
            rows,
            BTreeMap::new(),
        );
        assert_eq!(model.row_count(), buckets.len());
        // Adding a block's rows: the absent buckets add nothing.
        let mut sums: Sums = [0.0; MAX_LABELS];
        model.accumulate_block(&mut sums, 0.5, &[1, 2, 63, 3, 4000]);
        // In bytes: each weight over its label's scale.
        let want =
            0.5 * ((1.0f32 - 125.0) + (63.0 - 125.0) + (4000.0 % 250.0 - 125.0)) / model.scale[0];
        assert!((sums[0] - want).abs() < 1.0, "{} vs {want}", sums[0]);
        assert!(sums[1..].iter().all(|s| *s == 0.0));
        for b in 0..BUCKETS {
            let want = buckets.contains(&b).then_some((b % 250) as f32 - 125.0);
            let got = model.row(b).map(|r| r[0]);
            match (want, got) {
                (None, None) => {}
                (Some(w), Some(g)) => assert!((w - g).abs() < 0.6, "bucket {b}: {w} vs {g}"),
                other => panic!("bucket {b}: {other:?}"),
            }
        }
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
