//! Per-message work on real text: pattern detection alone, process_message's own work
//! (event parsing, detection, decision, reply; the store keeps nothing), and the matching step
//! of the detection it replaced: the text normalised, then one pass of the automaton of every
//! expanded catalog phrase, built as that code built it (`salesloop_benches::replaced`).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use salesloop::domain::detector::Detector;
use salesloop::domain::patterns::DEFAULT_THRESHOLD;
use salesloop_benches::{corpora, message_events, nostore, process_event, replaced_catalog};

fn per_message(c: &mut Criterion) {
    let detector = Detector::builtin();
    let replaced = replaced_catalog();
    let app = nostore::app();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
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

criterion_group!(benches, per_message);
criterion_main!(benches);
