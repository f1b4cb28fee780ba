//! A tenant's configuration: its experiments and its playbook, as data, versioned like models.
//! Version 0 is the built-in set every tenant starts from (nothing stored); each change an admin
//! makes publishes the next version beside its predecessor (compare-and-set), the whole history
//! kept, each version saying what it changed.

use serde::{Deserialize, Serialize};

use crate::domain::decision::Playbook;
use crate::domain::experiments::{Assignment, Experiment, Experiments, Invalid, Status};
use crate::domain::ids::{ConversationId, TenantId};
use crate::domain::time::Millis;

/// The largest configuration we store, in bytes of JSON: a DynamoDB item holds 400 KB, and the
/// item's keys and attribute names need a little room.
pub const MAX_CONFIG_BYTES: usize = 300_000;

/// One version of a tenant's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantConfig {
    pub version: u64,
    /// When it was published (0 for the built-in version 0).
    pub published_at: Millis,
    /// What this version changed from its predecessor, one line each.
    #[serde(default)]
    pub changes: Vec<String>,
    pub experiments: Vec<Experiment>,
    pub playbook: Playbook,
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig::builtin()
    }
}

impl TenantConfig {
    /// Version 0: the built-in experiments and playbook.
    pub fn builtin() -> TenantConfig {
        TenantConfig {
            version: 0,
            published_at: Millis(0),
            changes: vec!["the built-in experiments and playbook".to_owned()],
            experiments: Experiments::builtin().experiments,
            playbook: Playbook::builtin(),
        }
    }

    /// The experiments, as the assignment and validation see them.
    pub fn experiment_set(&self) -> Experiments {
        Experiments {
            experiments: self.experiments.clone(),
        }
    }

    pub fn experiment(&self, name: &str) -> Option<&Experiment> {
        self.experiments.iter().find(|e| e.name == name)
    }

    /// Checks everything a version must hold: valid experiments, a playbook with templates in
    /// every tone they use, and a stored size under [`MAX_CONFIG_BYTES`].
    pub fn validate(&self) -> Result<(), Invalid> {
        let experiments = self.experiment_set();
        experiments.validate()?;
        self.playbook
            .validate(&experiments.tones())
            .map_err(|e| e.within("playbook"))?;
        fn bytes<T: Serialize>(value: &T) -> usize {
            serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
        }
        let size = bytes(self);
        if size > MAX_CONFIG_BYTES {
            // Name the larger part: the one to trim.
            let field = if bytes(&self.playbook) >= bytes(&self.experiments) {
                "playbook"
            } else {
                "experiments"
            };
            return Err(Invalid::new(
                field,
                format!("the configuration would take {size} bytes; at most {MAX_CONFIG_BYTES}"),
            ));
        }
        Ok(())
    }

    /// The variants and settings of a new conversation under this version.
    pub fn assign(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        default_threshold: f64,
    ) -> Assignment {
        crate::domain::experiments::assign(
            &self.experiments,
            tenant,
            conversation,
            default_threshold,
        )
    }

    /// The next version: `self` with `edit` applied, checked, and its changes described.
    /// `Err` names the field at fault; nothing is published then.
    pub fn next(
        &self,
        at: Millis,
        edit: impl FnOnce(&mut TenantConfig) -> Result<(), Invalid>,
    ) -> Result<TenantConfig, Invalid> {
        let mut edited = self.clone();
        edit(&mut edited)?;
        self.followed_by(at, edited)
    }

    /// `edited` (this version with an admin's changes) as the next version: numbered, dated,
    /// its changes described, and checked.
    pub fn followed_by(&self, at: Millis, edited: TenantConfig) -> Result<TenantConfig, Invalid> {
        let mut next = edited;
        next.version = self.version + 1;
        next.published_at = at;
        next.changes = describe(self, &next);
        next.validate()?;
        Ok(next)
    }
}

/// The configuration versions a feedback run reports on, by number; version 0, the built-in
/// one, is always there.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigVersions {
    versions: std::collections::BTreeMap<u64, TenantConfig>,
}

impl ConfigVersions {
    /// Version 0 alone: a tenant that never changed its configuration.
    pub fn builtin() -> ConfigVersions {
        ConfigVersions::new(Vec::new())
    }

    /// `versions` (any order) and version 0.
    pub fn new(versions: Vec<TenantConfig>) -> ConfigVersions {
        let mut map = std::collections::BTreeMap::from([(0, TenantConfig::builtin())]);
        for config in versions {
            map.insert(config.version, config);
        }
        ConfigVersions { versions: map }
    }

    /// The newest version known.
    pub fn current(&self) -> &TenantConfig {
        self.versions
            .values()
            .next_back()
            .unwrap_or_else(|| unreachable!("version 0 is always there"))
    }

