//! Feedback fan-out: the scheduled invocation of feedback_loop (`handle(Trigger::Schedule)` with
//! the deployed `FanOut::Invoke`) as the pending tenants grow, on DynamoDB Local, its DynamoDB
//! requests counted on the wire and its invokes answered by a local stand-in for Lambda's invoke
//! API. The per-tenant runs it asks for are not run: their cost is the feedback-scaling section's.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use salesloop::clients::lambda::Invoker;
use salesloop::store::{DynamoStore, DynamoStoreConfig};
use salesloop::{ConversationId, Millis, Outcome, Store, TenantId};
use salesloop_benches::counting::{self, Requests};
use salesloop_tests::contract::{end_request, send};
use salesloop_tests::dynamo_local::DynamoLocal;
use salesloop_tests::flows::Flows;

use crate::{Invocations, Scale, Section, fail, ms};

/// Seeding requests in flight (tasks on the bench's two worker threads).
const SEEDERS: usize = 32;

const FUNCTION: &str = "feedback_loop";

fn pending_name(i: usize) -> TenantId {
    TenantId::parse(&format!("p{i:05}")).expect("tenant")
}

fn idle_name(i: usize) -> TenantId {
    TenantId::parse(&format!("i{i:05}")).expect("tenant")
}

/// What the stand-in for Lambda's invoke API received.
#[derive(Default)]
struct Received {
    invokes: AtomicUsize,
    connections: AtomicUsize,
    tenants: Mutex<Vec<TenantId>>,
    /// The first request that was not an asynchronous invoke of feedback_loop naming a tenant.
    wrong: Mutex<Option<String>>,
}

impl Received {
    /// Everything received since the last call: invokes, connections, the tenants asked for,
    /// and the first wrong request.
    fn take(&self) -> (usize, usize, Vec<TenantId>, Option<String>) {
        (
            self.invokes.swap(0, Ordering::SeqCst),
            self.connections.swap(0, Ordering::SeqCst),
            std::mem::take(&mut *self.tenants.lock().expect("tenants")),
            self.wrong.lock().expect("wrong").take(),
        )
    }
}

async fn answer(received: Arc<Received>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let event = request
        .headers()
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        == Some("Event");
    let post = request.method() == hyper::Method::POST;
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let trigger = serde_json::from_slice(&body)
        .ok()
        .and_then(|payload| feedback_loop::parse_trigger(&payload).ok());
    let status = match trigger {
        Some(feedback_loop::Trigger::Tenant(tenant))
            if post && event && path == format!("/2015-03-31/functions/{FUNCTION}/invocations") =>
        {
            received.invokes.fetch_add(1, Ordering::SeqCst);
            received.tenants.lock().expect("tenants").push(tenant);
            202
        }
        _ => {
            received.wrong.lock().expect("wrong").get_or_insert(format!(
                "{path} (Event: {event}): {}",
                String::from_utf8_lossy(&body)
            ));
            400
        }
    };
    Response::builder()
        .status(status)
        .header("x-amzn-requestid", "bench")
        .body(Full::new(Bytes::new()))
        .expect("a response")
}

