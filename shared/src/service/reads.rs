//! What the read routes answer: a tenant's conversations, model versions and report, as views
//! of what the store keeps. Every read is a GetItem or a Query of the tenant's own keys (no
//! scan), and nothing here writes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::domain::config::TenantConfig;
use crate::domain::conversation::{Cursor, Exchange, OutcomeRecord};
use crate::domain::ids::{ConversationId, TenantId};
use crate::domain::labels::StoredLabel;
use crate::domain::learning::{ModelVersion, RunReport};
use crate::domain::stats::{Proportion, beta_interval};
use crate::domain::time::Millis;
use crate::service::ServiceError;
use crate::store::{ConversationEntry, Store, StoreError};

/// The most items a list answers at once.
pub const MAX_PAGE: usize = 100;
/// Items a list answers when the client names no limit.
pub const DEFAULT_PAGE: usize = 20;

/// One page of a list and where the next begins (`None` on the last page).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    #[serde(flatten)]
    pub items: T,
    pub next_cursor: Option<String>,
}

/// A conversation as stored: its turns, its end if it ended, and the labels on its detections.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationView {
    pub conversation_id: ConversationId,
    pub started_at: Millis,
    pub turns: Vec<Exchange>,
    pub end: Option<OutcomeRecord>,
    pub labels: Vec<StoredLabel>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationItem {
    pub conversation_id: ConversationId,
    pub started_at: Millis,
    pub model_version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conversations {
    pub conversations: Vec<ConversationItem>,
}

/// A model version in the list: when it was published and its run's headline figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelItem {
    pub version: u64,
    pub published_at: Millis,
    pub outcomes_learned: u64,
    /// Outcomes its run learned from; `None` for a version stored without a report.
    pub run_outcomes: Option<u64>,
    /// Its run's event tracking rate.
    pub tracking: Option<Proportion>,
    /// Detection precision and recall on the labels up to its run.
    pub precision: Option<Proportion>,
    pub recall: Option<Proportion>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Models {
    pub models: Vec<ModelItem>,
}

/// A strategy's posterior in a context, with its mean and equal-tailed 95% credible interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PosteriorView {
    pub alpha: f64,
    pub beta: f64,
    pub mean: f64,
    pub interval: (f64, f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DetectorLayerView {
    pub labels_learned: u64,
}

/// One model version: its posteriors, calibrations and the report of the run that published
/// it. The running tallies and the detector layer's weights stay in the store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelView {
    pub version: u64,
    pub published_at: Millis,
    pub outcomes_learned: u64,
    pub posteriors: BTreeMap<String, BTreeMap<String, PosteriorView>>,
    pub calibration: BTreeMap<String, f64>,
    pub detector_layer: Option<DetectorLayerView>,
    pub report: Option<RunReport>,
}

/// The tenant's report today: the current version and its run's metrics and A/B tables.
/// `feedback_loop report --json` prints the same.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportView {
    pub tenant: TenantId,
    /// 0 before the first publish.
    pub version: u64,
    pub published_at: Option<Millis>,
    pub outcomes_learned: u64,
    /// Set when the current version is an admin's copy of an older one (a rollback).
    pub activated_from: Option<u64>,
    pub report: Option<RunReport>,
    /// The configuration new conversations start under, and the latest changes to it.
    pub config: ConfigSummary,
}

/// A tenant's configuration as the report shows it: the current version and what the newest
/// versions changed, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigSummary {
    pub version: u64,
    pub history: Vec<ConfigChange>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigChange {
    pub version: u64,
    pub published_at: Millis,
    pub changes: Vec<String>,
}

/// Configuration versions the report lists.
pub const CONFIG_HISTORY_SHOWN: usize = 10;

/// A conversation's stored log and labels; `NotFound` when it has no message (in this tenant:
/// another tenant's id names nothing here).
pub async fn conversation<S: Store>(
    store: &S,
    tenant: &TenantId,
    id: &ConversationId,
) -> Result<ConversationView, ServiceError> {
    let log = store.conversation_log(tenant, id).await?;
    let Some(first) = log.exchanges.first() else {
        return Err(ServiceError::NotFound);
    };
    let started_at = first.summary.started_at.unwrap_or(first.draft.at);
    let labels = store.labels(tenant, id).await?;
    Ok(ConversationView {
        conversation_id: id.clone(),
        started_at,
        turns: log.exchanges,
        end: log.end,
        labels,
    })
}

/// The cursor text of a conversation list: `{started_at}.{conversation_id}`.
pub fn conversation_cursor(cursor: &Cursor) -> String {
    format!("{}.{}", cursor.at.0, cursor.conversation_id)
}

/// Reads a cursor [`conversation_cursor`] wrote; `None` for anything else.
pub fn parse_conversation_cursor(text: &str) -> Option<Cursor> {
    let (at, id) = text.split_once('.')?;
    if at.is_empty() || !at.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Cursor {
        at: Millis(at.parse().ok()?),
        conversation_id: ConversationId::parse(id).ok()?,
    })
}

