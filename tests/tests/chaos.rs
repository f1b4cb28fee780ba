//! The fault-injection and load suite, against DynamoDB Local and, for the spool, an SQS FIFO
//! queue on moto's server (one for the whole run, on a free port): the store stopped and
//! restarted under load, throttling and dropped connections injected between the handler and
//! the store, a store that hangs, the function process killed mid-request, feedback runs
//! failing part-way, and a load of 10,000 messages. A message the store cannot record in time
//! is answered 200 `"recorded": false` and spooled (or logged, without a spool); the scenarios
//! drain the spool with the consumer's handler and replay the log lines, as production would.
//! After each, the store is read back (through a client of its own, with patient timeouts,
//! never the functions' request-path budget): every acknowledged message stored exactly once,
//! turns without gaps, the direct records and the spooled ones each in sending order, every
//! exchange whole, its events those of the answer the client got, the events counted from the
//! table's raw items exactly those the acknowledged answers imply, recorded repeats answered
//! alike (tests/src/load.rs says exactly what is checked). Each scenario prints its counts and
//! latencies.
//!
//! `CHAOS_SCALE=n` multiplies the number of conversations of every scenario (`make chaos`).

use std::ops::ControlFlow;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use end_conversation::handler::{App as EndApp, handle as end_handle, pattern_names};
use feedback_loop::App as FeedbackApp;
use feedback_loop::run::{Settings, TenantRun};
use libtest_mimic::{Arguments, Trial};
use process_message::handler::{App, LastResort};
use salesloop::clients::sqs::FifoQueue;
use salesloop::domain::engine::Engine;
use salesloop::domain::patterns::DEFAULT_CATALOG;
use salesloop::domain::spool::LOG_MARKER;
use salesloop::edge::http::TenantSource;
use salesloop::service::{ConfigCache, ModelCache};
use salesloop::store::{DynamoStore, DynamoStoreConfig};
use salesloop::{ConversationId, ConversationState, Millis, Outcome, Store, TenantId};
use salesloop_tests::contract::{end_request, send};
use salesloop_tests::dynamo_local::DynamoLocal;
use salesloop_tests::events::{Flavor, request};
use salesloop_tests::fault_proxy::{FaultProxy, FaultRates};
use salesloop_tests::flows::Flows;
use salesloop_tests::load::{self, Got, Handlers, Http, LoadReport, Plan, Verdict};
use salesloop_tests::moto::Moto;
use salesloop_tests::sqs::SpoolQueues;
use serde_json::{Value, json};
use spool_consumer::handler::{App as ConsumerApp, BatchSummary};
use spool_consumer::replay::{ReplaySummary, replay};
use tokio::runtime::Runtime;

/// Faults the proxy injects into the message load: 14% of calls.
const MESSAGE_FAULTS: FaultRates = FaultRates {
    throttle: 0.04,
    capacity: 0.03,
    drop_before: 0.03,
    drop_after: 0.04,
    stall: 0.0,
};

/// Faults the proxy injects into feedback runs: 60% of calls, so that about a fifth of the
/// store calls fail even after the SDK's three attempts, and most runs stop part-way.
const FEEDBACK_FAULTS: FaultRates = FaultRates {
    throttle: 0.15,
    capacity: 0.1,
    drop_before: 0.15,
    drop_after: 0.2,
    stall: 0.0,
};

