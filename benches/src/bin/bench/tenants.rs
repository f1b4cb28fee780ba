//! Many tenants through one instance (issue 17, item 2): one release process_message bootstrap
//! under the Runtime API harness, sent messages round-robin across N tenants, each with a
//! published model version (learned from real outcomes and labels, detector layer included)
//! and a configuration of its own, so that its per-tenant caches fill, evict and read again.
//! Its peak RSS (VmHWM) is measured after the first 1,000 tenants and after every pass; then
//! read_api, one `GET /report` per tenant.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use salesloop::domain::config::TenantConfig;
use salesloop::domain::labels::LabelRequest;
use salesloop::domain::learning::ModelVersion;
use salesloop::domain::model::ServedModel;
use salesloop::service::lru::Resident;
use salesloop::service::models::DEFAULT_CACHE_BYTES;
use salesloop::store::DynamoStore;
use salesloop::{ConversationId, Millis, Outcome, Store, TenantId, Write as Written};
use salesloop_benches::root;
use salesloop_benches::runtime_api::{Answer, Function, Launch};
use salesloop_tests::contract::end_request;
use salesloop_tests::dynamo_local::DynamoLocal;
use salesloop_tests::flows::Flows;
use serde_json::{Value, json};

use crate::{Invocations, Scale, Section, fail, ms, percentile};

/// The bench process's heap, counted while `heap_per_copy` measures: what a cached tenant's
/// documents hold once parsed, measured on copies made here. The system allocator serves every
/// call, as in the deployed functions; outside a measurement the only extra cost is one
/// relaxed load, so that the per-message timings of this process (`work`) do not pay an atomic
/// addition on every allocation and free that the functions never make.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

fn count(bytes: usize, sign: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(sign * bytes as isize, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size, 1);
        count(layout.size(), -1);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The heap bytes (as requested of the allocator, without its own overhead) that one copy of
/// what `make` builds keeps, over 64 copies kept at once.
fn heap_per_copy<T>(make: impl Fn() -> T) -> usize {
    const COPIES: usize = 64;
    COUNTING.store(true, Ordering::Relaxed);
    let before = LIVE.load(Ordering::Relaxed);
    let kept: Vec<T> = (0..COPIES).map(|_| make()).collect();
    let after = LIVE.load(Ordering::Relaxed);
    COUNTING.store(false, Ordering::Relaxed);
    drop(kept);
    usize::try_from(after - before).unwrap_or(0) / COPIES
}

/// Tenant `i`'s id.
fn tenant_name(i: usize) -> String {
    format!("tenant-{i:05}")
}

/// The labelled sales utterances (tests/fixtures/patterns): text and the patterns it holds.
fn labelled() -> Vec<(String, Vec<String>)> {
    let path = root().join("tests/fixtures/patterns/labelled.jsonl");
    let raw = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    raw.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect("a JSON line");
            let text = value["text"].as_str().expect("a text").to_owned();
            let patterns = value["patterns"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (text, patterns)
        })
        .collect()
}

/// An API Gateway HTTP API event (payload 2.0) of tenant `tenant` (its JWT claim), `method
/// path` with `body`.
fn event(tenant: &str, method: &str, path: &str, body: Option<&str>) -> String {
    let raw = salesloop_benches::http_api_event(path, body.unwrap_or(""));
    let mut event: Value = serde_json::from_str(&raw).expect("an event");
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["authorizer"]["jwt"]["claims"] =
        json!({"sub": "user-1", "tenant_id": tenant});
    if body.is_none() {
        event["body"] = Value::Null;
        if let Some(headers) = event["headers"].as_object_mut() {
            headers.remove("content-type");
            headers.remove("content-length");
        }
    }
    event.to_string()
}

