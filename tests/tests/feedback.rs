//! end_conversation's handler and trigger, and feedback_loop's runs: learning, batching, the
//! lease and the compare-and-set publish, against the embedded store and DynamoDB Local.
//!
//! Every store case runs on both stores (`salesloop_tests::store_cases!`); a case function in
//! no list is dead code, which this file denies.

#![deny(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use end_conversation::handler::{App as EndApp, handle as end_handle, pattern_names};
use end_conversation::trigger::Trigger as Invoker;
use feedback_loop::run::{Settings, Step, TenantRun};
use feedback_loop::{
    App as FeedbackApp, Trigger, handle as feedback_handle, parse_trigger, trigger_payload,
};
use lambda_http::{Body, Response};
use process_message::handler::{App as MessageApp, handle as message_handle};
use salesloop::domain::engine::{Engine, UserMessage};
use salesloop::domain::patterns::DEFAULT_CATALOG;
use salesloop::domain::random::Rng;
use salesloop::edge::http::TenantSource;
use salesloop::service::ModelCache;
use salesloop::{
    ConversationId, ConversationState, Millis, Model, ModelVersion, Outcome, Store, TenantId,
};
use salesloop_tests::contract::{end_request, send};
use salesloop_tests::events::{Flavor, request};
use salesloop_tests::flows::Flows;
use salesloop_tests::stores::{Backend, Harness};
use serde_json::{Value, json};

fn tenant(raw: &str) -> TenantId {
    TenantId::parse(raw).unwrap()
}

fn conversation(raw: &str) -> ConversationId {
    ConversationId::parse(raw).unwrap()
}

fn parts(response: Response<Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = match response.body() {
        Body::Text(text) => serde_json::from_str(text).unwrap(),
        Body::Binary(bytes) => serde_json::from_slice(bytes).unwrap(),
        _ => Value::Null,
    };
    (status, body)
}

/// The two API functions over one store (two handles to it).
struct Api<S> {
    messages: MessageApp<S>,
    ends: EndApp<S>,
}

fn apis<S: Store>(
    make: impl Fn() -> S,
    engine: Engine,
    every: u64,
    trigger: Option<Invoker>,
) -> Api<S> {
    let tenants = TenantSource {
        claim: "tenant_id".into(),
        local: false,
    };
    Api {
        messages: MessageApp {
            store: make(),
            engine,
            // Read the newest model on every request, so each feedback run takes effect at once.
            models: ModelCache::new(Duration::ZERO),
            configs: salesloop::service::ConfigCache::new(Duration::ZERO),
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
            tenants,
            patterns: pattern_names(DEFAULT_CATALOG).unwrap(),
            feedback_every: every,
            trigger,
            text_storage: Default::default(),
        },
    }
}

impl<S: Store> Api<S> {
    async fn say(&self, tenant: &str, conversation: &str, message_id: &str, text: &str) -> Value {
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
        answer
    }

    async fn label(&self, tenant: &str, conversation: &str, body: &str) -> (u16, Value) {
        let path = format!("/conversations/{conversation}/labels");
        parts(
            end_handle(
                &self.ends,
                request(Flavor::HttpApi, "POST", &path, body, Some(tenant), &[]),
            )
            .await,
        )
    }

