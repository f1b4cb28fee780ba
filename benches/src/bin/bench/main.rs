//! `make bench`: the benchmarks that criterion does not run, side by side in one run, and the
//! report. Criterion (per-message work) runs first; this reads its estimates, runs the rest and
//! writes BENCHMARKS.md with the machine, the date, the command and each figure by its budget.
//!
//! bench [--smoke] [--out FILE] [--only PART,...]
//!   --smoke  a few iterations of everything, for the test command
//!   --only   just these parts (work, cold, tenants, cost, feedback, schedule, packages), to check one;
//!            needs --out: a partial report is never BENCHMARKS.md

mod cold;
mod cost;
mod feedback;
mod schedule;
mod tenants;
mod work;

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use salesloop_benches::root;

/// How much of everything to run.
pub struct Scale {
    pub smoke: bool,
    pub cold_rounds: usize,
    pub invocations: usize,
    pub checkpoint: usize,
    pub embedded: Vec<usize>,
    pub dynamo: Vec<usize>,
    pub work_passes: usize,
    /// Memory across tenants: how many, passes over them, and the first checkpoint.
    pub tenants: usize,
    pub tenant_passes: usize,
    pub tenant_checkpoint: usize,
}

impl Scale {
    fn full() -> Scale {
        Scale {
            smoke: false,
            cold_rounds: 10,
            invocations: 10_000,
            checkpoint: 1_000,
            embedded: vec![10_000, 100_000, 1_000_000],
            dynamo: vec![1_000, 10_000],
            work_passes: 3,
            tenants: 10_000,
            tenant_passes: 2,
            tenant_checkpoint: 1_000,
        }
    }

    fn smoke() -> Scale {
        Scale {
            smoke: true,
            cold_rounds: 1,
            invocations: 20,
            checkpoint: 5,
            embedded: vec![100, 1_000],
            dynamo: vec![100],
            work_passes: 1,
            tenants: 200,
            tenant_passes: 2,
            tenant_checkpoint: 50,
        }
    }
}

/// A part of the report: its Markdown, the lines it adds to the summary table, and the
/// invocations its figures come from.
pub struct Section {
    pub markdown: String,
    pub summary: Vec<[String; 4]>,
    pub invocations: Vec<Invocations>,
}

/// Invocations made for a set of figures. A failed one is left out of every figure; where a
/// figure cannot leave it out (peak memory of a process, criterion's whole-corpus passes, a
/// feedback run's own time) the bench stops instead of printing it (`fail`).
pub struct Invocations {
    pub what: String,
    pub made: usize,
    pub failed: usize,
    /// The first failure's answer.
    pub first_failure: Option<String>,
}

impl Invocations {
    pub fn new(what: impl Into<String>) -> Invocations {
        Invocations {
            what: what.into(),
            made: 0,
            failed: 0,
            first_failure: None,
        }
    }

    /// Counts one invocation; `Err` carries why it failed. Returns whether it succeeded.
    pub fn count(&mut self, outcome: Result<(), String>) -> bool {
        self.made += 1;
        match outcome {
            Ok(()) => true,
            Err(why) => {
                self.failed += 1;
                eprintln!("bench: {} failed: {why}", self.what);
                self.first_failure.get_or_insert(why);
                false
            }
        }
    }
}

