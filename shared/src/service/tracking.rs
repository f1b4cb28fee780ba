//! The event tracking rate's inputs, counted by the code paths themselves (docs/spool.md):
//! process_message counts each exchange it answered `"recorded": false`; the spool consumer and
//! the replay command count each spooled or logged exchange they got into the store.
//!
//! An unrecorded answer cannot be counted in the store that just failed, so a process keeps
//! its tenants' counts in memory and adds them to the tenant's counter after its next
//! successful write for that tenant (one extra write, only after an outage). Counts still in
//! memory when a process ends are lost, which errs towards 1. One case errs the other way: the
//! same message answered without a record by two processes (or by one, on both sides of its
//! flush) within SQS's five-minute deduplication window is counted twice and recovered once
//! (docs/spool.md).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::domain::ids::{ConversationId, MessageId, TenantId};
use crate::store::{Store, Tracked};

type Noted = HashMap<TenantId, HashSet<(ConversationId, MessageId)>>;

/// Exchanges answered without a record, per tenant, not yet in the store: each message once,
/// however often it was answered so (the spool keeps one copy of a message sent twice within
/// SQS's deduplication window, and it is recovered once).
#[derive(Default)]
pub struct UnrecordedAnswers {
    pending: Mutex<Noted>,
}

impl UnrecordedAnswers {
    /// Notes that this message of the tenant was answered without a record.
    pub fn note(&self, tenant: &TenantId, conversation: &ConversationId, message: &MessageId) {
        self.lock()
            .entry(tenant.clone())
            .or_default()
            .insert((conversation.clone(), message.clone()));
    }

    /// After a successful write for `tenant`: adds its noted answers to its counter. A
    /// failure to do so keeps them noted for the next time.
    pub async fn flush<S: Store>(&self, store: &S, tenant: &TenantId) {
        let Some(noted) = self.lock().remove(tenant) else {
            return;
        };
        let count = noted.len() as u64;
        if let Err(e) = store
            .count_tracking(tenant, Tracked::Unrecorded, count)
            .await
        {
            tracing::warn!(error = %e, count, "counting unrecorded answers failed; kept for later");
            self.lock().entry(tenant.clone()).or_default().extend(noted);
        }
    }

    /// Answers noted and not yet in the store, all tenants.
    pub fn pending(&self) -> u64 {
        self.lock().values().map(|noted| noted.len() as u64).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Noted> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}
