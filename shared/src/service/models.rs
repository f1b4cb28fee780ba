//! Model versions: the API functions' per-tenant cache of the part they decide with, and the
//! feedback loop's compare-and-set publish.
//!
//! The cache keeps each tenant's [`ServedModel`] across invocations of a warm function and
//! re-reads it at most once per `max_age`: decisions use a model at most that stale, and
//! messages do not pay a read each. A failed read keeps the cached model (or the priors) and is
//! logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{MAX_ATTEMPTS, ServiceError, back_off};
use crate::domain::ids::TenantId;
use crate::domain::learning::ModelVersion;
use crate::domain::model::ServedModel;
use crate::store::{Store, Write};

/// Tenants kept at most; beyond, the cache starts afresh (a cold start costs one read).
const MAX_TENANTS: usize = 1_024;

pub struct ModelCache {
    max_age: Duration,
    entries: Mutex<HashMap<TenantId, (Arc<ServedModel>, Instant)>>,
}

impl ModelCache {
    pub fn new(max_age: Duration) -> ModelCache {
        ModelCache {
            max_age,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, tenant: &TenantId) -> Option<(Arc<ServedModel>, Instant)> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(tenant).cloned()
    }

    /// The tenant's model, read from the store when the cached one is older than `max_age`;
    /// version 0 (the priors) before the first publish.
    pub async fn current<S: Store>(&self, store: &S, tenant: &TenantId) -> Arc<ServedModel> {
        let cached = self.cached(tenant);
        if let Some((model, fetched)) = &cached
            && fetched.elapsed() < self.max_age
        {
            return model.clone();
        }
        let fresh = match store.served_model(tenant).await {
            Ok(found) => Arc::new(found.unwrap_or_default()),
            Err(e) => {
                tracing::warn!(error = %e, "model read failed; deciding with the cached model");
                return cached.map(|(model, _)| model).unwrap_or_default();
            }
        };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_TENANTS && !entries.contains_key(tenant) {
            entries.clear();
        }
        entries.insert(tenant.clone(), (fresh.clone(), Instant::now()));
        fresh
    }
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
