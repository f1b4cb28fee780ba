//! The admin routes: a tenant's experiments and playbook, read and changed at run time, and a
//! model version activated again (a rollback). Every route needs the admin right
//! (`edge::admin`); every change publishes the next configuration (or model) version by
//! compare-and-set, with `If-Match` naming the version it was made against.
//!
//! - `GET /experiments`, `GET /playbook`: the current version, its `ETag`.
//! - `PUT /experiments/{name}` (create or replace), `PUT /playbook`: `If-Match` required.
//! - `POST /experiments/{name}/stop`, `POST /experiments/{name}/ship` `{"variant"}`,
//!   `POST /models/{version}/activate`: `If-Match` optional.
//!
//! A stale `If-Match` is a 412 with the current version's `ETag`; a refused configuration a
//! 400 `invalid_config` naming the field; in both cases nothing is written. A body whose object
//! names a key twice is refused too (`invalid_config`): no one of the two is picked silently.

use lambda_http::{Body, Request, Response};
use salesloop::domain::config::TenantConfig;
use salesloop::domain::decision::Playbook;
use salesloop::domain::experiments::{Experiment, Invalid, Status, parse_json};
use salesloop::domain::learning::ModelVersion;
use salesloop::domain::time::Millis;
use salesloop::edge::admin::{AdminRoute, AdminSource, admin_route, etag, if_match, require_admin};
use salesloop::edge::error::ApiError;
use salesloop::edge::http::{
    TenantSource, json_object_text, private_json_response, query_parameters, tenant,
};
use salesloop::service::admin::{self, AdminError, Changed};
use salesloop::{Store, TenantId};
use serde::Deserialize;
use serde_json::{Value, json};

/// The largest admin body: a playbook or an experiment, well under a stored version's bound.
pub const MAX_ADMIN_BODY_BYTES: usize = 256 * 1024;

/// What a process keeps between invocations.
pub struct App<S> {
    pub store: S,
    pub tenants: TenantSource,
    pub admin: AdminSource,
}

/// Answers one admin request; every refusal is a JSON 4xx, a store outage a 503.
pub async fn handle<S: Store>(app: &App<S>, request: Request) -> Response<Body> {
    match respond(app, &request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn respond<S: Store>(app: &App<S>, request: &Request) -> Result<Response<Body>, ApiError> {
    let route = admin_route(request)?;
    let tenant = tenant(request, &app.tenants)?;
    require_admin(request, &app.admin)?;
    query_parameters(request, &[])?;
    let span = tracing::info_span!("admin", tenant = %tenant, route = ?route);
    let _entered = span.enter();
    let answer = answer(app, request, &tenant, route).await;
    match &answer {
        Ok(response) => tracing::info!(status = response.status().as_u16(), "admin request"),
        Err(error) => tracing::info!(code = error.code(), "admin request refused"),
    }
    answer
}

async fn answer<S: Store>(
    app: &App<S>,
    request: &Request,
    tenant: &TenantId,
    route: AdminRoute,
) -> Result<Response<Body>, ApiError> {
    let store = &app.store;
    let expected = if_match(request);
    let now = Millis::now();
    match route {
        AdminRoute::Experiments => {
            no_body(request)?;
            let config = admin::current_config(store, tenant).await?;
            Ok(versioned(config.version, experiments_view(&config)))
        }
        AdminRoute::Playbook => {
            no_body(request)?;
            let config = admin::current_config(store, tenant).await?;
            Ok(versioned(config.version, playbook_view(&config)))
        }
        AdminRoute::PutExperiment(name) => {
            require_if_match(request)?;
            let experiment = experiment_body(request, &name)?;
            let changed = admin::change_config(store, tenant, expected, now, |config| {
                match config.experiments.iter_mut().find(|e| e.name == name) {
                    Some(existing) => *existing = experiment.clone(),
                    None => config.experiments.push(experiment.clone()),
                }
                Ok(())
            })
            .await?;
            Ok(changed_response(
                &changed,
                experiments_view(&changed.current),
            ))
        }
        AdminRoute::StopExperiment(name) => {
            no_body(request)?;
            let changed = admin::change_config(store, tenant, expected, now, |config| {
                let experiment = find(config, &name)?;
                experiment.status = Status::Stopped;
                experiment.shipped = None;
                Ok(())
            })
            .await?;
            Ok(changed_response(
                &changed,
                experiments_view(&changed.current),
            ))
        }
        AdminRoute::ShipExperiment(name) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Ship {
                variant: String,
            }
            let text = admin_body(request)?;
            let ship: Ship = parse_json(text).map_err(invalid)?;
            let changed = admin::change_config(store, tenant, expected, now, |config| {
                let experiment = find(config, &name)?;
                if experiment.variant(&ship.variant).is_none() {
                    return Err(AdminError::Invalid(Invalid::new(
                        "variant",
                        format!("experiment {name} has no variant {:?}", ship.variant),
                    )));
                }
                experiment.status = Status::Shipped;
                experiment.shipped = Some(ship.variant.clone());
                Ok(())
            })
            .await?;
            Ok(changed_response(
                &changed,
                experiments_view(&changed.current),
            ))
        }
        AdminRoute::PutPlaybook => {
            require_if_match(request)?;
            let text = admin_body(request)?;
            let playbook: Playbook = parse_json(text).map_err(invalid)?;
            let changed = admin::change_config(store, tenant, expected, now, |config| {
                config.playbook = playbook.clone();
                Ok(())
            })
            .await
            .map_err(|e| match e {
                // The body is the playbook: name its fields as the body has them.
                AdminError::Invalid(mut invalid) => {
                    if let Some(inner) = invalid.field.strip_prefix("playbook.") {
                        invalid.field = inner.to_owned();
                    }
                    AdminError::Invalid(invalid)
                }
                other => other,
            })?;
            Ok(changed_response(&changed, playbook_view(&changed.current)))
        }
        AdminRoute::ActivateModel(version) => {
            no_body(request)?;
            let activated = admin::activate_model(store, tenant, version, expected, now).await?;
            Ok(versioned(activated.version, activation_view(&activated)))
        }
    }
}

/// The experiment in the body, named by the path: the body may leave `name` out, or repeat it.
fn experiment_body(request: &Request, name: &str) -> Result<Experiment, ApiError> {
    let text = admin_body(request)?;
    let mut value: Value =
        serde_json::from_str(text).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let object = value.as_object_mut().ok_or(ApiError::InvalidField(
        "the body must be a JSON object".into(),
    ))?;
    match object.get("name") {
        None => {
            object.insert("name".into(), json!(name));
        }
        Some(Value::String(given)) if given == name => {}
        Some(_) => {
            return Err(ApiError::InvalidConfig {
                field: "name".into(),
                reason: format!("the body names another experiment than the path ({name})"),
            });
        }
    }
    let experiment: Experiment = parse_json(&value.to_string()).map_err(invalid)?;
    experiment.validate().map_err(invalid)?;
    Ok(experiment)
}

/// The body of a route that takes one: a JSON object of at most [`MAX_ADMIN_BODY_BYTES`] in
/// which no object names a key twice. serde would keep one of the two without a word (the last,
/// in a map such as the playbook's contexts, or in the experiment's trip through `Value`), so
/// that what is stored could differ from what a reviewer of the request saw.
fn admin_body(request: &Request) -> Result<&str, ApiError> {
    let text = json_object_text(request, MAX_ADMIN_BODY_BYTES)?;
    parse_json::<UniqueKeys>(text).map_err(invalid)?;
    Ok(text)
}

/// Any JSON value whose objects name each key once; the value itself is not kept.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut keys = std::collections::BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if keys.contains(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate field `{key}`"
                )));
            }
            map.next_value::<UniqueKeys>()?;
            keys.insert(key);
        }
        Ok(self)
    }
}

