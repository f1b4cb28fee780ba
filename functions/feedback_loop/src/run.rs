//! One tenant's feedback run: take the lease, read the outcomes after the watermark in pages,
//! learn them in batches, publish one model version per batch by compare-and-set, release.
//!
//! Nothing is written before the publish, and the version carries the watermark, so publishing
//! the model and advancing the watermark are one conditional write. A run that dies before it
//! publishes leaves no trace (its lease expires and the next run redoes the batch); two runs that
//! both read the same outcomes (the lease expired under a slow one) cannot both publish, because
//! only one version can follow the current one. Each outcome is learned once per version chain.

use std::ops::ControlFlow;

use salesloop::domain::config::ConfigVersions;
use salesloop::domain::decision::Playbook;
use salesloop::domain::detector::Weights;
use salesloop::domain::labels::StoredLabel;
use salesloop::domain::learning::Learner;
use salesloop::service::{Published, ServiceError, publish_model};
use salesloop::{Millis, ModelVersion, PendingMark, Store, TenantId};

/// The lease every run of a tenant competes for.
pub const LEASE: &str = "feedback";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Outcomes learned into one model version.
    pub batch_size: usize,
    /// Outcomes read per store query.
    pub page_size: usize,
    /// Labels (stored after the fact) learned into one model version.
    pub label_batch: usize,
    /// How long a run holds the lease without renewing it (renewed after each batch).
    pub lease_ttl_ms: u64,
    /// Outcomes younger than this are left for the next run: an outcome stamped before this
    /// run's read but written after it (a slow or retried write) would otherwise fall behind
    /// the watermark and never be learned.
    pub settle_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch_size: 10_000,
            page_size: 500,
            label_batch: 10_000,
            lease_ttl_ms: 15 * 60 * 1000,
            settle_ms: 30_000,
        }
    }
}

/// Where a run is, reported to the step hook before it goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Leased,
    /// A batch has been read and learned, nothing written yet.
    Read {
        outcomes: u64,
    },
    /// The version is built and about to be published.
    Publishing {
        version: u64,
    },
    Published {
        version: u64,
    },
}

/// How a tenant's run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TenantRun {
    /// Another run holds the lease: this one did nothing.
    Busy,
    /// No outcome after the watermark (older than the settle time).
    NothingNew { version: Option<u64> },
    /// Published these versions, oldest first.
    Published(Vec<ModelVersion>),
    /// Another run published the version this one built (its lease had expired): this run's
    /// batch is discarded; the versions it published before are kept.
    Superseded {
        published: Vec<ModelVersion>,
        expected: u64,
    },
    /// The step hook stopped the run (a simulated crash): nothing released.
    Interrupted(Step),
}

impl TenantRun {
    pub fn label(&self) -> &'static str {
        match self {
            TenantRun::Busy => "busy",
            TenantRun::NothingNew { .. } => "nothing_new",
            TenantRun::Published(_) => "published",
            TenantRun::Superseded { .. } => "superseded",
            TenantRun::Interrupted(_) => "interrupted",
        }
    }

    pub fn published(&self) -> &[ModelVersion] {
        match self {
            TenantRun::Published(versions) => versions,
            TenantRun::Superseded { published, .. } => published,
            _ => &[],
        }
    }
}

/// Configuration versions a run reads: enough for the report's tables (a version older than
/// these shows its tallies with weight 0 and no sample-ratio check).
const CONFIGS_READ: usize = 2 * salesloop::domain::learning::CONFIGS_REPORTED;

/// What a run learns with.
pub struct Feedback<'a, S> {
    pub store: &'a S,
    /// The shipped detector weights a tenant's detector layer is learned over; none: labels
    /// count in the metrics and calibration only.
    pub detector: Option<Weights<'a>>,
    pub settings: Settings,
}

