//! read_api, the read routes, through its handler on real front-door events, against the
//! embedded store and DynamoDB Local: after messages, ends, labels and feedback runs every
//! route answers what the store holds, lists page newest first without a gap or a repeat,
//! another tenant's ids name nothing, and no read changes anything stored.
//!
//! Every store case runs on both stores (`salesloop_tests::store_cases!`); a case function in
//! no list is dead code, which this file denies.

#![deny(dead_code)]

use std::time::Duration;

use end_conversation::handler::{App as EndApp, handle as end_handle, pattern_names};
use feedback_loop::run::Settings;
use feedback_loop::{App as FeedbackApp, Trigger, handle as feedback_handle};
use lambda_http::{Body, Response};
use process_message::handler::{App as MessageApp, handle as message_handle};
use read_api::handler::{App as ReadApp, handle as read_handle};
use salesloop::domain::engine::Engine;
use salesloop::domain::patterns::DEFAULT_CATALOG;
use salesloop::edge::http::TenantSource;
use salesloop::service::reads::{model_view, report_view};
use salesloop::service::{ConfigCache, ModelCache};
use salesloop::{Store, TenantId};
use salesloop_tests::events::{Flavor, request};
use salesloop_tests::stores::{Backend, Harness};
use serde_json::{Value, json};

fn tenant(raw: &str) -> TenantId {
    TenantId::parse(raw).unwrap()
}

struct Api<S> {
    messages: MessageApp<S>,
    ends: EndApp<S>,
    reads: ReadApp<S>,
    feedback: FeedbackApp<S>,
}

fn apis<S: Store>(make: impl Fn() -> S) -> Api<S> {
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
            text_storage: Default::default(),
            unrecorded: Default::default(),
            record_budget: salesloop_tests::RECORD_BUDGET_UNDER_TEST,
            spool: None,
            last_resort: Default::default(),
        },
        ends: EndApp {
            store: make(),
            models: ModelCache::new(Duration::ZERO),
            tenants: tenants.clone(),
            patterns: pattern_names(DEFAULT_CATALOG).unwrap(),
            feedback_every: 0,
            trigger: None,
            text_storage: Default::default(),
        },
        reads: ReadApp {
            store: make(),
            tenants,
        },
        feedback: FeedbackApp::new(
            make(),
            Settings {
                settle_ms: 0,
                ..Settings::default()
            },
        ),
    }
}

/// `value` as a client reads it: through JSON text (serde_json's parser may round the last
/// digit of a float differently from the value it printed).
fn as_sent<T: serde::Serialize>(value: &T) -> Value {
    serde_json::from_str(&serde_json::to_string(value).unwrap()).unwrap()
}

fn parts(response: Response<Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/json", "every read answers JSON");
    let body = match response.body() {
        Body::Text(text) => serde_json::from_str(text).unwrap(),
        Body::Binary(bytes) => serde_json::from_slice(bytes).unwrap(),
        _ => Value::Null,
    };
    (status, body)
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

    async fn post(&self, tenant: &str, conversation: &str, action: &str, body: Value) {
        let path = format!("/conversations/{conversation}/{action}");
        let (status, answer) = parts(
            end_handle(
                &self.ends,
                request(
                    Flavor::HttpApi,
                    "POST",
                    &path,
                    &body.to_string(),
                    Some(tenant),
                    &[],
                ),
            )
            .await,
        );
        assert_eq!(status, 200, "{answer}");
    }

    async fn get(&self, tenant: Option<&str>, target: &str) -> (u16, Value) {
        self.get_through(Flavor::HttpApi, tenant, target).await
    }

    async fn get_through(
        &self,
        flavor: Flavor,
        tenant: Option<&str>,
        target: &str,
    ) -> (u16, Value) {
        parts(read_handle(&self.reads, request(flavor, "GET", target, "", tenant, &[])).await)
    }

    async fn feedback_run(&self, tenant: &str) {
        feedback_handle(
            &self.feedback,
            Trigger::Tenant(self::tenant(tenant)),
            "reads-test",
            &|_| {},
        )
        .await
        .unwrap();
    }
}

