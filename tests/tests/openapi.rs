//! The handlers against their contract, `api/openapi.yaml`: every operation of the spec is a
//! route the code serves and every route the code serves is in the spec; every error code the
//! code can return is in the spec with its status; and every response a run of every route
//! produces (a flow of messages, labels, ends and feedback runs, every read, an admin's changes
//! to experiments, playbook and model, the whole hostile corpus through every handler, a store
//! that is down and one whose data is unreadable) validates against the schema the spec gives
//! for its operation and status (JSON Schema 2020-12), and carries the headers the spec
//! requires of it (each header it carries that the spec gives valid against its schema).
//! Responses to paths no route matches must be the spec's error object.
//!
//! Every store case runs on both stores (`salesloop_tests::store_cases!`); a case function in
//! no list is dead code, which this file denies.

#![deny(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use admin_api::handler::{App as AdminApp, handle as admin_handle};
use end_conversation::handler::{App as EndApp, handle as end_handle, pattern_names};
use feedback_loop::run::Settings;
use feedback_loop::{App as FeedbackApp, Trigger, handle as feedback_handle};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use process_message::handler::{App as MessageApp, handle as message_handle};
use read_api::handler::{App as ReadApp, handle as read_handle};
use salesloop::domain::engine::Engine;
use salesloop::domain::patterns::DEFAULT_CATALOG;
use salesloop::domain::privacy::TextStorage;
use salesloop::edge::admin::{ADMIN_ROUTES, AdminSource, DEFAULT_ADMIN_SCOPE, admin_route};
use salesloop::edge::error::ApiError;
use salesloop::edge::http::{READ_ROUTES, ROUTES, TenantSource};
use salesloop::service::{ConfigCache, ModelCache};
use salesloop::{EmbeddedStore, Store, TenantId};
use salesloop_tests::events::{Flavor, request};
use salesloop_tests::hostile::corpus;
use salesloop_tests::stores::{Backend, Failed, Harness};
use salesloop_tests::workspace_root;
use serde_json::{Value, json};

/// The spec, as JSON.
static SPEC: LazyLock<Value> = LazyLock::new(|| {
    let path = workspace_root().join("api/openapi.yaml");
    let text = std::fs::read_to_string(&path).expect("api/openapi.yaml");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("the spec is YAML");
    serde_json::to_value(yaml).expect("the spec is JSON-compatible")
});

/// Compiled validators by JSON pointer into the spec.
static VALIDATORS: LazyLock<Mutex<HashMap<String, jsonschema::Validator>>> =
    LazyLock::new(Default::default);

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Validates `instance` against the schema at `pointer` in the spec (the spec is the root
/// resource, so the schema's `$ref`s to `#/components/...` resolve).
fn validate(pointer: &str, instance: &Value) -> Result<(), String> {
    let mut validators = VALIDATORS.lock().unwrap();
    if !validators.contains_key(pointer) {
        let mut root = SPEC.clone();
        // A JSON pointer in a URI fragment: anything a URI cannot hold (`{`, `}`) is escaped.
        let fragment: String = pointer
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        root["$ref"] = json!(format!("#{fragment}"));
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .map_err(|e| format!("the schema at {pointer} does not compile: {e}"))?;
        validators.insert(pointer.to_owned(), validator);
    }
    let errors: Vec<String> = validators[pointer]
        .iter_errors(instance)
        .take(3)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("against {pointer}: {}", errors.join("; ")))
    }
}

/// The spec's path template that `path` matches, if any.
fn template_of(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    SPEC["paths"].as_object()?.keys().find_map(|template| {
        let parts: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
        let matches = parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(part, segment)| part.starts_with('{') || part == segment);
        matches.then(|| template.clone())
    })
}

/// Follows a `$ref` (to `#/components/...`) to the pointer it names.
fn resolve(pointer: String) -> String {
    match SPEC.pointer(&pointer).and_then(|v| v["$ref"].as_str()) {
        Some(reference) => resolve(reference.trim_start_matches('#').to_owned()),
        None => pointer,
    }
}

