//! The hostile corpus (`tests/fixtures/hostile/`): every request is sent to each API handler its
//! entry names (both write handlers and admin_api always, read_api unless it is a read read_api
//! serves), through lambda_http's parsing of a real front-door event, on the embedded store and
//! on DynamoDB Local. Each must get a JSON 4xx with exactly the error code its entry names (and,
//! for an `invalid_config`, the `field` when the entry names one); none a 5xx or a panic; and
//! none may change anything stored (the whole store is compared before and after every
//! request, and around each admin request also the configuration and model versions of every
//! tenant involved, read through the store).
//!
//! The store case runs on both stores (`salesloop_tests::store_cases!`); a case function in no
//! list is dead code, which this file denies.

#![deny(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use admin_api::handler::{App as AdminApp, handle as admin_handle};
use end_conversation::handler::{App as EndApp, handle as end_handle, pattern_names};
use lambda_http::{Body, Request, Response};
use process_message::handler::{App as MessageApp, handle as message_handle};
use read_api::handler::{App as ReadApp, handle as read_handle};
use salesloop::domain::engine::Engine;
use salesloop::domain::learning::ModelVersion;
use salesloop::domain::patterns::DEFAULT_CATALOG;
use salesloop::edge::admin::{ADMIN_ROUTES, AdminSource, DEFAULT_ADMIN_SCOPE};
use salesloop::edge::http::TenantSource;
use salesloop::service::{ConfigCache, ModelCache};
use salesloop::{Store, TenantId};
use salesloop_tests::events::{Flavor, request};
use salesloop_tests::hostile::{Expected, HostileRequest, corpus};
use salesloop_tests::stores::{Backend, Failed, Harness};
use salesloop_tests::workspace_root;
use serde_json::{Value, json};

const HANDLERS: [&str; 4] = [
    "process_message",
    "end_conversation",
    "read_api",
    "admin_api",
];

/// The handlers every entry names.
const ALWAYS: [&str; 3] = ["process_message", "end_conversation", "admin_api"];

/// The tenants whose configuration and model versions are read around each admin request: the
/// seeded one, another, and the default tenant of local runs.
const TENANTS: [&str; 3] = ["acme", "globex", "local"];

/// The eight handler instances over one store: each function deployed (tenant from the
/// authorizer; admin_api: the admin right from the JWT's scope) and in local mode (tenant from
/// `x-tenant-id`; admin_api: the right from `x-salesloop-role: admin`).
struct Handlers<S> {
    messages: [MessageApp<S>; 2],
    ends: [EndApp<S>; 2],
    reads: [ReadApp<S>; 2],
    admins: [AdminApp<S>; 2],
}

fn handlers<S: Store>(make: impl Fn() -> S) -> Handlers<S> {
    let tenants = |local| TenantSource {
        claim: "tenant_id".into(),
        local,
    };
    let message = |local| MessageApp {
        store: make(),
        engine: Engine::builtin(),
        models: ModelCache::new(Duration::ZERO),
        configs: ConfigCache::new(Duration::ZERO),
        tenants: tenants(local),
        llm: None,
        text_storage: Default::default(),
        unrecorded: Default::default(),
        record_budget: salesloop_tests::RECORD_BUDGET_UNDER_TEST,
        spool: None,
        last_resort: Default::default(),
    };
    let end = |local| EndApp {
        store: make(),
        models: ModelCache::new(Duration::ZERO),
        tenants: tenants(local),
        patterns: pattern_names(DEFAULT_CATALOG).expect("catalog names"),
        feedback_every: 1,
        trigger: None,
        text_storage: Default::default(),
    };
    let read = |local| ReadApp {
        store: make(),
        tenants: tenants(local),
    };
    let admin = |local| AdminApp {
        store: make(),
        tenants: tenants(local),
        admin: AdminSource {
            scope: DEFAULT_ADMIN_SCOPE.into(),
            local,
        },
    };
    Handlers {
        messages: [message(false), message(true)],
        ends: [end(false), end(true)],
        reads: [read(false), read(true)],
        admins: [admin(false), admin(true)],
    }
}

impl<S: Store + 'static> Handlers<S> {
    /// The handler's response, or `Err` if it panicked (run as a task, so that a panic is
    /// counted instead of ending the run).
    async fn send(
        self: &Arc<Self>,
        handler: &str,
        local: bool,
        request: Request,
    ) -> Result<Response<Body>, String> {
        let me = self.clone();
        let which = usize::from(local);
        let task = match handler {
            "process_message" => {
                tokio::spawn(async move { message_handle(&me.messages[which], request).await })
            }
            "read_api" => tokio::spawn(async move { read_handle(&me.reads[which], request).await }),
            "admin_api" => {
                tokio::spawn(async move { admin_handle(&me.admins[which], request).await })
            }
            _ => tokio::spawn(async move { end_handle(&me.ends[which], request).await }),
        };
        task.await.map_err(|e| format!("the handler panicked: {e}"))
    }
}