fn scale() -> usize {
    std::env::var("CHAOS_SCALE")
        .ok()
        .and_then(|raw| raw.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}

/// The load of a fault scenario: 100 conversations (times the scale) of 8 messages each.
fn fault_plan(tenant: &str) -> Plan {
    Plan {
        tenant: tenant.to_owned(),
        prefix: "c".to_owned(),
        conversations: 100 * scale(),
        messages_per_conversation: 8,
        clients: 16,
        repeat_every: 10,
        retry_after_cap: Duration::from_millis(100),
    }
}

/// process_message's handler on `store`, sending what it cannot record to `spool` (or, without
/// one or when it fails, to `last_resort`), with the default record budget.
fn app<S: Store>(store: S, spool: Option<FifoQueue>, last_resort: &LastResort) -> App<S> {
    App {
        store,
        engine: Engine::builtin(),
        models: ModelCache::new(Duration::from_secs(30)),
        configs: ConfigCache::new(Duration::from_secs(30)),
        tenants: TenantSource {
            claim: "tenant_id".into(),
            local: false,
        },
        llm: None,
        text_storage: Default::default(),
        unrecorded: Default::default(),
        record_budget: Duration::from_millis(salesloop::edge::settings::DEFAULT_RECORD_BUDGET_MS),
        spool,
        last_resort: last_resort.clone(),
    }
}

/// A last resort whose lines the test reads.
fn memory_log() -> LastResort {
    LastResort::Memory(Default::default())
}

fn lines_of(log: &LastResort) -> Vec<String> {
    match log {
        LastResort::Memory(lines) => lines.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        LastResort::Stdout => Vec::new(),
    }
}

/// Replays last-resort lines (`text`, one a line, other lines skipped) into `store` with the
/// replay command's code; panics on a line it could not record.
async fn replay_text<S: Store>(store: &S, name: &str, text: &str) -> ReplaySummary {
    let mut summary = ReplaySummary::default();
    replay(
        store,
        name,
        std::io::Cursor::new(text.as_bytes()),
        &mut summary,
    )
    .await
    .expect("the lines are read");
    assert!(
        summary.rejected.is_empty() && summary.retry.is_empty(),
        "the last-resort lines were all recorded: {summary}"
    );
    summary
}

/// The spool drained by the consumer's handler on `store` (up to two minutes), then checked
/// empty: nothing dead-lettered.
async fn drain<S: Store>(queues: &SpoolQueues, store: S) -> (BatchSummary, Duration) {
    let consumer = ConsumerApp {
        store,
        dead_letters: Some(queues.dead_letters()),
    };
    let started = Instant::now();
    let summary = queues.drain(&consumer, Duration::from_secs(120)).await;
    let took = started.elapsed();
    assert_eq!(
        summary.dead_lettered, 0,
        "nothing dead-lettered: {summary:?}"
    );
    let dead = queues.dead_lettered().await;
    assert!(dead.is_empty(), "the dead-letter queue is empty: {dead:?}");
    (summary, took)
}

fn drained(summary: &BatchSummary, took: Duration) -> String {
    format!(
        "spool drained by the consumer in {:.1} s: {} recorded, {} already recorded \
         (duplicates), {} dead-lettered, {} deliveries reported failed and retried",
        took.as_secs_f64(),
        summary.recorded,
        summary.duplicates,
        summary.dead_lettered,
        summary.retried
    )
}

/// The tenant's tracking counters against what the code paths did. Unrecorded: each message
/// answered `"recorded": false` counted once per flush (in the store, or still in the
/// process's memory): so at least the messages answered so, at most the unrecorded answers (a
/// repeat answered so again after the process flushed its count counts again). Recovered:
/// each spooled or logged record that reached the store (recorded, or found already there).
/// With `exact`, where no counter write can land with its answer lost (no dropped
/// connections): recovered is exactly that, and every message answered unrecorded was
/// recovered once (the queue keeps one copy of a message spooled twice), so the backlog is
/// what was counted twice. Returns the figures for the output.
async fn tracking_counters<S: Store>(
    verification: &DynamoStore,
    app: &App<S>,
    plan: &Plan,
    report: &LoadReport,
    recovered: u64,
    exact: bool,
) -> String {
    let tenant = TenantId::parse(&plan.tenant).unwrap();
    let counts = verification.tracking_counts(&tenant).await.unwrap();
    let pending = app.unrecorded.pending();
    let counted = counts.unrecorded + pending;
    let messages = report
        .acked
        .values()
        .filter(|acked| {
            [Some(&acked.answer), acked.repeat.as_ref()]
                .into_iter()
                .flatten()
                .any(|answer| !load::is_recorded(answer))
        })
        .count() as u64;
    if exact {
        assert!(
            (messages..=report.answered_unrecorded).contains(&counted),
            "every message answered unrecorded counted once, or once per answer at most: \
             {counts:?}, {pending} pending, {messages} messages, {} answers",
            report.answered_unrecorded
        );
        assert_eq!(
            (counts.recovered, counts.recovered),
            (recovered, messages),
            "every record that reached the store counted, one per message answered unrecorded"
        );
    }
    format!(
        "tracking counters: unrecorded {} in the store + {pending} in the process's memory \
         ({messages} messages answered unrecorded, {} such answers), recovered {} ({recovered} \
         spooled or logged records reached the store); backlog in the store {}",
        counts.unrecorded,
        report.answered_unrecorded,
        counts.recovered,
        counts.backlog()
    )
}

/// A store on `table` through `endpoint`, with the functions' retry settings: what the
/// functions under test use. The checks read through [`DynamoLocal::verification_store`].
fn store_at(endpoint: &str, table: &str) -> DynamoStore {
    DynamoStore::new(
        DynamoLocal::production_client(endpoint),
        DynamoStoreConfig {
            table: table.to_owned(),
            retention: None,
            end_shards: 1,
        },
    )
}

async fn wait_for(progress: &AtomicU64, at_least: usize) {
    while progress.load(Ordering::Relaxed) < at_least as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads the store back (directly from DynamoDB Local, with the verification client's patient
/// timeouts) and prints the figures; panics on anything lost, doubled or broken, and on a
/// read-back that could not finish.
async fn check(
    title: &str,
    server_endpoint: &str,
    table: &str,
    plan: &Plan,
    report: &LoadReport,
    extra: &str,
) -> Verdict {
    let direct = DynamoLocal::verification_store(server_endpoint, table);
    let client = DynamoLocal::verification_client(server_endpoint);
    let verdict = load::verify(&direct, &client, table, plan, report).await;
    println!(
        "\nchaos {title}\n{}\n{}{extra}\n",
        report.summary(),
        verdict.summary()
    );
    assert!(
        report.unexpected.is_empty(),
        "unexpected answers: {:#?}",
        &report.unexpected[..report.unexpected.len().min(10)]
    );
    assert!(
        report.repeat_mismatches.is_empty(),
        "repeats answered differently: {:#?}",
        &report.repeat_mismatches[..report.repeat_mismatches.len().min(5)]
    );
    assert_eq!(report.acknowledged as usize, plan.messages());
    verdict.assert_clean(report);
    verdict
}

/// DynamoDB Local (on disk) stopped for two seconds and restarted on the same port while 16
/// clients send messages through process_message with its spool on moto: every message sent
/// during the outage is answered 200 (recorded or not), none 503; the unrecorded ones are
/// spooled, the consumer records them once the store is back, and nothing is lost or doubled.
fn dynamodb_stopped_and_restarted_mid_load(moto: &Moto, runtime: &Runtime) {
    let mut server = DynamoLocal::start_persistent()
        .unwrap_or_else(|e| panic!("DynamoDB Local (persistent) could not start: {e}"));
    let endpoint = server.endpoint();
    let plan = fault_plan("outage");
    runtime.block_on(async {
        let table = server.fresh_store().await.table().to_owned();
        let queues = SpoolQueues::create(&moto.endpoint(), "outage", 2, 100).await;
        let log = memory_log();
        let transport = Arc::new(Handlers(app(
            store_at(&endpoint, &table),
            Some(queues.spool()),
            &log,
        )));
        let progress = Arc::new(AtomicU64::new(0));
        let running = tokio::spawn({
            let (plan, progress, transport) = (plan.clone(), progress.clone(), transport.clone());
            async move { load::run(&plan, transport, progress).await }
        });
        wait_for(&progress, plan.messages() / 3).await;
        let stopped = Instant::now();
        // This thread, not a runtime worker, owns the server: the clients keep running.
        server.stop();
        tokio::time::sleep(Duration::from_secs(2)).await;
        server
            .restart()
            .unwrap_or_else(|e| panic!("DynamoDB Local did not restart: {e}"));
        let restarted = Instant::now();
        let report = running.await.expect("the load finished");

        // The records the store could not take, recorded once it is back: the spool through
        // the consumer on the functions' own store settings, then any last-resort line.
        let functions_store = store_at(&endpoint, &table);
        let (spooled, took) = drain(&queues, functions_store.clone()).await;
        let lines = lines_of(&log);
        let replayed = replay_text(&functions_store, "last-resort", &lines.join("\n")).await;

        // What the requests sent while the store was down got.
        let during: Vec<Got> = report
            .attempts
            .iter()
            .filter(|a| a.sent >= stopped && a.sent < restarted)
            .map(|a| a.got)
            .collect();
        let count = |want: fn(&Got) -> bool| during.iter().filter(|g| want(g)).count();
        let (recorded, unrecorded) = (
            count(|g| *g == Got::Recorded),
            count(|g| *g == Got::Unrecorded),
        );
        let other = count(|g| matches!(g, Got::Status(_)));
        let no_answer = count(|g| *g == Got::NoAnswer);
        let recovered = u64::from(spooled.recorded + spooled.duplicates)
            + replayed.recorded
            + replayed.duplicates;
        let verification = DynamoLocal::verification_store(&endpoint, &table);
        let counters =
            tracking_counters(&verification, &transport.0, &plan, &report, recovered, true).await;
        let extra = format!(
            "\n  outage: {:.1} s (stopped, restarted on the same port); requests sent during it \
             {}: 200 recorded {recorded}, 200 unrecorded {unrecorded}, other statuses {other}, no \
             answer {no_answer}\n  after recovery: {}; last-resort lines {} ({} recorded, {} \
             already recorded); records after recovery {}\n  {counters}",
            (restarted - stopped).as_secs_f64(),
            during.len(),
            drained(&spooled, took),
            lines.len(),
            replayed.recorded,
            replayed.duplicates,
            u64::from(spooled.recorded) + replayed.recorded,
        );
        check(
            "outage: DynamoDB Local stopped and restarted mid-load, the spool on moto",
            &endpoint,
            &table,
            &plan,
            &report,
            &extra,
        )
        .await;
        assert_eq!(
            report.unavailable, 0,
            "no message is answered 503: the reply does not wait on the store"
        );
        assert_eq!(
            other + no_answer,
            0,
            "every message during the outage got a 200"
        );
        assert!(unrecorded > 0, "the outage produced unrecorded answers");
        assert!(
            spooled.recorded > 0,
            "the consumer recorded spooled exchanges"
        );
    });
}

/// Throttling errors and dropped connections (before the call reaches DynamoDB Local, and after
/// it was carried out) injected into 14% of the store's calls: the SDK's retries absorb most,
/// and a message whose record fails past them is answered 200 `"recorded": false` and spooled.
/// The consumer, through the same faults, records the spool; nothing is lost or doubled. Then
/// every conversation is ended (twice) through the same faults: each ends once (an end that
/// fails is answered 503 and retried) and is counted once.
fn throttling_and_dropped_connections_between_handler_and_store(
    server: &DynamoLocal,
    moto: &Moto,
    runtime: &Runtime,
) {
    let plan = fault_plan("throttled");
    runtime.block_on(async {
        let table = server.fresh_store().await.table().to_owned();
        let proxy = FaultProxy::start(&server.endpoint(), MESSAGE_FAULTS, 7)
            .await
            .expect("the fault proxy starts");
        let queues = SpoolQueues::create(&moto.endpoint(), "faults", 1, 100).await;
        let log = memory_log();
        let transport = Arc::new(Handlers(app(
            store_at(&proxy.endpoint(), &table),
            Some(queues.spool()),
            &log,
        )));
        let report = load::run(&plan, transport.clone(), Arc::new(AtomicU64::new(0))).await;
        // Before the ends: a spooled exchange of a conversation that has ended is refused.
        let (spooled, took) = drain(&queues, store_at(&proxy.endpoint(), &table)).await;
        let lines = lines_of(&log);
        let replayed = replay_text(
            &store_at(&proxy.endpoint(), &table),
            "last-resort",
            &lines.join("\n"),
        )
        .await;
        let ends = end_every_conversation(&plan, store_at(&proxy.endpoint(), &table)).await;
        let injected = proxy.injected();
        drop(proxy);
        let recovered = u64::from(spooled.recorded + spooled.duplicates)
            + replayed.recorded
            + replayed.duplicates;
        let verification = DynamoLocal::verification_store(&server.endpoint(), &table);
        // Not exact: a counter's add can be carried out and its answer dropped, then retried.
        let counters = tracking_counters(
            &verification,
            &transport.0,
            &plan,
            &report,
            recovered,
            false,
        )
        .await;
        check(
            "faults: throttling and dropped connections between the functions and DynamoDB",
            &server.endpoint(),
            &table,
            &plan,
            &report,
            &format!(
                "\n  {}; last-resort lines {} ({} recorded, {} already recorded)\n  {counters}\n  \
                 {ends}\n  proxy (messages, consumer and ends): {injected}",
                drained(&spooled, took),
                lines.len(),
                replayed.recorded,
                replayed.duplicates
            ),
        )
        .await;
        assert_eq!(
            report.unavailable, 0,
            "no message is answered 503: a record that fails past the retries is spooled"
        );
        // Each conversation ended once, after its last turn, and counted once.
        let direct = DynamoLocal::verification_store(&server.endpoint(), &table);
        let tenant = TenantId::parse(&plan.tenant).unwrap();
        assert_eq!(
            direct.ended_count(&tenant).await.unwrap(),
            plan.conversations as u64
        );
        let outcomes = direct.outcomes_since(&tenant, None, 100_000).await.unwrap();
        assert_eq!(outcomes.len(), plan.conversations);
        for c in 0..plan.conversations {
            let conversation = ConversationId::parse(&plan.conversation(c)).unwrap();
            match direct.conversation(&tenant, &conversation).await.unwrap() {
                ConversationState::Ended(record) => {
                    assert_eq!(record.turns as usize, plan.messages_per_conversation)
                }
                state => panic!("{conversation} did not end: {state:?}"),
            }
        }
        assert!(ends.unexpected.is_empty(), "{:?}", ends.unexpected);
        assert_eq!(ends.first_answers.len(), plan.conversations);
        assert_eq!(
            ends.repeats_differing, 0,
            "a repeated end gets the first answer"
        );
        assert!(
            injected.throttled > 0
                && injected.capacity_exceeded > 0
                && injected.dropped_before > 0
                && injected.dropped_after > 0,
            "every kind of fault was injected: {injected:?}"
        );
    });
}

/// What end_conversation's clients saw.
#[derive(Debug, Default)]
struct Ends {
    sent: u64,
    unavailable: u64,
    first_answers: Vec<(usize, Value)>,
    repeats_differing: u64,
    unexpected: Vec<String>,
}

impl std::fmt::Display for Ends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ends: {} conversations ended with {} requests (503 {}, retried with the same body), \
             each ended again: {} answered differently",
            self.first_answers.len(),
            self.sent,
            self.unavailable,
            self.repeats_differing
        )
    }
}

