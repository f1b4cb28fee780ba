//! A/B experiments held as data: each names its variants, their weights, what each changes and
//! whether it is running, stopped or shipped. The built-in set (`shared/catalog/experiments.json`)
//! is what a tenant starts from; a tenant's own set lives in its configuration
//! (`domain::config`).
//!
//! Assignment rules (docs/steering.md):
//! - a running experiment hashes (tenant, experiment, conversation) into its weights, so the
//!   same conversation under the same weights always gets the same variant;
//! - a stopped experiment gives every new conversation its control, a shipped one its shipped
//!   variant;
//! - a conversation keeps the variants (and the settings they gave) of its first message for its
//!   whole life, whatever the weights become: `conversation::Pin` carries them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::ids::{ConversationId, TenantId};
use crate::domain::random::stable_hash;

pub const DEFAULT_EXPERIMENTS: &str = include_str!("../../catalog/experiments.json");

/// The most variants an experiment may have.
pub const MAX_VARIANTS: usize = 16;
/// The most experiments a tenant may run at once (stopped and shipped ones included).
pub const MAX_EXPERIMENTS: usize = 32;
/// The largest weight of a variant.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// A configuration refused: the field at fault (a path such as `variants[1].weight`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same refusal, its field seen from one level up (`prefix.field`).
    pub fn within(self, prefix: &str) -> Invalid {
        let field = if self.field.is_empty() {
            prefix.to_owned()
        } else if self.field.starts_with('[') {
            format!("{prefix}{}", self.field)
        } else {
            format!("{prefix}.{}", self.field)
        };
        Invalid { field, ..self }
    }
}

/// Reads `T` from JSON text, naming the field at fault when it cannot.
pub fn parse_json<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, Invalid> {
    let mut deserializer = serde_json::Deserializer::from_str(raw);
    let parsed: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        let message = e.into_inner().to_string();
        // serde_json appends the position; the field already says where.
        let reason = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        // A missing field is named by the object that lacks it: name the field itself.
        let missing = reason
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned);
        match missing {
            Some(name) if field.is_empty() => Invalid::new(name, reason),
            Some(name) => Invalid::new(format!("{field}.{name}"), reason),
            None => Invalid::new(field, reason),
        }
    })?;
    deserializer
        .end()
        .map_err(|_| Invalid::new("", "trailing characters after the JSON value"))?;
    Ok(parsed)
}

/// How the decision engine explores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyName {
    Thompson,
    EpsilonGreedy,
}

/// What a variant changes; unset fields leave the default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    pub weight: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub control: bool,
    #[serde(default)]
    pub changes: Changes,
}

/// Whether an experiment still splits new conversations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Running,
    /// New conversations get the control.
    Stopped,
    /// New conversations get the shipped variant.
    Shipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub variants: Vec<Variant>,
    #[serde(default)]
    pub status: Status,
    /// The variant every new conversation gets, when `status` is `shipped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipped: Option<String>,
}

impl Experiment {
    pub fn control(&self) -> Option<&Variant> {
        self.variants.iter().find(|v| v.control)
    }