impl<S: Store> Feedback<'_, S> {
    /// Runs the feedback loop for one tenant. `holder` names this run in the lease; `clock`
    /// gives the time; `hook` sees each step and may stop the run there, as a crash would.
    pub async fn run_tenant(
        &self,
        tenant: &TenantId,
        holder: &str,
        clock: &(dyn Fn() -> Millis + Sync),
        hook: &mut (dyn FnMut(Step) -> ControlFlow<()> + Send),
    ) -> Result<TenantRun, ServiceError> {
        let ttl = self.settings.lease_ttl_ms;
        let Some(lease) = self
            .store
            .acquire_lease(tenant, LEASE, holder, clock(), ttl)
            .await?
        else {
            return Ok(TenantRun::Busy);
        };
        if hook(Step::Leased).is_break() {
            return Ok(TenantRun::Interrupted(Step::Leased));
        }
        let outcome = self.batches(tenant, holder, clock, hook).await;
        if matches!(outcome, Ok(TenantRun::Interrupted(_))) {
            return outcome;
        }
        // Release even after an error: the next run need not wait for the lease to expire.
        let released = self.store.release_lease(&lease).await;
        let outcome = outcome?;
        if let Err(e) = released {
            tracing::warn!(error = %e, "releasing the feedback lease failed; it will expire");
        }
        Ok(outcome)
    }

    async fn batches(
        &self,
        tenant: &TenantId,
        holder: &str,
        clock: &(dyn Fn() -> Millis + Sync),
        hook: &mut (dyn FnMut(Step) -> ControlFlow<()> + Send),
    ) -> Result<TenantRun, ServiceError> {
        // The tenant's pending marks before any outcome is read: a mark is cleared below only
        // if its shard has not moved since, and its newest end is one this run has learned.
        let marks = match self.store.pending_marks(tenant).await {
            Ok(marks) => marks,
            Err(e) => {
                tracing::warn!(error = %e, "reading the pending marks failed; they stay for the next run");
                Vec::new()
            }
        };
        let mut caught_up_to = None;
        let mut previous = self.store.current_model(tenant).await?;
        // The tenant's playbook (its priors and candidates) and the configuration versions
        // whose results tables the report shows: one Query.
        let configs = ConfigVersions::new(
            self.store
                .config_history(tenant, None, CONFIGS_READ)
                .await?,
        );
        let playbook = &configs.current().playbook;
        let mut published = Vec::new();
        loop {
            let settled = Millis(clock().0.saturating_sub(self.settings.settle_ms));
            let (mut learner, full) = self
                .read_batch(tenant, playbook, previous.as_ref(), settled)
                .await?;
            let labels = self.read_labels(tenant, previous.as_ref(), settled).await?;
            learner.learn_labels(&labels);
            let full = full || labels.len() >= self.settings.label_batch.max(1);
            let outcomes = learner.outcomes();
            if hook(Step::Read { outcomes }).is_break() {
                return Ok(TenantRun::Interrupted(Step::Read { outcomes }));
            }
            if outcomes == 0 && labels.is_empty() {
                caught_up_to = Some(settled);
                break;
            }
            // The tracking counters only grow: a read that fails now is made up by a later run,
            // so it never costs this run its batch.
            match self.store.tracking_counts(tenant).await {
                Ok(counts) => learner.note_tracking(counts),
                Err(e) => tracing::warn!(
                    error = %e,
                    "reading the tracking counters failed; a later version counts them"
                ),
            }
            let next = learner.finish(&configs, previous.as_ref(), clock());
            let version = next.version;
            if hook(Step::Publishing { version }).is_break() {
                return Ok(TenantRun::Interrupted(Step::Publishing { version }));
            }
            if publish_model(self.store, tenant, &next).await? == Published::Superseded {
                return Ok(TenantRun::Superseded {
                    published,
                    expected: version,
                });
            }
            if hook(Step::Published { version }).is_break() {
                return Ok(TenantRun::Interrupted(Step::Published { version }));
            }
            published.push(next.clone());
            previous = Some(next);
            if !full {
                caught_up_to = Some(settled);
                break;
            }
            // More to do: renew the lease before the next batch, or stop if it was lost.
            let renewed = self
                .store
                .acquire_lease(tenant, LEASE, holder, clock(), self.settings.lease_ttl_ms)
                .await?;
            if renewed.is_none() {
                break;
            }
        }
        if let Some(settled) = caught_up_to {
            self.clear_marks(tenant, &marks, settled).await;
        }
        Ok(if published.is_empty() {
            TenantRun::NothingNew {
                version: previous.map(|v| v.version),
            }
        } else {
            TenantRun::Published(published)
        })
    }

    /// Clears the marks whose newest end is settled at `settled`: every outcome they count was
    /// then visible to this run's reads and has been learned. A mark with a younger end stays
    /// (its outcome may not have reached the index yet), and so does one whose shard moved
    /// since it was read. A failure leaves the marks for the next scheduled run, which then
    /// finds nothing new and clears them.
    async fn clear_marks(&self, tenant: &TenantId, marks: &[PendingMark], settled: Millis) {
        let learned: Vec<PendingMark> = marks
            .iter()
            .filter(|mark| mark.last_at <= settled)
            .copied()
            .collect();
        if learned.is_empty() {
            return;
        }
        if let Err(e) = self.store.clear_pending(tenant, &learned).await {
            tracing::warn!(error = %e, "clearing the pending marks failed; the next scheduled run clears them");
        }
    }

    /// Learns up to one batch of settled outcomes after the watermark; true when the batch is
    /// full (more may follow).
    async fn read_batch<'p>(
        &'p self,
        tenant: &TenantId,
        playbook: &'p Playbook,
        previous: Option<&ModelVersion>,
        settled: Millis,
    ) -> Result<(Learner<'p>, bool), ServiceError> {
        let mut learner = Learner::new(playbook, previous);
        if let Some(base) = self.detector {
            learner = learner.with_detector(base);
        }
        let mut cursor = previous.and_then(|v| v.watermark.clone());
        let batch = self.settings.batch_size.max(1) as u64;
        loop {
            let limit = (batch - learner.outcomes()).min(self.settings.page_size.max(1) as u64);
            let page = self
                .store
                .outcomes_since(tenant, cursor.as_ref(), limit as usize)
                .await?;
            let fetched = page.len() as u64;
            for outcome in &page {
                if outcome.at > settled {
                    return Ok((learner, false));
                }
                learner.learn(outcome);
            }
            if learner.outcomes() >= batch {
                return Ok((learner, true));
            }
            if fetched < limit {
                return Ok((learner, false));
            }
            cursor = page.last().map(|o| o.cursor());
        }
    }

    /// Up to one batch of settled labels after the version's label watermark, in order.
    async fn read_labels(
        &self,
        tenant: &TenantId,
        previous: Option<&ModelVersion>,
        settled: Millis,
    ) -> Result<Vec<StoredLabel>, ServiceError> {
        let mut cursor = previous.and_then(|v| v.label_watermark.clone());
        let batch = self.settings.label_batch.max(1);
        let mut labels = Vec::new();
        while labels.len() < batch {
            let limit = (batch - labels.len()).min(self.settings.page_size.max(1));
            let page = self
                .store
                .labels_since(tenant, cursor.as_ref(), limit)
                .await?;
            let fetched = page.len();
            for label in page {
                if label.at > settled {
                    return Ok(labels);
                }
                cursor = Some(label.cursor());
                labels.push(label);
            }
            if fetched < limit {
                break;
            }
        }
        Ok(labels)
    }
}
