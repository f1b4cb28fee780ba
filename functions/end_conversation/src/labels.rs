//! `POST /conversations/{conversation_id}/labels`: parse a JSON array of `{turn, pattern,
//! correct}`, store each (turn, pattern) once, and answer how many labels this request stored
//! and how many were stored already.

use lambda_http::{Body, Request, Response};
use salesloop::domain::labels::LabelRequest;
use salesloop::edge::error::ApiError;
use salesloop::edge::http::{
    Action, TenantSource, json_array_body, json_response, request_span, route, tenant,
};
use salesloop::service::{LabelsRecorded, ServiceError, record_labels};
use salesloop::{ConversationId, Millis, Store, TenantId};
use serde_json::json;
use tracing::Instrument;

use crate::handler::App;

/// Route, tenant and body of a labels request, checked without touching the store: the body
/// must be a JSON array of objects with exactly `turn`, `pattern` and `correct`. The labels'
/// own rules (how many, which turns and patterns) are the service's, checked before it reads.
pub fn parse_request(
    request: &Request,
    tenants: &TenantSource,
) -> Result<(TenantId, ConversationId, Vec<LabelRequest>), ApiError> {
    let (conversation, action) = route(request)?;
    if action != Action::Labels {
        return Err(ApiError::NotFound);
    }
    let tenant = tenant(request, tenants)?;
    let labels = json_array_body(request)?;
    Ok((tenant, conversation, labels))
}

pub(crate) async fn respond<S: Store>(
    app: &App<S>,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let (tenant, conversation, labels) = parse_request(&request, &app.tenants)?;
    let span = request_span(&request, &tenant, &conversation);
    record(app, tenant, conversation, labels)
        .instrument(span)
        .await
}

async fn record<S: Store>(
    app: &App<S>,
    tenant: TenantId,
    conversation: ConversationId,
    labels: Vec<LabelRequest>,
) -> Result<Response<Body>, ApiError> {
    let in_catalog = |name: &str| app.patterns.contains(name);
    let recorded = record_labels(
        &app.store,
        &tenant,
        &conversation,
        labels,
        &in_catalog,
        app.text_storage,
        Millis::now(),
    )
    .await
    .map_err(|e| {
        if matches!(e, ServiceError::Store(_) | ServiceError::Contention(_)) {
            tracing::error!(error = %e, "storing labels failed");
        }
        ApiError::from(e)
    })?;
    tracing::info!(
        stored = recorded.stored,
        already_stored = recorded.already_stored,
        "labels recorded"
    );
    Ok(json_response(200, &answer(&conversation, recorded)))
}

fn answer(conversation: &ConversationId, recorded: LabelsRecorded) -> serde_json::Value {
    json!({
        "conversation_id": conversation,
        "stored": recorded.stored,
        "already_stored": recorded.already_stored,
    })
}