    pub fn variant(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.name == name)
    }

    fn total_weight(&self) -> u64 {
        self.variants.iter().map(|v| u64::from(v.weight)).sum()
    }

    /// The share of new conversations each variant gets under the experiment's status, as
    /// weights (the sample-ratio check's expectation): the configured weights while running;
    /// all to the control (stopped) or the shipped variant.
    pub fn effective_weight(&self, variant: &Variant) -> u32 {
        match self.status {
            Status::Running => variant.weight,
            Status::Stopped => u32::from(variant.control),
            Status::Shipped => u32::from(self.shipped.as_deref() == Some(variant.name.as_str())),
        }
    }

    /// Checks the experiment; the field names are relative to it.
    pub fn validate(&self) -> Result<(), Invalid> {
        crate::domain::ids::check("name", &self.name)
            .map_err(|e| Invalid::new("name", e.to_string()))?;
        if self.description.chars().count() > 500 {
            return Err(Invalid::new(
                "description",
                "may hold at most 500 characters",
            ));
        }
        if self.variants.len() < 2 || self.variants.len() > MAX_VARIANTS {
            return Err(Invalid::new(
                "variants",
                format!("needs 2 to {MAX_VARIANTS} variants"),
            ));
        }
        for (i, variant) in self.variants.iter().enumerate() {
            let at = |field: &str| format!("variants[{i}].{field}");
            crate::domain::ids::check("variant name", &variant.name)
                .map_err(|e| Invalid::new(at("name"), e.to_string()))?;
            if self.variants[..i].iter().any(|v| v.name == variant.name) {
                return Err(Invalid::new(at("name"), "names another variant too"));
            }
            if variant.weight == 0 || variant.weight > MAX_WEIGHT {
                return Err(Invalid::new(
                    at("weight"),
                    format!("must be a positive integer of at most {MAX_WEIGHT}"),
                ));
            }
            let changes = &variant.changes;
            if let Some(t) = changes.threshold
                && !(t > 0.0 && t <= 1.0)
            {
                return Err(Invalid::new(at("changes.threshold"), "must lie in (0, 1]"));
            }
            if let Some(e) = changes.epsilon
                && !(0.0..=1.0).contains(&e)
            {
                return Err(Invalid::new(at("changes.epsilon"), "must lie in [0, 1]"));
            }
            if let Some(tone) = &changes.tone {
                crate::domain::ids::check("tone", tone)
                    .map_err(|e| Invalid::new(at("changes.tone"), e.to_string()))?;
            }
        }
        if self.variants.iter().filter(|v| v.control).count() != 1 {
            return Err(Invalid::new(
                "variants",
                "needs exactly one control variant",
            ));
        }
        match (self.status, &self.shipped) {
            (Status::Shipped, Some(name)) if self.variant(name).is_some() => Ok(()),
            (Status::Shipped, _) => Err(Invalid::new(
                "shipped",
                "a shipped experiment names one of its variants",
            )),
            (_, Some(_)) => Err(Invalid::new(
                "shipped",
                "only a shipped experiment names a shipped variant",
            )),
            (_, None) => Ok(()),
        }
    }

    /// The variant of a new conversation.
    fn pick(&self, tenant: &TenantId, conversation: &ConversationId) -> &Variant {
        let fixed = match self.status {
            Status::Running => None,
            Status::Stopped => self.control(),
            Status::Shipped => self.shipped.as_deref().and_then(|name| self.variant(name)),
        };
        if let Some(variant) = fixed {
            return variant;
        }
        let total = self.total_weight().max(1);
        let bucket =
            stable_hash(&[tenant.as_str(), self.name.as_str(), conversation.as_str()]) % total;
        let mut upper = 0;
        self.variants
            .iter()
            .find(|v| {
                upper += u64::from(v.weight);
                bucket < upper
            })
            .unwrap_or(&self.variants[0])
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiments {
    pub experiments: Vec<Experiment>,
}

/// The settings a conversation runs with, after its variants' changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub fn from_json(raw: &str) -> Result<Experiments, Invalid> {
        let parsed: Experiments = parse_json(raw)?;
        parsed.validate()?;
        Ok(parsed)
    }

    /// Checks every experiment, and that no two share a name.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.experiments.len() > MAX_EXPERIMENTS {
            return Err(Invalid::new(
                "experiments",
                format!("at most {MAX_EXPERIMENTS} experiments"),
            ));
        }
        for (i, experiment) in self.experiments.iter().enumerate() {
            let prefix = format!("experiments[{i}]");
            experiment.validate().map_err(|e| e.within(&prefix))?;
            if self.experiments[..i]
                .iter()
                .any(|e| e.name == experiment.name)
            {
                return Err(Invalid::new(
                    format!("{prefix}.name"),
                    "names another experiment too",
                ));
            }
        }
        Ok(())
    }

    pub fn builtin() -> Experiments {
        Experiments::from_json(DEFAULT_EXPERIMENTS)
            .unwrap_or_else(|e| panic!("built-in experiments: {e}"))
    }

    pub fn get(&self, name: &str) -> Option<&Experiment> {
        self.experiments.iter().find(|e| e.name == name)
    }

    /// Every tone a variant switches to, and `neutral`: the tones templates must exist in.
    pub fn tones(&self) -> std::collections::BTreeSet<&str> {
        let mut tones = std::collections::BTreeSet::from(["neutral"]);
        for experiment in &self.experiments {
            for variant in &experiment.variants {
                if let Some(tone) = &variant.changes.tone {
                    tones.insert(tone.as_str());
                }
            }
        }
        tones
    }

    /// The variant of every experiment for a new conversation, and the resulting settings.
    pub fn assign(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        default_threshold: f64,
    ) -> Assignment {
        assign(&self.experiments, tenant, conversation, default_threshold)
    }
}

