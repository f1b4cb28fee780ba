//! The event tracking rate's inputs, counted by the code paths themselves (docs/spool.md):
//! process_message counts each exchange it answered `"recorded": false`; the spool consumer and
//! the replay command count each spooled or logged exchange they got into the store.
//!
//! An unrecorded answer cannot be counted in the store that just failed, so a process keeps
//! its tenants' counts in memory and adds them to the tenant's counter after its next
//! successful write for that tenant (one extra write, only after an outage). Counts still in
//! memory when a process ends are lost: the rate can only err towards 1 (and the all-time
//! backlog never below 0), never below the truth.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::ids::TenantId;
use crate::store::{Store, Tracked};

/// Exchanges answered without a record, per tenant, not yet in the store.
#[derive(Default)]
pub struct UnrecordedAnswers {
    pending: Mutex<HashMap<TenantId, u64>>,
}

impl UnrecordedAnswers {
    /// Notes that an exchange of the tenant was answered without a record.
    pub fn note(&self, tenant: &TenantId) {
        *self.lock().entry(tenant.clone()).or_default() += 1;
    }

    /// After a successful write for `tenant`: adds its noted answers to its counter. A
    /// failure to do so keeps them noted for the next time.
    pub async fn flush<S: Store>(&self, store: &S, tenant: &TenantId) {
        let Some(count) = self.lock().remove(tenant) else {
            return;
        };
        if let Err(e) = store
            .count_tracking(tenant, Tracked::Unrecorded, count)
            .await
        {
            tracing::warn!(error = %e, count, "counting unrecorded answers failed; kept for later");
            *self.lock().entry(tenant.clone()).or_default() += count;
        }
    }

    /// Answers noted and not yet in the store, all tenants.
    pub fn pending(&self) -> u64 {
        self.lock().values().sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, u64>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}