/// One response a handler gave, and to what.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    status: u16,
    content_type: String,
    /// Every header, its name in lower case.
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn of(method: &str, target: &str, response: &Response<Body>) -> Seen {
        let body = match response.body() {
            Body::Text(text) => text.clone(),
            Body::Binary(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => String::new(),
        };
        Seen {
            method: method.to_owned(),
            path: target.split('?').next().unwrap_or_default().to_owned(),
            status: response.status().as_u16(),
            content_type: response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            headers: response
                .headers()
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_ascii_lowercase(), value)
                })
                .collect(),
            body,
        }
    }

    /// The value of header `name` (any case), if it was sent.
    fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The headers the spec gives the response at `response` (a pointer): each required one
    /// sent, each one sent valid against its schema (an integer's as a number).
    fn check_headers(&self, response: &str) -> Result<(), String> {
        let Some(headers) = SPEC
            .pointer(&format!("{response}/headers"))
            .and_then(Value::as_object)
        else {
            return Ok(());
        };
        for name in headers.keys() {
            let header = resolve(format!("{response}/headers/{}", escape(name)));
            let required = SPEC
                .pointer(&format!("{header}/required"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let Some(value) = self.header(name) else {
                if required {
                    return Err(format!(
                        "{} {} answered {} without the header {name} the spec requires",
                        self.method, self.path, self.status
                    ));
                }
                continue;
            };
            let schema = format!("{header}/schema");
            let integer = SPEC.pointer(&format!("{schema}/type")) == Some(&json!("integer"));
            let instance = match value.parse::<i64>() {
                Ok(number) if integer => json!(number),
                _ => json!(value),
            };
            validate(&schema, &instance).map_err(|e| {
                format!(
                    "{} {} -> {}: header {name}: {value:?} {e}",
                    self.method, self.path, self.status
                )
            })?;
        }
        Ok(())
    }

    /// The operation it answered (`(method, template)`), when the spec has one.
    fn operation(&self) -> Option<(String, String)> {
        let template = template_of(&self.path)?;
        let method = self.method.to_ascii_lowercase();
        SPEC["paths"][&template].get(&method)?;
        Some((method, template))
    }

    /// Why the response breaks the contract, if it does.
    fn check(&self) -> Result<(), String> {
        let media = self
            .content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        let pointer = match self.operation() {
            Some((method, template)) => {
                let response = resolve(format!(
                    "/paths/{}/{method}/responses/{}",
                    escape(&template),
                    self.status
                ));
                if SPEC.pointer(&response).is_none() {
                    return Err(format!(
                        "{} {} answered {}, which the spec does not list",
                        self.method, self.path, self.status
                    ));
                }
                let schema = format!("{response}/content/{}/schema", escape(media));
                if SPEC.pointer(&schema).is_none() {
                    return Err(format!(
                        "{} {} answered {} as {media}, which the spec does not give",
                        self.method, self.path, self.status
                    ));
                }
                self.check_headers(&response)?;
                schema
            }
            // A path or method no operation matches: a refusal, with the spec's error object.
            None if self.status >= 400 && media == "application/json" => {
                "/components/schemas/Error".to_owned()
            }
            None => {
                return Err(format!(
                    "{} {} answered {} {media} outside any operation",
                    self.method, self.path, self.status
                ));
            }
        };
        if media == "application/json" {
            let body: Value = serde_json::from_str(&self.body)
                .map_err(|e| format!("{} {}: not JSON: {e}", self.method, self.path))?;
            validate(&pointer, &body).map_err(|e| {
                format!(
                    "{} {} -> {}: {e}\n  body: {:.400}",
                    self.method, self.path, self.status, self.body
                )
            })
        } else {
            // HTML: the schema is a string.
            validate(&pointer, &json!(self.body))
        }
    }
}

/// Every handler over one store, deployed (tenant from the claim) and locally.
struct Api<S> {
    messages: [MessageApp<S>; 2],
    hashed: MessageApp<S>,
    ends: [EndApp<S>; 2],
    reads: [ReadApp<S>; 2],
    /// Deployed, the admin right is the token's scope; locally, `x-salesloop-role: admin`.
    admins: [AdminApp<S>; 2],
    feedback: FeedbackApp<S>,
    seen: Mutex<Vec<Seen>>,
}

fn apis<S: Store>(make: impl Fn() -> S) -> Api<S> {
    let tenants = |local| TenantSource {
        claim: "tenant_id".into(),
        local,
    };
    let message = |local, text_storage| MessageApp {
        store: make(),
        engine: Engine::builtin(),
        models: ModelCache::new(Duration::ZERO),
        configs: ConfigCache::new(Duration::ZERO),
        tenants: tenants(local),
        llm: None,
        text_storage,
        unrecorded: Default::default(),
        record_budget: salesloop_tests::RECORD_BUDGET_UNDER_TEST,
        spool: None,
        last_resort: Default::default(),
    };
    let end = |local| EndApp {
        store: make(),
        models: ModelCache::new(Duration::ZERO),
        tenants: tenants(local),
        patterns: pattern_names(DEFAULT_CATALOG).unwrap(),
        feedback_every: 0,
        trigger: None,
        text_storage: TextStorage::Text,
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
    Api {
        messages: [
            message(false, TextStorage::Text),
            message(true, TextStorage::Text),
        ],
        hashed: message(false, TextStorage::Hash),
        ends: [end(false), end(true)],
        reads: [read(false), read(true)],
        admins: [admin(false), admin(true)],
        feedback: FeedbackApp::new(
            make(),
            Settings {
                settle_ms: 0,
                ..Settings::default()
            },
        ),
        seen: Mutex::new(Vec::new()),
    }
}

impl<S: Store> Api<S> {
    /// Sends `request` to `handler` (deployed or local) and records the answer.
    async fn send(&self, handler: &str, local: bool, request: Request) -> (u16, Value) {
        let seen = self.answer(handler, local, request).await;
        let body = serde_json::from_str(&seen.body).unwrap_or(Value::Null);
        (seen.status, body)
    }

    /// Sends `request` to `handler` (deployed or local), records the answer and returns it.
    async fn answer(&self, handler: &str, local: bool, request: Request) -> Seen {
        let method = request.method().to_string();
        // The path the handlers route on: the REST API's URI carries its stage in front.
        let target = request.raw_http_path().to_owned();
        let which = usize::from(local);
        // Each handler's future on the heap: the flows await thousands of them, and a future
        // holding them all inline would overflow a test thread's stack.
        let response = match handler {
            "process_message" => Box::pin(message_handle(&self.messages[which], request)).await,
            "hashed" => Box::pin(message_handle(&self.hashed, request)).await,
            "end_conversation" => Box::pin(end_handle(&self.ends[which], request)).await,
            "admin_api" => Box::pin(admin_handle(&self.admins[which], request)).await,
            _ => Box::pin(read_handle(&self.reads[which], request)).await,
        };
        let seen = Seen::of(&method, &target, &response);
        self.seen.lock().unwrap().push(seen.clone());
        seen
    }

    async fn post(&self, handler: &str, tenant: &str, path: &str, body: Value) -> (u16, Value) {
        let request = request(
            Flavor::HttpApi,
            "POST",
            path,
            &body.to_string(),
            Some(tenant),
            &[],
        );
        self.send(handler, false, request).await
    }

    async fn get(&self, tenant: Option<&str>, target: &str) -> (u16, Value) {
        let request = request(Flavor::HttpApi, "GET", target, "", tenant, &[]);
        self.send("read_api", false, request).await
    }

    /// Sends an admin request for tenant `acme` as `caller`.
    async fn admin(
        &self,
        caller: Caller,
        method: &str,
        target: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.admin_as(caller, Some("acme"), method, target, body, headers)
            .await
    }

    /// Sends an admin request as `caller`, for `tenant` (deployed, its claim; locally, its
    /// `x-tenant-id`; `None`: neither).
    async fn admin_as(
        &self,
        caller: Caller,
        tenant: Option<&str>,
        method: &str,
        target: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let local = matches!(caller, Caller::LocalAdmin | Caller::LocalUser);
        let request = if local {
            let mut all: Vec<(&str, &str)> = Vec::new();
            if let Some(tenant) = tenant {
                all.push(("x-tenant-id", tenant));
            }
            if caller == Caller::LocalAdmin {
                all.push(("x-salesloop-role", "admin"));
            }
            all.extend_from_slice(headers);
            request(Flavor::FunctionUrl, method, target, body, None, &all)
        } else {
            let request = request(Flavor::HttpApi, method, target, body, tenant, headers);
            match caller {
                Caller::Admin => with_jwt(request, |_, scopes| {
                    *scopes = Some(vec!["scope1".into(), DEFAULT_ADMIN_SCOPE.into()]);
                }),
                Caller::AdminClaim => with_jwt(request, |claims, scopes| {
                    *scopes = None;
                    claims.insert("scope".into(), format!("openid {DEFAULT_ADMIN_SCOPE}"));
                }),
                // The fixture's token: the scopes scope1 and scope2.
                _ => request,
            }
        };
        let seen = self.answer("admin_api", local, request).await;
        Answer {
            status: seen.status,
            body: serde_json::from_str(&seen.body).unwrap_or(Value::Null),
            etag: seen.header("etag").map(str::to_owned),
        }
    }
}

/// Who sends an admin request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// Deployed: a token with the admin scope among the authorizer's scopes.
    Admin,
    /// Deployed: a token with the admin scope in its `scope` claim.
    AdminClaim,
    /// Deployed: a token without the admin scope.
    User,
    /// Locally: `x-salesloop-role: admin`.
    LocalAdmin,
    /// Locally: no role header (or another role, in the extra headers).
    LocalUser,
}

/// An admin answer: its status, body and `ETag`.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    etag: Option<String>,
}