/// Tenant `acme`: c-1 (objection, then a question; won, labelled), c-2 (lost), c-3 (open);
/// a feedback run after the first two ends.
async fn seeded<S: Store>(make: impl Fn() -> S) -> Api<S> {
    let api = apis(make);
    api.say(
        "acme",
        "c-1",
        "m-1",
        "Honestly this looks too expensive for us.",
    )
    .await;
    api.say("acme", "c-1", "m-2", "What integrations do you support?")
        .await;
    api.post(
        "acme",
        "c-1",
        "labels",
        json!([{"turn": 1, "pattern": "objection.price", "correct": true}]),
    )
    .await;
    api.post(
        "acme",
        "c-1",
        "end",
        json!({"outcome": "won", "value": 1200.0}),
    )
    .await;
    api.say("acme", "c-2", "m-1", "We already use another vendor.")
        .await;
    api.post("acme", "c-2", "end", json!({"outcome": "lost"}))
        .await;
    api.feedback_run("acme").await;
    api.say("acme", "c-3", "m-1", "Can you send me a quote?")
        .await;
    api
}

async fn each_route_answers_what_the_store_holds<B: Backend>(backend: &B) {
    let api = seeded(backend.opener().await).await;
    let store = &api.reads.store;
    let acme = tenant("acme");

    // A conversation: its turns as stored, its end, its labels.
    let (status, conversation) = api.get(Some("acme"), "/conversations/c-1").await;
    assert_eq!(status, 200, "{conversation}");
    let log = store
        .conversation_log(&acme, &salesloop::ConversationId::parse("c-1").unwrap())
        .await
        .unwrap();
    assert_eq!(conversation["turns"], as_sent(&log.exchanges));
    assert_eq!(conversation["end"], as_sent(&log.end));
    assert_eq!(conversation["end"]["outcome"], "won");
    assert_eq!(conversation["labels"].as_array().unwrap().len(), 1);
    assert_eq!(conversation["labels"][0]["pattern"], "objection.price");
    assert_eq!(
        conversation["started_at"],
        json!(log.exchanges[0].draft.at),
        "{conversation}"
    );
    let detections = conversation["turns"][0]["patterns"].as_array().unwrap();
    assert!(
        detections
            .iter()
            .any(|d| d["pattern"] == "objection.price" && d["confidence"].as_f64() >= Some(0.7)),
        "{detections:?}"
    );
    // An open conversation has no end yet.
    let (status, open) = api.get(Some("acme"), "/conversations/c-3").await;
    assert_eq!((status, open["end"].clone()), (200, Value::Null));

    // The list: newest first.
    let (status, list) = api.get(Some("acme"), "/conversations").await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["conversation_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c-3", "c-2", "c-1"]);
    assert_eq!(list["next_cursor"], Value::Null);
    assert_eq!(
        list["conversations"][2]["started_at"],
        conversation["started_at"]
    );
    // c-3 started after the feedback run published version 1: it was served by it.
    assert_eq!(list["conversations"][0]["model_version"], 1);
    assert_eq!(list["conversations"][2]["model_version"], 0);

    // Models, and one model.
    let current = store.current_model(&acme).await.unwrap().unwrap();
    assert_eq!(current.version, 1);
    let (status, models) = api.get(Some("acme"), "/models").await;
    assert_eq!(status, 200, "{models}");
    assert_eq!(models["models"].as_array().unwrap().len(), 1);
    assert_eq!(models["models"][0]["version"], 1);
    assert_eq!(models["models"][0]["run_outcomes"], 2);
    assert_eq!(models["models"][0]["outcomes_learned"], 2);
    let (status, model) = api.get(Some("acme"), "/models/1").await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model, as_sent(&model_view(&current)));
    let posteriors = model["posteriors"].as_object().unwrap();
    assert!(!posteriors.is_empty(), "{model}");
    for strategies in posteriors.values() {
        for p in strategies.as_object().unwrap().values() {
            let (lo, mean, hi) = (
                p["interval"][0].as_f64().unwrap(),
                p["mean"].as_f64().unwrap(),
                p["interval"][1].as_f64().unwrap(),
            );
            assert!(0.0 < lo && lo < mean && mean < hi && hi < 1.0, "{p}");
        }
    }
    // The running tallies and the layer's weights stay in the store.
    assert!(model.get("state").is_none() && model.get("model").is_none());

    // The report: what `feedback_loop report --json` prints.
    let (status, report) = api.get(Some("acme"), "/report").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report, as_sent(&report_view(&acme, Some(&current), &[])));
    assert_eq!(report["version"], 1);
    let curve = report["report"]["win_rate_by_version"].as_array().unwrap();
    assert_eq!(curve.len(), 1, "{curve:?}");
    assert_eq!(
        (
            curve[0]["version"].clone(),
            curve[0]["win_rate"]["successes"].clone()
        ),
        (json!(0), json!(1))
    );
    assert_eq!(curve[0]["win_rate"]["trials"], 2);
}