    pub fn get(&self, version: u64) -> Option<&TenantConfig> {
        self.versions.get(&version)
    }
}

/// What changed between two versions, one line per change.
pub fn describe(before: &TenantConfig, after: &TenantConfig) -> Vec<String> {
    let mut lines = Vec::new();
    for experiment in &after.experiments {
        let Some(old) = before.experiment(&experiment.name) else {
            lines.push(format!(
                "experiment {}: created, {}",
                experiment.name,
                split(experiment)
            ));
            continue;
        };
        if old == experiment {
            continue;
        }
        if old.status != experiment.status || old.shipped != experiment.shipped {
            lines.push(match experiment.status {
                Status::Running => format!("experiment {}: running again", experiment.name),
                Status::Stopped => format!(
                    "experiment {}: stopped, new conversations get {}",
                    experiment.name,
                    experiment
                        .control()
                        .map_or("the control", |v| v.name.as_str())
                ),
                Status::Shipped => format!(
                    "experiment {}: shipped {}",
                    experiment.name,
                    experiment.shipped.as_deref().unwrap_or("?")
                ),
            });
        }
        let (mut old_plain, mut new_plain) = (old.clone(), experiment.clone());
        for e in [&mut old_plain, &mut new_plain] {
            e.status = Status::Running;
            e.shipped = None;
        }
        if old_plain != new_plain {
            lines.push(format!(
                "experiment {}: {} (was {})",
                experiment.name,
                split(experiment),
                split(old)
            ));
        }
    }
    for old in &before.experiments {
        if after.experiment(&old.name).is_none() {
            lines.push(format!("experiment {}: removed", old.name));
        }
    }
    if before.playbook != after.playbook {
        lines.push("playbook replaced".to_owned());
    }
    lines
}

/// `a 50 / b 50`: an experiment's variants and weights.
fn split(experiment: &Experiment) -> String {
    experiment
        .variants
        .iter()
        .map(|v| format!("{} {}", v.name, v.weight))
        .collect::<Vec<_>>()
        .join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_version_describes_its_changes_and_keeps_the_rest() {
        let v0 = TenantConfig::builtin();
        v0.validate().unwrap();
        let v1 = v0
            .next(Millis(5), |config| {
                let tone = config
                    .experiments
                    .iter_mut()
                    .find(|e| e.name == "reply_tone")
                    .unwrap();
                tone.variants[0].weight = 70;
                tone.variants[1].weight = 30;
                Ok(())
            })
            .unwrap();
        assert_eq!(v1.version, 1);
        assert_eq!(v1.published_at, Millis(5));
        assert_eq!(
            v1.changes,
            vec!["experiment reply_tone: neutral 70 / warm 30 (was neutral 50 / warm 50)"]
        );
        let v2 = v1
            .next(Millis(6), |config| {
                let e = config
                    .experiments
                    .iter_mut()
                    .find(|e| e.name == "detection_threshold")
                    .unwrap();
                e.status = Status::Stopped;
                Ok(())
            })
            .unwrap();
        assert_eq!(
            v2.changes,
            vec!["experiment detection_threshold: stopped, new conversations get default"]
        );
        assert_eq!(v2.playbook, v0.playbook);
    }

    #[test]
    fn a_tone_without_templates_is_refused_with_its_field() {
        let refused = TenantConfig::builtin()
            .next(Millis(1), |config| {
                config.experiments[0].variants[1].changes.tone = Some("formal".into());
                Ok(())
            })
            .unwrap_err();
        assert!(
            refused.field.starts_with("playbook.strategies.") && refused.field.ends_with(".formal"),
            "{refused}"
        );
    }

    #[test]
    fn the_size_is_bounded() {
        let refused = TenantConfig::builtin()
            .next(Millis(1), |config| {
                config.experiments[0].description = "x".repeat(400);
                for i in 0..29 {
                    let mut copy = config.experiments[0].clone();
                    copy.name = format!("copy-{i}");
                    config.experiments.push(copy);
                }
                Ok(())
            })
            .err();
        // 32 experiments (the most) with long descriptions fit: the bound on bytes is far above.
        assert!(refused.is_none(), "{refused:?}");
        // 40 spare strategies of 8 templates of 1,000 characters each: every part within its
        // own bound, the whole over the item's.
        let mut playbook = serde_json::to_value(&TenantConfig::builtin().playbook).unwrap();
        for i in 0..40 {
            playbook["strategies"][format!("spare_{i}")] =
                serde_json::json!({ "neutral": vec!["x".repeat(1_000); 8] });
        }
        let mut big = TenantConfig::builtin();
        big.playbook = serde_json::from_value(playbook).unwrap();
        let refused = big.validate().unwrap_err();
        assert_eq!(refused.field, "playbook", "{refused}");
        assert!(refused.reason.contains("at most 300000"), "{refused}");
    }
}