impl Answer {
    /// Asserts the status, and the error code for an error; returns the answer.
    #[track_caller]
    fn expect(self, status: u16, code: Option<&str>) -> Answer {
        assert_eq!(self.status, status, "{}", self.body);
        if let Some(code) = code {
            assert_eq!(self.body["error"]["code"], code, "{}", self.body);
        }
        self
    }

    /// Asserts a 200 showing version `version` (its `ETag` and its body's `version`).
    #[track_caller]
    fn version(self, version: u64) -> Answer {
        let answer = self.expect(200, None);
        assert_eq!(
            answer.etag.as_deref(),
            Some(format!("\"{version}\"").as_str())
        );
        assert_eq!(answer.body["version"], version, "{}", answer.body);
        answer
    }

    /// Asserts a 400 `invalid_config`; returns the field it names.
    #[track_caller]
    fn invalid_config(self) -> String {
        let answer = self.expect(400, Some("invalid_config"));
        answer.body["error"]["field"]
            .as_str()
            .unwrap_or_else(|| panic!("no field: {}", answer.body))
            .to_owned()
    }
}

/// An admin request: method, target, body and headers.
type AdminRequest<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);

/// `request` with its JWT authorizer's claims and scopes edited.
fn with_jwt(
    request: Request,
    edit: impl FnOnce(&mut HashMap<String, String>, &mut Option<Vec<String>>),
) -> Request {
    let Some(RequestContext::ApiGatewayV2(mut context)) = request.request_context_ref().cloned()
    else {
        panic!("an HTTP API request");
    };
    let jwt = context
        .authorizer
        .as_mut()
        .and_then(|authorizer| authorizer.jwt.as_mut())
        .expect("a JWT authorizer");
    edit(&mut jwt.claims, &mut jwt.scopes);
    request.with_request_context(RequestContext::ApiGatewayV2(context))
}

const LINES: [&str; 8] = [
    "Honestly this looks too expensive for us.",
    "What integrations do you support?",
    "We already use another vendor for this.",
    "Can you send me a quote for 20 seats?",
    "I need to talk to my boss first.",
    "Sounds good, let's get started.",
    "Not now, maybe next quarter.",
    "How long does onboarding take?",
];

