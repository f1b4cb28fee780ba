//! `POST /conversations/{conversation_id}/end`: parse, end the conversation once with its
//! outcome and A/B events in one write, answer, and on every `FEEDBACK_EVERY`-th ended
//! conversation of the tenant ask for a feedback run. The function's other route,
//! `POST /conversations/{conversation_id}/labels`, is in `labels.rs`.

use std::collections::BTreeSet;

use lambda_http::{Body, Request, Response};
use salesloop::domain::conversation::{DetectionLabel, OutcomeError};
use salesloop::domain::labels::{LabelRequest, MAX_LABELS_PER_REQUEST, check_labels};
use salesloop::domain::privacy::TextStorage;
use salesloop::edge::error::ApiError;
use salesloop::edge::http::{
    Action, TenantSource, has_control_characters, is_blank, json_body, json_response, request_span,
    route, tenant,
};
use salesloop::service::{ModelCache, ServiceError, end_conversation};
use salesloop::{ConversationId, EndRequest, Millis, Outcome, OutcomeRecord, Store, TenantId};
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

use crate::trigger::Trigger;

/// The longest `reason`, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// The most labels one end may carry.
pub const MAX_LABELS: usize = MAX_LABELS_PER_REQUEST;
/// The largest deal value accepted.
pub const MAX_VALUE: f64 = 1e12;

