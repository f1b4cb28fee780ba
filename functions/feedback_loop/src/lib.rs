//! feedback_loop as a library: the run (`run`), its outputs (`report`), and the Lambda event
//! handling below, so that the workspace's tests drive them directly.

pub mod report;
pub mod run;

use std::ops::ControlFlow;

use std::sync::Arc;

use salesloop::clients::lambda::Invoker;
use salesloop::domain::detector::{LinearModel, ModelFileError, Weights};
use salesloop::edge::settings::FeedbackSettings;
use salesloop::service::ServiceError;
use salesloop::{Millis, Store, StoreError, TenantId};
use serde_json::{Value, json};
use tracing::Instrument;

use run::{Feedback, Settings, TenantRun};

/// How the scheduled invocation starts the runs of the tenants in the pending list.
pub enum FanOut {
    /// One asynchronous invoke of this function per tenant, [`INVOKES_IN_FLIGHT`] at a time:
    /// each run is its own invocation, with its own 15 minutes, retried by Lambda and sent to
    /// the failure queue on its own, and the function's reserved concurrency bounds how many
    /// run at once (events wait in Lambda's queue meanwhile). As deployed.
    Invoke(Invoker),
    /// Every run inside the scheduled invocation, one after another: local runs (the embedded
    /// store has one writer) and the command line.
    InProcess,
}

/// Invokes the fan-out keeps in flight.
pub const INVOKES_IN_FLIGHT: usize = 16;

/// What a process keeps between invocations.
pub struct App<S> {
    pub store: S,
    /// The detector weights tenants' layers are learned over, when `PATTERN_DETECTOR` names
    /// them; none: the shipped ones, parsed only when a run first has labels to learn.
    pub detector: Option<Arc<LinearModel>>,
    pub settings: Settings,
    pub fan_out: FanOut,
}

impl<S: Store> App<S> {
    /// An app whose scheduled invocation runs every pending tenant itself.
    pub fn new(store: S, settings: Settings) -> App<S> {
        App {
            store,
            detector: None,
            settings,
            fan_out: FanOut::InProcess,
        }
    }

    /// The app with the scheduled runs started through `fan_out`.
    pub fn with_fan_out(mut self, fan_out: FanOut) -> App<S> {
        self.fan_out = fan_out;
        self
    }

    /// The app with tenants' detector layers learned over `weights` (a detector file, as
    /// `PATTERN_DETECTOR` names) instead of the built-in weights.
    pub fn with_detector(mut self, weights: &[u8]) -> Result<App<S>, ModelFileError> {
        self.detector = Some(Arc::new(LinearModel::from_bytes(weights)?));
        Ok(self)
    }

    pub fn feedback(&self) -> Feedback<'_, S> {
        Feedback {
            store: &self.store,
            detector: Some(match &self.detector {
                Some(model) => Weights::Given(model),
                None => Weights::Shipped,
            }),
            settings: self.settings.clone(),
        }
    }
}

/// The run's settings from feedback_loop's settings (`FEEDBACK_SETTLE_SECONDS`,
/// `FEEDBACK_BATCH_SIZE`).
pub fn run_settings(settings: &FeedbackSettings) -> Settings {
    Settings {
        settle_ms: settings.settle_seconds * 1000,
        batch_size: usize::try_from(settings.batch_size).unwrap_or(usize::MAX),
        ..Settings::default()
    }
}

/// Why an invocation failed. A failed invocation is retried by Lambda, then lands in the
/// failure queue.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeedbackError {
    #[error("unrecognised event: {0}")]
    UnrecognisedEvent(String),
    #[error("listing tenants failed: {0}")]
    ListingTenants(StoreError),
    #[error("{} of {} feedback runs could not be started: {}", .failed.len(), .tenants, .failed.join("; "))]
    FanOut { tenants: usize, failed: Vec<String> },
    #[error("feedback run failed for {}", .0.iter().map(|(t, e)| format!("{t}: {e}")).collect::<Vec<_>>().join("; "))]
    Runs(Vec<(TenantId, ServiceError)>),
}

/// What started a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The EventBridge schedule: the tenants in the pending list.
    Schedule,
    /// end_conversation's threshold trigger, or the schedule's fan-out: one tenant.
    Tenant(TenantId),
}

/// The payload the scheduled invocation sends for each pending tenant.
pub fn fan_out_payload(tenant: &TenantId) -> Value {
    json!({"source": FAN_OUT_SOURCE, "tenant": tenant})
}

const FAN_OUT_SOURCE: &str = "salesloop.feedback_loop";

/// The payload end_conversation sends when a tenant's ended count reaches a multiple of
/// `FEEDBACK_EVERY`.
pub fn trigger_payload(tenant: &TenantId, ended_count: u64) -> Value {
    json!({"source": "salesloop.end_conversation", "tenant": tenant, "ended_count": ended_count})
}