/// Everything a client can do, answered, for tenant `acme`: 24 conversations over two feedback
/// runs, labels, ends with labels, a hashed text, then every read.
async fn flow<S: Store>(api: &Api<S>) {
    let outcomes = ["won", "lost", "no_decision"];
    for n in 0..24 {
        let conversation = format!("c-{n:02}");
        let turns = 1 + n % 3;
        for turn in 0..turns {
            let text = LINES[(n + turn * 3) % LINES.len()];
            let body = json!({"message_id": format!("m-{turn}"), "text": text});
            let path = format!("/conversations/{conversation}/messages");
            let (status, answer) = api
                .post("process_message", "acme", &path, body.clone())
                .await;
            assert_eq!(status, 200, "{answer}");
            if turn == 0 && n % 5 == 0 {
                // A repeat answers the same.
                api.post("process_message", "acme", &path, body).await;
            }
        }
        if n % 4 == 0 {
            let labels = json!([{"turn": 1, "pattern": "objection", "correct": n % 8 == 0},
                                {"turn": 1, "pattern": "question", "correct": true}]);
            let path = format!("/conversations/{conversation}/labels");
            let (status, answer) = api.post("end_conversation", "acme", &path, labels).await;
            assert_eq!(status, 200, "{answer}");
        }
        if n < 20 {
            let mut end = json!({"outcome": outcomes[n % 3]});
            if n % 3 == 0 {
                end["value"] = json!(1200.5 + n as f64);
            }
            if n % 6 == 1 {
                end["reason"] = json!("budget");
            }
            if n % 7 == 2 {
                end["labels"] = json!([{"turn": 1, "pattern": "buying_signal", "correct": false}]);
            }
            let path = format!("/conversations/{conversation}/end");
            let (status, answer) = api.post("end_conversation", "acme", &path, end).await;
            assert_eq!(status, 200, "{answer}");
        }
        if n == 9 || n == 19 {
            feedback_handle(
                &api.feedback,
                Trigger::Tenant(tenant("acme")),
                "spec",
                &|_| {},
            )
            .await
            .unwrap();
        }
    }
    let (status, answer) = api
        .post(
            "hashed",
            "acme",
            "/conversations/h-1/messages",
            json!({"message_id": "m-1", "text": "Too pricey for a team our size."}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");

    for target in [
        "/conversations/c-00",
        "/conversations/c-22",
        "/conversations/h-1",
        "/conversations/nope",
        "/conversations",
        "/conversations?limit=5",
        "/conversations?since=1&limit=100",
        "/models",
        "/models?limit=1",
        "/models/1",
        "/models/2",
        "/models/3",
        "/report",
        "/dashboard",
    ] {
        let (status, answer) = api.get(Some("acme"), target).await;
        assert!(matches!(status, 200 | 404), "{target}: {status} {answer}");
        if let Some(cursor) = answer["next_cursor"].as_str() {
            let joint = if target.contains('?') { '&' } else { '?' };
            let (status, _) = api
                .get(Some("acme"), &format!("{target}{joint}cursor={cursor}"))
                .await;
            assert_eq!(status, 200);
        }
    }
    for target in ["/report", "/models", "/conversations"] {
        api.get(Some("globex"), target).await;
    }
}

/// What an admin does, answered, for tenant `acme` after `flow` (model versions 1 and 2 exist):
/// reads, experiments changed against the right and wrong versions, a stop, a ship, a playbook
/// replaced, refused configurations, model versions activated again, every refusal of the
/// admin right; then a conversation under the new configuration, a feedback run and the reads
/// that show them.
async fn admin_flow<S: Store>(api: &Api<S>) {
    use Caller::*;
    let if_match = |version: &'static str| [("if-match", version)];

    // The right: a scope (listed or claimed), or locally the role header.
    api.admin(Admin, "GET", "/experiments", "", &[])
        .await
        .version(0);
    api.admin(AdminClaim, "GET", "/playbook", "", &[])
        .await
        .version(0);
    api.admin(LocalAdmin, "GET", "/experiments", "", &[])
        .await
        .version(0);
    for (caller, headers) in [
        (User, &[][..]),
        (LocalUser, &[][..]),
        (LocalUser, &[("x-salesloop-role", "viewer")][..]),
    ] {
        api.admin(caller, "GET", "/experiments", "", headers)
            .await
            .expect(403, Some("forbidden"));
    }
    // The tenant is checked before the right: no claim, a claim that is no id, locally none.
    api.admin_as(Admin, None, "GET", "/experiments", "", &[])
        .await
        .expect(401, Some("unauthenticated"));
    api.admin_as(Admin, Some("acme corp"), "GET", "/playbook", "", &[])
        .await
        .expect(403, Some("invalid_tenant"));
    api.admin_as(LocalAdmin, None, "GET", "/playbook", "", &[])
        .await
        .version(0);

    // An experiment replaced: If-Match is required, and must name the current version.
    let tone = json!({
        "description": "Reply templates: plain or warm wording.",
        "variants": [
            {"name": "neutral", "weight": 70, "control": true, "changes": {"tone": "neutral"}},
            {"name": "warm", "weight": 30, "changes": {"tone": "warm"}},
        ],
    })
    .to_string();
    let put = |target: &'static str, body: String, tag: Option<&'static str>| {
        let headers: Vec<(&str, &str)> = tag.into_iter().map(|t| ("if-match", t)).collect();
        async move { api.admin(Admin, "PUT", target, &body, &headers).await }
    };
    let reply_tone = "/experiments/reply_tone";
    put(reply_tone, tone.clone(), None)
        .await
        .expect(428, Some("precondition_required"));
    let changed = put(reply_tone, tone.clone(), Some("\"0\""))
        .await
        .version(1);
    assert_eq!(changed.body["published"], true);
    assert_eq!(
        changed.body["changes"],
        json!(["experiment reply_tone: neutral 70 / warm 30 (was neutral 50 / warm 50)"])
    );
    let stale = put(reply_tone, tone.clone(), Some("\"0\""))
        .await
        .expect(412, Some("precondition_failed"));
    assert_eq!(stale.etag.as_deref(), Some("\"1\""));
    for never in ["W/\"1\"", "1", "\"1\", \"2\""] {
        put(reply_tone, tone.clone(), Some(never))
            .await
            .expect(412, Some("precondition_failed"));
    }
    let unchanged = put(reply_tone, tone.clone(), Some("\"1\""))
        .await
        .version(1);
    assert_eq!(unchanged.body["published"], false);
    // `*` names no version: a PUT must say which one it replaces.
    put(reply_tone, tone.clone(), Some("*"))
        .await
        .expect(428, Some("precondition_required"));

    // Refused experiments: each names its field, and nothing is written.
    let experiment = |variants: Value| json!({"variants": variants});
    let control = json!({"name": "a", "weight": 1, "control": true});
    let other = json!({"name": "b", "weight": 1});
    let mut refused = vec![
        (
            experiment(json!([{"name": "a", "weight": 0, "control": true}, other])),
            "variants[0].weight",
        ),
        (
            experiment(json!([{"name": "a", "weight": 1.5, "control": true}, other])),
            "variants[0].weight",
        ),
        (experiment(json!([control])), "variants"),
        (
            experiment(json!([other, {"name": "c", "weight": 1}])),
            "variants",
        ),
        (
            experiment(json!([control, {"name": "b", "weight": 1, "changes": {"threshold": 2.0}}])),
            "variants[1].changes.threshold",
        ),
        (
            experiment(json!([control, {"name": "b", "weight": 1, "changes": {"tone": "formal"}}])),
            "playbook.strategies.",
        ),
        (
            json!({"variants": [control, other], "status": "shipped"}),
            "shipped",
        ),
        (
            json!({"variants": [control, other], "colour": "red"}),
            "colour",
        ),
        (
            json!({"name": "other_name", "variants": [control, other]}),
            "name",
        ),
        (json!({"description": "no variants"}), ""),
    ];
    refused.push((
        json!({"variants": [control, other], "description": "x".repeat(501)}),
        "description",
    ));
    for (body, field) in refused {
        let named = put("/experiments/price_anchor", body.to_string(), Some("\"1\""))
            .await
            .invalid_config();
        assert!(named.starts_with(field), "{body}: {named}");
    }
    let bad_name = api
        .admin(Admin, "PUT", "/experiments/a$b", &tone, &if_match("\"1\""))
        .await
        .invalid_config();
    assert_eq!(bad_name, "name");
    for (body, code) in [
        ("", "invalid_json"),
        ("{", "invalid_json"),
        ("[1]", "invalid_field"),
        ("\"text\"", "invalid_field"),
    ] {
        put(reply_tone, body.to_owned(), Some("\"1\""))
            .await
            .expect(400, Some(code));
    }
    let huge = json!({"variants": [control, other], "description": "x".repeat(300_000)});
    put(reply_tone, huge.to_string(), Some("\"1\""))
        .await
        .expect(413, Some("body_too_large"));
    api.admin(
        Admin,
        "PUT",
        "/experiments/reply_tone?dry_run=1",
        &tone,
        &if_match("\"1\""),
    )
    .await
    .expect(400, Some("invalid_query"));
    api.admin(Admin, "GET", "/experiments", "", &[])
        .await
        .version(1);

    // A new experiment (named in the body too), stopped, then another shipped.
    let anchor = json!({
        "name": "price_anchor",
        "description": "Explore more on price objections.",
        "variants": [
            {"name": "control", "weight": 1, "control": true},
            {"name": "greedy", "weight": 3,
             "changes": {"policy": "epsilon_greedy", "epsilon": 0.2, "threshold": 0.75}},
        ],
    });
    put(
        "/experiments/price_anchor",
        anchor.to_string(),
        Some("\"1\""),
    )
    .await
    .version(2);
    let stop = "/experiments/price_anchor/stop";
    let stopped = api.admin(Admin, "POST", stop, "", &[]).await.version(3);
    assert_eq!(stopped.body["published"], true);
    let again = api
        .admin(LocalAdmin, "POST", stop, "", &if_match("\"3\""))
        .await
        .version(3);
    assert_eq!(again.body["published"], false);
    api.admin(Admin, "POST", stop, "", &if_match("\"1\""))
        .await
        .expect(412, Some("precondition_failed"));
    api.admin(Admin, "POST", stop, "{}", &[])
        .await
        .expect(400, Some("invalid_field"));
    api.admin(Admin, "POST", "/experiments/nope/stop", "", &[])
        .await
        .expect(404, Some("experiment_not_found"));
    let ship = "/experiments/reply_tone/ship";
    let shipped = api
        .admin(
            Admin,
            "POST",
            ship,
            r#"{"variant": "warm"}"#,
            &if_match("\"3\""),
        )
        .await
        .version(4);
    let tone_now = shipped.body["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "reply_tone")
        .unwrap()
        .clone();
    assert_eq!(
        (&tone_now["status"], &tone_now["shipped"]),
        (&json!("shipped"), &json!("warm"))
    );
    for body in [
        r#"{"variant": "cold"}"#,
        r#"{"variant": 1}"#,
        r#"{"variant": "warm", "why": "wins"}"#,
        r#"{}"#,
    ] {
        api.admin(Admin, "POST", ship, body, &[])
            .await
            .invalid_config();
    }
    for (body, code) in [("", "invalid_json"), ("[\"warm\"]", "invalid_field")] {
        api.admin(Admin, "POST", ship, body, &[])
            .await
            .expect(400, Some(code));
    }
    api.admin(
        Admin,
        "POST",
        "/experiments/nope/ship",
        r#"{"variant": "a"}"#,
        &[],
    )
    .await
    .expect(404, Some("experiment_not_found"));
    api.admin(
        Admin,
        "POST",
        ship,
        r#"{"variant": "warm"}"#,
        &if_match("\"2\""),
    )
    .await
    .expect(412, Some("precondition_failed"));

    // The playbook, read and replaced.
    let read = api
        .admin(Admin, "GET", "/playbook", "", &[])
        .await
        .version(4);
    let playbook = read.body["playbook"].clone();
    let mut priors = playbook.clone();
    priors["priors"] = json!({"none": {"propose_demo": {"alpha": 3.0, "beta": 1.0}}});
    let put_playbook = |body: &Value, tag: Option<&'static str>| {
        let body = body.to_string();
        let headers: Vec<(&str, &str)> = tag.into_iter().map(|t| ("if-match", t)).collect();
        async move { api.admin(Admin, "PUT", "/playbook", &body, &headers).await }
    };
    put_playbook(&priors, None)
        .await
        .expect(428, Some("precondition_required"));
    let replaced = put_playbook(&priors, Some("\"4\"")).await.version(5);
    assert_eq!(replaced.body["changes"], json!(["playbook replaced"]));
    put_playbook(&priors, Some("\"4\""))
        .await
        .expect(412, Some("precondition_failed"));
    let unchanged = put_playbook(&priors, Some("\"5\"")).await.version(5);
    assert_eq!(unchanged.body["published"], false);
    let mut no_momentum = playbook.clone();
    no_momentum["contexts"]
        .as_object_mut()
        .unwrap()
        .remove("momentum");
    let mut no_warm = playbook.clone();
    no_warm["contexts"]["none"] = json!(["ask_discovery_question", "brand_new"]);
    no_warm["strategies"]["brand_new"] = json!({"neutral": ["A new template."]});
    let mut bad_prior = playbook.clone();
    bad_prior["priors"] = json!({"none": {"propose_demo": {"alpha": 0.0, "beta": 1.0}}});
    let mut unknown = playbook.clone();
    unknown["colour"] = json!("red");
    let mut wrong_type = playbook.clone();
    wrong_type["contexts"]["none"] = json!("ask_discovery_question");
    for (body, field) in [
        (&no_momentum, "contexts.momentum"),
        (&no_warm, "strategies.brand_new.warm"),
        (&bad_prior, "priors.none.propose_demo"),
        (&unknown, "colour"),
        (&wrong_type, "contexts.none"),
    ] {
        let named = put_playbook(body, Some("\"5\"")).await.invalid_config();
        assert_eq!(named, field);
    }
    let read = api
        .admin(LocalAdmin, "GET", "/playbook", "", &[])
        .await
        .version(5);
    assert_eq!(read.body["playbook"]["priors"], priors["priors"]);
    api.admin(Admin, "GET", "/playbook?x=1", "", &[])
        .await
        .expect(400, Some("invalid_query"));
    api.admin(Admin, "GET", "/experiments", "{\"a\": 1}", &[])
        .await
        .expect(400, Some("invalid_field"));
    // Another tenant's configuration is its own.
    api.admin_as(Admin, Some("globex"), "GET", "/experiments", "", &[])
        .await
        .version(0);

    // Model versions activated again (a rollback), each the next version.
    let activated = api
        .admin(Admin, "POST", "/models/1/activate", "", &[])
        .await
        .version(3);
    assert_eq!(activated.body["activated_from"], 1);
    api.admin(Admin, "POST", "/models/1/activate", "", &if_match("\"2\""))
        .await
        .expect(412, Some("precondition_failed"));
    let activated = api
        .admin(
            LocalAdmin,
            "POST",
            "/models/2/activate",
            "",
            &if_match("\"3\""),
        )
        .await
        .version(4);
    assert_eq!(activated.body["activated_from"], 2);
    api.admin(Admin, "POST", "/models/9/activate", "", &[])
        .await
        .expect(404, Some("model_not_found"));
    api.admin(Admin, "POST", "/models/0/activate", "", &[])
        .await
        .expect(400, Some("invalid_version"));
    api.admin(Admin, "POST", "/models/1/activate", "{}", &[])
        .await
        .expect(400, Some("invalid_field"));
    api.admin_as(Admin, Some("globex"), "POST", "/models/1/activate", "", &[])
        .await
        .expect(404, Some("model_not_found"));
    let (status, report) = api.get(Some("acme"), "/report").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (&report["version"], &report["activated_from"]),
        (&json!(4), &json!(2))
    );
    assert_eq!(report["config"]["version"], 5);

    // Methods and paths no admin route takes.
    for (method, target, allow) in [
        ("DELETE", "/playbook", Some("GET, PUT")),
        ("POST", "/experiments", Some("GET")),
        ("GET", "/experiments/reply_tone", Some("PUT")),
        ("PUT", "/experiments/reply_tone/ship", Some("POST")),
        ("GET", "/models/1/activate", Some("POST")),
        ("GET", "/admin", None),
    ] {
        let request = request(Flavor::HttpApi, method, target, "", Some("acme"), &[]);
        let seen = api.answer("admin_api", false, request).await;
        let status = if allow.is_some() { 405 } else { 404 };
        assert_eq!(seen.status, status, "{method} {target}: {}", seen.body);
        assert_eq!(seen.header("allow"), allow, "{method} {target}");
    }

    // New conversations start under the new configuration (reply_tone shipped warm, the
    // playbook's priors) and the activated model; a feedback run reports on them.
    for (n, text) in LINES.iter().enumerate().take(4) {
        let path = format!("/conversations/after-{n}/messages");
        let body = json!({"message_id": "m-1", "text": text});
        let (status, answer) = api.post("process_message", "acme", &path, body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            (&answer["config_version"], &answer["model_version"]),
            (&json!(5), &json!(4))
        );
        let path = format!("/conversations/after-{n}/end");
        let (status, answer) = api
            .post("end_conversation", "acme", &path, json!({"outcome": "won"}))
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    feedback_handle(
        &api.feedback,
        Trigger::Tenant(tenant("acme")),
        "spec",
        &|_| {},
    )
    .await
    .unwrap();
    let (status, conversation) = api.get(Some("acme"), "/conversations/after-0").await;
    assert_eq!(status, 200, "{conversation}");
    let turn = &conversation["turns"][0];
    assert_eq!(turn["config_version"], 5);
    assert_eq!(turn["treatment"]["tone"], "warm");
    assert_eq!(turn["summary"]["pin"]["config_version"], 5);
    assert_eq!(conversation["end"]["config_version"], 5);
    for target in [
        "/report",
        "/models",
        "/models/4",
        "/models/5",
        "/conversations",
    ] {
        let (status, answer) = api.get(Some("acme"), target).await;
        assert_eq!(status, 200, "{target}: {answer}");
    }
}

fn tenant(raw: &str) -> TenantId {
    TenantId::parse(raw).unwrap()
}

/// Checks everything recorded; the failures, at most 40.
fn failures(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter_map(|s| s.check().err())
        .take(40)
        .collect()
}

async fn every_response_of_every_route_validates<B: Backend>(backend: &B) -> Result<(), Failed> {
    let api = apis(backend.opener().await);
    flow(&api).await;
    Box::pin(admin_flow(&api)).await;
    // The hostile corpus, through every handler it names, and admin_api always.
    for entry in corpus()? {
        let handlers: BTreeSet<&str> = entry
            .expect
            .keys()
            .map(String::as_str)
            .chain(["admin_api"])
            .collect();
        for handler in handlers {
            let request = salesloop_tests::hostile::request(&entry)?;
            api.send(handler, entry.local, request).await;
        }
    }
    let seen = api.seen.lock().unwrap().clone();
    let failed = failures(&seen);
    // Every operation of the spec answered 2xx at least once.
    let mut served = BTreeSet::new();
    for s in &seen {
        if let (Some(operation), 200..=299) = (s.operation(), s.status) {
            served.insert(operation);
        }
    }
    let mut unserved = Vec::new();
    for (template, operations) in SPEC["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            if !served.contains(&(method.clone(), template.clone())) {
                unserved.push(format!("{method} {template}"));
            }
        }
    }
    println!(
        "openapi ({}): {} responses checked against api/openapi.yaml, {} operations served, {} failures",
        B::NAME,
        seen.len(),
        served.len(),
        failed.len()
    );
    if !failed.is_empty() || !unserved.is_empty() {
        return Err(format!("never answered 2xx: {unserved:?}\n{}", failed.join("\n")).into());
    }
    Ok(())
}

