//! The current model version of each tenant, cached across invocations of a warm function and
//! re-read at most once per `max_age`: decisions use a model at most that stale, and messages
//! do not pay a read each. A failed read keeps the cached model (or the priors) and is logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ids::TenantId;
use crate::model::{Model, ModelVersion};
use crate::store::Store;

/// Tenants kept at most; beyond, the cache starts afresh (a cold start costs one read).
const MAX_TENANTS: usize = 1_024;

pub struct ModelCache {
    max_age: Duration,
    entries: Mutex<HashMap<TenantId, (Arc<ModelVersion>, Instant)>>,
}

/// Version 0: no model published yet, priors only.
fn priors() -> Arc<ModelVersion> {
    Arc::new(ModelVersion {
        version: 0,
        published_at: crate::time::Millis(0),
        watermark: None,
        outcomes_learned: 0,
        model: Model::default(),
        state: Default::default(),
        report: None,
    })
}

impl ModelCache {
    pub fn new(max_age: Duration) -> ModelCache {
        ModelCache {
            max_age,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, tenant: &TenantId) -> Option<(Arc<ModelVersion>, Instant)> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(tenant).cloned()
    }

    /// The tenant's model, read from the store when the cached one is older than `max_age`.
    pub async fn current<S: Store>(&self, store: &S, tenant: &TenantId) -> Arc<ModelVersion> {
        let cached = self.cached(tenant);
        if let Some((model, fetched)) = &cached
            && fetched.elapsed() < self.max_age
        {
            return model.clone();
        }
        let fresh = match store.current_model(tenant).await {
            Ok(Some(model)) => Arc::new(model),
            Ok(None) => priors(),
            Err(e) => {
                tracing::warn!(error = %e, "model read failed; deciding with the cached model");
                return cached.map(|(model, _)| model).unwrap_or_else(priors);
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
