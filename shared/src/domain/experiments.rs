//! A/B experiments held as data (`shared/catalog/experiments.json`): each names its variants,
//! their weights and what each changes. Assignment hashes (tenant, experiment, conversation), so
//! it is sticky and deterministic: the same conversation always gets the same variant.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::domain::ids::{ConversationId, TenantId};
use crate::domain::random::stable_hash;

pub const DEFAULT_EXPERIMENTS: &str = include_str!("../../catalog/experiments.json");

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExperimentError {
    #[error("experiments are not valid JSON: {0}")]
    Json(String),
    #[error("experiment {0}: {1}")]
    Invalid(String, &'static str),
}

/// How the decision engine explores.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyName {
    Thompson,
    EpsilonGreedy,
}

/// What a variant changes; unset fields leave the default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    pub tone: Option<String>,
    pub policy: Option<PolicyName>,
    pub epsilon: Option<f64>,
    pub threshold: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    pub weight: u32,
    #[serde(default)]
    pub control: bool,
    #[serde(default)]
    pub changes: Changes,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub variants: Vec<Variant>,
}

impl Experiment {
    pub fn control(&self) -> Option<&Variant> {
        self.variants.iter().find(|v| v.control)
    }

    fn total_weight(&self) -> u64 {
        self.variants.iter().map(|v| u64::from(v.weight)).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiments {
    pub experiments: Vec<Experiment>,
}

/// The settings a conversation runs with, after its variants' changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Treatment {
    pub tone: String,
    pub policy: PolicyName,
    pub epsilon: f64,
    pub threshold: f64,
}

/// A conversation's variants and the settings they give.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub variants: BTreeMap<String, String>,
    pub treatment: Treatment,
}

impl Experiments {
    pub fn from_json(raw: &str) -> Result<Experiments, ExperimentError> {
        let parsed: Experiments =
            serde_json::from_str(raw).map_err(|e| ExperimentError::Json(e.to_string()))?;
        for experiment in &parsed.experiments {
            let invalid = |why| ExperimentError::Invalid(experiment.name.clone(), why);
            if experiment.variants.is_empty() || experiment.total_weight() == 0 {
                return Err(invalid("needs variants with a positive total weight"));
            }
            if experiment.variants.iter().filter(|v| v.control).count() != 1 {
                return Err(invalid("needs exactly one control variant"));
            }
            for variant in &experiment.variants {
                if let Some(t) = variant.changes.threshold
                    && !(0.0..=1.0).contains(&t)
                {
                    return Err(invalid("threshold must lie in [0, 1]"));
                }
                if let Some(e) = variant.changes.epsilon
                    && !(0.0..=1.0).contains(&e)
                {
                    return Err(invalid("epsilon must lie in [0, 1]"));
                }
            }
        }
        Ok(parsed)
    }

    pub fn builtin() -> Experiments {
        Experiments::from_json(DEFAULT_EXPERIMENTS)
            .unwrap_or_else(|e| panic!("built-in experiments: {e}"))
    }

    pub fn get(&self, name: &str) -> Option<&Experiment> {
        self.experiments.iter().find(|e| e.name == name)
    }

    /// The variant of every experiment for this conversation, and the resulting settings.
    pub fn assign(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        default_threshold: f64,
    ) -> Assignment {
        let mut treatment = Treatment {
            tone: "neutral".to_owned(),
            policy: PolicyName::Thompson,
            epsilon: 0.1,
            threshold: default_threshold,
        };
        let mut variants = BTreeMap::new();
        for experiment in &self.experiments {
            let bucket = stable_hash(&[
                tenant.as_str(),
                experiment.name.as_str(),
                conversation.as_str(),
            ]) % experiment.total_weight();
            let mut upper = 0;
            let chosen = experiment
                .variants
                .iter()
                .find(|v| {
                    upper += u64::from(v.weight);
                    bucket < upper
                })
                .unwrap_or(&experiment.variants[0]);
            let changes = &chosen.changes;
            if let Some(tone) = &changes.tone {
                treatment.tone.clone_from(tone);
            }
            if let Some(policy) = changes.policy {
                treatment.policy = policy;
            }
            if let Some(epsilon) = changes.epsilon {
                treatment.epsilon = epsilon;
            }
            if let Some(threshold) = changes.threshold {
                treatment.threshold = threshold;
            }
            variants.insert(experiment.name.clone(), chosen.name.clone());
        }
        Assignment {
            variants,
            treatment,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(i: usize) -> (TenantId, ConversationId) {
        (
            TenantId::parse("acme").unwrap(),
            ConversationId::parse(&format!("c-{i}")).unwrap(),
        )
    }

    #[test]
    fn assignment_is_sticky_and_follows_the_weights() {
        let experiments = Experiments::builtin();
        let mut warm = 0;
        let mut greedy = 0;
        for i in 0..4_000 {
            let (t, c) = ids(i);
            let first = experiments.assign(&t, &c, 0.7);
            assert_eq!(first, experiments.assign(&t, &c, 0.7), "sticky");
            if first.variants["reply_tone"] == "warm" {
                assert_eq!(first.treatment.tone, "warm");
                warm += 1;
            }
            if first.variants["strategy_policy"] == "epsilon_greedy" {
                assert_eq!(first.treatment.policy, PolicyName::EpsilonGreedy);
                greedy += 1;
            }
            if first.variants["detection_threshold"] == "strict" {
                assert_eq!(first.treatment.threshold, 0.8);
            } else {
                assert_eq!(first.treatment.threshold, 0.7);
            }
        }
        // 50/50 and 80/20 within a few standard deviations.
        assert!((1_850..=2_150).contains(&warm), "warm {warm}");
        assert!((680..=920).contains(&greedy), "greedy {greedy}");
    }

    #[test]
    fn invalid_definitions_are_refused() {
        let no_control =
            r#"{"experiments": [{"name": "x", "variants": [{"name": "a", "weight": 1}]}]}"#;
        assert!(Experiments::from_json(no_control).is_err());
        let bad_threshold = r#"{"experiments": [{"name": "x", "variants": [
            {"name": "a", "weight": 1, "control": true, "changes": {"threshold": 2.0}}]}]}"#;
        assert!(Experiments::from_json(bad_threshold).is_err());
    }
}
