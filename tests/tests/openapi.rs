//! The handlers against their contract, `api/openapi.yaml`: every operation of the spec is a
//! route the code serves and every route the code serves is in the spec; every error code the
//! code can return is in the spec with its status; and every response a run of every route
//! produces (a flow of messages, labels, ends and feedback runs, every read, the whole hostile
//! corpus through every handler, a store that is down and one whose data is unreadable)
//! validates against the schema the spec gives for its operation and status (JSON Schema
//! 2020-12). Responses to paths no route matches must be the spec's error object.
//!
//! Every store case runs on both stores (`salesloop_tests::store_cases!`); a case function in
//! no list is dead code, which this file denies.

#![deny(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use end_conversation::handler::{App as EndApp, handle as end_handle, pattern_names};
use feedback_loop::run::Settings;
use feedback_loop::{App as FeedbackApp, Trigger, handle as feedback_handle};
use lambda_http::{Body, Request, Response};
use process_message::handler::{App as MessageApp, handle as message_handle};
use read_api::handler::{App as ReadApp, handle as read_handle};
use salesloop::domain::engine::Engine;
use salesloop::domain::patterns::DEFAULT_CATALOG;
use salesloop::domain::privacy::TextStorage;
use salesloop::edge::error::ApiError;
use salesloop::edge::http::{READ_ROUTES, ROUTES, TenantSource};
use salesloop::service::ModelCache;
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
            body,
        }
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
        tenants: tenants(local),
        llm: None,
        text_storage,
        failed_writes: Default::default(),
    };
    let end = |local| EndApp {
        store: make(),
        models: ModelCache::new(Duration::ZERO),
        tenants: tenants(local),
        patterns: pattern_names(DEFAULT_CATALOG).unwrap(),
        feedback_every: 0,
        trigger: None,
        failed_writes: Default::default(),
        text_storage: TextStorage::Text,
    };
    let read = |local| ReadApp {
        store: make(),
        tenants: tenants(local),
    };
    Api {
        messages: [
            message(false, TextStorage::Text),
            message(true, TextStorage::Text),
        ],
        hashed: message(false, TextStorage::Hash),
        ends: [end(false), end(true)],
        reads: [read(false), read(true)],
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
        let method = request.method().to_string();
        let target = request.uri().path().to_owned();
        let which = usize::from(local);
        let response = match handler {
            "process_message" => message_handle(&self.messages[which], request).await,
            "hashed" => message_handle(&self.hashed, request).await,
            "end_conversation" => end_handle(&self.ends[which], request).await,
            _ => read_handle(&self.reads[which], request).await,
        };
        let seen = Seen::of(&method, &target, &response);
        let body = serde_json::from_str(&seen.body).unwrap_or(Value::Null);
        let status = seen.status;
        self.seen.lock().unwrap().push(seen);
        (status, body)
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
    // The hostile corpus, through every handler it names.
    for entry in corpus()? {
        for handler in entry.expect.keys() {
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
    // Down: every table gone.
    raw.execute_batch("DROP TABLE log; DROP TABLE models; DROP TABLE conversations; DROP TABLE labels; DROP TABLE counters;")
        .unwrap();
    let unavailable = [
        (
            "process_message",
            "/conversations/c-2/messages",
            json!({"message_id": "m-1", "text": LINES[1]}),
        ),
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
    let served: BTreeSet<String> = ROUTES
        .iter()
        .map(|(segment, _)| format!("POST /conversations/{{conversation_id}}/{segment}"))
        .chain(READ_ROUTES.iter().map(|path| format!("GET {path}")))
        .collect();
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
