//! Model and configuration versions: the API functions' per-tenant caches of what they decide
//! with, and the feedback loop's compare-and-set publish.
//!
//! A cache keeps each tenant's current [`ServedModel`] (or [`TenantConfig`]) across invocations
//! of a warm function and re-reads it at most once per `max_age`: new conversations start under
//! a version at most that stale, and messages do not pay a read each. A conversation stays on
//! the versions it started under (`conversation::Pin`); those never change, so each is read
//! once. A failed read keeps the cached version and is logged; with nothing cached it is an
//! error (process_message then answers without a record, under the built-in configuration and
//! the priors: docs/spool.md). Each cache is bounded by bytes (`CACHE_BUDGET_KB`) and evicts the
//! least recently used tenant's entry first (`lru.rs`).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lru::{ByteLru, Resident};
use super::{MAX_ATTEMPTS, ServiceError, back_off};
use crate::domain::config::TenantConfig;
use crate::domain::ids::TenantId;
use crate::domain::learning::ModelVersion;
use crate::domain::model::ServedModel;
use crate::store::{Store, StoreError, Write};

/// The bytes a cache may hold by default (`CACHE_BUDGET_KB`): three quarters for the current
/// versions, a quarter for the versions conversations are pinned to. process_message keeps
/// two (models, configurations): 4 MiB on top of its 14 MB without tenants keeps it under the
/// 24 MB budget however many tenants it serves (the bench's "Memory across tenants").
pub const DEFAULT_CACHE_BYTES: usize = 2 * 1024 * 1024;

/// A per-tenant cache of a versioned document (the served model, the configuration): the
/// current version, re-read at most once per `max_age`, and the older versions conversations
/// are pinned to, which never change once published and so are read at most once. Both parts
/// are bounded by bytes and drop the least recently used tenant's entry first.
struct TenantCache<T> {
    max_age: Duration,
    current: Mutex<ByteLru<TenantId, (Arc<T>, Instant)>>,
    pinned: Mutex<ByteLru<(TenantId, u64), Arc<T>>>,
}

impl<T: Send + Sync + Resident> TenantCache<T> {
    fn new(max_age: Duration, budget: usize) -> TenantCache<T> {
        TenantCache {
            max_age,
            current: Mutex::new(ByteLru::new(budget - budget / 4)),
            pinned: Mutex::new(ByteLru::new(budget / 4)),
        }
    }

    /// The tenant's current version: cached, or read by `read` (`fallback` when the tenant
    /// has none). A failed read keeps the cached one, however old, and is logged; with none
    /// cached it is an error: a conversation must never start (and be pinned) under a version
    /// that only stands in for the tenant's.
    async fn current<F>(
        &self,
        tenant: &TenantId,
        read: F,
        fallback: impl FnOnce() -> Arc<T>,
    ) -> Result<Arc<T>, StoreError>
    where
        F: Future<Output = Result<Option<T>, StoreError>>,
    {
        let cached = lock(&self.current).get(tenant).cloned();
        if let Some((value, fetched)) = &cached
            && fetched.elapsed() < self.max_age
        {
            return Ok(value.clone());
        }
        let fresh = match read.await {
            Ok(found) => found.map_or_else(fallback, Arc::new),
            Err(e) => {
                let (value, _) = cached.ok_or(e.clone())?;
                tracing::warn!(error = %e, "read failed; deciding with the cached version");
                return Ok(value);
            }
        };
        let bytes = fresh.resident_bytes();
        lock(&self.current).insert(tenant.clone(), (fresh.clone(), Instant::now()), bytes);
        Ok(fresh)
    }
}

impl<T> TenantCache<T> {
    /// The tenant's current version as cached, however old, without a read.
    fn cached(&self, tenant: &TenantId) -> Option<Arc<T>> {
        lock(&self.current)
            .get(tenant)
            .map(|(value, _)| value.clone())
    }
}

