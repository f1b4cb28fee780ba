//! end_conversation's labels route, `POST /conversations/{id}/labels`, through its handler on
//! real front-door events, against the embedded store and DynamoDB Local: labels stored once
//! per (turn, pattern) with their turn's text and confidence, repeats counted, contradictions
//! and unknown conversations, turns and patterns refused with nothing stored.
//!
//! Every store case runs on both stores (`salesloop_tests::store_cases!`); a case function in
//! no list is dead code, which this file denies.

#![deny(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use end_conversation::handler::{App as EndApp, handle as end_handle, pattern_names};
use lambda_http::{Body, Response};
use process_message::handler::{App as MessageApp, handle as message_handle};
use salesloop::domain::engine::Engine;
use salesloop::domain::labels::StoredLabel;
use salesloop::domain::patterns::DEFAULT_CATALOG;
use salesloop::domain::privacy::TextStorage;
use salesloop::edge::http::TenantSource;
use salesloop::service::{ConfigCache, ModelCache};
use salesloop::{Store, TenantId};
use salesloop_tests::events::{Flavor, request};
use salesloop_tests::stores::{Backend, Harness};
use serde_json::{Value, json};

const PRICE: &str = "Honestly this looks too expensive for us.";
const QUESTION: &str = "What integrations do you support?";

fn tenant(raw: &str) -> TenantId {
    TenantId::parse(raw).unwrap()
}

fn parts(response: Response<Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let json = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/json");
    assert!(json, "every answer is JSON");
    let body = match response.body() {
        Body::Text(text) => serde_json::from_str(text).unwrap(),
        Body::Binary(bytes) => serde_json::from_slice(bytes).unwrap(),
        _ => Value::Null,
    };
    (status, body)
}

/// process_message and end_conversation over one store, keeping texts as `text_storage` says.
struct Api<S> {
    messages: MessageApp<S>,
    ends: EndApp<S>,
}

fn apis<S: Store>(make: impl Fn() -> S, text_storage: TextStorage) -> Api<S> {
    let tenants = TenantSource {
        claim: "tenant_id".into(),
        local: false,
    };
    Api {
        messages: MessageApp {
            store: make(),
            engine: Engine::builtin(),
            models: ModelCache::new(Duration::ZERO),
            configs: ConfigCache::new(Duration::ZERO),
            tenants: tenants.clone(),
            llm: None,
            text_storage,
            unrecorded: Default::default(),
            record_budget: salesloop_tests::RECORD_BUDGET_UNDER_TEST,
            spool: None,
            last_resort: Default::default(),
        },
        ends: EndApp {
            store: make(),
            models: ModelCache::new(Duration::ZERO),
            tenants,
            patterns: pattern_names(DEFAULT_CATALOG).unwrap(),
            feedback_every: 0,
            trigger: None,
            text_storage,
        },
    }
}

impl<S: Store> Api<S> {
    async fn say(&self, tenant: &str, conversation: &str, message_id: &str, text: &str) {
        let body = json!({"message_id": message_id, "text": text}).to_string();
        let path = format!("/conversations/{conversation}/messages");
        let (status, answer) = parts(
            message_handle(
                &self.messages,
                request(Flavor::HttpApi, "POST", &path, &body, Some(tenant), &[]),
            )
            .await,
        );
        assert_eq!(status, 200, "{answer}");
    }

    async fn post(
        &self,
        tenant: Option<&str>,
        conversation: &str,
        action: &str,
        body: &str,
    ) -> (u16, Value) {
        let path = format!("/conversations/{conversation}/{action}");
        parts(
            end_handle(
                &self.ends,
                request(Flavor::HttpApi, "POST", &path, body, tenant, &[]),
            )
            .await,
        )
    }

    async fn label(&self, tenant: &str, conversation: &str, labels: &Value) -> (u16, Value) {
        self.post(Some(tenant), conversation, "labels", &labels.to_string())
            .await
    }

    /// Every label of the tenant, in the order the feedback loop reads them.
    async fn stored(&self, tenant: &str) -> Vec<StoredLabel> {
        self.ends
            .store
            .labels_since(&self::tenant(tenant), None, 10_000)
            .await
            .unwrap()
    }
}