/// Ends every conversation of the plan through end_conversation's handler, 16 at a time,
/// retrying 503s, then ends each again: the repeat must get the first answer.
async fn end_every_conversation<S: Store + 'static>(plan: &Plan, store: S) -> Ends {
    let app = Arc::new(EndApp {
        store,
        models: ModelCache::new(Duration::from_secs(30)),
        tenants: TenantSource {
            claim: "tenant_id".into(),
            local: false,
        },
        patterns: pattern_names(DEFAULT_CATALOG).expect("the catalog's pattern names"),
        feedback_every: 0,
        trigger: None,
        text_storage: Default::default(),
    });
    let mut ends = Ends::default();
    for round in 0..2 {
        for chunk in (0..plan.conversations).collect::<Vec<_>>().chunks(16) {
            let mut pending = Vec::new();
            for &c in chunk {
                let (app, plan) = (app.clone(), plan.clone());
                pending.push(tokio::spawn(async move {
                    let path = format!("/conversations/{}/end", plan.conversation(c));
                    let outcome = ["won", "lost", "no_decision"][c % 3];
                    let body = json!({"outcome": outcome, "value": c}).to_string();
                    let (mut sent, mut unavailable) = (0, 0);
                    loop {
                        sent += 1;
                        let event = request(
                            Flavor::HttpApi,
                            "POST",
                            &path,
                            &body,
                            Some(&plan.tenant),
                            &[],
                        );
                        let response = end_handle(&app, event).await;
                        let status = response.status().as_u16();
                        let answer: Value = match response.body() {
                            lambda_http::Body::Text(text) => {
                                serde_json::from_str(text).unwrap_or(Value::Null)
                            }
                            _ => Value::Null,
                        };
                        match status {
                            200 => return (c, sent, unavailable, Ok(answer)),
                            503 if sent < 200 => {
                                unavailable += 1;
                                tokio::time::sleep(plan.retry_after_cap).await;
                            }
                            _ => return (c, sent, unavailable, Err(format!("{status} {answer}"))),
                        }
                    }
                }));
            }
            for task in pending {
                let (c, sent, unavailable, answer) = task.await.expect("an end finished");
                ends.sent += sent;
                ends.unavailable += unavailable;
                match answer {
                    Ok(answer) if round == 0 => ends.first_answers.push((c, answer)),
                    Ok(answer) => {
                        let first = ends.first_answers.iter().find(|(i, _)| *i == c);
                        if first.map(|(_, a)| a) != Some(&answer) {
                            ends.repeats_differing += 1;
                        }
                    }
                    Err(e) => ends
                        .unexpected
                        .push(format!("{}: {e}", plan.conversation(c))),
                }
            }
        }
    }
    ends
}

