//! Feedback scaling: runs of the release feedback_loop binary over 10k, 100k and 1M stored
//! outcomes (embedded store) and 10k and 100k (DynamoDB Local), each in its own process so its
//! time and peak memory (VmHWM) are its own; then a run with nothing new, and one with a few new
//! outcomes on top of the largest table.

use std::fmt::Write;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use salesloop::store::{DynamoStore, DynamoStoreConfig, EmbeddedStore};
use salesloop::{ConversationId, Millis, Outcome, Store, TenantId};
use salesloop_benches::counting::{self, Requests};
use salesloop_tests::contract::{end_request, send};
use salesloop_tests::dynamo_local::DynamoLocal;
use salesloop_tests::flows::Flows;

use crate::{Invocations, Scale, Section, fail, ms};

const TEXTS: [&str; 3] = [
    "this is too expensive for us",
    "can you show me a demo next week",
    "we already use another tool for this",
];

/// Conversations `from..to` of tenant acme: one message each, then an end.
async fn seed<S: Store + 'static>(stores: &[Arc<S>], from: usize, to: usize) {
    let tenant = TenantId::parse("acme").expect("tenant");
    let workers = stores.len();
    let mut tasks = Vec::new();
    for (w, store) in stores.iter().enumerate() {
        let store = store.clone();
        let tenant = tenant.clone();
        tasks.push(tokio::spawn(async move {
            for i in (from + w..to).step_by(workers) {
                let conversation = ConversationId::parse(&format!("f-{i}")).expect("id");
                let text = TEXTS[i % TEXTS.len()];
                send(&*store, &tenant, &conversation, "m-1", text)
                    .await
                    .expect("seed message");
                let outcome = if (i * 7) % 10 < 3 {
                    Outcome::Won
                } else {
                    Outcome::Lost
                };
                store
                    .end_conversation(
                        &tenant,
                        &conversation,
                        end_request(outcome, Millis::now().0),
                    )
                    .await
                    .expect("seed end");
            }
        }));
    }
    for task in tasks {
        task.await.expect("seeder");
    }
}

struct Run {
    took: Duration,
    peak_kib: i64,
    outcomes: u64,
    versions: usize,
}

/// Checks a run's summary (`feedback_loop::handle`'s answer) against what it should have done:
/// published what it learned, exactly the `learns` new outcomes, or found nothing new.
fn check_summary(summary: &serde_json::Value, learns: usize) -> Result<(), String> {
    let run = match summary["tenants"].as_array().map(Vec::as_slice) {
        Some([run]) if run["tenant"] == "acme" => run,
        _ => return Err(format!("not a run of tenant acme: {summary}")),
    };
    let expected = if learns > 0 {
        "published"
    } else {
        "nothing_new"
    };
    if run["result"] != expected || run["outcomes"].as_u64() != Some(learns as u64) {
        return Err(format!(
            "expected {expected} with {learns} outcomes learned, got {run}"
        ));
    }
    Ok(())
}