fn find<'c>(config: &'c mut TenantConfig, name: &str) -> Result<&'c mut Experiment, AdminError> {
    config
        .experiments
        .iter_mut()
        .find(|e| e.name == name)
        .ok_or_else(|| AdminError::ExperimentNotFound(name.to_owned()))
}

fn invalid(e: Invalid) -> ApiError {
    ApiError::InvalidConfig {
        field: e.field,
        reason: e.reason,
    }
}

/// A PUT replaces a whole document: it must say which version it replaces. `*` names none (it
/// would let the PUT overwrite another admin's change unseen), so it counts as no `If-Match`.
fn require_if_match(request: &Request) -> Result<(), ApiError> {
    let mut values = request.headers().get_all("if-match").iter();
    match (values.next(), values.next()) {
        (None, _) => Err(ApiError::PreconditionRequired),
        (Some(value), None) if value.to_str().is_ok_and(|v| v.trim() == "*") => {
            Err(ApiError::PreconditionRequired)
        }
        _ => Ok(()),
    }
}

/// Routes that take no body refuse one rather than ignore it.
fn no_body(request: &Request) -> Result<(), ApiError> {
    let empty = match request.body() {
        Body::Empty => true,
        Body::Text(text) => text.trim().is_empty(),
        Body::Binary(bytes) => bytes.is_empty(),
        _ => true,
    };
    if empty {
        Ok(())
    } else {
        Err(ApiError::InvalidField("this route takes no body".into()))
    }
}

fn experiments_view(config: &TenantConfig) -> Value {
    json!({
        "version": config.version,
        "published_at": config.published_at,
        "changes": config.changes,
        "experiments": config.experiments,
    })
}

fn playbook_view(config: &TenantConfig) -> Value {
    json!({
        "version": config.version,
        "published_at": config.published_at,
        "changes": config.changes,
        "playbook": config.playbook,
    })
}

fn activation_view(model: &ModelVersion) -> Value {
    json!({
        "version": model.version,
        "published_at": model.published_at,
        "activated_from": model.activated_from,
    })
}

fn changed_response(changed: &Changed<TenantConfig>, view: Value) -> Response<Body> {
    let mut view = view;
    view["published"] = json!(changed.published);
    versioned(changed.current.version, view)
}

/// A 200 JSON answer with the version's `ETag`, which no shared cache may keep.
fn versioned(version: u64, view: Value) -> Response<Body> {
    let mut response = private_json_response(&view);
    if let Ok(tag) = lambda_http::http::HeaderValue::from_str(&etag(version)) {
        response.headers_mut().insert("etag", tag);
    }
    response
}
