//! Per-message work: criterion's estimates (whole-corpus passes) turned into ns per message and
//! MB/s beside the matching pass of the detection it replaced, and each message timed alone for
//! the p99 budget.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use salesloop::domain::detector::{DEFAULT_MODEL, Detector, LinearModel};
use salesloop::domain::patterns::{COMPILED_CATALOG, Catalog, DEFAULT_CATALOG, DEFAULT_THRESHOLD};
use salesloop_benches::{
    corpora, message_events, nostore, process_event, replaced, replaced_catalog, root,
};

use crate::{Invocations, Scale, Section, fail, median, percentile};

/// The criterion benches of `benches/benches/detection.rs`, per corpus.
const BENCHES: [&str; 3] = ["expanded_automaton_pass", "detect", "process_message"];

/// Criterion's mean time of one pass over a corpus, in ns. `scripts/bench.sh` empties
/// `CRITERION_HOME` before criterion runs, so an estimate found here is this run's.
fn criterion_mean(group: &str, bench: &str) -> Option<f64> {
    let home = std::env::var("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target/criterion"));
    let path = home.join(group).join(bench).join("new/estimates.json");
    let raw = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&raw).ok()?;
    value["mean"]["point_estimate"].as_f64()
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

pub fn section(scale: &Scale) -> Section {
    // The baseline's phrases, checked to be those the catalog's cues stand for today.
    let phrases = replaced_catalog().phrases.len();
    let mut markdown = String::from("## Per-message work\n\n");
    let mut summary = Vec::new();
    let _ = writeln!(
        markdown,
        "Criterion (`cargo bench -p salesloop-benches --bench detection`), one iteration = one pass \
         over a whole corpus: the CaSiNo negotiation utterances (`benches/data/casino`, CC BY 4.0) \
         and the project's labelled sales utterances (`tests/fixtures/patterns`). `detect` is \
         pattern detection alone (the cue catalog and the learned model, as process_message \
         runs them, each message as a conversation's second); `process_message` is the function's own work on each message's \
         API Gateway event (event parsed into a request, tenant, validation, detection, decision, \
         reply, answer), on a store that keeps nothing; `expanded_automaton_pass` is the \
         matching step of the detection it replaced, built as that code built it \
         (`benches/src/replaced.rs`, mirroring `shared/src/patterns.rs` before commit cba526f: \
         the text normalised and lower-cased, then one overlapping pass of the case-sensitive \
         aho-corasick automaton of all {phrases} expanded catalog phrases; no word boundaries, no \
         negation, no scoring: less than that detection did).{}\n",
        if scale.smoke {
            " Smoke run: criterion measured 10 samples of each in about half a second."
        } else {
            ""
        }
    );
    let _ = writeln!(
        markdown,
        "| corpus | messages | bytes | work | ns per message | MB/s | × expanded_automaton_pass |"
    );
    let _ = writeln!(markdown, "|---|---|---|---|---|---|---|");
    let detector = Detector::builtin();
    let app = nostore::app();
    let runtime = nostore::runtime();
    let calibration = BTreeMap::new();
    let mut all_work = Vec::new();
    let mut all_detect = Vec::new();
    let mut invocations = Vec::new();
    for corpus in corpora() {
        let n = corpus.texts.len() as f64;
        let bytes = corpus.bytes() as f64;
        let pass = criterion_mean(corpus.name, BENCHES[0]);
        for bench in BENCHES {
            let Some(mean) = criterion_mean(corpus.name, bench) else {
                fail(format!(
                    "criterion wrote no estimate for {}/{bench} in this run (CRITERION_HOME)",
                    corpus.name
                ));
            };
            let ratio = pass.map_or(String::new(), |p| format!("{:.1}×", mean / p));
            let _ = writeln!(
                markdown,
                "| {} | {} | {} | {bench} | {:.0} | {:.1} | {ratio} |",
                corpus.name,
                corpus.texts.len(),
                corpus.bytes(),
                mean / n,
                bytes / mean * 1e3,
            );
            if bench == "detect" && corpus.name == "casino" {
                summary.push([
                    "pattern detection, CaSiNo (ns per message, MB/s)".to_owned(),
                    format!("{:.0} ns, {:.1} MB/s", mean / n, bytes / mean * 1e3),
                    "(part of the 50 µs below)".to_owned(),
                    pass.map_or(String::new(), |p| {
                        format!(
                            "{:.1}× the replaced detection's matching pass ({:.0} ns)",
                            mean / p,
                            p / n
                        )
                    }),
                ]);
            }
        }
        // Each message alone, for the tail.
        let events = message_events(&corpus.texts);
        let mut counted = Invocations::new(format!(
            "process_message on the store that keeps nothing, {} ({} passes)",
            corpus.name, scale.work_passes
        ));
        for _ in 0..scale.work_passes {
            for (text, event) in corpus.texts.iter().zip(&events) {
                let t = Instant::now();
                std::hint::black_box(detector.detect(text, 1, DEFAULT_THRESHOLD, &calibration));
                all_detect.push(t.elapsed());
                let t = Instant::now();
                let status = std::hint::black_box(runtime.block_on(process_event(&app, event)));
                let took = t.elapsed();
                if counted.count(if status == 200 {
                    Ok(())
                } else {
                    Err(format!("status {status} for {text:?}"))
                }) {
                    all_work.push(took);
                }
            }
        }
        // Criterion's process_message figure of this corpus timed the same events.
        if counted.failed > 0 {
            fail(format!(
                "{}: {} of its messages failed",
                counted.what, counted.failed
            ));
        }
        invocations.push(counted);
    }
    all_work.sort();
    all_detect.sort();
    let _ = writeln!(
        markdown,
        "\nEach message timed alone (the `bench` binary, {} passes over both corpora, {} timings):\n",
        scale.work_passes,
        all_work.len()
    );
    let _ = writeln!(markdown, "| work | p50 | p90 | p99 | max | budget (p99) |");
    let _ = writeln!(markdown, "|---|---|---|---|---|---|");
    for (name, values) in [("detect", &all_detect), ("process_message", &all_work)] {
        let _ = writeln!(
            markdown,
            "| {name} | {} | {} | {} | {} | {} |",
            us(percentile(values, 50.0)),
            us(percentile(values, 90.0)),
            us(percentile(values, 99.0)),
            us(*values.last().expect("timings")),
            if name == "process_message" {
                "under 50 µs"
            } else {
                "at most 50 µs"
            }
        );
    }
    summary.push([
        "pattern detection (cues and model), p99".to_owned(),
        us(percentile(&all_detect, 99.0)),
        "at most 50 µs".to_owned(),
        format!("p50 {}", us(percentile(&all_detect, 50.0))),
    ]);
    summary.push([
        "process_message own work, p99 (store excluded)".to_owned(),
        us(percentile(&all_work, 99.0)),
        "under 50 µs".to_owned(),
        format!("p50 {}", us(percentile(&all_work, 50.0))),
    ]);

    // Init: the built-in catalog read from its compiled form, as every start does; compiling
    // the JSON (what a configured catalog costs, and what init did before the compiled form);
    // the expanded automaton that compiling replaced, compiled as the replaced code compiled it.
    let read = median_time(20, || {
        Catalog::from_compiled(COMPILED_CATALOG).expect("compiled catalog")
    });
    let compile = median_time(20, || Catalog::from_json(DEFAULT_CATALOG).expect("catalog"));
    let expanded = median_time(3, || replaced::compile(DEFAULT_CATALOG).expect("catalog"));
    let _ = writeln!(
        markdown,
        "\nThe built-in catalog at init (median of 20): read from its compiled form \
         (`shared/catalog/patterns.bin`, {} bytes, what `make catalog` compiles from \
         `patterns.json`) **{}**. Compiling the JSON's word-level cues, as a catalog configured \
         in its place is compiled at init (median of 20), {}; the {phrases} expanded phrases \
         compiled into one aho-corasick automaton as the code before that did \
         (`benches/src/replaced.rs`: `MatchKind::Standard`, no other builder option; median of \
         3), {} ({:.0}× slower than compiling the cues).\n",
        COMPILED_CATALOG.len(),
        us(read),
        us(compile),
        us(expanded),
        expanded.as_secs_f64() / compile.as_secs_f64()
    );
    summary.push([
        "built-in catalog load at init".to_owned(),
        us(read),
        "(part of cold start)".to_owned(),
        format!(
            "compiling the JSON instead {}; the expanded-phrase automaton before that {}",
            us(compile),
            us(expanded)
        ),
    ]);
    // Init: the detector's shipped weights read from the bytes compiled in.
    let load = median_time(20, || {
        LinearModel::from_bytes(DEFAULT_MODEL).expect("weights")
    });
    let _ = writeln!(
        markdown,
        "Detector weights read at init (median of 20): **{}** for the {} bytes compiled in.\n",
        us(load),
        DEFAULT_MODEL.len()
    );
    summary.push([
        "detector weights load at init".to_owned(),
        us(load),
        "at most 3 ms (part of cold start)".to_owned(),
        format!("{} bytes of weights", DEFAULT_MODEL.len()),
    ]);
    Section {
        markdown,
        summary,
        invocations,
    }
}

/// The median time of `runs` calls of `work`, its result kept from the optimiser and dropped
/// after the clock stops (a process keeps what it loads at init).
fn median_time<T>(runs: usize, work: impl Fn() -> T) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let value = std::hint::black_box(work());
            let took = t.elapsed();
            drop(value);
            took
        })
        .collect();
    median(&mut times)
}