/// One `feedback_loop run --tenant acme` process that should learn `learns` new outcomes: wall
/// time, peak RSS, what it learned. A run that fails, or does not do what it should, stops the
/// bench: its time is the figure.
fn run_process(
    program: &Path,
    env: &[(String, String)],
    counted: &mut Invocations,
    learns: usize,
) -> Run {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(["run", "--tenant", "acme"])
        .env_clear()
        .env("FEEDBACK_SETTLE_SECONDS", "0")
        .env("RUST_LOG", "warn")
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("feedback_loop");
    // Peak RSS: the kernel's VmHWM, read every 2 ms until the process exits (rusage's maxrss
    // would count this big process's pages, which the child shares between fork and exec).
    let pid = child.id();
    let watcher = std::thread::spawn(move || {
        let mut peak = 0i64;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let hwm = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<i64>().ok());
            match hwm {
                Some(kib) => peak = peak.max(kib),
                None => break, // a zombie: it has exited
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        peak
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("its output");
    let peak_kib = watcher.join().expect("watcher");
    let status = child.wait().expect("feedback_loop exit");
    let took = started.elapsed();
    let summary: serde_json::Value = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    let checked = if status.success() {
        check_summary(&summary, learns)
    } else {
        Err(format!("exit status {status}: {out}"))
    };
    if !counted.count(checked) {
        fail(format!(
            "{}: {}",
            counted.what,
            counted.first_failure.as_deref().unwrap_or_default()
        ));
    }
    let tenant = &summary["tenants"][0];
    Run {
        took,
        peak_kib,
        outcomes: tenant["outcomes"].as_u64().unwrap_or(0),
        versions: tenant["versions"].as_array().map_or(0, Vec::len),
    }
}

fn row(markdown: &mut String, backend: &str, stored: usize, what: &str, run: &Run, new: usize) {
    let per_1k = if new > 0 {
        format!("{:.1} ms", run.took.as_secs_f64() * 1e3 / new as f64 * 1e3)
    } else {
        String::new()
    };
    let _ = writeln!(
        markdown,
        "| {backend} | {stored} | {what} | {} | {} | {} | {per_1k} | {:.1} MB |",
        run.outcomes,
        run.versions,
        ms(run.took),
        run.peak_kib as f64 / 1024.0
    );
}

pub async fn section(scale: &Scale, server: &DynamoLocal) -> Section {
    let bin: PathBuf = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .expect("the bench binary's folder");
    let mut markdown = String::from("## Feedback scaling\n\n");
    let _ = writeln!(
        markdown,
        "Outcomes seeded through the store (one message and one end per conversation), then \
         `feedback_loop run --tenant acme` as its own process (on DynamoDB Local, the release build \
         `scripts/package.sh` made; on the embedded store, the same build with the `embedded` \
         feature, which deploy builds leave out) (wall time; peak RSS: VmHWM, polled). Each size adds to the table of the \
         one before, so each learning run reads only the new outcomes; a no-op run follows each, \
         and at the end a run with 1,000 new outcomes on top of the largest table. Each run's \
         summary is checked: it learned exactly the new outcomes, or found nothing new.\n"
    );
    let _ = writeln!(
        markdown,
        "| store | outcomes stored | run | outcomes learned | versions | time | per 1k new | peak RSS |"
    );
    let _ = writeln!(markdown, "|---|---|---|---|---|---|---|---|");
    let mut summary = Vec::new();
    let mut peak_max = 0i64;
    let mut counted = Invocations::new("feedback runs (`feedback_loop run`, one process each)");
    let mut in_process =
        Invocations::new("feedback runs with nothing new, in process (requests counted)");

    // Embedded store.
    let dir = tempfile::tempdir().expect("temporary folder");
    let embedded = Arc::new(EmbeddedStore::open_dir(dir.path()).expect("embedded store"));
    let env = vec![(
        "SALESLOOP_DATA_DIR".to_owned(),
        dir.path().display().to_string(),
    )];
    let mut seeded = 0;
    let mut last_noop = None;
    for &size in &scale.embedded {
        let t = Instant::now();
        seed(std::slice::from_ref(&embedded), seeded, size).await;
        eprintln!(
            "bench: embedded seeded {size} in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        let run = run_process(
            &bin.join("feedback_loop_embedded"),
            &env,
            &mut counted,
            size - seeded,
        );
        row(
            &mut markdown,
            "embedded",
            size,
            "learn the new",
            &run,
            size - seeded,
        );
        peak_max = peak_max.max(run.peak_kib);
        let noop = run_process(&bin.join("feedback_loop_embedded"), &env, &mut counted, 0);
        row(&mut markdown, "embedded", size, "nothing new", &noop, 0);
        last_noop = Some((size, noop.took));
        seeded = size;
    }
    seed(std::slice::from_ref(&embedded), seeded, seeded + 1_000).await;
    let top = run_process(
        &bin.join("feedback_loop_embedded"),
        &env,
        &mut counted,
        1_000,
    );
    row(
        &mut markdown,
        "embedded",
        seeded + 1_000,
        "1,000 new",
        &top,
        1_000,
    );
    summary.push([
        format!("feedback run, 1,000 new on top of {seeded} stored (embedded)"),
        ms(top.took),
        "grows with the new outcomes, not the table".into(),
        last_noop.map_or(String::new(), |(n, t)| format!("no-op at {n}: {}", ms(t))),
    ]);

    // DynamoDB Local.
    let requests = Requests::default();
    let client = counting::client(&server.endpoint(), &requests);
    let table = format!("salesloop-feedback-{}", std::process::id());
    let config = DynamoStoreConfig {
        table: table.clone(),
        retention: None,
        end_shards: 1,
    };
    let store = DynamoStore::new(client, config.clone());
    store.create_table().await.expect("table");
    let stores: Vec<Arc<DynamoStore>> = (0..16).map(|_| Arc::new(store.clone())).collect();
    let env = vec![
        ("TABLE_NAME".to_owned(), table.clone()),
        ("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), server.endpoint()),
        ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID".to_owned(), "bench".to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "bench".to_owned()),
    ];
    let settings = feedback_loop::run::Settings {
        settle_ms: 0,
        ..Default::default()
    };
    let app = feedback_loop::App::new(store.clone(), settings);
    let tenant = TenantId::parse("acme").expect("tenant");
    let mut seeded = 0;
    let mut noop_counts = Vec::new();
    for &size in &scale.dynamo {
        let t = Instant::now();
        seed(&stores, seeded, size).await;
        eprintln!(
            "bench: DynamoDB Local seeded {size} in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        let run = run_process(
            &bin.join("feedback_loop"),
            &env,
            &mut counted,
            size - seeded,
        );
        row(
            &mut markdown,
            "DynamoDB Local",
            size,
            "learn the new",
            &run,
            size - seeded,
        );
        peak_max = peak_max.max(run.peak_kib);
        let noop = run_process(&bin.join("feedback_loop"), &env, &mut counted, 0);
        row(
            &mut markdown,
            "DynamoDB Local",
            size,
            "nothing new",
            &noop,
            0,
        );
        // The same no-op run in this process, to count its requests on the wire.
        requests.take();
        let answer = feedback_loop::handle(
            &app,
            feedback_loop::Trigger::Tenant(tenant.clone()),
            "bench",
            &|_| {},
        )
        .await;
        let counts = requests.take();
        if !in_process.count(
            answer
                .map_err(|e| e.to_string())
                .and_then(|summary| check_summary(&summary, 0)),
        ) {
            fail(format!(
                "{}: {}",
                in_process.what,
                in_process.first_failure.as_deref().unwrap_or_default()
            ));
        }
        let total: u64 = counts.values().sum();
        noop_counts.push(format!(
            "{size} stored: {total} requests ({})",
            counts
                .iter()
                .map(|(op, n)| format!("{n} {op}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        seeded = size;
    }
    let _ = writeln!(
        markdown,
        "\nA run with nothing new, on DynamoDB, counted on the wire: {}.\n",
        noop_counts.join("; ")
    );
    summary.push([
        "feedback run with nothing new (DynamoDB)".into(),
        noop_counts.last().cloned().unwrap_or_default(),
        "a few reads".into(),
        String::new(),
    ]);
    summary.push([
        "feedback run peak memory (largest run)".into(),
        format!("{:.1} MB", peak_max as f64 / 1024.0),
        "bounded".into(),
        String::new(),
    ]);
    Section {
        markdown,
        summary,
        invocations: vec![counted, in_process],
    }
}