/// DynamoDB that accepts calls and never answers (the proxy holds every call): 50 messages
/// over 10 conversations from 5 clients are each answered 200 `"recorded": false` within the
/// record budget, well inside the function's 10 s timeout, and spooled; once the store answers
/// again, the consumer records each exactly once, each conversation's in sending order.
fn a_store_that_hangs_gets_unrecorded_answers_within_the_record_budget(
    server: &DynamoLocal,
    moto: &Moto,
    runtime: &Runtime,
) {
    let plan = Plan {
        tenant: "hang".to_owned(),
        prefix: "c".to_owned(),
        conversations: 10,
        messages_per_conversation: 5,
        clients: 5,
        repeat_every: 0,
        retry_after_cap: Duration::from_millis(100),
    };
    runtime.block_on(async {
        let table = server.fresh_store().await.table().to_owned();
        let hanging = FaultRates {
            stall: 1.0,
            ..FaultRates::default()
        };
        let proxy = FaultProxy::start(&server.endpoint(), hanging, 3)
            .await
            .expect("the fault proxy starts");
        let queues = SpoolQueues::create(&moto.endpoint(), "hang", 2, 100).await;
        let log = memory_log();
        let transport = Arc::new(Handlers(app(
            store_at(&proxy.endpoint(), &table),
            Some(queues.spool()),
            &log,
        )));
        let report = load::run(&plan, transport.clone(), Arc::new(AtomicU64::new(0))).await;
        let held = proxy.injected();
        let mut took = report.unrecorded_latency.clone();
        took.sort();
        let (p50, p99, slowest) = (
            load::quantile(&took, 0.5),
            load::quantile(&took, 0.99),
            load::quantile(&took, 1.0),
        );
        // The store answers again: the consumer records the spool through the same proxy.
        proxy.set_rates(FaultRates::default());
        let (spooled, drained_in) = drain(&queues, store_at(&proxy.endpoint(), &table)).await;
        let lines = lines_of(&log);
        let verification = DynamoLocal::verification_store(&server.endpoint(), &table);
        let counters = tracking_counters(
            &verification,
            &transport.0,
            &plan,
            &report,
            u64::from(spooled.recorded + spooled.duplicates),
            true,
        )
        .await;
        check(
            "hang: a store that never answers",
            &server.endpoint(),
            &table,
            &plan,
            &report,
            &format!(
                "\n  answers while every store call was held: {} of {}, all 200 unrecorded: \
                 p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (record budget {} ms, function \
                 timeout 10 s); proxy: {held}\n  {}; last-resort lines {}\n  {counters}",
                report.answered_unrecorded,
                plan.messages(),
                p50.as_secs_f64() * 1000.0,
                p99.as_secs_f64() * 1000.0,
                slowest.as_secs_f64() * 1000.0,
                salesloop::edge::settings::DEFAULT_RECORD_BUDGET_MS,
                drained(&spooled, drained_in),
                lines.len(),
            ),
        )
        .await;
        assert_eq!(
            (
                report.answered_unrecorded,
                report.answered_recorded,
                report.unavailable
            ),
            (plan.messages() as u64, 0, 0),
            "every message answered 200 unrecorded, none recorded, none 503"
        );
        assert!(
            lines.is_empty(),
            "every unrecorded exchange was spooled: {lines:?}"
        );
        assert_eq!(spooled.recorded as usize, plan.messages(), "{spooled:?}");
        assert!(
            slowest < Duration::from_secs(9),
            "each answer came inside the function's 10 s timeout (slowest {slowest:?})"
        );
    });
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Starts `message_server` (process_message's handler over HTTP) on `port` and waits until it
/// accepts connections. It has no spool (`SPOOL_QUEUE_URL` unset): an exchange it cannot
/// record is written to its standard output as a last-resort line, which goes to `stdout`.
fn start_function(port: u16, endpoint: &str, table: &str, stdout: &std::fs::File) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_message_server"));
    command
        .arg(port.to_string())
        .env_clear()
        .env("TABLE_NAME", table)
        .env("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("SALESLOOP_LOCAL", "1")
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().expect("the log file"));
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command.spawn().expect("message_server starts");
    let started = Instant::now();
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    while std::net::TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("message_server exited with {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "message_server did not listen within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// The function as a real process, killed with SIGKILL three times while 16 clients send
/// messages over HTTP, and started again: the clients retry what got no answer, with the same
/// message_id, and nothing is lost, doubled or half-written. The store itself is fine, so
/// every exchange should be recorded directly; one that took longer than the record budget
/// anyway (a process starting on busy cores) was answered `"recorded": false` and written to
/// the process's standard output, kept in a file across the restarts and replayed with the
/// replay command's code before the check.
fn a_function_process_killed_mid_request(server: &DynamoLocal, runtime: &Runtime) {
    let plan = fault_plan("killed");
    let port = free_port();
    let folder = tempfile::tempdir().expect("a temporary folder");
    let stdout_path = folder.path().join("message_server.out");
    let stdout = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&stdout_path)
        .expect("the function's output file");
    runtime.block_on(async {
        let table = server.fresh_store().await.table().to_owned();
        let mut function = start_function(port, &server.endpoint(), &table, &stdout);
        let transport = Arc::new(Http::new(format!("http://127.0.0.1:{port}")));
        let progress = Arc::new(AtomicU64::new(0));
        let running = tokio::spawn({
            let (plan, progress) = (plan.clone(), progress.clone());
            async move { load::run(&plan, transport, progress).await }
        });
        let mut kills = Vec::new();
        for share in [5, 10, 15] {
            wait_for(&progress, plan.messages() * share / 20).await;
            let acked = progress.load(Ordering::Relaxed);
            function.kill().expect("SIGKILL");
            let _ = function.wait();
            tokio::time::sleep(Duration::from_millis(200)).await;
            function = start_function(port, &server.endpoint(), &table, &stdout);
            kills.push(acked);
        }
        let report = running.await.expect("the load finished");
        let _ = function.kill();
        let _ = function.wait();
        let output = std::fs::read_to_string(&stdout_path).expect("the function's output");
        let lines = output.lines().filter(|l| l.contains(LOG_MARKER)).count();
        let replayed = replay_text(
            &store_at(&server.endpoint(), &table),
            "message_server.out",
            &output,
        )
        .await;
        check(
            "killed: the function process killed (SIGKILL) mid-request and restarted",
            &server.endpoint(),
            &table,
            &plan,
            &report,
            &format!(
                "\n  kills: {} (after {kills:?} acknowledged messages); requests cut without an \
                 answer {}, refused while the function was down {}, all retried\n  answered \
                 unrecorded (over the record budget, no spool) {}; last-resort lines in the \
                 function's output {lines}, replayed: {} recorded, {} already recorded",
                kills.len(),
                report.cut,
                report.refused,
                report.answered_unrecorded,
                replayed.recorded,
                replayed.duplicates
            ),
        )
        .await;
        assert!(report.cut > 0, "the kills cut requests in flight");
        // A line is written before its answer is sent: a process killed in between leaves a
        // line without an answer, never an unrecorded answer without a line.
        assert!(
            lines as u64 >= report.answered_unrecorded,
            "each unrecorded answer left its line ({lines} lines, {} unrecorded answers)",
            report.answered_unrecorded
        );
    });
}

/// Feedback runs whose store calls meet 60% of faults (throttling, connections dropped
/// before and after the call): runs fail part-way, and the next run finishes the work; each
/// outcome is learned exactly once.
fn feedback_runs_failing_on_injected_faults(server: &DynamoLocal, runtime: &Runtime) {
    runtime.block_on(async {
        let direct = server.fresh_store().await;
        let tenant = TenantId::parse("feedback").unwrap();
        let total = 120 * scale() as u64;
        let past = Millis::now().0 - 3_600_000;
        for i in 0..total {
            let conversation = ConversationId::parse(&format!("f-{i:04}")).unwrap();
            send(&direct, &tenant, &conversation, "m-1", "too expensive")
                .await
                .unwrap();
            let outcome = if i % 3 == 0 {
                Outcome::Won
            } else {
                Outcome::Lost
            };
            direct
                .end_conversation(&tenant, &conversation, end_request(outcome, past + i))
                .await
                .unwrap();
        }
        let proxy = FaultProxy::start(&server.endpoint(), FEEDBACK_FAULTS, 11)
            .await
            .expect("the fault proxy starts");
        let ttl = 60_000;
        let mut now = Millis::now().0;
        let (mut runs, mut failed, mut busy, mut superseded) = (0, 0, 0, 0);
        loop {
            runs += 1;
            // Each run as a fresh invocation, with its own client: one client's retry quota
            // (the SDK's standard retry token bucket) drains under 60% faults after a few
            // hundred calls, and from then on no call is retried at all.
            let feedback_app = FeedbackApp::new(
                store_at(&proxy.endpoint(), direct.table()),
                Settings {
                    batch_size: 10,
                    lease_ttl_ms: ttl,
                    settle_ms: 0,
                    ..Settings::default()
                },
            );
            let feedback = feedback_app.feedback();
            // A bound against a loop that never ends, not a figure: with 60% of calls faulted
            // most runs fail part-way, and the work grows with the scale.
            let bound = 200 * scale();
            assert!(runs <= bound, "{bound} runs did not finish the work");
            let clock_now = now;
            let result = feedback
                .run_tenant(
                    &tenant,
                    &format!("run-{runs}"),
                    &move || Millis(clock_now),
                    &mut |_| ControlFlow::Continue(()),
                )
                .await;
            // A failed run may not have released its lease: the next one starts after it expired.
            now += ttl + 1;
            match result {
                Err(_) => failed += 1,
                Ok(TenantRun::Busy) => busy += 1,
                Ok(TenantRun::Superseded { .. }) => superseded += 1,
                Ok(TenantRun::NothingNew { .. }) => break,
                Ok(_) => {}
            }
        }
        let injected = proxy.injected();
        let verification = DynamoLocal::verification_store(&server.endpoint(), direct.table());
        let current = verification.current_model(&tenant).await.unwrap().unwrap();
        let history = verification
            .model_history(&tenant, None, 1_000)
            .await
            .unwrap();
        println!(
            "\nchaos feedback: runs failing on injected faults, finished by the next\n  \
             {total} outcomes; {runs} runs: {failed} failed on a store error, {busy} found the \
             lease held, {superseded} superseded; {} versions published, {} outcomes learned, {} \
             conversations counted\n  proxy: {injected}\n",
            history.len(),
            current.outcomes_learned,
            current.state.overall.conversations
        );
        assert_eq!(current.outcomes_learned, total, "each outcome learned once");
        assert_eq!(current.state.overall.conversations, total);
        let versions: Vec<u64> = history.iter().rev().map(|v| v.version).collect();
        assert_eq!(versions, (1..=current.version).collect::<Vec<_>>());
        assert!(failed > 0, "the faults made runs fail");
    });
}

/// 10,000 messages (times the scale) over 500 conversations from 16 concurrent clients through
/// process_message's handler against DynamoDB Local, without injected faults: every one
/// answered 200, stored once, in order.
fn ten_thousand_messages_over_500_conversations(server: &DynamoLocal, runtime: &Runtime) {
    let plan = Plan {
        tenant: "load".to_owned(),
        prefix: "c".to_owned(),
        conversations: 500 * scale(),
        messages_per_conversation: 20,
        clients: 16,
        repeat_every: 50,
        retry_after_cap: Duration::from_millis(100),
    };
    runtime.block_on(async {
        let table = server.fresh_store().await.table().to_owned();
        // No spool: an exchange not recorded within the record budget is logged, and replayed
        // here before the check. Without a fault there should be none, but a store on two busy
        // cores can take longer than the budget now and then: counted and printed, not failed.
        let log = memory_log();
        let transport = Arc::new(Handlers(app(
            store_at(&server.endpoint(), &table),
            None,
            &log,
        )));
        let report = load::run(&plan, transport, Arc::new(AtomicU64::new(0))).await;
        let lines = lines_of(&log);
        let replayed = replay_text(
            &store_at(&server.endpoint(), &table),
            "last-resort",
            &lines.join("\n"),
        )
        .await;
        check(
            "load: messages through process_message against DynamoDB Local",
            &server.endpoint(),
            &table,
            &plan,
            &report,
            &format!(
                "\n  last-resort lines {} ({} recorded, {} already recorded)",
                lines.len(),
                replayed.recorded,
                replayed.duplicates
            ),
        )
        .await;
        assert_eq!(report.unavailable, 0, "no 503 without an injected fault");
        assert_eq!(report.refused + report.cut, 0);
    });
}

fn main() {
    let mut args = Arguments::from_args();
    // One scenario at a time: they load the same two cores, and their figures should be their own.
    args.test_threads = Some(1);
    let (server, runtime) = salesloop_tests::server_and_runtime();
    // One moto server for the whole run, each scenario on queues of its own.
    let moto = match Moto::start() {
        Ok(moto) => Arc::new(moto),
        Err(why) => {
            eprintln!("error: moto's server could not start, so these tests cannot run: {why}");
            drop(server);
            std::process::exit(1);
        }
    };
    let mut trials = Vec::new();
    {
        let (rt, moto) = (runtime.clone(), moto.clone());
        trials.push(Trial::test(
            "outage::dynamodb_stopped_and_restarted_mid_load",
            move || {
                dynamodb_stopped_and_restarted_mid_load(&moto, &rt);
                Ok(())
            },
        ));
    }
    macro_rules! with_spool {
        ($name:literal, $case:ident) => {{
            let (rt, server, moto) = (runtime.clone(), server.clone(), moto.clone());
            trials.push(Trial::test($name, move || {
                $case(&server, &moto, &rt);
                Ok(())
            }));
        }};
    }
    macro_rules! on_server {
        ($name:literal, $case:ident) => {{
            let (rt, server) = (runtime.clone(), server.clone());
            trials.push(Trial::test($name, move || {
                $case(&server, &rt);
                Ok(())
            }));
        }};
    }
    with_spool!(
        "faults::throttling_and_dropped_connections_between_handler_and_store",
        throttling_and_dropped_connections_between_handler_and_store
    );
    with_spool!(
        "faults::a_store_that_hangs_gets_unrecorded_answers_within_the_record_budget",
        a_store_that_hangs_gets_unrecorded_answers_within_the_record_budget
    );
    on_server!(
        "process::a_function_process_killed_mid_request",
        a_function_process_killed_mid_request
    );
    on_server!(
        "feedback::feedback_runs_failing_on_injected_faults",
        feedback_runs_failing_on_injected_faults
    );
    on_server!(
        "load::ten_thousand_messages_over_500_conversations",
        ten_thousand_messages_over_500_conversations
    );
    let conclusion = libtest_mimic::run(&args, trials);
    drop(server);
    drop(moto);
    conclusion.exit();
}