/// The corpus, read once per run.
static CORPUS: LazyLock<Vec<HostileRequest>> =
    LazyLock::new(|| corpus().unwrap_or_else(|e| panic!("the hostile corpus: {e}")));

/// What each store's run counted, for the total printed at the end.
static SUMMARY: Mutex<Vec<(String, Tally)>> = Mutex::new(Vec::new());

/// Everything stored, read around the adapter, as sorted lines.
async fn snapshot<B: Backend>(backend: &B, store: &B::Store) -> Vec<String> {
    let mut lines: Vec<String> = backend
        .raw_items(store)
        .await
        .iter()
        .map(|item| format!("{item:?}"))
        .collect();
    lines.sort();
    lines
}

/// Each of [`TENANTS`]' current configuration, configuration history, current model and model
/// history, read through the store: what an admin request may never change when it is refused.
async fn versions<S: Store>(store: &S) -> String {
    let mut out = String::new();
    for name in TENANTS {
        let tenant = TenantId::parse(name).unwrap();
        let config = store.current_config(&tenant).await;
        let configs = store.config_history(&tenant, None, 1_000).await;
        let model = store.current_model(&tenant).await;
        let models = store.model_history(&tenant, None, 1_000).await;
        let _ = writeln!(
            out,
            "{name}: config {config:?}\nconfigs {configs:?}\nmodel {model:?}\nmodels {models:?}"
        );
    }
    out
}

/// What one store's run counted.
#[derive(Debug, Default)]
struct Tally {
    requests: usize,
    responses: usize,
    by_status: BTreeMap<u16, usize>,
    non_4xx: usize,
    panics: usize,
    wrong_answers: usize,
    changed_store: usize,
}

fn body_json(response: &Response<Body>) -> Option<Value> {
    match response.body() {
        Body::Text(text) => serde_json::from_str(text).ok(),
        Body::Binary(bytes) => serde_json::from_slice(bytes).ok(),
        _ => None,
    }
}

/// Why a response is not the refusal expected, if it is not.
fn judge(response: &Response<Body>, expected: &Expected) -> Option<String> {
    let status = response.status().as_u16();
    let json_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        == Some("application/json");
    let body = body_json(response);
    let code = body
        .as_ref()
        .and_then(|b| b["error"]["code"].as_str())
        .map(str::to_owned);
    let has_message = body
        .as_ref()
        .and_then(|b| b["error"]["message"].as_str())
        .is_some_and(|m| !m.is_empty());
    if status != expected.status || code.as_deref() != Some(expected.code.as_str()) {
        return Some(format!(
            "expected {} {}, got {status} {}",
            expected.status,
            expected.code,
            body.map_or("(no JSON body)".to_owned(), |b| b.to_string())
        ));
    }
    if !json_type || !has_message {
        return Some(format!(
            "{status} {}: not a JSON error with a message",
            expected.code
        ));
    }
    if let Some(field) = &expected.field {
        let given = body.as_ref().and_then(|b| b["error"]["field"].as_str());
        if given != Some(field.as_str()) {
            return Some(format!(
                "{status} {}: expected field {field:?}, got {given:?} ({})",
                expected.code,
                body.as_ref().map_or(String::new(), Value::to_string)
            ));
        }
    }
    // A failed If-Match says which version is current.
    if expected.code == "precondition_failed" {
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok());
        if !etag.is_some_and(|t| t.len() > 2 && t.starts_with('"') && t.ends_with('"')) {
            return Some(format!("412 without the current ETag: {etag:?}"));
        }
    }
    None
}

/// The experiment whose change makes acme's configuration version 1 (generate.py's
/// `SEED_EXPERIMENT`).
const SEED_EXPERIMENT: &str = r#"{"name": "reply_tone", "description": "Reply templates: plain or warm wording.",
    "variants": [{"name": "neutral", "weight": 60, "control": true, "changes": {"tone": "neutral"}},
                 {"name": "warm", "weight": 40, "changes": {"tone": "warm"}}]}"#;

