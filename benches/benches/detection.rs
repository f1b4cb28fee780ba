//! Per-message work on real text: pattern detection alone, process_message's own work
//! (event parsing, detection, decision, reply; the store keeps nothing), and the matching step
//! of the detection it replaced: the text normalised, then one pass of the automaton of every
//! expanded catalog phrase, built as that code built it (`salesloop_benches::replaced`).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group};
use salesloop::domain::detector::Detector;
use salesloop::domain::patterns::DEFAULT_THRESHOLD;
use salesloop_benches::{corpora, message_events, nostore, process_event, replaced_catalog};

fn per_message(c: &mut Criterion) {
    let detector = Detector::builtin();
    let replaced = replaced_catalog();
    let app = nostore::app();
    let runtime = nostore::runtime();
    let calibration = BTreeMap::new();
    // `SMOKE=1 make bench`: a few iterations of each, still measured and written to
    // CRITERION_HOME, so that a smoke run checks the report's reading of this run's estimates.
    let smoke = std::env::var("SMOKE").is_ok_and(|v| v == "1");
    for corpus in corpora() {
        let events = message_events(&corpus.texts);
        // Every event must be answered 200, or the process_message figure would time failures.
        let failed = runtime.block_on(async {
            let mut failed = 0usize;
            for event in &events {
                failed += usize::from(process_event(&app, event).await != 200);
            }
            failed
        });
        assert_eq!(
            failed,
            0,
            "{}: {failed} of {} messages were not answered 200: no figure from them",
            corpus.name,
            events.len()
        );
        let mut group = c.benchmark_group(corpus.name);
        group.throughput(Throughput::Bytes(corpus.bytes() as u64));
        if smoke {
            group
                .sample_size(10)
                .sampling_mode(SamplingMode::Flat)
                .warm_up_time(Duration::from_millis(100))
                .measurement_time(Duration::from_millis(500));
        } else {
            group
                .sample_size(20)
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(6));
        }
        group.bench_function("expanded_automaton_pass", |b| {
            b.iter(|| {
                let mut n = 0usize;
                for text in &corpus.texts {
                    n += replaced.pass(black_box(text));
                }
                n
            })
        });
        group.bench_function("detect", |b| {
            b.iter(|| {
                let mut n = 0usize;
                for text in &corpus.texts {
                    n += detector
                        .detect(black_box(text), 1, DEFAULT_THRESHOLD, &calibration)
                        .len();
                }
                n
            })
        });
        group.bench_function("process_message", |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut failed = 0usize;
                    for event in &events {
                        failed += usize::from(process_event(&app, black_box(event)).await != 200);
                    }
                    assert_eq!(failed, 0, "process_message failed while being measured");
                    failed
                })
            })
        });
        group.finish();
    }
}

/// `PER_MESSAGE=<passes> cargo bench -p salesloop-benches --bench detection`: instead of
/// criterion, each message timed alone over `passes` passes of both corpora (detection alone and
/// its two halves, the cues and the model, the event parse, then process_message's own work, as
/// the `bench` binary times them), with percentiles and the mean printed: a quick look at the
/// tail without the rest of `make bench`.
fn per_message_alone(passes: usize) {
    let detector = Detector::builtin();
    let app = nostore::app();
    let runtime = nostore::runtime();
    let calibration = BTreeMap::new();
    let (mut detect, mut parse, mut parse_lambda_http, mut work) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Detection's two halves alone: the catalog's cues, and the model's scores.
    let (mut cues, mut scores) = (Vec::new(), Vec::new());
    for corpus in corpora() {
        let events = message_events(&corpus.texts);
        for _ in 0..passes {
            for (text, event) in corpus.texts.iter().zip(&events) {
                let t = Instant::now();
                black_box(detector.detect(black_box(text), 1, DEFAULT_THRESHOLD, &calibration));
                detect.push(t.elapsed());
                let t = Instant::now();
                black_box(detector.catalog.detect(black_box(text), 0.0, &calibration));
                cues.push(t.elapsed());
                let t = Instant::now();
                black_box(detector.score(black_box(text), 1));
                scores.push(t.elapsed());
                // The event read as the deployed functions read it (the HTTP API type first,
                // by its version), and in lambda_http's order (the REST API type first).
                let t = Instant::now();
                black_box(
                    salesloop::edge::http::request_from_event(black_box(event)).expect("an event"),
                );
                parse.push(t.elapsed());
                let t = Instant::now();
                black_box(lambda_http::request::from_str(black_box(event)).expect("an event"));
                parse_lambda_http.push(t.elapsed());
                let t = Instant::now();
                let status = black_box(runtime.block_on(process_event(&app, black_box(event))));
                work.push(t.elapsed());
                assert_eq!(status, 200, "process_message failed for {text:?}");
            }
        }
    }
    for (name, values) in [
        ("detect", &mut detect),
        ("  cues", &mut cues),
        ("  model", &mut scores),
        ("event parse", &mut parse),
        ("lambda_http's", &mut parse_lambda_http),
        ("process_message", &mut work),
    ] {
        values.sort();
        let at = |p: f64| {
            let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
            values[rank.clamp(1, values.len()) - 1].as_secs_f64() * 1e6
        };
        let mean = values.iter().sum::<Duration>().as_secs_f64() * 1e6 / values.len() as f64;
        println!(
            "{name:>16}: {} timings, p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, max {:.1} µs, mean {mean:.1} µs",
            values.len(),
            at(50.0),
            at(90.0),
            at(99.0),
            at(100.0),
        );
    }
}

criterion_group!(benches, per_message);

fn main() {
    if let Some(passes) = std::env::var("PER_MESSAGE")
        .ok()
        .and_then(|p| p.parse::<usize>().ok())
    {
        per_message_alone(passes);
        return;
    }
    // What `criterion_main!(benches)` expands to.
    benches();
    Criterion::default().configure_from_args().final_summary();
}