/// A store that is down (503) and stored data that cannot be read (500) answer as the spec says.
async fn faults_answer_as_the_spec_says() -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("salesloop.sqlite3");
    let api = apis(|| EmbeddedStore::open(&path).unwrap());
    api.post(
        "process_message",
        "acme",
        "/conversations/c-1/messages",
        json!({"message_id": "m-1", "text": LINES[0]}),
    )
    .await;
    // Unreadable: a log entry whose body is not the record it should be.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "UPDATE log SET body = '{\"not\": \"an exchange\"}' WHERE conversation = 'c-1'",
        [],
    )
    .unwrap();
    let (status, _) = api.get(Some("acme"), "/conversations/c-1").await;
    assert_eq!(status, 500);
    let (status, _) = api
        .post(
            "end_conversation",
            "acme",
            "/conversations/c-1/end",
            json!({"outcome": "won"}),
        )
        .await;
    assert_eq!(status, 500);
    // An admin's reads and changes over a configuration and a model version that cannot be
    // read.
    let tone = json!({"variants": [
        {"name": "neutral", "weight": 60, "control": true, "changes": {"tone": "neutral"}},
        {"name": "warm", "weight": 40, "changes": {"tone": "warm"}},
    ]})
    .to_string();
    let put = [("if-match", "\"0\"")];
    api.admin(Caller::Admin, "PUT", "/experiments/reply_tone", &tone, &put)
        .await
        .version(1);
    raw.execute_batch(
        "UPDATE configs SET body = '{\"not\": \"a configuration\"}';
         INSERT INTO models (tenant, version, body) VALUES ('acme', 1, '{\"not\": \"a model\"}');",
    )
    .unwrap();
    let admin_requests: [AdminRequest; 7] = [
        ("GET", "/experiments", "", &[]),
        (
            "PUT",
            "/experiments/reply_tone",
            &tone,
            &[("if-match", "\"1\"")],
        ),
        ("POST", "/experiments/reply_tone/stop", "", &[]),
        (
            "POST",
            "/experiments/reply_tone/ship",
            r#"{"variant": "warm"}"#,
            &[],
        ),
        ("GET", "/playbook", "", &[]),
        (
            "PUT",
            "/playbook",
            r#"{"contexts": {}, "strategies": {}}"#,
            &[("if-match", "\"1\"")],
        ),
        ("POST", "/models/1/activate", "", &[]),
    ];
    for (method, target, body, headers) in admin_requests {
        api.admin(Caller::Admin, method, target, body, headers)
            .await
            .expect(500, Some("internal"));
    }
    // Down: every table gone.
    raw.execute_batch("DROP TABLE log; DROP TABLE models; DROP TABLE conversations; DROP TABLE labels; DROP TABLE counters; DROP TABLE configs;")
        .unwrap();
    // A message is still answered, unrecorded (its answer validated against the spec like
    // every other); the writes that have no spool are 503s.
    let (status, answer) = api
        .post(
            "process_message",
            "acme",
            "/conversations/c-2/messages",
            json!({"message_id": "m-1", "text": LINES[1]}),
        )
        .await;
    assert_eq!(
        (status, &answer["recorded"], &answer["turn"]),
        (200, &json!(false), &Value::Null),
        "{answer}"
    );
    let unavailable = [
        (
            "end_conversation",
            "/conversations/c-2/end",
            json!({"outcome": "won"}),
        ),
        (
            "end_conversation",
            "/conversations/c-2/labels",
            json!([{"turn": 1, "pattern": "question", "correct": true}]),
        ),
    ];
    for (handler, path, body) in unavailable {
        let (status, answer) = api.post(handler, "acme", path, body).await;
        assert_eq!(status, 503, "{path}: {answer}");
    }
    for target in [
        "/conversations/c-1",
        "/conversations",
        "/models",
        "/models/1",
        "/report",
    ] {
        let (status, answer) = api.get(Some("acme"), target).await;
        assert_eq!(status, 503, "{target}: {answer}");
    }
    for (method, target, body, headers) in admin_requests {
        let answer = api
            .admin(Caller::Admin, method, target, body, headers)
            .await
            .expect(503, Some("store_unavailable"));
        assert_eq!(answer.etag, None);
    }
    let seen = api.seen.lock().unwrap().clone();
    let failed = failures(&seen);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n").into())
    }
}

