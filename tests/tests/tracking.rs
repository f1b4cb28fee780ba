//! The event tracking rate sees an outage and its recovery, with real parts: DynamoDB Local
//! stopped under process_message's handler, whose spool is an SQS FIFO queue on moto's server.
//!
//! 1. The spool. Messages during the outage are answered 200 `"recorded": false` and spooled;
//!    an end during it is answered 503 with Retry-After and retried after. The first message
//!    recorded after the restart adds the unrecorded answers to the tenant's counter. A
//!    feedback run before the spool is drained counts them as answered and not recorded (run
//!    and all-time rates below 1); the consumer drains the spool; the next run is back to 1.
//! 2. The last resort. A spool that cannot be reached (a closed port): the unrecorded
//!    exchanges are written as log lines, the rate dips, the replay command's code records the
//!    lines, and the rate is back to 1.
//!
//! Every count is exact: a run counts as recorded the turns of the outcomes it learns, and as
//! answered those plus the growth of the tenant's backlog (unrecorded minus recovered) since
//! the previous run; the all-time rate is every exchange recorded against those plus the
//! backlog as it stands.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use end_conversation::handler::{App as EndApp, handle as end_handle, pattern_names};
use feedback_loop::App as FeedbackApp;
use feedback_loop::run::{Settings, TenantRun};
use lambda_http::{Body, Response};
use process_message::handler::{App as MessageApp, LastResort, handle as message_handle};
use salesloop::clients::sqs::FifoQueue;
use salesloop::domain::engine::Engine;
use salesloop::domain::learning::Tracking;
use salesloop::domain::patterns::DEFAULT_CATALOG;
use salesloop::domain::spool::{SpooledExchange, TrackingCounts, Via};
use salesloop::edge::http::TenantSource;
use salesloop::service::{ConfigCache, ModelCache};
use salesloop::store::{DynamoStore, DynamoStoreConfig};
use salesloop::{ConversationId, Exchange, Millis, Store, TenantId};
use salesloop_tests::dynamo_local::DynamoLocal;
use salesloop_tests::events::{Flavor, request};
use salesloop_tests::moto::Moto;
use salesloop_tests::sqs::SpoolQueues;
use serde_json::{Value, json};
use spool_consumer::handler::{App as ConsumerApp, BatchSummary};
use spool_consumer::replay::{ReplaySummary, replay};

/// Status, Retry-After and JSON body of an answer.
fn parts(response: Response<Body>) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match response.body() {
        Body::Text(text) => serde_json::from_str(text).unwrap(),
        _ => Value::Null,
    };
    (status, retry_after, body)
}

struct Api {
    messages: MessageApp<DynamoStore>,
    ends: EndApp<DynamoStore>,
}

impl Api {
    async fn say(&self, conversation: &str, message_id: &str) -> Value {
        let body = json!({"message_id": message_id, "text": "too expensive for us"}).to_string();
        let path = format!("/conversations/{conversation}/messages");
        let request = request(Flavor::HttpApi, "POST", &path, &body, Some("acme"), &[]);
        let (status, _, answer) = parts(message_handle(&self.messages, request).await);
        assert_eq!(status, 200, "{conversation}/{message_id}: {answer}");
        answer
    }

    /// Says `message_id` in `conversation` and expects it recorded at `turn`.
    async fn recorded(&self, conversation: &str, message_id: &str, turn: u32) -> Value {
        let answer = self.say(conversation, message_id).await;
        assert_eq!(
            (&answer["recorded"], &answer["turn"]),
            (&json!(true), &json!(turn)),
            "{conversation}/{message_id}: {answer}"
        );
        answer
    }

