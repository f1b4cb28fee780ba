//! Per-message work on real text: pattern detection alone, process_message's own work
//! (event parsing, detection, decision, reply; the store keeps nothing), and the physical
//! limit, one aho-corasick pass of every catalog phrase over the same text.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use salesloop::domain::patterns::{Catalog, DEFAULT_THRESHOLD};
use salesloop_benches::{corpora, message_events, nostore, phrase_automaton, process_event};

fn per_message(c: &mut Criterion) {
    let catalog = Catalog::builtin();
    let automaton = phrase_automaton();
    let app = nostore::app();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let calibration = BTreeMap::new();
    for corpus in corpora() {
        let events = message_events(&corpus.texts);
        let mut group = c.benchmark_group(corpus.name);
        group
            .throughput(Throughput::Bytes(corpus.bytes() as u64))
            .sample_size(20)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(6));
        group.bench_function("aho_corasick_pass", |b| {
            b.iter(|| {
                let mut n = 0usize;
                for text in &corpus.texts {
                    n += automaton
                        .find_overlapping_iter(black_box(text.as_str()))
                        .count();
                }
                n
            })
        });
        group.bench_function("detect", |b| {
            b.iter(|| {
                let mut n = 0usize;
                for text in &corpus.texts {
                    n += catalog
                        .detect(black_box(text), DEFAULT_THRESHOLD, &calibration)
                        .len();
                }
                n
            })
        });
        group.bench_function("process_message", |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut ok = 0usize;
                    for event in &events {
                        ok += usize::from(process_event(&app, black_box(event)).await == 200);
                    }
                    ok
                })
            })
        });
        group.finish();
    }
}

criterion_group!(benches, per_message);
criterion_main!(benches);
