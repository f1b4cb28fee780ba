//! The read routes: `GET /conversations/{conversation_id}`, `GET /conversations`,
//! `GET /models`, `GET /models/{version}`, `GET /report`, and the page that draws them,
//! `GET /dashboard`. Every answer is the tenant's own (the tenant comes from the authorizer's
//! claim, as for the writes); every read is a GetItem or a Query of the tenant's keys; nothing
//! is written.

use std::collections::BTreeMap;

use lambda_http::{Body, Request, Response};
use salesloop::domain::time::Millis;
use salesloop::edge::dashboard;
use salesloop::edge::error::ApiError;
use salesloop::edge::http::{
    ReadRoute, TenantSource, limit_parameter, parse_version, private_json_response,
    query_parameters, read_route, tenant,
};
use salesloop::service::ServiceError;
use salesloop::service::reads::{self, DEFAULT_PAGE, MAX_PAGE, parse_conversation_cursor};
use salesloop::{Store, TenantId};
use serde::Serialize;

/// What a process keeps between invocations.
pub struct App<S> {
    pub store: S,
    pub tenants: TenantSource,
}

/// Answers one read; every refusal is a JSON 4xx, a store outage a 503.
pub async fn handle<S: Store>(app: &App<S>, request: Request) -> Response<Body> {
    match respond(app, &request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn respond<S: Store>(app: &App<S>, request: &Request) -> Result<Response<Body>, ApiError> {
    let route = read_route(request)?;
    if route == ReadRoute::Dashboard {
        query_parameters(request, &["tenant"])?;
        return Ok(dashboard::response());
    }
    let tenant = tenant(request, &app.tenants)?;
    let span = tracing::info_span!("read", tenant = %tenant, route = ?route);
    let _entered = span.enter();
    answer(app, request, &tenant, route).await
}

async fn answer<S: Store>(
    app: &App<S>,
    request: &Request,
    tenant: &TenantId,
    route: ReadRoute,
) -> Result<Response<Body>, ApiError> {
    let store = &app.store;
    match route {
        ReadRoute::Conversation(id) => {
            query_parameters(request, &[])?;
            match reads::conversation(store, tenant, &id).await {
                Ok(view) => ok(&view),
                Err(ServiceError::NotFound) => Err(ApiError::ConversationNotFound),
                Err(other) => Err(other.into()),
            }
        }
        ReadRoute::Conversations => {
            let parameters = query_parameters(request, &["since", "limit", "cursor"])?;
            let limit = limit_parameter(&parameters, DEFAULT_PAGE, MAX_PAGE)?;
            let since = since_parameter(&parameters)?;
            let cursor = match parameters.get("cursor") {
                Some(text) => Some(parse_conversation_cursor(text).ok_or_else(|| {
                    ApiError::InvalidCursor("cursor is not a next_cursor of this list".into())
                })?),
                None => None,
            };
            ok(&reads::conversations(store, tenant, since, cursor.as_ref(), limit).await?)
        }
        ReadRoute::Models => {
            let parameters = query_parameters(request, &["limit", "cursor"])?;
            let limit = limit_parameter(&parameters, DEFAULT_PAGE, MAX_PAGE)?;
            let before = match parameters.get("cursor") {
                Some(text) => Some(parse_version(text).map_err(|_| {
                    ApiError::InvalidCursor("cursor is not a next_cursor of this list".into())
                })?),
                None => None,
            };
            ok(&reads::models(store, tenant, before, limit).await?)
        }
        ReadRoute::Model(version) => {
            query_parameters(request, &[])?;
            match reads::model(store, tenant, version).await? {
                Some(view) => ok(&view),
                None => Err(ApiError::ModelNotFound(version)),
            }
        }
        ReadRoute::Report => {
            query_parameters(request, &[])?;
            ok(&reads::report(store, tenant).await?)
        }
        ReadRoute::Dashboard => Ok(dashboard::response()),
    }
}

/// `since`: epoch milliseconds, a whole number (0 when absent).
fn since_parameter(parameters: &BTreeMap<String, String>) -> Result<Millis, ApiError> {
    let Some(text) = parameters.get("since") else {
        return Ok(Millis(0));
    };
    match text.parse::<u64>() {
        Ok(ms) if text.bytes().all(|b| b.is_ascii_digit()) && ms < 10_000_000_000_000 => {
            Ok(Millis(ms))
        }
        _ => Err(ApiError::InvalidQuery(
            "since is a time in epoch milliseconds, a whole number".into(),
        )),
    }
}

/// A 200 JSON answer that no shared cache may keep: it is one tenant's data.
fn ok<T: Serialize>(value: &T) -> Result<Response<Body>, ApiError> {
    let value = serde_json::to_value(value).map_err(|_| ApiError::Internal)?;
    Ok(private_json_response(&value))
}