/// Tenant `acme`'s conversation `c-1`: a price objection at turn 1, a product question at 2.
async fn seeded<S: Store>(make: impl Fn() -> S, text_storage: TextStorage) -> Api<S> {
    let api = apis(make, text_storage);
    api.say("acme", "c-1", "m-1", PRICE).await;
    api.say("acme", "c-1", "m-2", QUESTION).await;
    api
}

fn error_code(answer: &Value) -> Option<&str> {
    answer["error"]["code"].as_str()
}

async fn labels_are_stored_once_with_their_turns_text_and_confidence<B: Backend>(backend: &B) {
    let api = seeded(backend.opener().await, TextStorage::Text).await;
    let first = json!([
        {"turn": 1, "pattern": "objection.price", "correct": true},
        {"turn": 1, "pattern": "objection", "correct": true},
        {"turn": 2, "pattern": "buying_signal", "correct": true},
        {"turn": 2, "pattern": "objection.timing", "correct": false}
    ]);
    let (status, answer) = api.label("acme", "c-1", &first).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"conversation_id": "c-1", "stored": 4, "already_stored": 0})
    );
    let stored = api.stored("acme").await;
    let seen: Vec<_> = stored
        .iter()
        .map(|l| {
            (
                l.turn,
                l.pattern.as_str(),
                l.correct,
                l.text.as_deref(),
                l.confidence.is_some(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, "objection", true, Some(PRICE), true),
            (1, "objection.price", true, Some(PRICE), true),
            // Misses and absences: nothing of these was detected at turn 2.
            (2, "buying_signal", true, Some(QUESTION), false),
            (2, "objection.timing", false, Some(QUESTION), false),
        ]
    );
    // The family label carries the family's strongest detection at that turn.
    assert_eq!(stored[0].confidence, stored[1].confidence);

    // The same request again stores nothing new and says so.
    let (status, again) = api.label("acme", "c-1", &first).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again,
        json!({"conversation_id": "c-1", "stored": 0, "already_stored": 4})
    );
    assert_eq!(api.stored("acme").await, stored, "nothing new in the index");
    // A request mixing a repeat and a new label stores the new one only.
    let mixed = json!([
        {"turn": 2, "pattern": "buying_signal", "correct": true},
        {"turn": 2, "pattern": "question.product", "correct": true}
    ]);
    let (status, answer) = api.label("acme", "c-1", &mixed).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["stored"].clone(), answer["already_stored"].clone()),
        (json!(1), json!(1))
    );
    let now = api.stored("acme").await;
    assert_eq!(now.len(), 5);
    assert!(
        stored.iter().all(|l| now.contains(l)),
        "the first ones unchanged"
    );
    assert!(now.iter().any(|l| l.pattern == "question.product"));
    // The conversation's log is untouched: the end counts two turns.
    let (status, _) = api
        .post(Some("acme"), "c-1", "end", r#"{"outcome": "won"}"#)
        .await;
    assert_eq!(status, 200);
    let record = &api
        .ends
        .store
        .outcomes_since(&tenant("acme"), None, 10)
        .await
        .unwrap()[0];
    assert_eq!(record.turns, 2);
}

async fn a_contradicting_label_is_a_conflict_and_nothing_is_stored<B: Backend>(backend: &B) {
    let api = seeded(backend.opener().await, TextStorage::Text).await;
    let (status, _) = api
        .label(
            "acme",
            "c-1",
            &json!([{"turn": 1, "pattern": "objection.price", "correct": true}]),
        )
        .await;
    assert_eq!(status, 200);
    let before = api.stored("acme").await;
    // A new label beside the contradiction is not stored either.
    let (status, answer) = api
        .label(
            "acme",
            "c-1",
            &json!([
                {"turn": 2, "pattern": "question", "correct": true},
                {"turn": 1, "pattern": "objection.price", "correct": false}
            ]),
        )
        .await;
    assert_eq!((status, error_code(&answer)), (409, Some("label_conflict")));
    assert_eq!(api.stored("acme").await, before);
    assert_eq!(before.len(), 1);
    assert!(before[0].correct, "the first verdict stands");
}