    /// Says `message_id` in `conversation` and expects a 200 without a record.
    async fn unrecorded(&self, conversation: &str, message_id: &str) -> Value {
        let answer = self.say(conversation, message_id).await;
        assert_eq!(
            (&answer["recorded"], &answer["turn"]),
            (&json!(false), &Value::Null),
            "{conversation}/{message_id}: {answer}"
        );
        assert!(
            answer["reply"]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty()),
            "an unrecorded answer still has a reply: {answer}"
        );
        answer
    }

    async fn end(&self, conversation: &str) -> (u16, Option<String>) {
        let path = format!("/conversations/{conversation}/end");
        let body = json!({"outcome": "won"}).to_string();
        let request = request(Flavor::HttpApi, "POST", &path, &body, Some("acme"), &[]);
        let (status, retry_after, _) = parts(end_handle(&self.ends, request).await);
        (status, retry_after)
    }

    async fn ended(&self, conversation: &str) {
        assert_eq!(self.end(conversation).await.0, 200, "{conversation} ends");
    }
}

fn api_with(store: &DynamoStore, spool: FifoQueue, last_resort: LastResort) -> Api {
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
            unrecorded: Default::default(),
            // Generous: a cold DynamoDB Local on busy cores can take over the default 1 s for a
            // first write, and every count here is exact. An outage is a connection refused,
            // an error well inside it.
            record_budget: Duration::from_secs(5),
            spool: Some(spool),
            last_resort,
        },
        ends: EndApp {
            store: store.clone(),
            models: ModelCache::new(Duration::from_secs(30)),
            tenants,
            patterns: pattern_names(DEFAULT_CATALOG).unwrap(),
            feedback_every: 0,
            trigger: None,
            text_storage: Default::default(),
        },
    }
}

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

async fn feedback_run(store: &DynamoStore) -> Tracking {
    let app = FeedbackApp::new(
        store.clone(),
        Settings {
            settle_ms: 0,
            ..Settings::default()
        },
    );
    let run = app
        .feedback()
        .run_tenant(&acme(), "test", &Millis::now, &mut |_| {
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
    let TenantRun::Published(versions) = run else {
        panic!("expected a published version, got {run:?}");
    };
    versions[0].report.as_ref().unwrap().tracking
}

/// Asserts a run's `(successes, trials)`, run and all time.
fn assert_rates(tracking: &Tracking, run: (u64, u64), all_time: (u64, u64)) {
    assert_eq!(
        (
            (tracking.run.successes, tracking.run.trials),
            (tracking.all_time.successes, tracking.all_time.trials)
        ),
        (run, all_time),
        "{tracking:?}"
    );
    let rate = |(s, t): (u64, u64)| s as f64 / t as f64;
    assert_eq!(tracking.run.rate, rate(run), "{tracking:?}");
    assert_eq!(tracking.all_time.rate, rate(all_time), "{tracking:?}");
}

async fn exchanges(store: &DynamoStore, conversation: &str) -> Vec<Exchange> {
    store
        .exchanges(&acme(), &ConversationId::parse(conversation).unwrap())
        .await
        .unwrap()
}

/// The conversation holds `expected` (message id, how it was recorded) at turns 1.., and each
/// exchange recorded late is what its unrecorded answer said.
async fn assert_log(
    store: &DynamoStore,
    conversation: &str,
    expected: &[(&str, Via)],
    answers: &[(&str, &Value)],
) {
    let stored = exchanges(store, conversation).await;
    let got: Vec<(u32, String, Via)> = stored
        .iter()
        .map(|e| (e.turn, e.draft.message_id.to_string(), e.draft.via))
        .collect();
    let want: Vec<(u32, String, Via)> = expected
        .iter()
        .zip(1..)
        .map(|((id, via), turn)| (turn, (*id).to_owned(), *via))
        .collect();
    assert_eq!(got, want, "{conversation}");
    for (id, answer) in answers {
        let exchange = stored
            .iter()
            .find(|e| e.draft.message_id.as_str() == *id)
            .unwrap();
        let draft = &exchange.draft;
        assert_eq!(
            (
                &answer["reply"]["text"],
                &answer["strategy"]["name"],
                &answer["model_version"],
                answer["patterns"].as_array().map(Vec::len),
            ),
            (
                &json!(draft.reply.text),
                &json!(draft.strategy.name),
                &json!(draft.model_version),
                Some(draft.patterns.len()),
            ),
            "{conversation}/{id}: the record is what the prospect was answered"
        );
    }
}

async fn drain(queues: &SpoolQueues, store: &DynamoStore) -> BatchSummary {
    let consumer = ConsumerApp {
        store: store.clone(),
        dead_letters: Some(queues.dead_letters()),
    };
    let summary = queues.drain(&consumer, Duration::from_secs(60)).await;
    assert!(queues.dead_lettered().await.is_empty());
    summary
}

#[test]
fn an_outage_shows_as_a_tracking_rate_below_one_and_recovery_brings_it_back() {
    // The SDK's calls nest deep in a debug build: more than a test thread's 2 MiB of stack.
    // moto's server lives as long as the thread that starts it: this one.
    let scenario = std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(Box::pin(outage_and_recovery()))
        })
        .expect("the scenario's thread");
    if let Err(panic) = scenario.join() {
        std::panic::resume_unwind(panic);
    }
}