/// What a process keeps between invocations.
pub struct App<S> {
    pub store: S,
    pub models: ModelCache,
    pub tenants: TenantSource,
    /// Pattern names a label may name.
    pub patterns: BTreeSet<String>,
    /// Ended conversations between triggered feedback runs; 0 turns the trigger off.
    pub feedback_every: u64,
    pub trigger: Option<Trigger>,
    /// Whether message texts are kept (a label then carries its turn's text) or only hashes.
    pub text_storage: TextStorage,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndBody {
    outcome: String,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    labels: Vec<LabelRequest>,
}

pub async fn handle<S: Store>(app: &App<S>, request: Request) -> Response<Body> {
    match respond(app, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// Route, tenant and body of a request, checked without touching the store (so it can be
/// fuzzed on its own); `patterns` are the names a label may use. Every refusal is an
/// [`ApiError`] with a 4xx status. The end's `model_version` is left for the caller to fill in.
pub fn parse_request(
    request: &Request,
    tenants: &TenantSource,
    patterns: &BTreeSet<String>,
) -> Result<(TenantId, ConversationId, EndRequest), ApiError> {
    let (conversation, action) = route(request)?;
    if action != Action::End {
        return Err(ApiError::NotFound);
    }
    let tenant = tenant(request, tenants)?;
    let body: EndBody = json_body(request)?;
    let end = parse_body(patterns, body)?;
    Ok((tenant, conversation, end))
}

/// The body, checked; `model_version` is filled in by the caller.
fn parse_body(patterns: &BTreeSet<String>, body: EndBody) -> Result<EndRequest, ApiError> {
    let outcome: Outcome = body
        .outcome
        .parse()
        .map_err(|e: OutcomeError| ApiError::InvalidOutcome(e.to_string()))?;
    if let Some(value) = body.value
        && !(value.is_finite() && (0.0..=MAX_VALUE).contains(&value))
    {
        return Err(ApiError::InvalidValue(format!(
            "value must be a number from 0 to {MAX_VALUE:e}"
        )));
    }
    let reason = body
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !is_blank(r));
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(ApiError::InvalidReason(format!(
            "reason may hold at most {MAX_REASON_CHARS} characters"
        )));
    }
    if reason.as_deref().is_some_and(has_control_characters) {
        return Err(ApiError::InvalidReason(
            "reason may not hold control characters other than tab and line breaks".into(),
        ));
    }
    let in_catalog = |name: &str| patterns.contains(name);
    check_labels(&body.labels, &in_catalog).map_err(|e| ApiError::InvalidLabels(e.to_string()))?;
    let labels = body
        .labels
        .into_iter()
        .map(|label| DetectionLabel {
            turn: label.turn,
            pattern: label.pattern,
            correct: label.correct,
        })
        .collect();
    Ok(EndRequest {
        outcome,
        value: body.value,
        reason,
        labels,
        at: Millis::now(),
        model_version: 0,
    })
}

async fn respond<S: Store>(app: &App<S>, request: Request) -> Result<Response<Body>, ApiError> {
    if route(&request)?.1 == Action::Labels {
        return crate::labels::respond(app, request).await;
    }
    let (tenant, conversation, end) = parse_request(&request, &app.tenants, &app.patterns)?;
    let span = request_span(&request, &tenant, &conversation);
    record_end(app, tenant, conversation, end)
        .instrument(span)
        .await
}

async fn record_end<S: Store>(
    app: &App<S>,
    tenant: TenantId,
    conversation: ConversationId,
    mut end: EndRequest,
) -> Result<Response<Body>, ApiError> {
    // The version current now, for a conversation older than pins (a pinned one counts for
    // its pinned version: `OutcomeRecord::from_exchanges`).
    let current = app.models.current(&app.store, &tenant).await;
    let ended = match current {
        Ok(model) => {
            end.model_version = model.version;
            end_conversation(&app.store, &tenant, &conversation, end).await
        }
        Err(e) => Err(ServiceError::Store(e)),
    };
    let ended = match ended {
        Ok(ended) => ended,
        Err(ServiceError::Store(e)) if e.is_transient() => {
            // The caller retries after Retry-After: nothing is lost, so nothing is counted.
            tracing::error!(error = %e, "ending the conversation failed");
            return Err(ApiError::StoreUnavailable);
        }
        Err(e) => {
            if matches!(e, ServiceError::Store(_) | ServiceError::Contention(_)) {
                tracing::error!(error = %e, "ending the conversation failed");
            }
            return Err(e.into());
        }
    };
    tracing::info!(
        outcome = %ended.record.outcome,
        first_time = ended.first_time,
        "conversation ended"
    );
    if ended.first_time
        && ended.crossed_multiple_of(app.feedback_every)
        && let (Some(trigger), Some(count)) = (&app.trigger, ended.ended_count)
    {
        match trigger.fire(&tenant, count).await {
            Ok(()) => tracing::info!(
                ended_count = count,
                function = trigger.function(),
                "feedback run requested"
            ),
            Err(e) => {
                tracing::warn!(ended_count = count, error = %e, "feedback trigger failed; the scheduled run will catch up")
            }
        }
    }
    Ok(json_response(200, &answer(&conversation, &ended.record)))
}

/// The answer, built from the stored record alone, so that a repeated end gets the same one.
fn answer(conversation: &ConversationId, record: &OutcomeRecord) -> serde_json::Value {
    json!({
        "conversation_id": conversation,
        "outcome": record.outcome,
        "value": record.value,
        "reason": record.reason,
        "turns": record.turns,
        "duration_ms": record.duration_ms,
        "patterns_seen": record.patterns_seen,
        "experiments": record.experiments,
        "labels_recorded": record.labels.len(),
        "ended_at": record.at.to_rfc3339(),
    })
}

/// The pattern names of a catalog's JSON, without compiling its matcher.
pub fn pattern_names(catalog_json: &str) -> Result<BTreeSet<String>, String> {
    let value: serde_json::Value = serde_json::from_str(catalog_json).map_err(|e| e.to_string())?;
    value
        .get("patterns")
        .and_then(|p| p.as_array())
        .ok_or("the catalog has no patterns list")?
        .iter()
        .map(|p| {
            p.get("name")
                .and_then(|n| n.as_str())
                .map(str::to_owned)
                .ok_or_else(|| "a pattern has no name".to_owned())
        })
        .collect()
}