impl<T: Versioned + Send + Sync + Resident> TenantCache<T> {
    /// Version `version`, which never changes once published: `zero()` for version 0 (nothing
    /// is stored for it), the cached current one when it is that version, else a copy read by
    /// `read` once and kept. One read on a miss, none on a hit. A version the store does not
    /// have is an error (a conversation is pinned only to published versions).
    async fn at_version<F>(
        &self,
        tenant: &TenantId,
        version: u64,
        zero: impl FnOnce() -> Arc<T>,
        read: F,
    ) -> Result<Arc<T>, StoreError>
    where
        F: Future<Output = Result<Option<T>, StoreError>>,
    {
        if version == 0 {
            return Ok(zero());
        }
        if let Some((current, _)) = lock(&self.current).get(tenant)
            && current.number() == version
        {
            return Ok(current.clone());
        }
        let key = (tenant.clone(), version);
        if let Some(value) = lock(&self.pinned).get(&key) {
            return Ok(value.clone());
        }
        let value = match read.await? {
            Some(value) => Arc::new(value),
            None => {
                return Err(StoreError::Corrupt(format!(
                    "version {version}, which a conversation is pinned to, is not stored"
                )));
            }
        };
        let bytes = value.resident_bytes();
        lock(&self.pinned).insert(key, value.clone(), bytes);
        Ok(value)
    }
}

impl Resident for TenantConfig {}

/// A served model's detector layer is held twice: its base64 text (as read, one byte per
/// character) and, once a message detects with it, the parsed layer
/// ([`LinearModel::resident_bytes`]); the rest of the model as any document.
impl Resident for ServedModel {
    fn resident_bytes(&self) -> usize {
        let Some(layer) = &self.model.detector else {
            return super::lru::weight(self);
        };
        let text = layer.weights.len();
        let parsed = layer
            .model()
            .map_or(0, crate::domain::detector::LinearModel::resident_bytes);
        let rest = super::lru::json_length(self).saturating_sub(text);
        rest * super::lru::PARSED_PER_JSON_BYTE + text + parsed + super::lru::ENTRY_OVERHEAD
    }
}

/// A document with a version number.
trait Versioned {
    fn number(&self) -> u64;
}

impl Versioned for ServedModel {
    fn number(&self) -> u64 {
        self.version
    }
}

impl Versioned for TenantConfig {
    fn number(&self) -> u64 {
        self.version
    }
}