/// The variant of each of `experiments` for a new conversation, and the resulting settings.
pub fn assign(
    experiments: &[Experiment],
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
    for experiment in experiments {
        let chosen = experiment.pick(tenant, conversation);
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
    fn stopped_and_shipped_experiments_give_every_new_conversation_one_variant() {
        let mut experiments = Experiments::builtin();
        let tone = experiments
            .experiments
            .iter_mut()
            .find(|e| e.name == "reply_tone")
            .unwrap();
        tone.status = Status::Shipped;
        tone.shipped = Some("warm".into());
        let policy = experiments
            .experiments
            .iter_mut()
            .find(|e| e.name == "strategy_policy")
            .unwrap();
        policy.status = Status::Stopped;
        experiments.validate().unwrap();
        for i in 0..500 {
            let (t, c) = ids(i);
            let assigned = experiments.assign(&t, &c, 0.7);
            assert_eq!(assigned.variants["reply_tone"], "warm");
            assert_eq!(assigned.treatment.tone, "warm");
            assert_eq!(assigned.variants["strategy_policy"], "thompson");
            assert_eq!(assigned.treatment.policy, PolicyName::Thompson);
        }
    }

    #[test]
    fn invalid_definitions_are_refused_with_the_field_named() {
        let refused = |raw: &str| Experiments::from_json(raw).unwrap_err();
        let no_control = r#"{"experiments": [{"name": "x", "variants": [
            {"name": "a", "weight": 1}, {"name": "b", "weight": 1}]}]}"#;
        assert_eq!(refused(no_control).field, "experiments[0].variants");
        let bad_threshold = r#"{"experiments": [{"name": "x", "variants": [
            {"name": "a", "weight": 1, "control": true, "changes": {"threshold": 2.0}},
            {"name": "b", "weight": 1}]}]}"#;
        assert_eq!(
            refused(bad_threshold).field,
            "experiments[0].variants[0].changes.threshold"
        );
        let zero_threshold = bad_threshold.replace("2.0", "0.0");
        assert_eq!(
            refused(&zero_threshold).field,
            "experiments[0].variants[0].changes.threshold"
        );
        let zero_weight = r#"{"experiments": [{"name": "x", "variants": [
            {"name": "a", "weight": 0, "control": true}, {"name": "b", "weight": 1}]}]}"#;
        assert_eq!(
            refused(zero_weight).field,
            "experiments[0].variants[0].weight"
        );
        let fractional = zero_weight.replace("\"weight\": 0", "\"weight\": 1.5");
        assert_eq!(
            refused(&fractional).field,
            "experiments[0].variants[0].weight"
        );
        let bad_name = zero_weight
            .replace("\"weight\": 0", "\"weight\": 1")
            .replace("\"b\"", "\"b#1\"");
        assert_eq!(refused(&bad_name).field, "experiments[0].variants[1].name");
        let shipped_unknown = r#"{"experiments": [{"name": "x", "status": "shipped",
            "shipped": "zz", "variants": [
            {"name": "a", "weight": 1, "control": true}, {"name": "b", "weight": 1}]}]}"#;
        assert_eq!(refused(shipped_unknown).field, "experiments[0].shipped");
        let missing = r#"{"experiments": [{"name": "x"}]}"#;
        assert_eq!(refused(missing).field, "experiments[0].variants");
        let unknown_field = r#"{"experiments": [{"name": "x", "colour": 1, "variants": []}]}"#;
        assert_eq!(refused(unknown_field).field, "experiments[0].colour");
    }
}