async fn outage_and_recovery() {
    let mut server = DynamoLocal::start_persistent().expect("DynamoDB Local");
    let moto = Moto::start().expect("moto's server");
    let table = server.fresh_store().await.table().to_owned();
    // The functions' own client settings: an outage is an error within the record budget.
    let store = DynamoStore::new(
        DynamoLocal::production_client(&server.endpoint()),
        DynamoStoreConfig {
            table,
            retention: None,
            end_shards: 1,
        },
    );
    let queues = SpoolQueues::create(&moto.endpoint(), "tracking", 1, 10).await;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let api = api_with(&store, queues.spool(), LastResort::Memory(lines.clone()));

    // 1. The spool.
    for i in 0..4 {
        api.recorded(&format!("c-{i}"), "m-1", 1).await;
    }
    server.stop();
    let mut spooled = Vec::new();
    for i in 0..3 {
        spooled.push(api.unrecorded(&format!("c-{i}"), "m-2").await);
    }
    let (status, retry_after) = api.end("c-3").await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")));
    assert_eq!(api.messages.unrecorded.pending(), 3);
    assert_eq!(
        queues.spool_counts().await.visible,
        3,
        "spooled, not logged"
    );
    assert!(lines.lock().unwrap().is_empty());
    server.restart().expect("DynamoDB Local restarts");

    // The end is retried and goes through; the first message recorded for the tenant adds the
    // unrecorded answers to its counter.
    api.ended("c-3").await;
    assert_eq!(
        api.messages.unrecorded.pending(),
        3,
        "an end counts nothing"
    );
    api.recorded("c-4", "m-1", 1).await;
    assert_eq!(api.messages.unrecorded.pending(), 0);
    assert_eq!(
        store.tracking_counts(&acme()).await.unwrap(),
        TrackingCounts {
            unrecorded: 3,
            recovered: 0
        }
    );
    api.ended("c-4").await;

    // Before the drain: recorded, the turns of c-3 and c-4 (1 each); answered, those and the
    // backlog's growth (3).
    let spool_dip = feedback_run(&store).await;
    assert_rates(&spool_dip, (2, 5), (2, 5));
    assert!(spool_dip.run.rate < 1.0 && spool_dip.all_time.rate < 1.0);

    let drained = drain(&queues, &store).await;
    assert_eq!(
        (drained.recorded, drained.duplicates, drained.retried),
        (3, 0, 0),
        "{drained:?}"
    );
    assert_eq!(
        store.tracking_counts(&acme()).await.unwrap(),
        TrackingCounts {
            unrecorded: 3,
            recovered: 3
        }
    );
    for (i, answer) in spooled.iter().enumerate() {
        let c = format!("c-{i}");
        assert_log(
            &store,
            &c,
            &[("m-1", Via::Direct), ("m-2", Via::Spool)],
            &[("m-2", answer)],
        )
        .await;
        api.ended(&c).await;
    }
    // Recorded: c-0..c-2, 2 turns each; no backlog left. All time: 2 + 6 recorded, nothing
    // owed.
    let recovered = feedback_run(&store).await;
    assert_rates(&recovered, (6, 6), (8, 8));
    assert_eq!((recovered.run.rate, recovered.all_time.rate), (1.0, 1.0));

    // 2. The last resort: a spool on a port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dead_spool = FifoQueue::with_client(
        salesloop_tests::sqs::client(&format!("http://127.0.0.1:{closed}")),
        format!("http://127.0.0.1:{closed}/123456789012/gone.fifo"),
    );
    let logged = Arc::new(Mutex::new(Vec::new()));
    let api = api_with(&store, dead_spool, LastResort::Memory(logged.clone()));
    api.recorded("c-5", "m-1", 1).await;
    api.recorded("c-7", "m-1", 1).await;
    server.stop();
    let c5 = api.unrecorded("c-5", "m-2").await;
    let c6 = api.unrecorded("c-6", "m-1").await;
    let (status, retry_after) = api.end("c-7").await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")));
    let written: Vec<String> = logged.lock().unwrap().clone();
    let records: Vec<SpooledExchange> = written
        .iter()
        .map(|line| SpooledExchange::from_log_line(line).unwrap().unwrap())
        .collect();
    let ids: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                r.conversation_id.to_string(),
                r.draft.message_id.to_string(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [("c-5".into(), "m-2".into()), ("c-6".into(), "m-1".into())],
        "one line each: {written:?}"
    );
    server.restart().expect("DynamoDB Local restarts");
    api.ended("c-7").await;
    api.recorded("c-8", "m-1", 1).await;
    api.ended("c-8").await;
    assert_eq!(
        store.tracking_counts(&acme()).await.unwrap(),
        TrackingCounts {
            unrecorded: 5,
            recovered: 3
        }
    );
    // Recorded: c-7 and c-8, 1 turn each; answered, those and the backlog's growth (0 to 2).
    // All time: 10 recorded against those and the backlog of 2.
    let log_dip = feedback_run(&store).await;
    assert_rates(&log_dip, (2, 4), (10, 12));
    assert!(log_dip.run.rate < 1.0 && log_dip.all_time.rate < 1.0);

    let mut replayed = ReplaySummary::default();
    let export = format!(
        "2026-12-03T02:00:00Z {}\n",
        written.join("\nsome other line\n")
    );
    replay(&store, "export.txt", export.as_bytes(), &mut replayed)
        .await
        .unwrap();
    assert_eq!(
        (
            replayed.lines,
            replayed.recorded,
            replayed.duplicates,
            replayed.rejected.len(),
            replayed.retry.len()
        ),
        (2, 2, 0, 0, 0),
        "{replayed}"
    );
    assert_eq!(
        store.tracking_counts(&acme()).await.unwrap(),
        TrackingCounts {
            unrecorded: 5,
            recovered: 5
        }
    );
    assert_log(
        &store,
        "c-5",
        &[("m-1", Via::Direct), ("m-2", Via::Replay)],
        &[("m-2", &c5)],
    )
    .await;
    assert_log(&store, "c-6", &[("m-1", Via::Replay)], &[("m-1", &c6)]).await;
    api.ended("c-5").await;
    api.ended("c-6").await;
    // Recorded: c-5 (2 turns) and c-6 (1); no backlog. All time: 13 of 13.
    let back = feedback_run(&store).await;
    assert_rates(&back, (3, 3), (13, 13));
    assert_eq!((back.run.rate, back.all_time.rate), (1.0, 1.0));
    let figures = |t: &Tracking| {
        format!(
            "run {}/{}, all time {}/{}",
            t.run.successes, t.run.trials, t.all_time.successes, t.all_time.trials
        )
    };
    println!(
        "tracking: spool: before the drain {}; after {}. last resort: before the replay {}; \
         after {}",
        figures(&spool_dip),
        figures(&recovered),
        figures(&log_dip),
        figures(&back)
    );
}