fn lock<V>(mutex: &Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The served model of each tenant: the current version for new conversations, and the version
/// a running conversation is pinned to.
pub struct ModelCache(TenantCache<ServedModel>);

impl ModelCache {
    /// A cache of [`DEFAULT_CACHE_BYTES`].
    pub fn new(max_age: Duration) -> ModelCache {
        Self::with_budget(max_age, DEFAULT_CACHE_BYTES)
    }

    /// A cache that holds at most `bytes` of models (as [`Resident`] weighs them).
    pub fn with_budget(max_age: Duration, bytes: usize) -> ModelCache {
        ModelCache(TenantCache::new(max_age, bytes))
    }

    /// The tenant's model, read from the store when the cached one is older than `max_age`;
    /// version 0 (the priors) before the first publish. An error only when the read fails
    /// and nothing is cached.
    pub async fn current<S: Store>(
        &self,
        store: &S,
        tenant: &TenantId,
    ) -> Result<Arc<ServedModel>, StoreError> {
        self.0
            .current(tenant, store.served_model(tenant), Arc::default)
            .await
    }

    /// The tenant's model as cached, however old, or the priors (version 0) when none is:
    /// what an answer the store could not record is decided with. No read.
    pub fn cached_or_priors(&self, tenant: &TenantId) -> Arc<ServedModel> {
        self.0.cached(tenant).unwrap_or_default()
    }

    /// Version `version` of the tenant's model (the priors for 0).
    pub async fn version<S: Store>(
        &self,
        store: &S,
        tenant: &TenantId,
        version: u64,
    ) -> Result<Arc<ServedModel>, StoreError> {
        let read = async {
            let found = store.model_version(tenant, version).await?;
            Ok(found.map(|m| ServedModel {
                version: m.version,
                model: m.model,
            }))
        };
        self.0.at_version(tenant, version, Arc::default, read).await
    }
}

/// The configuration of each tenant, as [`ModelCache`] keeps models: version 0 (the built-in
/// one) until the tenant publishes its own.
pub struct ConfigCache(TenantCache<TenantConfig>);

impl ConfigCache {
    /// A cache of [`DEFAULT_CACHE_BYTES`].
    pub fn new(max_age: Duration) -> ConfigCache {
        Self::with_budget(max_age, DEFAULT_CACHE_BYTES)
    }

    /// A cache that holds at most `bytes` of configurations.
    pub fn with_budget(max_age: Duration, bytes: usize) -> ConfigCache {
        ConfigCache(TenantCache::new(max_age, bytes))
    }

    pub async fn current<S: Store>(
        &self,
        store: &S,
        tenant: &TenantId,
    ) -> Result<Arc<TenantConfig>, StoreError> {
        self.0
            .current(tenant, store.current_config(tenant), builtin_config)
            .await
    }

    /// The tenant's configuration as cached, however old, or the built-in one (version 0)
    /// when none is. No read.
    pub fn cached_or_builtin(&self, tenant: &TenantId) -> Arc<TenantConfig> {
        self.0.cached(tenant).unwrap_or_else(builtin_config)
    }

    /// Version `version` of the tenant's configuration (the built-in one for 0).
    pub async fn version<S: Store>(
        &self,
        store: &S,
        tenant: &TenantId,
        version: u64,
    ) -> Result<Arc<TenantConfig>, StoreError> {
        let read = store.config_version(tenant, version);
        self.0
            .at_version(tenant, version, builtin_config, read)
            .await
    }
}

/// The built-in configuration, parsed once per process.
pub fn builtin_config() -> Arc<TenantConfig> {
    static BUILTIN: std::sync::OnceLock<Arc<TenantConfig>> = std::sync::OnceLock::new();
    BUILTIN
        .get_or_init(|| Arc::new(TenantConfig::builtin()))
        .clone()
}

/// What publishing a version did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    Done,
    /// Version `model.version` (or a later one) was published by someone else, or its
    /// predecessor is not the newest: this version was not written.
    Superseded,
}

/// Publishes `model` as the version after the newest, by compare-and-set. A write lost to a
/// concurrent transaction while the predecessor is still the newest version is tried again.
pub async fn publish_model<S: Store>(
    store: &S,
    tenant: &TenantId,
    model: &ModelVersion,
) -> Result<Published, ServiceError> {
    for attempt in 0..MAX_ATTEMPTS {
        if store.publish_model(tenant, model).await? == Write::Done {
            return Ok(Published::Done);
        }
        let newest = store.served_model(tenant).await?.map_or(0, |m| m.version);
        if newest + 1 != model.version {
            return Ok(Published::Superseded);
        }
        back_off(attempt).await;
    }
    Err(ServiceError::Contention(MAX_ATTEMPTS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::detector::LinearModel;
    use crate::domain::model::{DetectorLayer, Model};

    #[test]
    fn a_model_with_a_detector_layer_weighs_its_text_and_its_parsed_rows() {
        let rows = (0..500u32).map(|b| (b * 7, vec![0.5, -0.25]));
        let layer = LinearModel::new(
            "layer".into(),
            vec!["objection".into(), "question".into()],
            vec![0.0, 0.0],
            rows,
            Default::default(),
        );
        let parsed = layer.resident_bytes();
        // The bucket bitmap and its index are there whatever the rows: 48 KiB and more.
        assert!(parsed > 48 * 1024, "{parsed}");
        let bare = ServedModel {
            version: 3,
            model: Model::default(),
        };
        let mut with_layer = bare.clone();
        with_layer.model.detector = Some(DetectorLayer::new(&layer, 40));
        let text = with_layer.model.detector.as_ref().unwrap().weights.len();
        let grown = with_layer.resident_bytes() - bare.resident_bytes();
        assert!(grown >= text + parsed, "{grown} < {text} + {parsed}");
        assert!(grown < text + parsed + 1024, "{grown}");
    }
}