async fn lists_page_newest_first_without_gaps_or_repeats<B: Backend>(backend: &B) {
    let api = apis(backend.opener().await);
    for i in 0..7 {
        api.say("acme", &format!("p-{i}"), "m-1", "Hello there")
            .await;
        // Some conversations share a millisecond, some do not: both orders are exercised.
        if i % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    let store = &api.reads.store;
    let all = store
        .conversations(&tenant("acme"), salesloop::Millis(0), None, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 7);
    let mut expected: Vec<(u64, String)> = all
        .iter()
        .map(|e| (e.started_at.0, e.conversation_id.to_string()))
        .collect();
    expected.sort_by(|a, b| b.cmp(a));

    // Pages of 3, through each front door in turn.
    let flavors = [Flavor::HttpApi, Flavor::Rest, Flavor::HttpApi];
    let mut seen = Vec::new();
    let mut target = "/conversations?limit=3".to_owned();
    for (page, flavor) in flavors.iter().enumerate() {
        let (status, answer) = api.get_through(*flavor, Some("acme"), &target).await;
        assert_eq!(status, 200, "{answer}");
        let items = answer["conversations"].as_array().unwrap();
        assert_eq!(items.len(), if page < 2 { 3 } else { 1 }, "{answer}");
        for item in items {
            seen.push((
                item["started_at"].as_u64().unwrap(),
                item["conversation_id"].as_str().unwrap().to_owned(),
            ));
        }
        match answer["next_cursor"].as_str() {
            Some(cursor) => target = format!("/conversations?limit=3&cursor={cursor}"),
            None => assert_eq!(page, 2, "the last page has no cursor"),
        }
    }
    assert_eq!(seen, expected);

    // `since` keeps the conversations that started at or after it.
    let since = expected[3].0;
    let (status, answer) = api
        .get(
            Some("acme"),
            &format!("/conversations?since={since}&limit=100"),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let kept: Vec<u64> = answer["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["started_at"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = expected
        .iter()
        .map(|e| e.0)
        .filter(|at| *at >= since)
        .collect();
    assert_eq!(kept, want);

    // Model versions page the same way.
    for _ in 0..3 {
        let c = format!(
            "e-{}",
            api.reads.store.ended_count(&tenant("acme")).await.unwrap()
        );
        api.say("acme", &c, "m-1", "Sounds good, let's go").await;
        api.post("acme", &c, "end", json!({"outcome": "won"})).await;
        api.feedback_run("acme").await;
    }
    let (status, first) = api.get(Some("acme"), "/models?limit=2").await;
    assert_eq!(status, 200, "{first}");
    let versions = |answer: &Value| -> Vec<u64> {
        answer["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["version"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(versions(&first), [3, 2]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, rest) = api
        .get(Some("acme"), &format!("/models?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(versions(&rest), [1]);
    assert_eq!(rest["next_cursor"], Value::Null);
}

async fn another_tenants_ids_name_nothing<B: Backend>(backend: &B) {
    let api = seeded(backend.opener().await).await;
    let refusals = [
        ("/conversations/c-1", 404, "conversation_not_found"),
        ("/models/1", 404, "model_not_found"),
    ];
    for (target, status, code) in refusals {
        let (got, answer) = api.get(Some("globex"), target).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{target}"
        );
    }
    let (_, list) = api.get(Some("globex"), "/conversations").await;
    assert_eq!(list, json!({"conversations": [], "next_cursor": null}));
    let (_, models) = api.get(Some("globex"), "/models").await;
    assert_eq!(models, json!({"models": [], "next_cursor": null}));
    let (_, report) = api.get(Some("globex"), "/report").await;
    assert_eq!(
        report,
        json!({"tenant": "globex", "version": 0, "published_at": null, "outcomes_learned": 0,
               "activated_from": null, "report": null,
               "config": {"version": 0, "history": [{"version": 0, "published_at": 0,
                          "changes": ["the built-in experiments and playbook"]}]}})
    );
    // A cursor made from acme's list reads globex's list, which is empty: a cursor is a
    // position, never a key of another tenant.
    let (_, page) = api.get(Some("acme"), "/conversations?limit=1").await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, other) = api
        .get(Some("globex"), &format!("/conversations?cursor={cursor}"))
        .await;
    assert_eq!((status, other["conversations"].clone()), (200, json!([])));
    // Without a claim, nothing.
    let (status, answer) = api.get(None, "/report").await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
}

async fn reads_change_nothing_stored<B: Backend>(backend: &B) {
    let make = backend.opener().await;
    let probe = make();
    let api = seeded(make).await;
    let before = backend.raw_items(&probe).await;
    for target in [
        "/conversations/c-1",
        "/conversations/c-3",
        "/conversations/nope",
        "/conversations?limit=2",
        "/conversations?since=1",
        "/models",
        "/models/1",
        "/models/9",
        "/report",
        "/dashboard",
    ] {
        for who in [Some("acme"), Some("globex"), None] {
            let _ = read_handle(
                &api.reads,
                request(Flavor::HttpApi, "GET", target, "", who, &[]),
            )
            .await;
        }
    }
    assert_eq!(backend.raw_items(&probe).await, before);
}

async fn the_dashboard_is_one_page_that_runs_only_its_own_code<B: Backend>(backend: &B) {
    let api = apis(backend.opener().await);
    // No tenant needed: the page holds no data, it reads the routes with the caller's token.
    let response = read_handle(
        &api.reads,
        request(Flavor::HttpApi, "GET", "/dashboard", "", None, &[]),
    )
    .await;
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let policy = header("content-security-policy");
    assert!(policy.contains("connect-src 'self'") && policy.contains("script-src 'sha256-"));
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    let Body::Text(page) = response.body() else {
        panic!("the page is text");
    };
    assert_eq!(page, salesloop::edge::dashboard::PAGE);
    // Behind a stage, with the local tenant parameter.
    let staged = read_handle(
        &api.reads,
        request(
            Flavor::Rest,
            "GET",
            "/prod/dashboard?tenant=acme",
            "",
            None,
            &[],
        ),
    )
    .await;
    assert_eq!(staged.status(), 200);
}

salesloop_tests::store_cases! {
    fn trials;
    stores: [
        each_route_answers_what_the_store_holds,
        lists_page_newest_first_without_gaps_or_repeats,
        another_tenants_ids_name_nothing,
        reads_change_nothing_stored,
        the_dashboard_is_one_page_that_runs_only_its_own_code,
    ],
}

fn main() {
    let harness = Harness::new();
    let trials = trials(&harness);
    harness.run(trials).exit();
}
