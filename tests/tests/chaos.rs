//! The fault-injection and load suite, against DynamoDB Local: the store stopped and restarted
//! under load, throttling and dropped connections injected between the handler and the store,
//! the function process killed mid-request, feedback runs failing part-way, and a load of
//! 10,000 messages. After each, the store is read back (through a client of its own, with
//! patient timeouts, never the functions' request-path budget): every acknowledged message
//! stored exactly once, turns without gaps, every exchange whole, its events those of the
//! answer the client got, the events counted from the table's raw items exactly those the
//! acknowledged answers imply, repeated messages answered alike. Each scenario prints its
//! counts and latencies.
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
use process_message::handler::App;
use salesloop::domain::engine::Engine;
use salesloop::domain::patterns::DEFAULT_CATALOG;
use salesloop::edge::http::TenantSource;
use salesloop::service::{ConfigCache, ModelCache};
use salesloop::store::{DynamoStore, DynamoStoreConfig};
use salesloop::{ConversationId, ConversationState, Millis, Outcome, Store, TenantId};
use salesloop_tests::contract::{end_request, send};
use salesloop_tests::dynamo_local::DynamoLocal;
use salesloop_tests::events::{Flavor, request};
use salesloop_tests::fault_proxy::{FaultProxy, FaultRates};
use salesloop_tests::flows::Flows;
use salesloop_tests::load::{self, Handlers, Http, LoadReport, Plan, Transport, Verdict};
use serde_json::{Value, json};
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

fn app<S: Store>(store: S) -> App<S> {
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
        record_budget: std::time::Duration::from_millis(salesloop::edge::settings::DEFAULT_RECORD_BUDGET_MS),
        spool: None,
        last_resort: Default::default(),
    }
}