/// Up to `limit` of the tenant's conversations started at or after `since`, newest first,
/// after `after` (a previous page's `next_cursor`).
pub async fn conversations<S: Store>(
    store: &S,
    tenant: &TenantId,
    since: Millis,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<Page<Conversations>, StoreError> {
    let limit = limit.clamp(1, MAX_PAGE);
    // One more than asked tells whether another page follows.
    let mut entries = store.conversations(tenant, since, after, limit + 1).await?;
    let next_cursor = if entries.len() > limit {
        entries.truncate(limit);
        entries.last().map(|e| conversation_cursor(&e.cursor()))
    } else {
        None
    };
    let conversations = entries
        .into_iter()
        .map(|entry: ConversationEntry| ConversationItem {
            conversation_id: entry.conversation_id,
            started_at: entry.started_at,
            model_version: entry.model_version,
        })
        .collect();
    Ok(Page {
        items: Conversations { conversations },
        next_cursor,
    })
}

/// Up to `limit` model versions below `before` (all when `None`), newest first.
pub async fn models<S: Store>(
    store: &S,
    tenant: &TenantId,
    before: Option<u64>,
    limit: usize,
) -> Result<Page<Models>, StoreError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let mut versions = store.model_history(tenant, before, limit + 1).await?;
    let next_cursor = if versions.len() > limit {
        versions.truncate(limit);
        versions.last().map(|v| v.version.to_string())
    } else {
        None
    };
    let models = versions
        .iter()
        .map(|version| {
            let report = version.report.as_ref();
            ModelItem {
                version: version.version,
                published_at: version.published_at,
                outcomes_learned: version.outcomes_learned,
                run_outcomes: report.map(|r| r.outcomes),
                tracking: report.map(|r| r.tracking.run),
                precision: report.map(|r| r.accuracy.precision),
                recall: report.map(|r| r.accuracy.recall),
            }
        })
        .collect();
    Ok(Page {
        items: Models { models },
        next_cursor,
    })
}

/// One model version; `None` when the tenant has none by that number.
pub async fn model<S: Store>(
    store: &S,
    tenant: &TenantId,
    version: u64,
) -> Result<Option<ModelView>, StoreError> {
    Ok(store
        .model_version(tenant, version)
        .await?
        .map(|version| model_view(&version)))
}

/// The view of a stored version.
pub fn model_view(version: &ModelVersion) -> ModelView {
    let posteriors = version
        .model
        .posteriors
        .iter()
        .map(|(context, strategies)| {
            let strategies = strategies
                .iter()
                .map(|(strategy, posterior)| {
                    let view = PosteriorView {
                        alpha: posterior.alpha,
                        beta: posterior.beta,
                        mean: posterior.mean(),
                        interval: beta_interval(posterior.alpha, posterior.beta),
                    };
                    (strategy.clone(), view)
                })
                .collect();
            (context.clone(), strategies)
        })
        .collect();
    ModelView {
        version: version.version,
        published_at: version.published_at,
        outcomes_learned: version.outcomes_learned,
        posteriors,
        calibration: version.model.calibration.clone(),
        detector_layer: version
            .model
            .detector
            .as_ref()
            .map(|layer| DetectorLayerView {
                labels_learned: layer.labels_learned,
            }),
        report: version.report.clone(),
    }
}

/// The report of the tenant's current version, with its newest configuration versions
/// (`configs`, newest first; none: the built-in version 0).
pub fn report_view(
    tenant: &TenantId,
    current: Option<&ModelVersion>,
    configs: &[TenantConfig],
) -> ReportView {
    let builtin = crate::service::builtin_config();
    let shown: Vec<&TenantConfig> = if configs.is_empty() {
        vec![&builtin]
    } else {
        configs.iter().take(CONFIG_HISTORY_SHOWN).collect()
    };
    ReportView {
        tenant: tenant.clone(),
        version: current.map_or(0, |v| v.version),
        published_at: current.map(|v| v.published_at),
        outcomes_learned: current.map_or(0, |v| v.outcomes_learned),
        activated_from: current.and_then(|v| v.activated_from),
        report: current.and_then(|v| v.report.clone()),
        config: ConfigSummary {
            version: shown.first().map_or(0, |c| c.version),
            history: shown
                .iter()
                .map(|c| ConfigChange {
                    version: c.version,
                    published_at: c.published_at,
                    changes: c.changes.clone(),
                })
                .collect(),
        },
    }
}

/// The report of the tenant's current version, read from the store.
pub async fn report<S: Store>(store: &S, tenant: &TenantId) -> Result<ReportView, StoreError> {
    let current = store.current_model(tenant).await?;
    let configs = store
        .config_history(tenant, None, CONFIG_HISTORY_SHOWN)
        .await?;
    Ok(report_view(tenant, current.as_ref(), &configs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_cursor_reads_back_and_nothing_else_does() {
        let cursor = Cursor {
            at: Millis(1_764_600_000_123),
            conversation_id: ConversationId::parse("c.1-a").unwrap(),
        };
        let text = conversation_cursor(&cursor);
        assert_eq!(text, "1764600000123.c.1-a");
        assert_eq!(parse_conversation_cursor(&text), Some(cursor));
        for bad in [
            "",
            ".",
            "12",
            "12.",
            ".c-1",
            "-1.c-1",
            "+1.c-1",
            "1x.c-1",
            "99999999999999999999999.c-1",
            "12.c#1",
            "12.c/1",
        ] {
            assert_eq!(parse_conversation_cursor(bad), None, "{bad:?}");
        }
    }
}