/// Stops the bench (non-zero exit, BENCHMARKS.md left as it was): a figure would otherwise be
/// based on a failed invocation. A panic, so that the function processes and DynamoDB Local are
/// stopped on the way out.
pub fn fail(why: impl std::fmt::Display) -> ! {
    panic!("bench: {why}; no figure is written from a failed invocation")
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The `p`-th percentile (0..=100) of sorted values, nearest rank.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    percentile(values, 50.0)
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024 / 1024);
    format!(
        "{cpu}, {cores} cores, {memory} GiB; {}; {}",
        command_output("uname", &["-sr"]),
        command_output("rustc", &["--version"])
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("BENCHMARKS.md"));
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|parts| parts.split(',').map(str::to_owned).collect());
    if only.is_some() && !args.iter().any(|a| a == "--out") {
        eprintln!("bench: --only needs --out: a partial report is never BENCHMARKS.md");
        std::process::exit(2);
    }
    let wanted = |part: &str| only.as_ref().is_none_or(|o| o.iter().any(|p| p == part));
    let scale = if smoke { Scale::smoke() } else { Scale::full() };
    // The in-process AWS SDK clients (cost, feedback) read these, as a function would on Lambda.
    // SAFETY: set before any thread is started.
    unsafe {
        for (name, value) in [
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "bench"),
            ("AWS_SECRET_ACCESS_KEY", "bench"),
        ] {
            std::env::set_var(name, value);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = std::time::Instant::now();
    let mut sections = Vec::new();
    // The per-message work first, before DynamoDB Local starts: it needs no store, and its
    // percentiles time single messages of microseconds, which a JVM starting up and compiling
    // on the machine's other core would otherwise share.
    if wanted("work") {
        eprintln!("bench: per-message work");
        sections.push(work::section(&scale));
    }
    let server = match salesloop_tests::dynamo_local::DynamoLocal::start() {
        Ok(server) => server,
        Err(why) => {
            eprintln!("bench: DynamoDB Local could not start: {why}");
            std::process::exit(1);
        }
    };
    if wanted("cold") {
        eprintln!("bench: cold starts and memory (Runtime API harness)");
        sections.extend(runtime.block_on(cold::sections(&scale, &server)));
    }
    if wanted("tenants") {
        eprintln!("bench: memory across tenants (Runtime API harness)");
        sections.push(runtime.block_on(tenants::section(&scale, &server)));
    }
    if wanted("cost") {
        eprintln!("bench: cost per exchange");
        sections.push(runtime.block_on(cost::section(&server)));
    }
    if wanted("feedback") {
        eprintln!("bench: feedback scaling");
        sections.push(runtime.block_on(feedback::section(&scale, &server)));
    }
    if wanted("schedule") {
        eprintln!("bench: feedback fan-out (the scheduling invocation)");
        sections.push(runtime.block_on(schedule::section(&scale, &server)));
    }
    if wanted("packages") {
        sections.push(packages());
    }

    let invocations: Vec<&Invocations> = sections.iter().flat_map(|s| &s.invocations).collect();
    let made: usize = invocations.iter().map(|i| i.made).sum();
    let failed: usize = invocations.iter().map(|i| i.failed).sum();
    let mut text = String::new();
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let _ = writeln!(text, "# Benchmarks\n");
    let _ = writeln!(
        text,
        "Written by `make bench` (`bash scripts/bench.sh`: criterion, then the `bench` binary, \
         which reads criterion's estimates of the same run) on {date}, in {:.0} s; not edited by \
         hand.{}\n\nMachine: {}. The machine is shared and noisy: every comparison below is \
         measured side by side in the same run, and ratios matter more than absolutes.\n\n\
         **Failed invocations: {failed}** of {made} counted (listed at the end); a failed \
         invocation is left out of every figure, and the run stops rather than print a figure \
         that cannot leave it out.\n",
        started.elapsed().as_secs_f64(),
        if scale.smoke {
            " **Smoke run: a few iterations each; the figures mean nothing.**"
        } else {
            ""
        },
        machine()
    );
    let _ = writeln!(text, "## Summary\n");
    let _ = writeln!(text, "| what | measured | budget | peer or limit |");
    let _ = writeln!(text, "|---|---|---|---|");
    for section in &sections {
        for [what, measured, budget, peer] in &section.summary {
            let _ = writeln!(text, "| {what} | {measured} | {budget} | {peer} |");
        }
    }
    let _ = writeln!(text);
    for section in &sections {
        text.push_str(&section.markdown);
        text.push('\n');
    }
    let _ = writeln!(text, "## Failed invocations\n");
    let _ = writeln!(
        text,
        "Every invocation the figures above come from, by part. Criterion's `process_message` \
         passes are not counted one by one: the criterion bench stops if any message of a corpus \
         is not answered 200, before or while it is measured.\n"
    );
    let _ = writeln!(text, "| invocations | made | failed | first failure |");
    let _ = writeln!(text, "|---|---|---|---|");
    for i in &invocations {
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} |",
            i.what,
            i.made,
            i.failed,
            i.first_failure
                .as_deref()
                .map(|f| {
                    let short: String = f.chars().take(200).collect();
                    format!("`{}`", short.replace(['|', '`', '\n'], " "))
                })
                .unwrap_or_default()
        );
    }
    let _ = writeln!(text, "| **all** | {made} | **{failed}** | |");
    std::fs::write(&out, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
    eprintln!(
        "bench: wrote {} ({failed} failed invocations of {made}, none inside a figure)",
        out.display()
    );
}

/// The zipped bootstraps `scripts/package.sh` built, if it ran.
fn packages() -> Section {
    let lambda = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"))
        .join("lambda");
    let mut markdown = String::from(
        "## Package sizes\n\n`scripts/package.sh` (cargo lambda build --release, zip):\n\n| function | bootstrap.zip | budget |\n|---|---|---|\n",
    );
    let mut summary = Vec::new();
    for function in ["process_message", "end_conversation", "feedback_loop"] {
        let zip = lambda.join(function).join("bootstrap.zip");
        let size = std::fs::metadata(&zip).map(|m| m.len()).ok();
        let shown = size.map_or("not built".to_owned(), |s| {
            format!("{:.2} MB", s as f64 / 1e6)
        });
        let _ = writeln!(markdown, "| {function} | {shown} | under 5 MB |");
        summary.push([
            format!("package, {function} (zipped)"),
            shown,
            "under 5 MB".into(),
            String::new(),
        ]);
    }
    Section {
        markdown,
        summary,
        invocations: Vec::new(),
    }
}