/// A store on `table` through `endpoint`, with the functions' retry settings: what the
/// functions under test use. The checks read through [`DynamoLocal::verification_store`].
fn store_at(endpoint: &str, table: &str) -> DynamoStore {
    DynamoStore::new(
        DynamoLocal::production_client(endpoint),
        DynamoStoreConfig {
            table: table.to_owned(),
            retention: None,
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
/// clients send messages: calls during the outage get a prompt 503 with Retry-After, the
/// clients retry with the same message_id, and nothing is lost or doubled.
fn dynamodb_stopped_and_restarted_mid_load(runtime: &Runtime) {
    let mut server = DynamoLocal::start_persistent()
        .unwrap_or_else(|e| panic!("DynamoDB Local (persistent) could not start: {e}"));
    let endpoint = server.endpoint();
    let plan = fault_plan("outage");
    runtime.block_on(async {
        let table = server.fresh_store().await.table().to_owned();
        let transport = Arc::new(Handlers(app(store_at(&endpoint, &table))));
        let progress = Arc::new(AtomicU64::new(0));
        let running = tokio::spawn({
            let (plan, progress) = (plan.clone(), progress.clone());
            async move { load::run(&plan, transport, progress).await }
        });
        wait_for(&progress, plan.messages() / 3).await;
        let before = progress.load(Ordering::Relaxed);
        let stopped = Instant::now();
        // This thread, not a runtime worker, owns the server: the clients keep running.
        server.stop();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let during = progress.load(Ordering::Relaxed) - before;
        server
            .restart()
            .unwrap_or_else(|e| panic!("DynamoDB Local did not restart: {e}"));
        let outage = stopped.elapsed();
        let report = running.await.expect("the load finished");
        let extra = format!(
            "\n  outage: {:.1} s (stopped, restarted on the same port), {during} messages \
             acknowledged during it",
            outage.as_secs_f64()
        );
        check(
            "outage: DynamoDB Local stopped and restarted mid-load",
            &endpoint,
            &table,
            &plan,
            &report,
            &extra,
        )
        .await;
        assert!(report.unavailable > 0, "the outage produced 503s");
        assert_eq!(report.missing_retry_after, 0, "every 503 has Retry-After");
        let slowest = report
            .unavailable_latency
            .iter()
            .max()
            .copied()
            .unwrap_or_default();
        assert!(
            slowest < Duration::from_secs(4),
            "the 503s came promptly (slowest {slowest:?})"
        );
    });
}

/// Throttling errors and dropped connections (before the call reaches DynamoDB Local, and after
/// it was carried out) injected into 14% of the store's calls: the SDK's retries absorb most,
/// the clients retry the 503s of the rest, and nothing is lost or doubled. Then every
/// conversation is ended (twice) through the same faults: each ends once and is counted once.
fn throttling_and_dropped_connections_between_handler_and_store(
    server: &DynamoLocal,
    runtime: &Runtime,
) {
    let plan = fault_plan("throttled");
    runtime.block_on(async {
        let table = server.fresh_store().await.table().to_owned();
        let proxy = FaultProxy::start(&server.endpoint(), MESSAGE_FAULTS, 7)
            .await
            .expect("the fault proxy starts");
        let transport = Arc::new(Handlers(app(store_at(&proxy.endpoint(), &table))));
        let report = load::run(&plan, transport, Arc::new(AtomicU64::new(0))).await;
        let ends = end_every_conversation(&plan, store_at(&proxy.endpoint(), &table)).await;
        let injected = proxy.injected();
        drop(proxy);
        check(
            "faults: throttling and dropped connections between the functions and DynamoDB",
            &server.endpoint(),
            &table,
            &plan,
            &report,
            &format!("\n  {ends}\n  proxy: {injected}"),
        )
        .await;
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

/// DynamoDB that accepts calls and never answers: the message gets its 503 with Retry-After
/// inside the function's 10 s timeout (the SDK's attempt and call timeouts), not a Lambda
/// timeout; once the store answers again, the retry is stored once.
fn a_store_that_hangs_is_a_503_within_the_function_timeout(
    server: &DynamoLocal,
    runtime: &Runtime,
) {
    runtime.block_on(async {
        let table = server.fresh_store().await.table().to_owned();
        let hanging = FaultRates {
            stall: 1.0,
            ..FaultRates::default()
        };
        let proxy = FaultProxy::start(&server.endpoint(), hanging, 3)
            .await
            .expect("the fault proxy starts");
        let transport = Handlers(app(store_at(&proxy.endpoint(), &table)));
        let body = json!({"message_id": "m-1", "text": "too expensive for us"}).to_string();
        let started = Instant::now();
        let answer = transport
            .post_message("hang", "c-1", body.clone())
            .await
            .expect("an answer");
        let took = started.elapsed();
        println!(
            "\nchaos hang: a store that never answers\n  503 after {:.1} s (function timeout 10 s); \
             proxy: {}\n",
            took.as_secs_f64(),
            proxy.injected()
        );
        assert_eq!(answer.status, 503, "{:?}", answer.body);
        assert_eq!(answer.retry_after.as_deref(), Some("1"));
        assert!(took < Duration::from_secs(9), "took {took:?}");
        proxy.set_rates(FaultRates::default());
        let retried = transport
            .post_message("hang", "c-1", body)
            .await
            .expect("an answer");
        assert_eq!(retried.status, 200, "{:?}", retried.body);
        let direct = DynamoLocal::verification_store(&server.endpoint(), &table);
        let exchanges = direct
            .exchanges(
                &TenantId::parse("hang").unwrap(),
                &ConversationId::parse("c-1").unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(exchanges.len(), 1);
    });
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Starts `message_server` (process_message's handler over HTTP) on `port` and waits until it
/// accepts connections.
fn start_function(port: u16, endpoint: &str, table: &str) -> Child {
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
        .stdout(Stdio::null());
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
/// message_id, and nothing is lost, doubled or half-written.
fn a_function_process_killed_mid_request(server: &DynamoLocal, runtime: &Runtime) {
    let plan = fault_plan("killed");
    let port = free_port();
    runtime.block_on(async {
        let table = server.fresh_store().await.table().to_owned();
        let mut function = start_function(port, &server.endpoint(), &table);
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
            function = start_function(port, &server.endpoint(), &table);
            kills.push(acked);
        }
        let report = running.await.expect("the load finished");
        let _ = function.kill();
        let _ = function.wait();
        check(
            "killed: the function process killed (SIGKILL) mid-request and restarted",
            &server.endpoint(),
            &table,
            &plan,
            &report,
            &format!(
                "\n  kills: {} (after {kills:?} acknowledged messages); requests cut without an \
                 answer {}, refused while the function was down {}, all retried",
                kills.len(),
                report.cut,
                report.refused
            ),
        )
        .await;
        assert!(report.cut > 0, "the kills cut requests in flight");
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
        let mut now = Millis::now().0;
        let (mut runs, mut failed, mut busy, mut superseded) = (0, 0, 0, 0);
        loop {
            runs += 1;
            assert!(runs <= 200, "200 runs did not finish the work");
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
        let transport = Arc::new(Handlers(app(store_at(&server.endpoint(), &table))));
        let report = load::run(&plan, transport, Arc::new(AtomicU64::new(0))).await;
        check(
            "load: messages through process_message against DynamoDB Local",
            &server.endpoint(),
            &table,
            &plan,
            &report,
            "",
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
    let mut trials = Vec::new();
    {
        let rt = runtime.clone();
        trials.push(Trial::test(
            "outage::dynamodb_stopped_and_restarted_mid_load",
            move || {
                dynamodb_stopped_and_restarted_mid_load(&rt);
                Ok(())
            },
        ));
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
    on_server!(
        "faults::throttling_and_dropped_connections_between_handler_and_store",
        throttling_and_dropped_connections_between_handler_and_store
    );
    on_server!(
        "faults::a_store_that_hangs_is_a_503_within_the_function_timeout",
        a_store_that_hangs_is_a_503_within_the_function_timeout
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
    conclusion.exit();
}
