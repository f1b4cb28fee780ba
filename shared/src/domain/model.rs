//! What the decision engine and the detector read from a model version: the strategy
//! posteriors and the pattern calibration. The version around it (`learning::ModelVersion`)
//! adds what only the feedback loop needs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A Beta posterior over a win probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
}

/// The part of a published version the API functions decide with: its number and its model.
/// Read from the same stored version, with the feedback loop's tallies and report skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServedModel {
    pub version: u64,
    pub model: Model,
}