/// Messages, an end, a label, a model version and a configuration version of tenant `acme`, so
/// that refusals have something to protect (and reads of another tenant something to find).
async fn seed<S: Store + 'static>(handlers: &Arc<Handlers<S>>) {
    let say = |conversation: &str, id: &str, text: &str| {
        let body = json!({"message_id": id, "text": text}).to_string();
        let path = format!("/conversations/{conversation}/messages");
        request(Flavor::HttpApi, "POST", &path, &body, Some("acme"), &[])
    };
    let seeded = [
        (
            "process_message",
            say("c-1", "m-1", "Honestly this looks too expensive for us."),
        ),
        ("process_message", say("c-ended", "m-1", "let's do it")),
        (
            "end_conversation",
            request(
                Flavor::HttpApi,
                "POST",
                "/conversations/c-ended/end",
                r#"{"outcome": "won", "value": 10.0}"#,
                Some("acme"),
                &[],
            ),
        ),
        (
            "end_conversation",
            request(
                Flavor::HttpApi,
                "POST",
                "/conversations/c-1/labels",
                r#"[{"turn": 1, "pattern": "objection.price", "correct": true}]"#,
                Some("acme"),
                &[],
            ),
        ),
    ];
    for (handler, request) in seeded {
        let response = handlers.send(handler, false, request).await.unwrap();
        assert_eq!(
            response.status().as_u16(),
            200,
            "seeding: {:?}",
            body_json(&response)
        );
    }
    let acme = TenantId::parse("acme").unwrap();
    let first = ModelVersion {
        version: 1,
        ..ModelVersion::priors()
    };
    let published = handlers.ends[0].store.publish_model(&acme, &first).await;
    assert_eq!(published, Ok(salesloop::store::Write::Done));
    // Configuration version 1, through admin_api itself, deployed: the admin scope.
    let authorizer = json!({"jwt": {"claims": {"sub": "admin-1", "tenant_id": "acme"},
                                    "scopes": [DEFAULT_ADMIN_SCOPE]}});
    let headers = [
        ("content-type".to_owned(), "application/json".to_owned()),
        ("if-match".to_owned(), "\"0\"".to_owned()),
    ];
    let event = salesloop_tests::hostile::event(
        Flavor::HttpApi,
        "PUT",
        "/experiments/reply_tone",
        &headers,
        Some(&authorizer),
        Some(SEED_EXPERIMENT),
        false,
    );
    let request = salesloop::edge::http::request_from_event(&event.to_string()).unwrap();
    let response = handlers.send("admin_api", false, request).await.unwrap();
    let body = body_json(&response);
    assert_eq!(response.status().as_u16(), 200, "seeding: {body:?}");
    assert_eq!(response.headers()["etag"], "\"1\"", "seeding: {body:?}");
    assert_eq!(body.map(|b| b["published"].clone()), Some(json!(true)));
}

async fn every_hostile_request_is_refused_and_changes_nothing<B: Backend>(
    backend: &B,
) -> Result<(), Failed> {
    let store_name = B::NAME;
    let corpus: &[HostileRequest] = &CORPUS;
    let make = backend.opener().await;
    let probe = make();
    let handlers = Arc::new(handlers(make));
    seed(&handlers).await;
    let seeded = snapshot(backend, &probe).await;
    let mut before = seeded.clone();
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for entry in corpus {
        tally.requests += 1;
        let admin = entry.name.starts_with("admin: ");
        let versions_before = if admin {
            versions(&probe).await
        } else {
            String::new()
        };
        for (handler, expected) in &entry.expect {
            let handler = handler.as_str();
            let request = salesloop_tests::hostile::request(entry).map_err(Failed::from)?;
            tally.responses += 1;
            match handlers.send(handler, entry.local, request).await {
                Err(panic) => {
                    tally.panics += 1;
                    failures.push(format!("{handler} <- {}: {panic}", entry.name));
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    *tally.by_status.entry(status).or_default() += 1;
                    if !(400..500).contains(&status) {
                        tally.non_4xx += 1;
                    }
                    if let Some(why) = judge(&response, expected) {
                        tally.wrong_answers += 1;
                        failures.push(format!("{handler} <- {}: {why:.300}", entry.name));
                    }
                }
            }
        }
        if admin {
            let versions_after = versions(&probe).await;
            if versions_after != versions_before {
                tally.changed_store += 1;
                failures.push(format!(
                    "{} changed a configuration or model: before {versions_before:.600}, after {versions_after:.600}",
                    entry.name
                ));
            }
        }
        let after = snapshot(backend, &probe).await;
        if after != before {
            tally.changed_store += 1;
            let added: Vec<_> = after.iter().filter(|l| !before.contains(l)).collect();
            let removed: Vec<_> = before.iter().filter(|l| !after.contains(l)).collect();
            failures.push(format!(
                "{} changed the store: added {added:.400?}, removed {removed:.400?}",
                entry.name
            ));
            before = after;
        }
    }
    let statuses: Vec<String> = tally
        .by_status
        .iter()
        .map(|(status, n)| format!("{status}: {n}"))
        .collect();
    println!(
        "hostile ({store_name}): {} requests to {} handlers = {} responses [{}]: {} non-4xx, {} panics, {} wrong codes, {} changed the store",
        tally.requests,
        HANDLERS.len(),
        tally.responses,
        statuses.join(", "),
        tally.non_4xx,
        tally.panics,
        tally.wrong_answers,
        tally.changed_store,
    );
    if before != seeded {
        failures.push("the store at the end differs from the store after seeding".into());
    }
    SUMMARY.lock().unwrap().push((store_name.to_owned(), tally));
    if failures.is_empty() {
        Ok(())
    } else {
        let shown = failures.len().min(60);
        Err(format!(
            "{} failures (first {shown}):\n{}",
            failures.len(),
            failures[..shown].join("\n")
        )
        .into())
    }
}