    async fn end(&self, tenant: Option<&str>, conversation: &str, body: &str) -> (u16, Value) {
        let path = format!("/conversations/{conversation}/end");
        parts(
            end_handle(
                &self.ends,
                request(Flavor::HttpApi, "POST", &path, body, tenant, &[]),
            )
            .await,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// end_conversation

async fn ending_records_the_outcome_once_and_a_repeat_gets_the_same_answer<B: Backend>(
    backend: &B,
) {
    let make = backend.opener().await;
    let api = apis(make, Engine::builtin(), 100, None);
    api.say(
        "acme",
        "c-1",
        "m-1",
        "Honestly this looks too expensive for us.",
    )
    .await;
    api.say("acme", "c-1", "m-2", "What integrations do you support?")
        .await;
    let body = json!({
        "outcome": "won", "value": 1200.0, "reason": "  signed after the demo ",
        "labels": [
            {"turn": 1, "pattern": "objection.price", "correct": true},
            {"turn": 2, "pattern": "objection.timing", "correct": true},
            {"turn": 9, "pattern": "pain_point", "correct": false}
        ]
    })
    .to_string();
    let (status, first) = api.end(Some("acme"), "c-1", &body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["conversation_id"], "c-1");
    assert_eq!(first["outcome"], "won");
    assert_eq!(first["value"], 1200.0);
    assert_eq!(first["reason"], "signed after the demo");
    assert_eq!(first["turns"], 2);
    assert_eq!(first["patterns_seen"]["objection.price"], 1);
    assert_eq!(first["experiments"].as_object().unwrap().len(), 3);
    // The label on turn 9 names a turn the conversation does not have.
    assert_eq!(first["labels_recorded"], 2);

    let (status, again) = api.end(Some("acme"), "c-1", &body).await;
    assert_eq!(status, 200);
    assert_eq!(again, first, "a repeated end answers exactly as the first");
    let (status, conflict) = api.end(Some("acme"), "c-1", r#"{"outcome": "lost"}"#).await;
    assert_eq!(status, 409);
    assert_eq!(conflict["error"]["code"], "outcome_conflict");

    let acme = tenant("acme");
    let outcomes = api
        .ends
        .store
        .outcomes_since(&acme, None, 10)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 1, "recorded once");
    let record = &outcomes[0];
    assert_eq!(api.ends.store.ended_count(&acme).await.unwrap(), 1);
    let labels: Vec<_> = record
        .labels
        .iter()
        .map(|l| (l.turn, l.pattern.as_str(), l.confidence.is_some()))
        .collect();
    assert_eq!(
        labels,
        [(1, "objection.price", true), (2, "objection.timing", false)]
    );
    assert!(record.strategies_used.iter().all(|u| !u.context.is_empty()));
    let events = record.events(&acme);
    let types: Vec<_> = events.iter().map(|e| e.body.type_name()).collect();
    assert_eq!(
        types,
        [
            "conversation_outcome",
            "ab_test_results",
            "ab_test_results",
            "ab_test_results"
        ]
    );
    // A message to the ended conversation is refused.
    let body = json!({"message_id": "m-3", "text": "one more thing"}).to_string();
    let (status, refused) = parts(
        message_handle(
            &api.messages,
            request(
                Flavor::HttpApi,
                "POST",
                "/conversations/c-1/messages",
                &body,
                Some("acme"),
                &[],
            ),
        )
        .await,
    );
    assert_eq!(status, 409);
    assert_eq!(refused["error"]["code"], "conversation_ended");
}

async fn bad_ends_get_a_json_4xx_and_change_nothing<B: Backend>(backend: &B) {
    let make = backend.opener().await;
    let api = apis(make, Engine::builtin(), 100, None);
    api.say("acme", "c-2", "m-1", "Too expensive.").await;
    let long_reason = "r".repeat(501);
    let many_labels: Vec<Value> = (1..=101)
        .map(|turn| json!({"turn": turn, "pattern": "objection.price", "correct": true}))
        .collect();
    let cases: Vec<(String, u16, &str)> = vec![
        ("".into(), 400, "invalid_json"),
        ("{".into(), 400, "invalid_json"),
        ("{}".into(), 400, "invalid_field"),
        (r#"{"outcome": "maybe"}"#.into(), 400, "invalid_outcome"),
        (r#"{"outcome": "WON"}"#.into(), 400, "invalid_outcome"),
        (r#"{"outcome": 1}"#.into(), 400, "invalid_field"),
        (r#"{"outcome": "won", "value": -1}"#.into(), 400, "invalid_value"),
        (r#"{"outcome": "won", "value": 1e13}"#.into(), 400, "invalid_value"),
        (r#"{"outcome": "won", "value": 1e999}"#.into(), 400, "invalid_json"),
        (r#"{"outcome": "won", "value": "1200"}"#.into(), 400, "invalid_field"),
        (json!({"outcome": "won", "reason": long_reason}).to_string(), 400, "invalid_reason"),
        (json!({"outcome": "won", "labels": many_labels}).to_string(), 400, "invalid_labels"),
        (r#"{"outcome": "won", "labels": [{"turn": 0, "pattern": "objection.price", "correct": true}]}"#.into(), 400, "invalid_labels"),
        (r#"{"outcome": "won", "labels": [{"turn": 1, "pattern": "objection.vibes", "correct": true}]}"#.into(), 400, "invalid_labels"),
        (r#"{"outcome": "won", "labels": [{"turn": 1, "pattern": "objection.price", "correct": true}, {"turn": 1, "pattern": "objection.price", "correct": false}]}"#.into(), 400, "invalid_labels"),
        (r#"{"outcome": "won", "labels": [{"turn": 1, "pattern": "objection.price"}]}"#.into(), 400, "invalid_field"),
        (r#"{"outcome": "won", "tenant": "victim"}"#.into(), 400, "invalid_field"),
        (format!(r#"{{"outcome": "won", "reason": "{}"}}"#, "x".repeat(17_000)), 413, "body_too_large"),
    ];
    for (body, status, code) in &cases {
        let (got, answer) = api.end(Some("acme"), "c-2", body).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (*status, Some(*code)),
            "{body:.80}"
        );
    }
    let (status, answer) = api
        .end(Some("acme"), "c-404", r#"{"outcome": "won"}"#)
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("conversation_not_found"))
    );
    // Another tenant cannot end acme's conversation: to it, the conversation does not exist.
    let (status, _) = api
        .end(Some("globex"), "c-2", r#"{"outcome": "lost"}"#)
        .await;
    assert_eq!(status, 404);
    let (status, answer) = api.end(None, "c-2", r#"{"outcome": "lost"}"#).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let wrong_method = request(
        Flavor::HttpApi,
        "GET",
        "/conversations/c-2/end",
        "",
        Some("acme"),
        &[],
    );
    assert_eq!(parts(end_handle(&api.ends, wrong_method).await).0, 405);
    let wrong_route = request(
        Flavor::HttpApi,
        "POST",
        "/conversations/c-2/messages",
        "{}",
        Some("acme"),
        &[],
    );
    assert_eq!(parts(end_handle(&api.ends, wrong_route).await).0, 404);

    let acme = tenant("acme");
    assert!(matches!(
        api.ends
            .store
            .conversation(&acme, &conversation("c-2"))
            .await
            .unwrap(),
        ConversationState::Open { turns: 1, .. }
    ));
    assert_eq!(api.ends.store.ended_count(&acme).await.unwrap(), 0);
    assert_eq!(
        api.ends.store.ended_count(&tenant("globex")).await.unwrap(),
        0
    );
    let (status, _) = api
        .end(Some("acme"), "c-2", r#"{"outcome": "no_decision"}"#)
        .await;
    assert_eq!(
        status, 200,
        "after all the refusals, a good end still works"
    );
}

/// One request the invoke server saw: request line, headers (lower-case names), JSON body.
type Invoked = (String, BTreeMap<String, String>, Value);

/// The request is Lambda's Invoke of feedback_loop, `InvocationType: Event`.
fn assert_asynchronous_invoke_of_feedback_loop(line: &str, headers: &BTreeMap<String, String>) {
    assert!(
        line.starts_with("POST /2015-03-31/functions/feedback_loop/invocations"),
        "{line}"
    );
    assert_eq!(
        headers.get("x-amz-invocation-type").map(String::as_str),
        Some("Event")
    );
}

/// A stand-in for Lambda's invoke API that records each request and answers 202, as Lambda
/// does for `InvocationType: Event`.
struct InvokeServer {
    port: u16,
    requests: Arc<Mutex<Vec<Invoked>>>,
}

impl InvokeServer {
    fn start() -> InvokeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head, then as many body bytes as content-length says.
                let (head, body) = loop {
                    let n = stream.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break (String::new(), Vec::new());
                    }
                    raw.extend_from_slice(&buf[..n]);
                    if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&raw[..end]).to_string();
                        let length = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        let mut body = raw[end + 4..].to_vec();
                        while body.len() < length {
                            let n = stream.read(&mut buf).unwrap_or(0);
                            if n == 0 {
                                break;
                            }
                            body.extend_from_slice(&buf[..n]);
                        }
                        break (head, body);
                    }
                };
                let mut lines = head.lines();
                let path = lines.next().unwrap_or_default().to_owned();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let payload = serde_json::from_slice(&body).unwrap_or(Value::Null);
                seen.lock().unwrap().push((path, headers, payload));
                let _ = stream.write_all(
                    b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nx-amzn-requestid: test\r\n\r\n",
                );
            }
        });
        InvokeServer { port, requests }
    }
}

async fn every_nth_end_asks_for_one_feedback_run_and_a_failing_trigger_changes_nothing<
    B: Backend,
>(
    backend: &B,
) {
    let server = InvokeServer::start();
    let invoker = Invoker::local(
        &format!("http://127.0.0.1:{}", server.port),
        "feedback_loop",
        false,
    );
    let make = backend.opener().await;
    let api = apis(make, Engine::builtin(), 3, Some(invoker));
    for i in 1..=7 {
        let c = format!("c-{i}");
        api.say("acme", &c, "m-1", "Let's do it.").await;
        assert_eq!(
            api.end(Some("acme"), &c, r#"{"outcome": "won"}"#).await.0,
            200
        );
    }
    // A repeated end of the third conversation is not a new end: no new trigger.
    assert_eq!(
        api.end(Some("acme"), "c-3", r#"{"outcome": "won"}"#)
            .await
            .0,
        200
    );
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for ((line, headers, payload), count) in requests.iter().zip([3, 6]) {
        assert_asynchronous_invoke_of_feedback_loop(line, headers);
        assert_eq!(payload, &trigger_payload(&tenant("acme"), count));
        assert_eq!(parse_trigger(payload), Ok(Trigger::Tenant(tenant("acme"))));
    }

    // The invoke API is down: ends still succeed, and are recorded.
    let dead = Invoker::local("http://127.0.0.1:9", "feedback_loop", false);
    let make = backend.opener().await;
    let down = apis(make, Engine::builtin(), 1, Some(dead));
    down.say("acme", "c-1", "m-1", "Let's do it.").await;
    let (status, answer) = down.end(Some("acme"), "c-1", r#"{"outcome": "won"}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        down.ends.store.ended_count(&tenant("acme")).await.unwrap(),
        1
    );
}

async fn the_feedback_function_accepts_the_schedule_and_the_trigger_only() {
    let fixture = salesloop_tests::workspace_root()
        .join("tests/fixtures/aws-events/example-eventbridge-schedule.json");
    let scheduled: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    assert_eq!(parse_trigger(&scheduled), Ok(Trigger::Schedule));
    assert_eq!(
        parse_trigger(&trigger_payload(&tenant("acme"), 100)),
        Ok(Trigger::Tenant(tenant("acme")))
    );
    for bad in [
        json!({}),
        json!({"source": "aws.events", "detail-type": "EC2 Instance State-change Notification"}),
        json!({"source": "salesloop.end_conversation"}),
        json!({"source": "salesloop.end_conversation", "tenant": "../etc"}),
    ] {
        assert!(parse_trigger(&bad).is_err(), "{bad}");
    }
}

// ---------------------------------------------------------------------------------------------
// The schedule's fan-out (issue 17)

/// Sends one message in a new conversation of `tenant`, and ends it when `end` says so.
async fn one_conversation<S: Store>(store: &S, tenant: &TenantId, name: &str, end: bool) {
    let c = conversation(name);
    send(store, tenant, &c, "m-1", "too expensive")
        .await
        .unwrap();
    if end {
        store
            .end_conversation(tenant, &c, end_request(Outcome::Won, past_instant()))
            .await
            .unwrap();
    }
}

/// Runs `work` over `items`, `width` at a time.
async fn in_waves<T, F, Fut>(items: Vec<T>, width: usize, work: F)
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let wave: Vec<Fut> = items.by_ref().take(width).map(&work).collect();
        join_all(wave).await;
    }
}

/// Polls every future of `futures` until all are done: they run concurrently on this task.
async fn join_all<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut slots: Vec<Option<std::pin::Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for slot in slots.iter_mut() {
            if let Some(future) = slot {
                if future.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    waiting = true;
                }
            }
        }
        if waiting {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await
}

/// 2,000 tenants: 1,550 with a conversation and no end (nothing to learn), 200 whose ends
/// were learned before the schedule, 250 with new ends (50 of them also learned before). The
/// scheduled invocation asks for exactly the 250 runs, one asynchronous invoke each, and reads
/// no idle tenant's data; Lambda (played here, delivering every tenth event twice, the copies
/// at once) runs them, and each tenant's new outcomes are learned exactly once. A second
/// schedule then asks for nothing.
async fn the_schedule_starts_one_run_per_tenant_with_new_outcomes_only<B: Backend>(backend: &B) {
    const IDLE: usize = 1_550;
    const LEARNED: usize = 200;
    const NEW: usize = 250;
    let make = backend.opener().await;
    let store = Arc::new(make());
    let name = |i: usize| tenant(&format!("t{i:04}"));
    let learned_before: Vec<usize> = (IDLE..IDLE + LEARNED + 50).collect();
    let fresh: Vec<usize> = (IDLE + LEARNED..IDLE + LEARNED + NEW).collect();
    let store_ref = &*store;
    in_waves((0..IDLE).collect(), 32, |i| async move {
        one_conversation(store_ref, &name(i), "c-idle", false).await;
    })
    .await;
    in_waves(learned_before.clone(), 32, |i| async move {
        one_conversation(store_ref, &name(i), "c-old", true).await;
    })
    .await;
    let direct = FeedbackApp::new(make(), settled());
    let direct = &direct;
    in_waves(learned_before.clone(), 16, |i| async move {
        feedback_handle(direct, Trigger::Tenant(name(i)), "before", &|_| {})
            .await
            .unwrap();
    })
    .await;
    in_waves(fresh.clone(), 32, |i| async move {
        one_conversation(store_ref, &name(i), "c-new-1", true).await;
        if i % 3 == 0 {
            one_conversation(store_ref, &name(i), "c-new-2", true).await;
        }
    })
    .await;

    let server = InvokeServer::start();
    let invoker = salesloop::clients::lambda::Invoker::local(
        &format!("http://127.0.0.1:{}", server.port),
        "feedback_loop",
        false,
    );
    let scheduler =
        FeedbackApp::new(make(), settled()).with_fan_out(feedback_loop::FanOut::Invoke(invoker));
    let answer = feedback_handle(&scheduler, Trigger::Schedule, "schedule", &|_| {})
        .await
        .unwrap();
    assert_eq!(answer, json!({"started": NEW}));
    let requests = std::mem::take(&mut *server.requests.lock().unwrap());
    let mut asked: Vec<TenantId> = requests
        .iter()
        .map(|(line, headers, payload)| {
            assert_asynchronous_invoke_of_feedback_loop(line, headers);
            match parse_trigger(payload) {
                Ok(Trigger::Tenant(t)) => t,
                other => panic!("{payload}: {other:?}"),
            }
        })
        .collect();
    asked.sort();
    let expected: Vec<TenantId> = fresh.iter().map(|&i| name(i)).collect();
    assert_eq!(
        asked, expected,
        "one run asked for per tenant with new outcomes"
    );

    // Lambda delivers each event at least once: every tenth twice, the copies concurrently.
    let worker = FeedbackApp::new(make(), settled());
    let worker = &worker;
    let deliveries: Vec<(usize, TenantId)> = asked.into_iter().enumerate().collect();
    in_waves(deliveries, 16, |(k, t)| async move {
        let payload = feedback_loop::fan_out_payload(&t);
        let copies = if k % 10 == 0 { 2 } else { 1 };
        let mut runs = Vec::new();
        for copy in 0..copies {
            let trigger = parse_trigger(&payload).unwrap();
            let holder = format!("lambda-{k}-{copy}");
            runs.push(async move {
                feedback_handle(worker, trigger, &holder, &|_| {})
                    .await
                    .unwrap();
            });
        }
        join_all(runs).await;
    })
    .await;
    for &i in &fresh {
        let t = name(i);
        let had_old = learned_before.contains(&i);
        let new = if i % 3 == 0 { 2 } else { 1 };
        let versions = history(store_ref, &t).await;
        let learned: u64 = versions
            .iter()
            .map(|v| v.outcomes_learned)
            .max()
            .unwrap_or(0);
        assert_eq!(
            learned,
            new + u64::from(had_old),
            "{t}: every outcome learned once"
        );
        assert_eq!(
            versions.len(),
            1 + usize::from(had_old),
            "{t}: {versions:?}"
        );
    }
    for &i in learned_before.iter().filter(|i| !fresh.contains(i)) {
        assert_eq!(history(store_ref, &name(i)).await.len(), 1, "{}", name(i));
    }
    for i in [0, IDLE / 2, IDLE - 1] {
        assert!(history(store_ref, &name(i)).await.is_empty());
    }
    // Every run caught up: the next schedule asks for nothing.
    let again = feedback_handle(&scheduler, Trigger::Schedule, "schedule-2", &|_| {})
        .await
        .unwrap();
    assert_eq!(again, json!({"started": 0}));
    assert!(server.requests.lock().unwrap().is_empty());
}

/// A tenant's pending mark: an end sets it, a run that learned it clears it, an end that comes
/// between the run's read of the mark and its clearing keeps it, and a schedule whose invoke
/// API is down fails (Lambda retries it) and loses nothing.
async fn a_mark_is_cleared_only_by_a_run_that_learned_everything_it_counts<B: Backend>(
    backend: &B,
) {
    let make = backend.opener().await;
    let store = make();
    let acme = tenant("acme");
    assert!(store.pending_tenants().await.unwrap().is_empty());
    one_conversation(&store, &acme, "c-1", true).await;
    one_conversation(&store, &tenant("globex"), "c-1", false).await;
    assert_eq!(store.pending_tenants().await.unwrap(), vec![acme.clone()]);
    let marks = store.pending_marks(&acme).await.unwrap();
    assert_eq!(marks.len(), 1);
    // An end after the mark was read: clearing with the old mark keeps it.
    one_conversation(&store, &acme, "c-2", true).await;
    assert_eq!(store.clear_pending(&acme, &marks).await.unwrap(), 0);
    assert_eq!(store.pending_tenants().await.unwrap(), vec![acme.clone()]);

    // The invoke API is down: the schedule fails, the mark stays.
    let dead =
        salesloop::clients::lambda::Invoker::local("http://127.0.0.1:9", "feedback_loop", false);
    let scheduler =
        FeedbackApp::new(make(), settled()).with_fan_out(feedback_loop::FanOut::Invoke(dead));
    let failed = feedback_handle(&scheduler, Trigger::Schedule, "s", &|_| {}).await;
    assert!(
        matches!(&failed, Err(feedback_loop::FeedbackError::FanOut { tenants: 1, failed }) if failed.len() == 1),
        "{failed:?}"
    );
    assert_eq!(store.pending_tenants().await.unwrap(), vec![acme.clone()]);

    // A run with a settle time longer than the ends' age learns nothing and keeps the mark.
    let patient = FeedbackApp::new(
        make(),
        Settings {
            settle_ms: 365 * 24 * 3_600_000,
            ..Settings::default()
        },
    );
    feedback_handle(&patient, Trigger::Tenant(acme.clone()), "p", &|_| {})
        .await
        .unwrap();
    assert_eq!(store.pending_tenants().await.unwrap(), vec![acme.clone()]);
    // The in-process schedule (local runs) learns both ends and clears the mark.
    let local = FeedbackApp::new(make(), settled());
    let summary = feedback_handle(&local, Trigger::Schedule, "s", &|_| {})
        .await
        .unwrap();
    assert_eq!(summary["tenants"][0]["outcomes"], 2, "{summary}");
    assert!(store.pending_tenants().await.unwrap().is_empty());
    // A label post marks the tenant again; the next run clears it.
    let c1 = conversation("c-1");
    salesloop::service::labels::record_labels(
        &store,
        &acme,
        &c1,
        vec![salesloop::domain::labels::LabelRequest {
            turn: 1,
            pattern: "price_objection".into(),
            correct: true,
        }],
        &|_| true,
        salesloop::domain::privacy::TextStorage::default(),
        Millis(past_instant()),
    )
    .await
    .unwrap();
    assert_eq!(store.pending_tenants().await.unwrap(), vec![acme.clone()]);
    feedback_handle(&local, Trigger::Schedule, "s", &|_| {})
        .await
        .unwrap();
    assert!(store.pending_tenants().await.unwrap().is_empty());
}

/// A tenant whose ends are spread over 4 counter and outcome shards (`END_SHARDS=4`, for a
/// tenant ending thousands a second): 450 concurrent ends are each counted once; each shard's
/// multiples of 100 are reported to exactly one end; the outcomes read back merged, in cursor
/// order, in pages of any size; the pending list names the tenant once; one run learns all 450
/// and clears every shard's mark.
async fn a_tenant_ending_on_four_shards_counts_triggers_and_learns_each_end_once(
    backend: &salesloop_tests::stores::DynamoBackend,
) {
    const ENDS: usize = 450;
    let store = backend.server().fresh_sharded_store(4).await;
    let acme = tenant("acme");
    let store_ref = &store;
    let counts = Arc::new(Mutex::new(Vec::new()));
    let counts_ref = &counts;
    in_waves((0..ENDS).collect(), 24, |i| async move {
        let c = conversation(&format!("c-{i:04}"));
        send(store_ref, &acme_of(), &c, "m-1", "too expensive")
            .await
            .unwrap();
        let ended = store_ref
            .end_conversation(&acme_of(), &c, end_request(Outcome::Won, past_instant()))
            .await
            .unwrap();
        counts_ref.lock().unwrap().push(ended.ended_count.unwrap());
    })
    .await;
    assert_eq!(store.ended_count(&acme).await.unwrap(), ENDS as u64);
    // Each shard hands out 1..=its count: value v is seen once per shard that reached it.
    let counts = counts.lock().unwrap().clone();
    let max = *counts.iter().max().unwrap();
    let seen = |v: u64| counts.iter().filter(|&&c| c == v).count();
    assert!(
        seen(1) >= 2 && seen(1) <= 4,
        "every shard is used: {}",
        seen(1)
    );
    for v in 1..max {
        assert!(seen(v) >= seen(v + 1), "shard counts have no gap at {v}");
    }
    assert_eq!((1..=max).map(seen).sum::<usize>(), ENDS);
    let triggers = counts.iter().filter(|&&c| c % 100 == 0).count();
    assert_eq!(triggers, seen(100) + seen(200) + seen(300) + seen(400));
    assert!(
        triggers >= 2,
        "{triggers} triggers for {ENDS} ends over 4 shards"
    );
    // Merged outcome pages: every end once, in cursor order, whatever the page size.
    for page in [1usize, 37, 500] {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let got = store
                .outcomes_since(&acme, cursor.as_ref(), page)
                .await
                .unwrap();
            let n = got.len();
            cursor = got.last().map(|o| o.cursor()).or(cursor);
            all.extend(got);
            if n < page {
                break;
            }
        }
        assert_eq!(all.len(), ENDS, "page {page}");
        assert!(
            all.windows(2).all(|w| w[0].cursor() < w[1].cursor()),
            "page {page}"
        );
    }
    assert_eq!(store.pending_tenants().await.unwrap(), vec![acme.clone()]);
    assert_eq!(store.pending_marks(&acme).await.unwrap().len(), 4);
    let app = FeedbackApp::new(store.clone(), settled());
    let summary = feedback_handle(&app, Trigger::Schedule, "s", &|_| {})
        .await
        .unwrap();
    assert_eq!(summary["tenants"][0]["outcomes"], ENDS as u64, "{summary}");
    assert!(store.pending_tenants().await.unwrap().is_empty());
    assert!(store.pending_marks(&acme).await.unwrap().is_empty());
}

fn acme_of() -> TenantId {
    tenant("acme")
}

// ---------------------------------------------------------------------------------------------
// Learning

/// Conversations where, after a price objection, `social_proof` truly wins 60% of the time
/// and every other strategy 30%. Some conversations have a second turn (a product question,
/// whose strategies never include social_proof), so credit is split between two decisions.
async fn the_engine_learns_which_strategy_wins_after_a_price_objection<B: Backend>(backend: &B) {
    const BEST: &str = "social_proof";
    let make = backend.opener().await;
    let api = apis(&make, Engine::builtin(), 0, None);
    let feedback_app = FeedbackApp::new(
        make(),
        Settings {
            settle_ms: 0,
            ..Settings::default()
        },
    );
    let feedback = feedback_app.feedback();
    let t = tenant("learner");
    let mut rng = Rng::seeded(7);
    let mut chose_best_early = 0;
    for round in 0..20 {
        for i in 0..50 {
            let c = format!("r{round}-c{i}");
            let answer = api
                .say(
                    "learner",
                    &c,
                    "m-1",
                    "Honestly this looks too expensive for us.",
                )
                .await;
            assert_eq!(answer["patterns"][0]["name"], "objection.price", "{answer}");
            let strategy = answer["strategy"]["name"].as_str().unwrap().to_owned();
            if round == 0 && strategy == BEST {
                chose_best_early += 1;
            }
            if rng.uniform() < 0.5 {
                let second = api
                    .say("learner", &c, "m-2", "What integrations do you support?")
                    .await;
                assert_ne!(second["strategy"]["name"], BEST);
            }
            let p = if strategy == BEST { 0.6 } else { 0.3 };
            let outcome = if rng.uniform() < p { "won" } else { "lost" };
            // The client labels the price detection, wrongly in one case in ten.
            let correct = rng.uniform() >= 0.1;
            let labels = json!([{"turn": 1, "pattern": "objection.price", "correct": correct}]);
            let (status, _) = api
                .end(
                    Some("learner"),
                    &c,
                    &json!({"outcome": outcome, "labels": labels}).to_string(),
                )
                .await;
            assert_eq!(status, 200);
        }
        let run = feedback
            .run_tenant(&t, "test", &Millis::now, &mut |_| ControlFlow::Continue(()))
            .await
            .unwrap();
        assert_eq!(run.published().len(), 1, "round {round}: {}", run.label());
    }

    let model = api.ends.store.current_model(&t).await.unwrap().unwrap();
    assert_eq!(model.version, 20);
    assert_eq!(model.outcomes_learned, 1000);
    let engine = &api.messages.engine;
    let mut best = 0;
    for i in 0..1000 {
        let c = conversation(&format!("fresh-{i}"));
        let m = salesloop::MessageId::parse("m-1").unwrap();
        let message = UserMessage {
            tenant: &t,
            conversation: &c,
            message_id: &m,
            text: "Honestly this looks too expensive for us.",
            at: Millis::now(),
        };
        let (draft, _) = engine.plan(
            &message,
            &ConversationState::New,
            model.version,
            &model.model,
            &salesloop::domain::config::TenantConfig::builtin(),
        );
        best += usize::from(draft.strategy.name == BEST);
    }
    println!(
        "    learning: social_proof chosen in {chose_best_early}/50 decisions before learning, {best}/1000 after 20 runs"
    );
    assert!(
        best >= 800,
        "the better strategy was chosen {best} times in 1000"
    );

    let report = model.report.as_ref().unwrap();
    let correlation = |name: &str| report.correlation.strategies[name];
    let winner = correlation(BEST);
    let loser = correlation("handle_price_objection");
    println!(
        "    correlation with winning: social_proof phi {:+.3} {:?} (n {}), handle_price_objection phi {:+.3}",
        winner.phi.unwrap().phi,
        winner.phi.unwrap().interval,
        winner.phi.unwrap().n,
        loser.phi.unwrap().phi
    );
    assert!(winner.phi.unwrap().interval.unwrap().0 > 0.0, "{winner:?}");
    assert!(
        winner.win_rate_with.rate > 0.5 && winner.win_rate_without.rate < 0.4,
        "{winner:?}"
    );
    assert!(loser.phi.unwrap().phi < 0.0, "{loser:?}");
    assert_eq!(report.tracking.all_time.rate, 1.0);
    assert_eq!(winner.phi.unwrap().n, 1000);

    // 1000 labelled price detections, about 90% correct: precision near 0.9, and the pattern's
    // confidence recalibrated towards it.
    let price = report.accuracy.patterns["objection.price"];
    assert_eq!(price.precision.trials, 1000);
    assert!((0.86..=0.94).contains(&price.precision.rate), "{price:?}");
    assert!(
        price.calibration < 1.0 && price.calibration > 0.9,
        "{price:?}"
    );
    assert_eq!(
        model.model.calibration["objection.price"],
        price.calibration
    );
    let rendered = feedback_loop::report::render(&t, Some(&model));
    println!("{rendered}");
    for expected in [
        "model version 20",
        "1000 outcomes learned",
        "event tracking rate",
        "A/B reply_tone under configuration version 0 (control neutral",
        "A/B strategy_policy under configuration version 0 (control thompson",
        "social_proof",
        // The labels taught the tenant's detector layer, and the family table is there.
        "this tenant's layer, learned from 1000 labelled messages",
        "  family ",
    ] {
        assert!(
            rendered.contains(expected),
            "{expected} missing from:\n{rendered}"
        );
    }
}

/// Labels sent after the fact (`POST /conversations/{id}/labels`) teach the tenant's detector:
/// the next feedback run publishes a layer learned from them, process_message detects with it
/// from then on, and another tenant's detection is untouched.
async fn labels_teach_the_tenant_detector_and_process_message_uses_it<B: Backend>(backend: &B) {
    let make = backend.opener().await;
    let api = apis(&make, Engine::builtin(), 0, None);
    let feedback_app = FeedbackApp::new(make(), settled());
    let feedback = feedback_app.feedback();
    let t = tenant("campers");
    let families = |answer: &Value| -> Vec<String> {
        answer["patterns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p["name"]
                    .as_str()
                    .unwrap()
                    .split('.')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    // In this tenant's trade, "tell me which ... you need most" asks for the prospect's
    // preference: a question, though it has no question mark.
    let asks = [
        "tell me which item you need most",
        "let me know which supplies matter most to you",
        "tell me what you need the most for the trip",
        "let me know which one is most important to you",
        "tell me which of the packages you need most",
    ];
    let says = [
        "we have plenty of water already",
        "the firewood is enough for us",
        "that sounds fine to me",
    ];
    let probe = "tell me which package you need most";
    let before = api.say("campers", "probe-0", "m-1", probe).await;
    assert!(
        !families(&before).contains(&"question".to_owned()),
        "{before}"
    );
    for round in 0..6 {
        for (i, text) in asks.iter().chain(&says).enumerate() {
            let c = format!("c{round}-{i}");
            api.say("campers", &c, "m-1", text).await;
            let asked = i < asks.len();
            let body = json!([{"turn": 1, "pattern": "question", "correct": asked}]).to_string();
            let (status, answer) = api.label("campers", &c, &body).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["stored"], 1, "{answer}");
        }
    }
    let run = feedback
        .run_tenant(&t, "test", &Millis::now, &mut continue_all)
        .await
        .unwrap();
    let published = run.published();
    assert_eq!(published.len(), 1, "{}", run.label());
    let version = &published[0];
    assert_eq!(version.outcomes_learned, 0);
    assert_eq!(version.report.as_ref().unwrap().accuracy.labels_in_run, 48);
    let layer = version.model.detector.as_ref().expect("a detector layer");
    assert_eq!(layer.labels_learned, 48);
    assert!(layer.model().is_some());
    let rendered = feedback_loop::report::render(&t, Some(version));
    assert!(
        rendered.contains("this tenant's layer, learned from 48 labelled messages"),
        "{rendered}"
    );
    // process_message reads the new version and detects with the layer.
    let after = api.say("campers", "probe-1", "m-1", probe).await;
    assert!(families(&after).contains(&"question".to_owned()), "{after}");
    // Another tenant still has the shipped detector alone.
    let other = api.say("others", "probe-1", "m-1", probe).await;
    assert!(
        !families(&other).contains(&"question".to_owned()),
        "{other}"
    );
    // Nothing new: the next run publishes nothing.
    let again = feedback
        .run_tenant(&t, "test", &Millis::now, &mut continue_all)
        .await
        .unwrap();
    assert_eq!(again.label(), "nothing_new");
}

// ---------------------------------------------------------------------------------------------
// Runs against the store

/// An instant in the past (so outcomes stamped with it are settled), later than every one
/// handed out before, as the clock of a real end would be.
fn past_instant() -> u64 {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    NEXT.get_or_init(|| AtomicU64::new(Millis::now().0 - 3_600_000))
        .fetch_add(1, Ordering::Relaxed)
}

/// Ends `n` one-turn conversations of `tenant`, alternating won and lost.
async fn seed<S: Store>(store: &S, tenant: &TenantId, prefix: &str, n: usize) {
    let mut pending = Vec::new();
    for i in 0..n {
        pending.push(async move {
            let c = conversation(&format!("{prefix}-{i:04}"));
            send(store, tenant, &c, "m-1", "too expensive")
                .await
                .unwrap();
            let outcome = if i % 2 == 0 {
                Outcome::Won
            } else {
                Outcome::Lost
            };
            store
                .end_conversation(tenant, &c, end_request(outcome, past_instant()))
                .await
                .unwrap();
        });
        if pending.len() == 16 {
            futures_join(std::mem::take(&mut pending)).await;
        }
    }
    futures_join(pending).await;
}

async fn futures_join<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    for f in set {
        f.await;
    }
}

fn settled() -> Settings {
    Settings {
        settle_ms: 0,
        ..Settings::default()
    }
}

fn continue_all(_: Step) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

async fn history<S: Store>(store: &S, tenant: &TenantId) -> Vec<ModelVersion> {
    let mut versions = store.model_history(tenant, None, 100).await.unwrap();
    versions.reverse();
    versions
}

async fn batches_publish_one_version_each_and_a_rerun_finds_nothing<B: Backend>(backend: &B) {
    let make = backend.opener().await;
    let t = tenant("acme");
    let store = make();
    seed(&store, &t, "c", 120).await;
    let app = FeedbackApp::new(
        make(),
        Settings {
            batch_size: 50,
            ..settled()
        },
    );
    let feedback = app.feedback();
    let run = feedback
        .run_tenant(&t, "a", &Millis::now, &mut continue_all)
        .await
        .unwrap();
    let sizes: Vec<u64> = run
        .published()
        .iter()
        .map(|v| v.report.as_ref().unwrap().outcomes)
        .collect();
    assert_eq!(sizes, [50, 50, 20]);
    let versions = history(&app.store, &t).await;
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(versions[2].outcomes_learned, 120);
    assert_eq!(versions[2].state.overall.conversations, 120);
    assert_eq!(versions[2].state.overall.wins, 60);
    let again = feedback
        .run_tenant(&t, "b", &Millis::now, &mut continue_all)
        .await
        .unwrap();
    assert_eq!(again, TenantRun::NothingNew { version: Some(3) });
    seed(&app.store, &t, "d", 7).await;
    let more = feedback
        .run_tenant(&t, "c", &Millis::now, &mut continue_all)
        .await
        .unwrap();
    assert_eq!(more.published().len(), 1);
    assert_eq!(more.published()[0].outcomes_learned, 127);
    // The settle window leaves fresh outcomes for the next run.
    let waiting = FeedbackApp::new(make(), Settings::default());
    seed(&app.store, &t, "e", 1).await;
    let young = conversation("e-young");
    send(&app.store, &t, &young, "m-1", "hi").await.unwrap();
    app.store
        .end_conversation(&t, &young, end_request(Outcome::Won, Millis::now().0))
        .await
        .unwrap();
    let run = waiting
        .feedback()
        .run_tenant(&t, "d", &Millis::now, &mut continue_all)
        .await
        .unwrap();
    assert_eq!(
        run.published()[0].report.as_ref().unwrap().outcomes,
        1,
        "only the settled one"
    );
}

async fn two_runs_started_together_publish_once_and_count_each_outcome_once<B: Backend>(
    backend: &B,
) {
    let make = backend.opener().await;
    let t = tenant("acme");
    let seeder = make();
    seed(&seeder, &t, "c", 60).await;
    let (one, two) = (
        FeedbackApp::new(make(), settled()),
        FeedbackApp::new(make(), settled()),
    );
    let (a, b) = (one.feedback(), two.feedback());
    let (mut hook_a, mut hook_b) = (continue_all, continue_all);
    let (ra, rb) = tokio::join!(
        a.run_tenant(&t, "run-a", &Millis::now, &mut hook_a),
        b.run_tenant(&t, "run-b", &Millis::now, &mut hook_b),
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let labels = [ra.label(), rb.label()];
    assert!(
        labels.contains(&"published")
            && (labels.contains(&"busy") || labels.contains(&"nothing_new")),
        "{labels:?}"
    );
    let versions = history(&seeder, &t).await;
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].outcomes_learned, 60);
    assert_eq!(versions[0].state.overall.conversations, 60);
}

/// Run A reads a batch, then stalls past its lease; run B takes the expired lease, reads the
/// same outcomes and publishes. When A wakes, its publish is refused: nothing counted twice.
async fn a_stalled_run_whose_lease_expired_cannot_publish_the_same_batch<B: Backend>(backend: &B) {
    let make = backend.opener().await;
    let store = make();
    let t = tenant("acme");
    seed(&store, &t, "c", 30).await;
    let settings = Settings {
        lease_ttl_ms: 300,
        ..settled()
    };
    let (read_tx, read_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let a_store = make();
    let a_settings = settings.clone();
    let a_tenant = t.clone();
    let stalled = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let app = FeedbackApp::new(a_store, a_settings);
        runtime.block_on(app.feedback().run_tenant(
            &a_tenant,
            "run-a",
            &Millis::now,
            &mut move |step| {
                if let Step::Read { outcomes } = step {
                    read_tx.send(outcomes).unwrap();
                    go_rx.recv().unwrap();
                }
                ControlFlow::Continue(())
            },
        ))
    });
    let read = tokio::task::spawn_blocking(move || read_rx.recv())
        .await
        .unwrap();
    assert_eq!(read.unwrap(), 30);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let app = FeedbackApp::new(make(), settings);
    let b = app
        .feedback()
        .run_tenant(&t, "run-b", &Millis::now, &mut continue_all)
        .await
        .unwrap();
    assert_eq!(b.published().len(), 1);
    go_tx.send(()).unwrap();
    let a = tokio::task::spawn_blocking(move || stalled.join())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(a, TenantRun::Superseded { expected: 1, .. }),
        "{a:?}"
    );
    let versions = history(&store, &t).await;
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].outcomes_learned, 30);
}

/// A run killed at each step (the hook stops it where a crash would, leaving its lease held)
/// is finished by the next run once the lease expires, and no outcome is counted twice.
async fn a_run_killed_at_any_step_is_finished_by_the_next<B: Backend>(backend: &B) {
    let make = backend.opener().await;
    let store = make();
    let mut now = Millis::now().0;
    let ttl = 60_000;
    let settings = Settings {
        lease_ttl_ms: ttl,
        batch_size: 20,
        ..settled()
    };
    let app = FeedbackApp::new(make(), settings);
    let feedback = app.feedback();
    let mut total = 0;
    for (round, kill_at) in ["leased", "read", "publishing", "published"]
        .into_iter()
        .enumerate()
    {
        let t = tenant("acme");
        seed(&store, &t, &format!("r{round}"), 30).await;
        total += 30;
        let clock_now = now;
        let clock = move || Millis(clock_now);
        let killed = feedback
            .run_tenant(&t, &format!("doomed-{round}"), &clock, &mut |step| {
                let name = match step {
                    Step::Leased => "leased",
                    Step::Read { .. } => "read",
                    Step::Publishing { .. } => "publishing",
                    Step::Published { .. } => "published",
                };
                if name == kill_at {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .await
            .unwrap();
        assert!(matches!(killed, TenantRun::Interrupted(_)), "{killed:?}");
        // The dead run still holds the lease: a run now is turned away.
        let busy = feedback
            .run_tenant(&t, "eager", &clock, &mut continue_all)
            .await
            .unwrap();
        assert_eq!(busy, TenantRun::Busy, "killed at {kill_at}");
        // Once it expires, the next run finishes the work.
        now += ttl + 1;
        let later = now;
        let rescue = feedback
            .run_tenant(
                &t,
                &format!("rescue-{round}"),
                &move || Millis(later),
                &mut continue_all,
            )
            .await
            .unwrap();
        let current = store.current_model(&t).await.unwrap().unwrap();
        assert_eq!(
            current.outcomes_learned, total,
            "killed at {kill_at}: {rescue:?}"
        );
        assert_eq!(current.state.overall.conversations, total);
        now += 1;
    }
}

async fn the_schedule_runs_every_tenant_and_keeps_their_learning_apart<B: Backend>(backend: &B) {
    let make = backend.opener().await;
    let store = make();
    seed(&store, &tenant("acme"), "a", 12).await;
    seed(&store, &tenant("globex"), "g", 5).await;
    let app = FeedbackApp::new(make(), settled());
    let lines = Mutex::new(Vec::new());
    let summary = feedback_handle(&app, Trigger::Schedule, "scheduled", &|line| {
        lines.lock().unwrap().push(line)
    })
    .await
    .unwrap();
    // Per tenant and version: one EMF document of run metrics (correlation documents need a
    // defined phi, which one-strategy data lacks), then one ab_test_results event per experiment.
    let lines: Vec<Value> = lines
        .into_inner()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let emf: Vec<&Value> = lines.iter().filter(|l| l.get("_aws").is_some()).collect();
    assert_eq!(emf.len(), 2);
    assert_eq!(emf[0]["EventTrackingRate"], 1.0);
    assert_eq!(emf[0]["OutcomesLearned"], 12.0);
    let events: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "ab_test_results")
        .collect();
    assert_eq!(events.len(), 6);
    assert_eq!(events[0]["event_id"], "run/1/ab_test_results/reply_tone");
    assert_eq!(events[0]["data"]["variants"][1]["conversations"], 12);
    let results: BTreeMap<String, u64> = summary["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["tenant"].as_str().unwrap().to_owned(),
                r["outcomes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        results,
        BTreeMap::from([("acme".into(), 12), ("globex".into(), 5)])
    );
    let acme = store.current_model(&tenant("acme")).await.unwrap().unwrap();
    let globex = store
        .current_model(&tenant("globex"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((acme.outcomes_learned, globex.outcomes_learned), (12, 5));
    // A triggered run of one tenant touches no other.
    seed(&store, &tenant("globex"), "g2", 3).await;
    feedback_handle(&app, Trigger::Tenant(tenant("acme")), "trigger", &|_| {})
        .await
        .unwrap();
    assert_eq!(
        store
            .current_model(&tenant("globex"))
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
}

/// The draft the engine plans for the first message of a new conversation under the default
/// model (version 0), as process_message would.
fn planned(
    engine: &Engine,
    tenant_id: &str,
    conversation_id: &str,
    message_id: &str,
    text: &str,
) -> salesloop::ExchangeDraft {
    let (t, c) = (tenant(tenant_id), conversation(conversation_id));
    let m = salesloop::MessageId::parse(message_id).unwrap();
    let message = UserMessage {
        tenant: &t,
        conversation: &c,
        message_id: &m,
        text,
        at: Millis::now(),
    };
    let (draft, _) = engine.plan(
        &message,
        &ConversationState::New,
        0,
        &Model::default(),
        &salesloop::domain::config::TenantConfig::builtin(),
    );
    draft
}

// ---------------------------------------------------------------------------------------------
// Tenant isolation: the tenant comes from the authorizer's claim and prefixes every key, so one
// tenant can neither read, nor end, nor learn from another's conversations.

async fn tenants_cannot_read_end_or_learn_from_each_other<B: Backend>(backend: &B) {
    let make = backend.opener().await;
    let api = apis(&make, Engine::builtin(), 0, None);
    let a = api
        .say(
            "acme",
            "c-1",
            "m-1",
            "Honestly this looks too expensive for us.",
        )
        .await;
    api.say("acme", "c-1", "m-2", "What integrations do you support?")
        .await;
    api.say("acme", "c-2", "m-1", "Let's do it.").await;
    // Same conversation id and message id under another tenant: a new conversation of its own,
    // not a replay of acme's answer and not a reused id.
    let b = api
        .say(
            "globex",
            "c-1",
            "m-1",
            "We are happy with our current vendor.",
        )
        .await;
    assert_eq!(b["turn"], 1);
    assert_ne!(b["reply"], a["reply"]);
    // Each answer is the engine's decision for that tenant's own message in a new conversation
    // (decisions are seeded by tenant, conversation, message and turn), planned here without
    // the store: globex got its own, not acme's stored one.
    for (answer, tenant_id, text) in [
        (&a, "acme", "Honestly this looks too expensive for us."),
        (&b, "globex", "We are happy with our current vendor."),
    ] {
        let expected = planned(&api.messages.engine, tenant_id, "c-1", "m-1", text);
        assert_eq!(answer["reply"]["text"], expected.reply.text, "{tenant_id}");
        assert_eq!(answer["reply"]["source"], "template");
        assert_eq!(
            answer["strategy"]["name"], expected.strategy.name,
            "{tenant_id}"
        );
        assert_eq!(
            answer["strategy"]["probability"], expected.strategy.probability,
            "{tenant_id}"
        );
        let patterns: Vec<&str> = answer["patterns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let expected_patterns: Vec<&str> = expected
            .patterns
            .iter()
            .map(|d| d.pattern.as_str())
            .collect();
        assert_eq!(patterns, expected_patterns, "{tenant_id}");
    }
    assert_eq!(a["patterns"][0]["name"], "objection.price");
    assert_eq!(b["patterns"][0]["name"], "objection.need");
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    assert_eq!(
        api.ends
            .store
            .exchanges(&acme, &conversation("c-1"))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        api.ends
            .store
            .exchanges(&globex, &conversation("c-1"))
            .await
            .unwrap()
            .len(),
        1
    );
    // globex cannot end acme's c-2: to globex it does not exist.
    let (status, _) = api
        .end(Some("globex"), "c-2", r#"{"outcome": "lost"}"#)
        .await;
    assert_eq!(status, 404);
    // Each ends its own c-1, differently: no conflict between them.
    assert_eq!(
        api.end(Some("globex"), "c-1", r#"{"outcome": "won"}"#)
            .await
            .0,
        200
    );
    let (status, ended) = api.end(Some("acme"), "c-1", r#"{"outcome": "lost"}"#).await;
    assert_eq!((status, ended["turns"].as_u64()), (200, Some(2)));
    assert!(matches!(
        api.ends
            .store
            .conversation(&acme, &conversation("c-2"))
            .await
            .unwrap(),
        ConversationState::Open { .. }
    ));
    assert_eq!(api.ends.store.ended_count(&acme).await.unwrap(), 1);
    assert_eq!(api.ends.store.ended_count(&globex).await.unwrap(), 1);

    // globex's feedback run learns from globex's outcome only; acme has no model until its own.
    let app = FeedbackApp::new(make(), settled());
    feedback_handle(&app, Trigger::Tenant(globex.clone()), "t", &|_| {})
        .await
        .unwrap();
    let model = app.store.current_model(&globex).await.unwrap().unwrap();
    assert_eq!((model.version, model.outcomes_learned), (1, 1));
    assert_eq!(model.state.overall.wins, 1);
    assert!(
        !model.state.by_pattern.contains_key("objection.price"),
        "acme's pattern"
    );
    assert!(app.store.current_model(&acme).await.unwrap().is_none());
    // And process_message decides with the caller's own model version.
    let next = api.say("acme", "c-3", "m-1", "hello").await;
    assert_eq!(next["model_version"], 0);
    let next = api.say("globex", "c-3", "m-1", "hello").await;
    assert_eq!(next["model_version"], 1);

    // Without a tenant claim, deployed, every front door is refused; a malformed claim too.
    for flavor in [Flavor::HttpApi, Flavor::Rest, Flavor::FunctionUrl] {
        let message = request(
            flavor,
            "POST",
            "/conversations/c-1/messages",
            r#"{"message_id":"m-9","text":"hi"}"#,
            None,
            &[("x-tenant-id", "acme")],
        );
        assert_eq!(
            parts(message_handle(&api.messages, message).await).0,
            401,
            "{flavor:?}"
        );
        let end = request(
            flavor,
            "POST",
            "/conversations/c-2/end",
            r#"{"outcome":"won"}"#,
            None,
            &[("x-tenant-id", "acme")],
        );
        assert_eq!(parts(end_handle(&api.ends, end).await).0, 401, "{flavor:?}");
    }
    for forged in ["acme#C#c-2", "../acme", "acme/x", ""] {
        let end = request(
            Flavor::HttpApi,
            "POST",
            "/conversations/c-2/end",
            r#"{"outcome":"won"}"#,
            Some(forged),
            &[],
        );
        let (status, answer) = parts(end_handle(&api.ends, end).await);
        assert!(
            status == 403 || status == 401,
            "{forged}: {status} {answer}"
        );
    }
    assert_eq!(
        api.ends.store.ended_count(&acme).await.unwrap(),
        1,
        "nothing above ended anything"
    );
}

salesloop_tests::store_cases! {
    fn trials;
    stores: [
        ending_records_the_outcome_once_and_a_repeat_gets_the_same_answer,
        bad_ends_get_a_json_4xx_and_change_nothing,
        every_nth_end_asks_for_one_feedback_run_and_a_failing_trigger_changes_nothing,
        two_runs_started_together_publish_once_and_count_each_outcome_once,
        a_stalled_run_whose_lease_expired_cannot_publish_the_same_batch,
        a_run_killed_at_any_step_is_finished_by_the_next,
        tenants_cannot_read_end_or_learn_from_each_other,
        batches_publish_one_version_each_and_a_rerun_finds_nothing,
        the_schedule_runs_every_tenant_and_keeps_their_learning_apart,
        the_engine_learns_which_strategy_wins_after_a_price_objection,
        labels_teach_the_tenant_detector_and_process_message_uses_it,
        the_schedule_starts_one_run_per_tenant_with_new_outcomes_only,
        a_mark_is_cleared_only_by_a_run_that_learned_everything_it_counts,
    ],
    dynamodb: [a_tenant_ending_on_four_shards_counts_triggers_and_learns_each_end_once],
    plain: [the_feedback_function_accepts_the_schedule_and_the_trigger_only],
}

fn main() {
    let harness = Harness::new();
    let all = trials(&harness);
    harness.run(all).exit();
}
