//! A published model version: what the feedback loop learned and process_message decides with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::conversation::Cursor;
use crate::learning::{LearningState, RunReport};
use crate::time::Millis;

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

/// One entry of a tenant's model history. Versions start at 1 and grow by one; the watermark
/// records the last outcome this version has learned from, so publishing a version and advancing
/// the watermark are a single write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub version: u64,
    pub published_at: Millis,
    pub watermark: Option<Cursor>,
    /// Outcomes learned from, over the whole history.
    pub outcomes_learned: u64,
    pub model: Model,
    /// The running tallies the next run continues from.
    #[serde(default)]
    pub state: LearningState,
    /// The metrics and A/B tables of the run that published this version.
    #[serde(default)]
    pub report: Option<RunReport>,
}