/// Recognises the scheduled event (`source` `aws.events`, `detail-type` `Scheduled Event`) and
/// the threshold trigger; anything else is refused, so it lands in the failure queue.
pub fn parse_trigger(event: &Value) -> Result<Trigger, FeedbackError> {
    match event.get("source").and_then(Value::as_str) {
        Some("aws.events")
            if event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") =>
        {
            Ok(Trigger::Schedule)
        }
        Some("salesloop.end_conversation" | FAN_OUT_SOURCE) => {
            let raw = event.get("tenant").and_then(Value::as_str).ok_or_else(|| {
                FeedbackError::UnrecognisedEvent("the trigger names no tenant".into())
            })?;
            TenantId::parse(raw).map(Trigger::Tenant).map_err(|e| {
                FeedbackError::UnrecognisedEvent(format!("the trigger's tenant is invalid: {e}"))
            })
        }
        _ => Err(FeedbackError::UnrecognisedEvent(
            "expected an EventBridge scheduled event, salesloop's trigger or its fan-out".into(),
        )),
    }
}

/// Runs the loop for the trigger's tenants. Each published version's EMF metrics and
/// `ab_test_results` events are passed to `emit` as JSON lines (the function prints them to
/// its log, where CloudWatch reads the metrics). A tenant whose run fails does not stop the others; the
/// invocation then fails so that Lambda retries it, which is safe: finished tenants have
/// nothing new.
pub async fn handle<S: Store>(
    app: &App<S>,
    trigger: Trigger,
    holder: &str,
    emit: &(dyn Fn(String) + Sync),
) -> Result<Value, FeedbackError> {
    let tenants = match trigger {
        Trigger::Tenant(tenant) => vec![tenant],
        Trigger::Schedule => {
            let pending = app
                .store
                .pending_tenants()
                .await
                .map_err(FeedbackError::ListingTenants)?;
            if let FanOut::Invoke(invoker) = &app.fan_out {
                return fan_out(invoker, pending).await;
            }
            pending
        }
    };
    let feedback = app.feedback();
    let mut results = Vec::with_capacity(tenants.len());
    let mut failures = Vec::new();
    for tenant in &tenants {
        let span = tracing::info_span!("feedback_run", tenant = %tenant);
        let outcome = feedback
            .run_tenant(tenant, holder, &Millis::now, &mut |_| {
                ControlFlow::Continue(())
            })
            .instrument(span.clone())
            .await;
        let _enter = span.enter();
        match outcome {
            Ok(run) => {
                for version in run.published() {
                    for document in report::emf_documents(tenant, version) {
                        emit(document.to_string());
                    }
                    for event in report::run_events(tenant, version) {
                        match serde_json::to_string(&event) {
                            Ok(line) => emit(line),
                            Err(e) => {
                                tracing::error!(error = %e, "an ab_test_results event could not be written")
                            }
                        }
                    }
                }
                tracing::info!(
                    result = run.label(),
                    versions = run.published().len(),
                    "feedback run"
                );
                results.push(summary(tenant, &run));
            }
            Err(e) => {
                tracing::error!(error = %e, "feedback run failed");
                failures.push((tenant.clone(), e));
            }
        }
    }
    if failures.is_empty() {
        Ok(json!({"tenants": results}))
    } else {
        Err(FeedbackError::Runs(failures))
    }
}

/// Queues one run per tenant, [`INVOKES_IN_FLIGHT`] at a time. If any could not be queued the
/// invocation fails, so that Lambda retries it: the tenants already queued are queued again,
/// which costs a run that finds the lease taken or nothing new.
async fn fan_out(invoker: &Invoker, tenants: Vec<TenantId>) -> Result<Value, FeedbackError> {
    let count = tenants.len();
    let mut queue = tenants.into_iter();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut failed = Vec::new();
    loop {
        while in_flight.len() < INVOKES_IN_FLIGHT {
            let Some(tenant) = queue.next() else { break };
            let invoker = invoker.clone();
            in_flight.spawn(async move {
                let queued = invoker.invoke(&fan_out_payload(&tenant)).await;
                (tenant, queued)
            });
        }
        match in_flight.join_next().await {
            None => break,
            Some(Ok((_, Ok(())))) => {}
            Some(Ok((tenant, Err(e)))) => {
                tracing::error!(tenant = %tenant, error = %e, "starting a feedback run failed");
                failed.push(format!("{tenant}: {e}"));
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "an invoke task failed");
                failed.push(e.to_string());
            }
        }
    }
    tracing::info!(
        tenants = count,
        failed = failed.len(),
        "feedback runs started"
    );
    if failed.is_empty() {
        Ok(json!({"started": count}))
    } else {
        Err(FeedbackError::FanOut {
            tenants: count,
            failed,
        })
    }
}

fn summary(tenant: &TenantId, run: &TenantRun) -> Value {
    let published = run.published();
    json!({
        "tenant": tenant,
        "result": run.label(),
        "versions": published.iter().map(|v| v.version).collect::<Vec<_>>(),
        "outcomes": published.iter().filter_map(|v| v.report.as_ref()).map(|r| r.outcomes).sum::<u64>(),
    })
}