/// What one tenant has learned, as a real tenant's first feedback run publishes it: tenant
/// `template`'s conversations (one message of each labelled utterance, through process_message's
/// handler), their ends (about a third won), a label per pattern a message holds (correct) and
/// per pattern detected that it does not (incorrect), then one feedback run over them (the
/// shipped detector under the tenant's layer).
async fn learned_version(store: &DynamoStore, texts: &[(String, Vec<String>)]) -> ModelVersion {
    let template = TenantId::parse("template").expect("tenant");
    let app = salesloop_benches::nostore::app_with(store.clone());
    for (i, (text, patterns)) in texts.iter().enumerate() {
        let path = format!("/conversations/tpl-{i}/messages");
        let body = json!({"message_id": "m-1", "text": text}).to_string();
        let request = salesloop::edge::http::request_from_event(&event(
            "template",
            "POST",
            &path,
            Some(&body),
        ))
        .expect("an event");
        let response = process_message::handler::handle(&app, request).await;
        let status = response.status().as_u16();
        let answer: Value = match response.body() {
            lambda_http::Body::Text(t) => serde_json::from_str(t).unwrap_or_default(),
            lambda_http::Body::Binary(b) => serde_json::from_slice(b).unwrap_or_default(),
            _ => Value::Null,
        };
        if status != 200 {
            fail(format!("seeding the template tenant: {status} {answer}"));
        }
        let conversation = ConversationId::parse(&format!("tpl-{i}")).expect("id");
        let detected: Vec<String> = answer["patterns"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut labels: Vec<LabelRequest> = patterns
            .iter()
            .map(|p| LabelRequest {
                turn: 1,
                pattern: p.clone(),
                correct: true,
            })
            .collect();
        labels.extend(
            detected
                .iter()
                .filter(|d| !patterns.contains(d))
                .map(|d| LabelRequest {
                    turn: 1,
                    pattern: d.clone(),
                    correct: false,
                }),
        );
        if !labels.is_empty() {
            salesloop::service::record_labels(
                store,
                &template,
                &conversation,
                labels,
                &|_| true,
                salesloop::domain::privacy::TextStorage::Text,
                Millis::now(),
            )
            .await
            .unwrap_or_else(|e| fail(format!("seeding the template's labels: {e}")));
        }
        let outcome = if i % 3 == 0 {
            Outcome::Won
        } else {
            Outcome::Lost
        };
        store
            .end_conversation(
                &template,
                &conversation,
                end_request(outcome, Millis::now().0),
            )
            .await
            .unwrap_or_else(|e| fail(format!("seeding the template's ends: {e}")));
    }
    let feedback = feedback_loop::App::new(
        store.clone(),
        feedback_loop::run::Settings {
            settle_ms: 0,
            ..Default::default()
        },
    );
    let run = feedback
        .feedback()
        .run_tenant(&template, "bench", &Millis::now, &mut |_| {
            ControlFlow::Continue(())
        })
        .await
        .unwrap_or_else(|e| fail(format!("the template's feedback run: {e}")));
    match run.published() {
        [version] if version.model.detector.is_some() => version.clone(),
        other => fail(format!(
            "the template's feedback run published {} versions ({}), expected one with a \
             detector layer",
            other.len(),
            run.label()
        )),
    }
}

/// Tenants `0..n`, each given `model` as its version 1 and `config` as its configuration
/// version 1, by `workers` concurrent writers (two conditional transactions per tenant).
async fn seed(store: &DynamoStore, n: usize, model: &ModelVersion, config: &TenantConfig) {
    let workers = 16;
    let model = Arc::new(model.clone());
    let config = Arc::new(config.clone());
    let mut tasks = Vec::new();
    for w in 0..workers {
        let store = store.clone();
        let model = model.clone();
        let config = config.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(workers) {
                let tenant = TenantId::parse(&tenant_name(i)).expect("tenant");
                for attempt in 0.. {
                    let written = async {
                        Ok::<_, salesloop::StoreError>((
                            store.publish_model(&tenant, &model).await?,
                            store.publish_config(&tenant, &config).await?,
                        ))
                    }
                    .await;
                    match written {
                        Ok((Written::Done, Written::Done)) => break,
                        // A retried write that had landed the first time: the next attempt
                        // finds it there.
                        Ok(_) if attempt > 0 => break,
                        Ok(lost) => fail(format!("seeding {tenant}: {lost:?}")),
                        Err(e) if attempt < 5 && e.is_transient() => {
                            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                        }
                        Err(e) => fail(format!("seeding {tenant}: {e}")),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("a seeder");
    }
}

/// The check of an API Gateway answer: status 200, and for a message, recorded.
fn check(answer: &Answer, message: bool) -> Result<(), String> {
    let body = String::from_utf8_lossy(&answer.body);
    if answer.error {
        return Err(format!("reported an error: {body}"));
    }
    let value: Value =
        serde_json::from_slice(&answer.body).map_err(|_| format!("not JSON: {body}"))?;
    if value["statusCode"].as_u64() != Some(200) {
        return Err(format!("status {}: {}", value["statusCode"], value["body"]));
    }
    if message {
        let inner: Value = value["body"]
            .as_str()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or_default();
        if inner["recorded"] != json!(true)
            || inner["model_version"] != json!(1)
            || inner["config_version"] != json!(1)
        {
            return Err(format!(
                "not recorded under the tenant's model and configuration versions 1: {}",
                value["body"]
            ));
        }
    }
    Ok(())
}

/// One run's figures.
struct Run {
    name: &'static str,
    tenants: usize,
    invocations: usize,
    /// VmHWM (KiB) after the first `checkpoint` tenants' invocations, after each pass.
    at_checkpoint: u64,
    after_pass: Vec<u64>,
    /// VmRSS (KiB) at the end.
    rss_end: u64,
    took: Vec<Duration>,
}

/// Starts `function` (a release bootstrap next to the bench binary) with Lambda's environment
/// and hands it `events(pass, tenant)` for every tenant, pass after pass.
#[allow(clippy::too_many_arguments)]
async fn drive(
    bin: &Path,
    name: &'static str,
    env: &[(String, String)],
    tenants: usize,
    passes: usize,
    checkpoint: usize,
    message: bool,
    events: impl Fn(usize, usize) -> String,
    counted: &mut Invocations,
) -> Run {
    let mut env = env.to_vec();
    env.push(("AWS_LAMBDA_FUNCTION_NAME".into(), name.into()));
    let mut function = Function::start(Launch {
        program: &bin.join(name),
        args: &[],
        dir: None,
        env,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    function
        .init()
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut run = Run {
        name,
        tenants,
        invocations: tenants * passes,
        at_checkpoint: 0,
        after_pass: Vec::new(),
        rss_end: 0,
        took: Vec::with_capacity(tenants * passes),
    };
    for pass in 0..passes {
        for t in 0..tenants {
            let answer = function
                .invoke(events(pass, t))
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            if counted.count(check(&answer, message)) {
                run.took.push(answer.took);
            }
            if pass == 0 && t + 1 == checkpoint {
                run.at_checkpoint = function.memory_kib().unwrap_or_default().0;
            }
        }
        run.after_pass
            .push(function.memory_kib().unwrap_or_default().0);
        eprintln!(
            "bench: {name}, pass {} of {passes} over {tenants} tenants: peak RSS {} KiB",
            pass + 1,
            run.after_pass[pass]
        );
    }
    run.rss_end = function.memory_kib().unwrap_or_default().1;
    function.stop().await;
    if counted.failed > 0 {
        fail(format!(
            "{}: {} failed (first: {}); its peak RSS would count them",
            counted.what,
            counted.failed,
            counted.first_failure.as_deref().unwrap_or_default()
        ));
    }
    run.took.sort();
    run
}

fn mb(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 / 1024.0)
}

pub async fn section(scale: &Scale, server: &DynamoLocal) -> Section {
    let bin: PathBuf = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .expect("the bench binary's folder");
    // BENCH_TENANTS=N: another number of tenants, to look closer (a report written with it
    // says so, in its figures' tenant counts).
    let n = std::env::var("BENCH_TENANTS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(scale.tenants);
    let passes = scale.tenant_passes;
    let checkpoint = scale.tenant_checkpoint.min(n);
    let store = server.fresh_store().await;
    let texts = labelled();

    let started = Instant::now();
    let model = learned_version(&store, &texts).await;
    let mut config = (*salesloop::service::builtin_config()).clone();
    config.version = 1;
    config.published_at = Millis::now();
    config.changes = vec!["bench: the built-in experiments and playbook, published".into()];
    let learned = started.elapsed();
    let started = Instant::now();
    seed(&store, n, &model, &config).await;
    let seeded = started.elapsed();
    eprintln!(
        "bench: {n} tenants seeded in {:.1} s (template learned in {:.1} s)",
        seeded.as_secs_f64(),
        learned.as_secs_f64()
    );

    // What the caches weigh each tenant at, and what its parsed detector layer holds beside.
    let served = ServedModel {
        version: model.version,
        model: model.model.clone(),
    };
    // As the caches weigh them (`Resident`).
    let served_bytes = served.resident_bytes();
    let config_bytes = config.resident_bytes();
    let layer = model.model.detector.as_ref().expect("a layer");
    let layer_file =
        salesloop::domain::detector::layer::base64_decode(&layer.weights).map_or(0, |b| b.len());
    let item_bytes = serde_json::to_vec(&model).map_or(0, |b| b.len());
    // What a cache entry holds in memory: the document as a read parses it (the model's
    // detector layer parsed too, as the first message that detects with it does), against what
    // the cache weighs it at.
    let served_json = serde_json::to_string(&served).expect("JSON");
    let served_heap = heap_per_copy(|| {
        let parsed: ServedModel = serde_json::from_str(&served_json).expect("a served model");
        let _ = parsed.model.detector.as_ref().and_then(|l| l.model());
        parsed
    });
    let served_heap_unparsed = heap_per_copy(|| {
        serde_json::from_str::<ServedModel>(&served_json).expect("a served model")
    });
    let config_json = serde_json::to_string(&config).expect("JSON");
    let config_heap =
        heap_per_copy(|| serde_json::from_str::<TenantConfig>(&config_json).expect("a config"));
    // CACHE_BUDGET_KB as the functions will read it: passed through from the bench's
    // environment when set there, else their default.
    let budget_kb = std::env::var("CACHE_BUDGET_KB")
        .ok()
        .filter(|v| !v.is_empty());
    let budget_bytes = budget_kb
        .as_deref()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(DEFAULT_CACHE_BYTES, |kb| kb * 1024);
    let current_share = budget_bytes - budget_bytes / 4;
    let full = |weighed: usize, heap: usize| {
        (current_share / weighed.max(1)) as f64 * heap as f64 / (1024.0 * 1024.0)
    };
    let models_full = full(served_bytes, served_heap);
    let configs_full = full(config_bytes, config_heap);
    eprintln!(
        "bench: a tenant weighed at {served_bytes} B (model) and {config_bytes} B (config), held \
         in {served_heap} B ({served_heap_unparsed} B unparsed layer) and {config_heap} B of \
         heap; full current parts of {} KiB: {models_full:.1} MB of models, {configs_full:.1} MB \
         of configurations; stored version {item_bytes} B, layer file {layer_file} B",
        current_share / 1024
    );
    let mut env = vec![
        ("SALESLOOP_WARM_UP".to_owned(), "1".to_owned()),
        ("TABLE_NAME".to_owned(), store.table().to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), server.endpoint()),
    ];
    if let Some(kb) = &budget_kb {
        env.push(("CACHE_BUDGET_KB".to_owned(), kb.clone()));
    }

    let mut messages = Invocations::new(format!(
        "many tenants: process_message, {n} tenants × {passes} passes"
    ));
    let texts = &texts;
    let message_run = drive(
        &bin,
        "process_message",
        &env,
        n,
        passes,
        checkpoint,
        true,
        |pass, t| {
            let (text, _) = &texts[(t + pass * 7) % texts.len()];
            let body = json!({"message_id": format!("m-{}", pass + 1), "text": text}).to_string();
            event(
                &tenant_name(t),
                "POST",
                &format!("/conversations/c-{t}/messages"),
                Some(&body),
            )
        },
        &mut messages,
    )
    .await;
    let mut reads = Invocations::new(format!("many tenants: read_api GET /report, {n} tenants"));
    let read_run = drive(
        &bin,
        "read_api",
        &env,
        n,
        1,
        checkpoint,
        false,
        |_, t| event(&tenant_name(t), "GET", "/report", None),
        &mut reads,
    )
    .await;

    let budget_shown = match &budget_kb {
        Some(kb) => format!("CACHE_BUDGET_KB={kb} (set for this run)"),
        None => format!(
            "CACHE_BUDGET_KB={} (the default)",
            DEFAULT_CACHE_BYTES / 1024
        ),
    };
    let mut markdown = String::from("## Memory across tenants\n\n");
    let _ = writeln!(
        markdown,
        "One instance, many tenants (issue 17, item 2). {n} tenants on the DynamoDB Local table, \
         each with what a real tenant has that the API functions cache: a published model \
         version 1 and a configuration version 1. The model version is the one a real first \
         feedback run published for a template tenant that was sent the {} labelled sales \
         utterances (one conversation each, through process_message's handler), ended about a \
         third of them won, and labelled each detection (a label per pattern a message holds, \
         correct, and per pattern detected that it does not, incorrect): posteriors, \
         calibration and the tenant's detector layer ({} labels, a {layer_file}-byte layer \
         file), {item_bytes} bytes of JSON as stored; each tenant gets a copy. The \
         configuration is the built-in one, published as the tenant's version 1. Seeding took \
         {:.1} s (the template's run {:.1} s). Then one release process_message bootstrap, \
         under the same Runtime API harness as the Memory section and with Lambda's \
         environment (128 MB, `TABLE_NAME`, {budget_shown}, `CACHE_SECONDS` at its default), \
         was sent one message per tenant, round-robin over the {n} tenants, {passes} passes \
         ({} invocations; pass p sends message m-p to the tenant's conversation c-i, so the \
         first pass starts {n} conversations and later ones continue them, each pinned to the \
         tenant's version 1). Each cache holds at most its budget, three quarters for the \
         current versions: {} KiB, which weighs a tenant's served model at {served_bytes} \
         bytes (its detector layer's text and parsed weights, the rest {} bytes per byte of its JSON; about {} tenants fit) and its configuration at {config_bytes} bytes \
         (about {} tenants), so the caches evict and read again all run long. As the process \
         holds them (parsed; heap bytes requested, counted in the bench process on 64 copies), \
         a cached model takes {served_heap} bytes ({served_heap_unparsed} until its detector \
         layer is first used) and a configuration {config_heap}: full, the current parts hold \
         about {:.1} MB of models and {:.1} MB of configurations, and the pinned parts (a \
         quarter of each budget) a third as much again. Every answer is \
         checked (status 200, recorded, under the tenant's model and configuration versions 1); a failure would \
         be inside the peak RSS, so the run stops on one. Then read_api, started the same way, \
         answered `GET /report` once for each tenant (status 200 checked). Peak RSS is the \
         kernel's VmHWM.\n",
        texts.len(),
        layer.labels_learned,
        seeded.as_secs_f64(),
        learned.as_secs_f64(),
        message_run.invocations,
        current_share / 1024,
        salesloop::service::lru::PARSED_PER_JSON_BYTE,
        current_share / served_bytes.max(1),
        current_share / config_bytes.max(1),
        models_full,
        configs_full,
    );
    let _ = writeln!(
        markdown,
        "| function | tenants | invocations | peak RSS after {checkpoint} tenants | peak RSS after each pass | RSS at the end | warm p50 | warm p99 | budget |"
    );
    let _ = writeln!(markdown, "|---|---|---|---|---|---|---|---|---|");
    let mut summary = Vec::new();
    for run in [&message_run, &read_run] {
        let passes: Vec<String> = run.after_pass.iter().map(|&k| mb(k)).collect();
        let peak = run.after_pass.last().copied().unwrap_or_default();
        let _ = writeln!(
            markdown,
            "| {} | {} | {} | {} | {} | {} | {} | {} | under 24 MB |",
            run.name,
            run.tenants,
            run.invocations,
            mb(run.at_checkpoint),
            passes.join(", "),
            mb(run.rss_end),
            ms(percentile(&run.took, 50.0)),
            ms(percentile(&run.took, 99.0)),
        );
        summary.push([
            format!(
                "peak RSS across {} tenants ({} invocations), {}",
                run.tenants, run.invocations, run.name
            ),
            format!(
                "{} ({} after the first {checkpoint} tenants)",
                mb(peak),
                mb(run.at_checkpoint)
            ),
            "under 24 MB, as for one tenant".to_owned(),
            budget_shown.clone(),
        ]);
    }
    Section {
        markdown,
        summary,
        invocations: vec![messages, reads],
    }
}