async fn refused_labels_get_a_json_4xx_and_store_nothing<B: Backend>(backend: &B) {
    let api = seeded(backend.opener().await, TextStorage::Text).await;
    api.say("globex", "c-2", "m-1", PRICE).await;
    let before = backend.raw_items(&api.ends.store).await;
    let label =
        |turn: u32, pattern: &str| json!({"turn": turn, "pattern": pattern, "correct": true});
    let good = json!([label(1, "objection.price")]).to_string();
    let many: Vec<Value> = (1..=101).map(|turn| label(turn, "question")).collect();
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        // Who and where.
        ("acme", "c-404", good.clone(), 404, "conversation_not_found"),
        ("globex", "c-1", good.clone(), 404, "conversation_not_found"),
        ("acme", "c-2", good.clone(), 404, "conversation_not_found"),
        ("acme", "c-1", json!([label(3, "objection.price")]).to_string(), 404, "turn_not_found"),
        ("acme", "c-1", json!([label(1, "question"), label(999, "question")]).to_string(), 404, "turn_not_found"),
        // What: the labels' own rules.
        ("acme", "c-1", json!([label(1, "objection.vibes")]).to_string(), 400, "invalid_labels"),
        ("acme", "c-1", json!([label(1, "Objection")]).to_string(), 400, "invalid_labels"),
        ("acme", "c-1", json!([label(0, "objection")]).to_string(), 400, "invalid_labels"),
        ("acme", "c-1", json!([label(1001, "objection")]).to_string(), 400, "invalid_labels"),
        ("acme", "c-1", json!([label(1, "question"), label(1, "question")]).to_string(), 400, "invalid_labels"),
        ("acme", "c-1", json!(many).to_string(), 400, "invalid_labels"),
        ("acme", "c-1", "[]".into(), 400, "invalid_labels"),
        // How: the body's shape.
        ("acme", "c-1", "".into(), 400, "invalid_json"),
        ("acme", "c-1", "[{".into(), 400, "invalid_json"),
        ("acme", "c-1", label(1, "objection").to_string(), 400, "invalid_field"),
        ("acme", "c-1", json!({"labels": [label(1, "objection")]}).to_string(), 400, "invalid_field"),
        ("acme", "c-1", "null".into(), 400, "invalid_field"),
        ("acme", "c-1", "[[1, \"objection\", true]]".into(), 400, "invalid_field"),
        ("acme", "c-1", "[{\"turn\": \"1\", \"pattern\": \"objection\", \"correct\": true}]".into(), 400, "invalid_field"),
        ("acme", "c-1", "[{\"turn\": 1, \"pattern\": \"objection\", \"correct\": \"yes\"}]".into(), 400, "invalid_field"),
        ("acme", "c-1", "[{\"turn\": -1, \"pattern\": \"objection\", \"correct\": true}]".into(), 400, "invalid_field"),
        ("acme", "c-1", "[{\"turn\": 1, \"pattern\": \"objection\"}]".into(), 400, "invalid_field"),
        ("acme", "c-1", "[{\"turn\": 1, \"pattern\": \"objection\", \"correct\": true, \"tenant\": \"victim\"}]".into(), 400, "invalid_field"),
        ("acme", "c-1", "[{\"turn\": 1, \"turn\": 2, \"pattern\": \"objection\", \"correct\": true}]".into(), 400, "invalid_field"),
        ("acme", "c-1", format!("[{}]", vec![label(1, "objection").to_string(); 400].join(",")), 413, "body_too_large"),
    ];
    for (who, conversation, body, status, code) in &cases {
        let (got, answer) = api.post(Some(who), conversation, "labels", body).await;
        assert_eq!(
            (got, error_code(&answer)),
            (*status, Some(*code)),
            "{who} {conversation} {body:.100}"
        );
    }
    let (status, answer) = api.post(None, "c-1", "labels", &good).await;
    assert_eq!(
        (status, error_code(&answer)),
        (401, Some("unauthenticated"))
    );
    let wrong_method = request(
        Flavor::HttpApi,
        "GET",
        "/conversations/c-1/labels",
        "",
        Some("acme"),
        &[],
    );
    assert_eq!(parts(end_handle(&api.ends, wrong_method).await).0, 405);
    // process_message does not take the route.
    let elsewhere = request(
        Flavor::HttpApi,
        "POST",
        "/conversations/c-1/labels",
        &good,
        Some("acme"),
        &[],
    );
    let (status, answer) = parts(message_handle(&api.messages, elsewhere).await);
    assert_eq!((status, error_code(&answer)), (404, Some("not_found")));

    assert_eq!(
        backend.raw_items(&api.ends.store).await,
        before,
        "no refusal stored anything"
    );
    let (status, answer) = api.post(Some("acme"), "c-1", "labels", &good).await;
    assert_eq!(
        status, 200,
        "after all the refusals, a good request still works: {answer}"
    );
}

