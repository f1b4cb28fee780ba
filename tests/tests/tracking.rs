//! The event tracking rate sees an outage: messages and ends answered with a 503 while
//! DynamoDB Local is stopped are counted as attempted and not recorded, so the feedback run
//! after it reports a rate below 1; a run with no failures since reports 1 again, and the
//! all-time rate keeps the dip.

use std::ops::ControlFlow;
use std::time::Duration;

use end_conversation::handler::{App as EndApp, handle as end_handle, pattern_names};
use feedback_loop::App as FeedbackApp;
use feedback_loop::run::{Settings, TenantRun};
use lambda_http::{Body, Response};
use process_message::handler::{App as MessageApp, handle as message_handle};
use salesloop::domain::engine::Engine;
use salesloop::domain::patterns::DEFAULT_CATALOG;
use salesloop::edge::http::TenantSource;
use salesloop::service::{ConfigCache, ModelCache};
use salesloop::store::{DynamoStore, DynamoStoreConfig};
use salesloop::{Millis, Store, TenantId};
use salesloop_tests::dynamo_local::DynamoLocal;
use salesloop_tests::events::{Flavor, request};
use serde_json::{Value, json};

fn parts(response: Response<Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = match response.body() {
        Body::Text(text) => serde_json::from_str(text).unwrap(),
        _ => Value::Null,
    };
    (status, body)
}

struct Api {
    messages: MessageApp<DynamoStore>,
    ends: EndApp<DynamoStore>,
}

impl Api {
    async fn say(&self, conversation: &str, message_id: &str) -> u16 {
        let body = json!({"message_id": message_id, "text": "too expensive for us"}).to_string();
        let path = format!("/conversations/{conversation}/messages");
        let request = request(Flavor::HttpApi, "POST", &path, &body, Some("acme"), &[]);
        parts(message_handle(&self.messages, request).await).0
    }

    async fn end(&self, conversation: &str) -> u16 {
        let path = format!("/conversations/{conversation}/end");
        let body = json!({"outcome": "won"}).to_string();
        let request = request(Flavor::HttpApi, "POST", &path, &body, Some("acme"), &[]);
        parts(end_handle(&self.ends, request).await).0
    }
}

fn api(store: &DynamoStore) -> Api {
    let tenants = TenantSource {
        claim: "tenant_id".into(),
        local: false,
    };
    Api {
        messages: MessageApp {
            store: store.clone(),
            engine: Engine::builtin(),
            models: ModelCache::new(Duration::from_secs(30)),
            configs: ConfigCache::new(Duration::from_secs(30)),
            tenants: tenants.clone(),
            llm: None,
            text_storage: Default::default(),
            failed_writes: Default::default(),
        },
        ends: EndApp {
            store: store.clone(),
            models: ModelCache::new(Duration::from_secs(30)),
            tenants,
            patterns: pattern_names(DEFAULT_CATALOG).unwrap(),
            feedback_every: 0,
            trigger: None,
            failed_writes: Default::default(),
            text_storage: Default::default(),
        },
    }
}

async fn feedback_run(store: &DynamoStore) -> salesloop::domain::learning::Tracking {
    let app = FeedbackApp::new(
        store.clone(),
        Settings {
            settle_ms: 0,
            ..Settings::default()
        },
    );
    let t = TenantId::parse("acme").unwrap();
    let run = app
        .feedback()
        .run_tenant(&t, "test", &Millis::now, &mut |_| ControlFlow::Continue(()))
        .await
        .unwrap();
    let TenantRun::Published(versions) = run else {
        panic!("expected a published version, got {run:?}");
    };
    versions[0].report.as_ref().unwrap().tracking
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_shows_as_a_tracking_rate_below_one_and_recovery_brings_it_back() {
    let mut server = DynamoLocal::start_persistent().expect("DynamoDB Local");
    let table = server.fresh_store().await.table().to_owned();
    // The functions' own client settings: an outage becomes a 503 within seconds.
    let store = DynamoStore::new(
        DynamoLocal::production_client(&server.endpoint()),
        DynamoStoreConfig {
            table,
            retention: None,
        },
    );
    let api = api(&store);

    for i in 0..4 {
        assert_eq!(api.say(&format!("c-{i}"), "m-1").await, 200);
    }
    server.stop();
    for i in 0..3 {
        assert_eq!(api.say(&format!("c-{i}"), "m-2").await, 503);
    }
    assert_eq!(api.end("c-0").await, 503);
    assert_eq!(api.messages.failed_writes.pending(), 3);
    assert_eq!(api.ends.failed_writes.pending(), 1);
    server.restart().expect("DynamoDB Local restarts");

    // The clients retry with the same ids: each message is recorded once, and the first
    // successful write of each function adds its noted failures to the tenant's counter.
    for i in 0..3 {
        assert_eq!(api.say(&format!("c-{i}"), "m-2").await, 200);
    }
    for i in 0..4 {
        assert_eq!(api.end(&format!("c-{i}")).await, 200);
    }
    assert_eq!(api.messages.failed_writes.pending(), 0);
    assert_eq!(api.ends.failed_writes.pending(), 0);
    let acme = TenantId::parse("acme").unwrap();
    assert_eq!(store.failed_writes(&acme).await.unwrap(), 4);

    // Recorded: 4 ends and 7 exchanges; attempted: those and the 4 answered with a 503.
    let dip = feedback_run(&store).await;
    assert_eq!((dip.run.successes, dip.run.trials), (11, 15), "{dip:?}");
    assert!(dip.run.rate < 1.0);

    for i in 4..6 {
        assert_eq!(api.say(&format!("c-{i}"), "m-1").await, 200);
        assert_eq!(api.end(&format!("c-{i}")).await, 200);
    }
    let recovered = feedback_run(&store).await;
    assert_eq!((recovered.run.successes, recovered.run.trials), (4, 4));
    assert_eq!(recovered.run.rate, 1.0);
    assert_eq!(
        (recovered.all_time.successes, recovered.all_time.trials),
        (15, 19)
    );
}