/// The corpus itself: large enough, both write handlers and admin_api named in every entry (and
/// read_api in most, with hundreds of read-route entries of its own, and admin_api hundreds on
/// each admin route), every code one that the docs/api.md documents, a `field` only for
/// `invalid_config`, names unique, and every entry an event lambda_http accepts.
async fn the_corpus_is_well_formed() -> Result<(), Failed> {
    let corpus: &[HostileRequest] = &CORPUS;
    if corpus.len() < 500 {
        return Err(format!("only {} hostile requests; at least 500", corpus.len()).into());
    }
    let readme = std::fs::read_to_string(workspace_root().join("docs/api.md")).unwrap();
    let mut names = BTreeSet::new();
    for entry in corpus {
        if !names.insert(&entry.name) {
            return Err(format!("{}: the name is used twice", entry.name).into());
        }
        let handlers: BTreeSet<&str> = entry.expect.keys().map(String::as_str).collect();
        let always = BTreeSet::from(ALWAYS);
        if !handlers.is_superset(&always) || !handlers.is_subset(&BTreeSet::from(HANDLERS)) {
            return Err(format!("{}: expects answers from {handlers:?}", entry.name).into());
        }
        for expected in entry.expect.values() {
            if expected.field.is_some() && expected.code != "invalid_config" {
                return Err(format!("{}: a field for {}", entry.name, expected.code).into());
            }
            if !(400..500).contains(&expected.status) {
                return Err(format!("{}: expects {}", entry.name, expected.status).into());
            }
            if !readme.contains(&format!("`{}`", expected.code)) {
                return Err(format!(
                    "{}: code {} is not documented in docs/api.md",
                    entry.name, expected.code
                )
                .into());
            }
        }
        salesloop_tests::hostile::request(entry)?;
    }
    let read_only = corpus
        .iter()
        .filter(|entry| entry.name.starts_with("read: "))
        .count();
    if read_only < 250 {
        return Err(format!("{read_only} read-route entries; at least 250").into());
    }
    // Every admin route, with its path parameter, has its own hostile entries.
    let admin: Vec<&HostileRequest> = corpus
        .iter()
        .filter(|entry| entry.name.starts_with("admin: "))
        .collect();
    if admin.len() < 1_000 {
        return Err(format!("{} admin entries; at least 1000", admin.len()).into());
    }
    for route in ADMIN_ROUTES {
        let template: Vec<&str> = route.split('/').filter(|s| !s.is_empty()).collect();
        let on_route = admin
            .iter()
            .filter(|entry| {
                let path: Vec<&str> = entry.path.split('/').filter(|s| !s.is_empty()).collect();
                path.len() == template.len()
                    && path
                        .iter()
                        .zip(&template)
                        .all(|(p, t)| t.starts_with('{') || p == t)
            })
            .count();
        if on_route < 50 {
            return Err(format!("{on_route} admin entries on {route}; at least 50").into());
        }
    }
    Ok(())
}

salesloop_tests::store_cases! {
    fn trials;
    stores: [every_hostile_request_is_refused_and_changes_nothing],
    plain: [the_corpus_is_well_formed],
}

fn main() {
    let harness = Harness::new();
    let all = trials(&harness);
    let conclusion = harness.run(all);
    let summary = SUMMARY.lock().unwrap();
    if !summary.is_empty() {
        let total = |f: fn(&Tally) -> usize| summary.iter().map(|(_, t)| f(t)).sum::<usize>();
        let stores: Vec<&str> = summary.iter().map(|(name, _)| name.as_str()).collect();
        println!(
            "hostile: {} requests × {} handlers × {} stores ({}) = {} responses, {} non-4xx, {} panics, {} wrong codes, {} changed a store",
            CORPUS.len(),
            HANDLERS.len(),
            summary.len(),
            stores.join(", "),
            total(|t| t.responses),
            total(|t| t.non_4xx),
            total(|t| t.panics),
            total(|t| t.wrong_answers),
            total(|t| t.changed_store),
        );
    }
    conclusion.exit();
}