async fn ended_conversations_take_labels_and_ends_may_name_a_family<B: Backend>(backend: &B) {
    let api = seeded(backend.opener().await, TextStorage::Text).await;
    let end = json!({"outcome": "lost", "labels": [
        {"turn": 1, "pattern": "objection", "correct": true},
        {"turn": 2, "pattern": "question", "correct": true}
    ]});
    let (status, answer) = api.post(Some("acme"), "c-1", "end", &end.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["labels_recorded"], 2);
    let record = &api
        .ends
        .store
        .outcomes_since(&tenant("acme"), None, 10)
        .await
        .unwrap()[0];
    assert!(
        record.labels.iter().all(|l| l.confidence.is_some()),
        "a family label takes its family's detection: {:?}",
        record.labels
    );
    let (status, answer) = api
        .label(
            "acme",
            "c-1",
            &json!([{"turn": 2, "pattern": "question.product", "correct": true}]),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["stored"], 1);
}

async fn with_hashes_kept_a_label_keeps_no_text<B: Backend>(backend: &B) {
    let api = seeded(backend.opener().await, TextStorage::Hash).await;
    let (status, _) = api
        .label(
            "acme",
            "c-1",
            &json!([{"turn": 1, "pattern": "objection.price", "correct": true}]),
        )
        .await;
    assert_eq!(status, 200);
    let stored = api.stored("acme").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].text, None);
    assert!(stored[0].confidence.is_some());
    let raw = format!("{:?}", backend.raw_items(&api.ends.store).await);
    assert!(!raw.contains("too expensive for us"), "no text anywhere");
}

async fn racing_label_requests_store_each_label_once<B: Backend>(backend: &B) {
    let api = Arc::new(seeded(backend.opener().await, TextStorage::Text).await);
    let same = json!([
        {"turn": 1, "pattern": "objection.price", "correct": true},
        {"turn": 2, "pattern": "question", "correct": true}
    ]);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..12 {
        let api = api.clone();
        let same = same.clone();
        tasks.spawn(async move {
            if i % 2 == 0 {
                api.label("acme", "c-1", &same).await
            } else {
                // The other half race on one more label with opposite verdicts.
                let verdict = i % 4 == 1;
                let mut labels = same.as_array().unwrap().clone();
                labels.push(json!({"turn": 1, "pattern": "objection", "correct": verdict}));
                api.label("acme", "c-1", &Value::Array(labels)).await
            }
        });
    }
    let mut stored = 0;
    let mut conflicts = 0;
    while let Some(result) = tasks.join_next().await {
        let (status, answer) = result.unwrap();
        match status {
            200 => stored += answer["stored"].as_u64().unwrap(),
            409 => {
                assert_eq!(error_code(&answer), Some("label_conflict"));
                conflicts += 1;
            }
            other => panic!("{other}: {answer}"),
        }
    }
    let labels = api.stored("acme").await;
    assert_eq!(labels.len(), 3, "{labels:?}");
    assert_eq!(stored, 3, "each label stored by exactly one request");
    // Three requests carried the verdict that lost the race on `objection`.
    assert_eq!(conflicts, 3);
}

salesloop_tests::store_cases! {
    fn trials;
    stores: [
        labels_are_stored_once_with_their_turns_text_and_confidence,
        a_contradicting_label_is_a_conflict_and_nothing_is_stored,
        refused_labels_get_a_json_4xx_and_store_nothing,
        ended_conversations_take_labels_and_ends_may_name_a_family,
        with_hashes_kept_a_label_keeps_no_text,
        racing_label_requests_store_each_label_once,
    ],
}

fn main() {
    let harness = Harness::new();
    let all = trials(&harness);
    harness.run(all).exit();
}
