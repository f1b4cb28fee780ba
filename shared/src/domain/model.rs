//! What the decision engine and the detector read from a model version: the strategy
//! posteriors and the pattern calibration. The version around it (`learning::ModelVersion`)
//! adds what only the feedback loop needs.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::domain::detector::LinearModel;

/// A Beta posterior over a win probability. Exactly `alpha` and `beta`: a playbook's prior with
/// another field is refused, not read in part.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Beta {
    pub alpha: f64,
    pub beta: f64,
}

impl Beta {
    /// The uniform prior.
    pub const UNIFORM: Beta = Beta {
        alpha: 1.0,
        beta: 1.0,
    };

    pub fn mean(&self) -> f64 {
        self.alpha / (self.alpha + self.beta)
    }
}

/// What the decision engine and the pattern detector read from a model version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Decision context (for example a pattern name) to strategy to posterior.
    pub posteriors: BTreeMap<String, BTreeMap<String, Beta>>,
    /// Pattern name to a learned confidence multiplier.
    pub calibration: BTreeMap<String, f64>,
    /// The tenant's detector layer, learned from its labels (none before its first label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<DetectorLayer>,
}

/// A tenant's layer over the shipped detector (`detector::layer`), as a model version keeps
/// it: the layer's model file in base64, read into memory once per process and version.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DetectorLayer {
    /// Labels the layer has learned from, all time.
    pub labels_learned: u64,
    /// The layer's model file (`LinearModel::to_bytes`), base64.
    pub weights: String,
    #[serde(skip)]
    parsed: OnceLock<Option<Arc<LinearModel>>>,
}

impl PartialEq for DetectorLayer {
    fn eq(&self, other: &Self) -> bool {
        self.labels_learned == other.labels_learned && self.weights == other.weights
    }
}

impl DetectorLayer {
    pub fn new(layer: &LinearModel, labels_learned: u64) -> DetectorLayer {
        let parsed = OnceLock::new();
        let _ = parsed.set(Some(Arc::new(layer.clone())));
        DetectorLayer {
            labels_learned,
            weights: crate::domain::detector::layer::base64_encode(&layer.to_bytes()),
            parsed,
        }
    }

    /// The layer, read once; `None` when the stored weights cannot be read (detection then
    /// goes on with the shipped model alone).
    pub fn model(&self) -> Option<&LinearModel> {
        self.parsed
            .get_or_init(|| {
                let bytes = crate::domain::detector::layer::base64_decode(&self.weights)?;
                LinearModel::from_bytes(&bytes).ok().map(Arc::new)
            })
            .as_deref()
    }
}

/// The part of a published version the API functions decide with: its number and its model.
/// Read from the same stored version, with the feedback loop's tallies and report skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServedModel {
    pub version: u64,
    pub model: Model,
}
