//! The event tracking rate's denominator: writes the API functions answered with a 503
//! because the store failed. A failure cannot be written to the store that just failed, so a
//! process keeps its tenants' failures in memory and adds them to the tenant's counter after
//! its next successful write for that tenant (one extra write, only after an outage). Failures
//! still in memory when a process ends are lost: the rate can only err towards 1, never below
//! the truth.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::ids::TenantId;
use crate::store::{FailedWrite, Store};

/// Failed writes per tenant and kind, not yet in the store.
#[derive(Default)]
pub struct FailedWrites {
    pending: Mutex<HashMap<(TenantId, FailedWrite), u64>>,
}

impl FailedWrites {
    /// Notes that a write of this kind for the tenant failed.
    pub fn note(&self, tenant: &TenantId, kind: FailedWrite) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        *pending.entry((tenant.clone(), kind)).or_default() += 1;
    }

    /// After a successful write for `tenant`: adds its noted failures to its counter. A
    /// failure to do so keeps them noted for the next time.
    pub async fn flush<S: Store>(&self, store: &S, tenant: &TenantId) {
        for kind in [FailedWrite::Exchange, FailedWrite::End] {
            let key = (tenant.clone(), kind);
            let count = {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                match pending.remove(&key) {
                    Some(count) => count,
                    None => continue,
                }
            };
            if let Err(e) = store.count_failed_writes(tenant, kind, count).await {
                tracing::warn!(error = %e, count, "counting failed writes failed; kept for later");
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                *pending.entry(key).or_default() += count;
            }
        }
    }

    /// Failures noted and not yet in the store, all tenants.
    pub fn pending(&self) -> u64 {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.values().sum()
    }
}