/// A stand-in for Lambda's invoke API on a free loopback port: HTTP/1.1 with keep-alive (as
/// Lambda's endpoint, so the SDK reuses its connections), 202 to each asynchronous invoke of
/// feedback_loop, 400 to anything else. Returns its endpoint.
async fn invoke_stand_in(received: Arc<Received>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            received.connections.fetch_add(1, Ordering::SeqCst);
            let received = received.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let received = received.clone();
                    async move { Ok::<_, Infallible>(answer(received, request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    endpoint
}

/// Each of `tenants` gets one conversation of one message, then (if `end`) its end: `SEEDERS`
/// tenants at a time, as tasks on the runtime's worker threads.
async fn seed(store: &Arc<DynamoStore>, tenants: Vec<TenantId>, end: bool) {
    let mut tenants = tenants.into_iter();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.len() < SEEDERS {
            let Some(tenant) = tenants.next() else { break };
            let store = store.clone();
            tasks.spawn(async move {
                let conversation = ConversationId::parse("c-1").expect("id");
                send(
                    &*store,
                    &tenant,
                    &conversation,
                    "m-1",
                    "too expensive for us",
                )
                .await
                .unwrap_or_else(|e| panic!("seeding {tenant}'s message: {e}"));
                if end {
                    store
                        .end_conversation(
                            &tenant,
                            &conversation,
                            end_request(Outcome::Won, Millis::now().0),
                        )
                        .await
                        .unwrap_or_else(|e| panic!("seeding {tenant}'s end: {e}"));
                }
            });
        }
        match tasks.join_next().await {
            None => break,
            Some(done) => done.expect("a seeding task"),
        }
    }
}

fn requests_text(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(op, n)| format!("{n} {op}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One measured scheduling invocation.
struct Measured {
    pending: usize,
    idle: usize,
    invokes: usize,
    connections: usize,
    took: Duration,
    requests: BTreeMap<String, u64>,
    read_units: f64,
    /// The pending list read again on its own (`Store::pending_tenants`): its time.
    list_took: Duration,
    /// Entries in the pending list's first Query page.
    first_page: usize,
}

/// How many entries the first page of the pending list holds (a Query of the `by_start` index's
/// `PENDING` partition, as `Store::pending_tenants` sends it).
async fn first_page(client: &aws_sdk_dynamodb::Client, table: &str) -> usize {
    let page = client
        .query()
        .table_name(table)
        .index_name(salesloop::store::START_INDEX)
        .key_condition_expression("#pk = :partition")
        .expression_attribute_names("#pk", "gsi2pk")
        .expression_attribute_values(
            ":partition",
            aws_sdk_dynamodb::types::AttributeValue::S("PENDING".into()),
        )
        .send()
        .await
        .expect("the pending list's first page");
    page.items().len()
}

pub async fn section(scale: &Scale, server: &DynamoLocal) -> Section {
    let sizes: &[usize] = if scale.smoke {
        &[10, 50, 100]
    } else {
        &[100, 1_000, 10_000]
    };
    let largest = *sizes.last().expect("a size");

    let requests = Requests::default();
    let table = format!("salesloop-schedule-{}", std::process::id());
    let config = DynamoStoreConfig {
        table: table.clone(),
        retention: None,
        end_shards: 1,
    };
    // Seeding goes through its own client so the counting one sees only the schedule.
    let seeder = Arc::new(DynamoStore::new(
        counting::client(&server.endpoint(), &Requests::default()),
        config.clone(),
    ));
    let store = DynamoStore::new(counting::client(&server.endpoint(), &requests), config);
    let raw = counting::client(&server.endpoint(), &Requests::default());
    store.create_table().await.expect("table");

    let received = Arc::new(Received::default());
    let endpoint = invoke_stand_in(received.clone()).await;
    let settings = feedback_loop::run::Settings {
        settle_ms: 0,
        ..Default::default()
    };
    let app = feedback_loop::App::new(store.clone(), settings).with_fan_out(
        feedback_loop::FanOut::Invoke(Invoker::local(&endpoint, FUNCTION, false)),
    );
    let mut counted = Invocations::new(
        "scheduling invocations (`handle(Trigger::Schedule)`, invokes to a local stand-in)",
    );

    // Each size adds tenants with an end to the ones before; at the largest, the same
    // invocation again after as many idle tenants (a conversation, no end) are added.
    let mut steps: Vec<(usize, usize)> = sizes.iter().map(|&s| (s, 0)).collect();
    steps.push((largest, largest));
    let mut seeded = 0;
    let mut idle_seeded = 0;
    let mut rows = Vec::new();
    for (pending, idle) in steps {
        let t = Instant::now();
        seed(&seeder, (seeded..pending).map(pending_name).collect(), true).await;
        seed(&seeder, (idle_seeded..idle).map(idle_name).collect(), false).await;
        eprintln!(
            "bench: schedule: seeded {} tenants with an end and {} idle in {:.0} s",
            pending - seeded,
            idle - idle_seeded,
            t.elapsed().as_secs_f64()
        );
        seeded = pending;
        idle_seeded = idle;

        requests.take();
        requests.take_read_units();
        received.take();
        let started = Instant::now();
        let answer =
            feedback_loop::handle(&app, feedback_loop::Trigger::Schedule, "bench", &|_| {}).await;
        let took = started.elapsed();
        let counts = requests.take();
        let read_units = requests.take_read_units();
        let (invokes, connections, mut asked, wrong) = received.take();
        asked.sort();
        let expected: Vec<TenantId> = (0..pending).map(pending_name).collect();
        let checked = match answer {
            Err(e) => Err(e.to_string()),
            Ok(answer) if answer != serde_json::json!({ "started": pending }) => {
                Err(format!("expected {pending} started, answered {answer}"))
            }
            Ok(_) if wrong.is_some() => Err(format!("a wrong invoke: {}", wrong.unwrap())),
            Ok(_) if invokes != pending || asked != expected => Err(format!(
                "{invokes} invokes received for {pending} pending tenants, {} of them distinct \
                 pending tenants",
                asked
                    .iter()
                    .filter(|t| expected.binary_search(t).is_ok())
                    .collect::<BTreeSet<_>>()
                    .len()
            )),
            Ok(_) => Ok(()),
        };
        if !counted.count(checked) {
            fail(format!(
                "{}: {}",
                counted.what,
                counted.first_failure.as_deref().unwrap_or_default()
            ));
        }

        // The pending list on its own, to split the time between the read and the invokes.
        let started = Instant::now();
        let listed = store.pending_tenants().await.expect("the pending list");
        let list_took = started.elapsed();
        requests.take();
        requests.take_read_units();
        assert_eq!(listed, expected, "the pending list read on its own");
        let first_page = first_page(&raw, &table).await;
        eprintln!(
            "bench: schedule: {pending} pending, {idle} idle: {} ({}), {invokes} invokes on \
             {connections} connections",
            ms(took),
            requests_text(&counts)
        );
        rows.push(Measured {
            pending,
            idle,
            invokes,
            connections,
            took,
            requests: counts,
            read_units,
            list_took,
            first_page,
        });
    }

    let mut markdown = String::from("## Feedback fan-out\n\n");
    let _ = writeln!(
        markdown,
        "The scheduled invocation of feedback_loop as deployed (`feedback_loop::handle` with \
         `Trigger::Schedule` and `FanOut::Invoke`, in this process) on DynamoDB Local, one \
         invocation per size: it reads the pending list (`Store::pending_tenants`, a Query of the \
         keys-only `by_start` partition `PENDING`) and sends one asynchronous invoke \
         (`InvocationType: Event`) per pending tenant, {} in flight, to a stand-in for Lambda's \
         invoke API on loopback (HTTP/1.1 with keep-alive, 202 at once, in this process; real \
         Lambda answers in tens of milliseconds, so against it the invokes take longer than \
         here). The tenants are seeded through the store, one conversation each (a message, \
         then an end, which marks the tenant pending); each size adds to the ones before and no \
         run clears a mark, so the schedule asks for every tenant seeded so far. The last row \
         adds as many idle tenants (a message, no end) and repeats the invocation. Each \
         invocation is checked: it answered `started` with the pending count, the stand-in \
         received exactly one invoke per pending tenant, and nothing else. Wall time is the \
         whole invocation; DynamoDB requests are counted on the wire by operation, read units \
         as the Query answers report them; connections opened are the stand-in's new \
         connections during the invocation (the SDK's pool keeps them open between \
         invocations, as a warm Lambda environment does); the entries in the first Query page \
         are read with one more Query of the same partition; the pending list read alone is a \
         second read of it right after, timed on its own. The per-tenant runs it asks for are not run (their cost \
         is under Feedback scaling).\n",
        feedback_loop::INVOKES_IN_FLIGHT
    );
    let _ = writeln!(
        markdown,
        "| pending tenants | idle tenants | invokes sent (= pending) | connections opened | wall time | per pending tenant | DynamoDB requests | read units | entries in the first Query page | pending list read alone |"
    );
    let _ = writeln!(markdown, "|---|---|---|---|---|---|---|---|---|---|");
    for m in &rows {
        let _ = writeln!(
            markdown,
            "| {} | {} | {} | {} | {} | {:.1} µs | {} | {:.1} | {} | {} |",
            m.pending,
            m.idle,
            m.invokes,
            m.connections,
            ms(m.took),
            m.took.as_secs_f64() * 1e6 / m.pending as f64,
            requests_text(&m.requests),
            m.read_units,
            m.first_page,
            ms(m.list_took)
        );
    }
    let mut summary = Vec::new();
    let busiest = rows.iter().rfind(|m| m.idle == 0);
    let with_idle = rows.last();
    if let (Some(b), Some(w)) = (busiest, with_idle) {
        let queries = |m: &Measured| m.requests.get("Query").copied().unwrap_or(0);
        let others: u64 = b
            .requests
            .iter()
            .filter(|(op, _)| op.as_str() != "Query")
            .map(|(_, n)| n)
            .sum();
        summary.push([
            format!("scheduling invocation, {} pending tenants", b.pending),
            format!(
                "{:.2} s, {} Query{}, {} invokes",
                b.took.as_secs_f64(),
                queries(b),
                if others > 0 {
                    format!(" and {others} other requests")
                } else {
                    String::new()
                },
                b.invokes
            ),
            "one Query per 1 MB page of the pending list; well within 15 minutes".into(),
            format!(
                "with {} idle tenants more: {:.2} s, {}",
                w.idle,
                w.took.as_secs_f64(),
                requests_text(&w.requests)
            ),
        ]);
    }
    Section {
        markdown,
        summary,
        invocations: vec![counted],
    }
}