/// The spec lists exactly the routes the code serves, and every error code with its status.
async fn the_spec_is_the_codes_contract() -> Result<(), Failed> {
    let mut in_spec = BTreeSet::new();
    for (template, operations) in SPEC["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            in_spec.insert(format!("{} {template}", method.to_ascii_uppercase()));
        }
    }
    let mut served: BTreeSet<String> = ROUTES
        .iter()
        .map(|(segment, _)| format!("POST /conversations/{{conversation_id}}/{segment}"))
        .chain(READ_ROUTES.iter().map(|path| format!("GET {path}")))
        .collect();
    // The admin routes, with the methods admin_api's router takes on each (every other is 405).
    for path in ADMIN_ROUTES {
        let concrete = path
            .replace("{name}", "reply_tone")
            .replace("{version}", "1");
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            let probe = request(Flavor::HttpApi, method, &concrete, "", Some("acme"), &[]);
            match admin_route(&probe) {
                Ok(_) => {
                    served.insert(format!("{method} {path}"));
                }
                Err(ApiError::MethodNotAllowed(_)) => {}
                Err(e) => return Err(format!("{method} {concrete}: {e}").into()),
            }
        }
    }
    if in_spec != served {
        return Err(
            format!("the spec's operations {in_spec:?} differ from the code's {served:?}").into(),
        );
    }
    let codes: BTreeSet<&str> = SPEC["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .ok_or("components.schemas.ErrorCode.enum")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut statuses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for operations in SPEC["paths"].as_object().unwrap().values() {
        for operation in operations.as_object().unwrap().values() {
            for status in operation["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(s, _)| s)
            {
                statuses.entry(status.clone()).or_default();
            }
        }
    }
    let mut wrong = Vec::new();
    for error in ApiError::examples() {
        if !codes.contains(error.code()) {
            wrong.push(format!("{} is not in ErrorCode", error.code()));
        }
        if !statuses.contains_key(&error.status().to_string()) {
            wrong.push(format!(
                "{} ({}) is no operation's response",
                error.code(),
                error.status()
            ));
        }
        // The error object the code sends validates as the spec's Error.
        let body = match error.clone().into_response().into_body() {
            Body::Text(text) => text,
            _ => String::new(),
        };
        if let Err(why) = validate("/components/schemas/Error", &serde_json::from_str(&body)?) {
            wrong.push(why);
        }
    }
    let known: BTreeSet<&str> = ApiError::examples().iter().map(ApiError::code).collect();
    for code in &codes {
        if !known.contains(code) {
            wrong.push(format!(
                "{code} is in ErrorCode but the code never returns it"
            ));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("\n").into())
    }
}

salesloop_tests::store_cases! {
    fn trials;
    stores: [every_response_of_every_route_validates],
    plain: [faults_answer_as_the_spec_says, the_spec_is_the_codes_contract],
}

fn main() {
    let harness = Harness::new();
    let trials = trials(&harness);
    harness.run(trials).exit();
}
