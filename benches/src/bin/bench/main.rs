//! `make bench`: the benchmarks that criterion does not run, side by side in one run, and the
//! report. Criterion (per-message work) runs first; this reads its estimates, runs the rest and
//! writes BENCHMARKS.md with the machine, the date, the command and each figure by its budget.
//!
//! bench [--smoke] [--out FILE]
//!   --smoke  a few iterations of everything, for the test command

mod cold;
mod cost;
mod feedback;
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
}

impl Scale {
    fn full() -> Scale {
        Scale {
            smoke: false,
            cold_rounds: 10,
            invocations: 10_000,
            checkpoint: 1_000,
            embedded: vec![10_000, 100_000, 1_000_000],
            dynamo: vec![10_000, 100_000],
            work_passes: 3,
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
        }
    }
}

/// A part of the report: its Markdown, and the lines it adds to the summary table.
pub struct Section {
    pub markdown: String,
    pub summary: Vec<[String; 4]>,
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
    let server = match salesloop_tests::dynamo_local::DynamoLocal::start() {
        Ok(server) => server,
        Err(why) => {
            eprintln!("bench: DynamoDB Local could not start: {why}");
            std::process::exit(1);
        }
    };
    let mut sections = Vec::new();
    eprintln!("bench: per-message work");
    sections.push(work::section(&scale));
    eprintln!("bench: cold starts and memory (Runtime API harness)");
    sections.extend(runtime.block_on(cold::sections(&scale, &server)));
    eprintln!("bench: cost per exchange");
    sections.push(runtime.block_on(cost::section(&server)));
    eprintln!("bench: feedback scaling");
    sections.push(runtime.block_on(feedback::section(&scale, &server)));
    sections.push(packages());

    let mut text = String::new();
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let _ = writeln!(text, "# Benchmarks\n");
    let _ = writeln!(
        text,
        "Written by `make bench` (`bash scripts/bench.sh`: criterion, then `target/release/bench`) on \
         {date}, in {:.0} s.{}\n\nMachine: {}. The machine is shared and noisy: every comparison \
         below is measured side by side in the same run, and ratios matter more than absolutes.\n",
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
    std::fs::write(&out, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
    eprintln!("bench: wrote {}", out.display());
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
        let _ = writeln!(markdown, "| {function} | {shown} | under 10 MB |");
        summary.push([
            format!("package, {function} (zipped)"),
            shown,
            "under 10 MB".into(),
            String::new(),
        ]);
    }
    Section { markdown, summary }
}
