//! Cold starts and memory through the Runtime API harness: each release bootstrap and the
//! Python peer (boto3 under awslambdaric) started side by side, round after round, against the
//! same harness and the same DynamoDB Local table.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use salesloop::{ConversationId, TenantId};
use salesloop_benches::root;
use salesloop_benches::runtime_api::{Answer, Function, Launch};
use salesloop_tests::contract::send;
use salesloop_tests::dynamo_local::DynamoLocal;
use serde_json::json;

use crate::{Invocations, Scale, Section, fail, median, ms, percentile};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    ProcessMessage,
    EndConversation,
    FeedbackLoop,
    Python,
}

/// A cold start's variant: as deployed (the DynamoDB connection opened during init), or
/// without that warm-up read (`SALESLOOP_WARM_UP=0`), which is what the peer's init does.
const COLD: [(Kind, bool); 7] = [
    (Kind::ProcessMessage, true),
    (Kind::EndConversation, true),
    (Kind::FeedbackLoop, true),
    (Kind::Python, false),
    (Kind::ProcessMessage, false),
    (Kind::EndConversation, false),
    (Kind::FeedbackLoop, false),
];

const KINDS: [Kind; 4] = [
    Kind::ProcessMessage,
    Kind::EndConversation,
    Kind::FeedbackLoop,
    Kind::Python,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ProcessMessage => "process_message",
            Kind::EndConversation => "end_conversation",
            Kind::FeedbackLoop => "feedback_loop",
            Kind::Python => "Python peer (boto3, awslambdaric)",
        }
    }

    /// The event of invocation `n` in a series named `series`. end_conversation ends
    /// conversation `{series}-{n}`, which the caller must have created.
    fn event(self, series: &str, n: usize) -> String {
        match self {
            Kind::ProcessMessage => salesloop_benches::http_api_event(
                &format!("/conversations/{series}-{n}/messages"),
                &json!({"message_id": "m-1", "text": TEXTS[n % TEXTS.len()]}).to_string(),
            ),
            Kind::EndConversation => salesloop_benches::http_api_event(
                &format!("/conversations/{series}-{n}/end"),
                &json!({"outcome": if n.is_multiple_of(3) { "won" } else { "lost" }, "value": 1200})
                    .to_string(),
            ),
            Kind::FeedbackLoop => json!({
                "source": "salesloop.end_conversation",
                "tenant": "acme",
                "ended_count": n
            })
            .to_string(),
            Kind::Python => salesloop_benches::http_api_event(
                &format!("/conversations/py-{series}-{n}/messages"),
                &json!({"message_id": "m-1", "text": TEXTS[n % TEXTS.len()]}).to_string(),
            ),
        }
    }
}

const TEXTS: [&str; 4] = [
    "Honestly this looks too expensive for us, we don't have the budget this quarter.",
    "Can you send me a demo next week? I need to run it by my manager first.",
    "We already use HubSpot and it does most of this.",
    "How does the pricing work for a team of 12 people?",
];

/// A function's program, arguments, folder and environment.
type Spec = (
    PathBuf,
    Vec<&'static str>,
    Option<PathBuf>,
    Vec<(String, String)>,
);

struct Setup {
    bin: PathBuf,
    python: PathBuf,
    table: String,
    endpoint: String,
}

impl Setup {
    fn launch(&self, kind: Kind, warm: bool) -> Spec {
        let mut env = vec![
            (
                "SALESLOOP_WARM_UP".to_owned(),
                if warm { "1" } else { "0" }.to_owned(),
            ),
            ("TABLE_NAME".to_owned(), self.table.clone()),
            (
                "AWS_ENDPOINT_URL_DYNAMODB".to_owned(),
                self.endpoint.clone(),
            ),
        ];
        match kind {
            Kind::Python => {
                env.push(("AWS_LAMBDA_FUNCTION_NAME".into(), "python_peer".into()));
                (
                    self.python.clone(),
                    vec!["-m", "awslambdaric", "handler.handler"],
                    Some(root().join("benches/python")),
                    env,
                )
            }
            _ => {
                env.push(("AWS_LAMBDA_FUNCTION_NAME".into(), kind.name().into()));
                env.push(("FEEDBACK_EVERY".into(), "0".into()));
                env.push(("FEEDBACK_SETTLE_SECONDS".into(), "0".into()));
                (self.bin.join(kind.name()), vec![], None, env)
            }
        }
    }

    async fn start(&self, kind: Kind, warm: bool) -> Result<Function, String> {
        let (program, args, dir, env) = self.launch(kind, warm);
        Function::start(Launch {
            program: &program,
            args: &args,
            dir: dir.as_deref(),
            env,
        })
        .await
    }
}

/// Whether an answer is what the function answers when it did its job. process_message,
/// end_conversation and the peer answer API Gateway with status 200 on success (a first
/// message, a first end). feedback_loop answers its run summary (`feedback_loop::handle`):
/// `{"tenants": [{"tenant": "acme", "result": ..., "versions": [...], "outcomes": n}]}`, and
/// reports a failed run to the Runtime API as an error; only `published` and `nothing_new` are
/// runs that did the work (`busy`: another run held the lease; `superseded`: its batch was
/// discarded).
fn check(kind: Kind, answer: &Answer) -> Result<(), String> {
    let body = String::from_utf8_lossy(&answer.body);
    if answer.error {
        return Err(format!("reported an error: {body}"));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&answer.body).map_err(|_| format!("not JSON: {body}"))?;
    match kind {
        Kind::FeedbackLoop => match value["tenants"].as_array().map(Vec::as_slice) {
            Some([run])
                if run["tenant"] == "acme"
                    && matches!(run["result"].as_str(), Some("published" | "nothing_new")) =>
            {
                Ok(())
            }
            _ => Err(format!("not a finished run of tenant acme: {body}")),
        },
        _ => match value["statusCode"].as_u64() {
            Some(200) => Ok(()),
            _ => Err(format!("status {}: {}", value["statusCode"], value["body"])),
        },
    }
}

fn version(python: &Path) -> String {
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import sys, importlib.metadata as m; print(sys.version.split()[0], 'awslambdaric', m.version('awslambdaric'), 'boto3', m.version('boto3'))",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            format!("Python {}", String::from_utf8_lossy(&o.stdout).trim())
        }
        _ => "not installed".to_owned(),
    }
}

pub async fn sections(scale: &Scale, server: &DynamoLocal) -> Vec<Section> {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .expect("the bench binary's folder");
    let python = root().join(".venv-bench/bin/python");
    let store = server.fresh_store().await;
    let setup = Setup {
        bin,
        python: python.clone(),
        table: store.table().to_owned(),
        endpoint: server.endpoint(),
    };
    let peer = version(&python);
    eprintln!("bench: peer {peer}");

    // Cold starts, one of each per round; round 0 is thrown away (it warms DynamoDB Local's
    // JVM and the page cache, which a real cold start does not pay for). A round whose first
    // invocation failed is left out of that variant's figures.
    let tenant = TenantId::parse("acme").expect("tenant");
    let mut inits: Vec<Vec<Duration>> = vec![Vec::new(); COLD.len()];
    let mut firsts: Vec<Vec<Duration>> = vec![Vec::new(); COLD.len()];
    let mut counted: Vec<Invocations> = COLD
        .iter()
        .map(|&(kind, warm)| {
            Invocations::new(format!(
                "cold start, first invocation: {}{} ({} rounds + 1 discarded)",
                kind.name(),
                if warm || kind == Kind::Python {
                    ""
                } else {
                    ", no warm-up"
                },
                scale.cold_rounds
            ))
        })
        .collect();
    for round in 0..=scale.cold_rounds {
        for (k, (kind, warm)) in COLD.into_iter().enumerate() {
            let series = format!("cold{k}");
            if kind == Kind::EndConversation {
                // The conversation it ends: one message, through the store, before the
                // function starts (outside the timings).
                let conversation =
                    ConversationId::parse(&format!("{series}-{round}")).expect("an id");
                if let Err(e) = send(
                    &store,
                    &tenant,
                    &conversation,
                    "m-1",
                    TEXTS[round % TEXTS.len()],
                )
                .await
                {
                    fail(format!("cannot create conversation {series}-{round}: {e}"));
                }
            }
            let mut function = setup
                .start(kind, warm)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let init = function
                .init()
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
            let answer = function
                .invoke(kind.event(&series, round))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
            let ok = counted[k].count(check(kind, &answer));
            function.stop().await;
            if round > 0 && ok {
                inits[k].push(init);
                firsts[k].push(answer.took);
            }
        }
    }
    for (k, c) in counted.iter().enumerate() {
        if inits[k].is_empty() {
            fail(format!("{}: no measured round succeeded", c.what));
        }
    }
    let failures: usize = counted.iter().map(|c| c.failed).sum();
    // The rounds a variant's figures come from, when fewer than all.
    let rounds = |k: usize| {
        if inits[k].len() < scale.cold_rounds {
            format!(" ({} of {} rounds)", inits[k].len(), scale.cold_rounds)
        } else {
            String::new()
        }
    };
    let python_init = median(&mut inits[3].clone());
    let python_first = median(&mut firsts[3].clone());
    let mut cold = String::from("## Cold start\n\n");
    let _ = writeln!(
        cold,
        "A minimal Lambda Runtime API in the bench harness (`benches/src/runtime_api.rs`) starts \
         each release bootstrap ({} rounds, interleaved with the peer, after one discarded round \
         that warms DynamoDB Local's JVM) with Lambda's environment (128 MB, `TABLE_NAME`, \
         DynamoDB Local as the endpoint) and times **init** (exec to the first `GET \
         /runtime/invocation/next`, what Lambda reports as Init Duration) and the **first \
         invocation** (event handed out to answer posted, DynamoDB requests included): \
         process_message records the first message of a new conversation, end_conversation ends \
         a conversation that exists (created with one message through the store before the \
         function starts), feedback_loop runs for the tenant (learning the outcomes ended since \
         the previous round). Peer: the stack a user of the Python original would pick, a boto3 \
         handler under `awslambdaric` (`benches/python/handler.py`), same harness, same table: \
         {peer}. Each first answer is checked (status 200; for feedback_loop a finished run); \
         failed first invocations: **{failures}**, and a round whose first invocation failed is \
         left out of every column.\n\n\
         As deployed, each function opens its DynamoDB connection during init (one read), so \
         that the first request pays no handshake; the peer, like boto3 by default, does not. \
         Both are shown: *init, no warm-up* (`SALESLOOP_WARM_UP=0`) is the like-for-like \
         comparison with the peer's init, *init + first invocation* the whole cold request.\n",
        scale.cold_rounds
    );
    let _ = writeln!(
        cold,
        "| function | init, as deployed (median, min – max) | first invocation | init + first | init, no warm-up | first invocation, no warm-up | peer init ÷ init (no warm-up / as deployed) |"
    );
    let _ = writeln!(cold, "|---|---|---|---|---|---|---|");
    let mut summary = Vec::new();
    for (k, (kind, warm)) in COLD.into_iter().enumerate() {
        if kind != Kind::Python && !warm {
            continue;
        }
        let mut i = inits[k].clone();
        let init = median(&mut i);
        let first = median(&mut firsts[k].clone());
        if kind == Kind::Python {
            let _ = writeln!(
                cold,
                "| {}{} | {} ({} – {}) | {} | {} | | | 1× |",
                kind.name(),
                rounds(k),
                ms(init),
                ms(i[0]),
                ms(*i.last().expect("rounds")),
                ms(first),
                ms(init + first),
            );
            continue;
        }
        let cold_k = COLD
            .iter()
            .position(|&(kk, w)| kk == kind && !w)
            .expect("the no-warm-up variant");
        let bare_init = median(&mut inits[cold_k].clone());
        let bare_first = median(&mut firsts[cold_k].clone());
        let ratio = python_init.as_secs_f64() / init.as_secs_f64();
        let bare_ratio = python_init.as_secs_f64() / bare_init.as_secs_f64();
        let _ = writeln!(
            cold,
            "| {}{} | {} ({} – {}) | {} | {} | {}{} | {} | **{bare_ratio:.0}×** / {ratio:.0}× |",
            kind.name(),
            rounds(k),
            ms(init),
            ms(i[0]),
            ms(*i.last().expect("rounds")),
            ms(first),
            ms(init + first),
            ms(bare_init),
            rounds(cold_k),
            ms(bare_first),
        );
        summary.push([
            format!("cold start (init), {}", kind.name()),
            format!(
                "{} without the warm-up read ({bare_ratio:.0}× faster); {} as deployed ({ratio:.0}×)",
                ms(bare_init),
                ms(init)
            ),
            "at least 50× faster than the peer without the warm-up read, 25× as deployed".to_owned(),
            format!(
                "Python peer {} (init + first invocation {} vs {} as deployed)",
                ms(python_init),
                ms(python_init + python_first),
                ms(init + first)
            ),
        ]);
    }

    // Memory: one process of each through many invocations.
    let mut memory = String::from("## Memory\n\n");
    let _ = writeln!(
        memory,
        "Each function started once under the harness and invoked {} times against DynamoDB \
         Local (process_message: one message to each of {} conversations; end_conversation: ends \
         them; feedback_loop: one triggered run per invocation, the first learning every outcome; \
         the peer: as process_message). Peak RSS is the kernel's VmHWM. Every answer is checked \
         as in the cold starts; a failure would be inside the peak RSS, so the run stops on one \
         instead of printing it.\n",
        scale.invocations, scale.invocations
    );
    let _ = writeln!(
        memory,
        "| function | peak RSS after {} | peak RSS after {} | RSS growth {} → {} | warm p50 | warm p99 | budget |",
        scale.checkpoint, scale.invocations, scale.checkpoint, scale.invocations
    );
    let _ = writeln!(memory, "|---|---|---|---|---|---|---|");
    let mut invocations = Vec::new();
    for kind in KINDS {
        let mut function = setup
            .start(kind, true)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        function
            .init()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
        let mut at_checkpoint = (0, 0);
        let mut took = Vec::with_capacity(scale.invocations);
        let mut counted = Invocations::new(format!(
            "memory run: {}, {} invocations",
            kind.name(),
            scale.invocations
        ));
        for n in 0..scale.invocations {
            // end_conversation ends conversation c-n, which process_message's run (before it in
            // KINDS) created.
            let answer = function
                .invoke(kind.event("c", n))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
            if counted.count(check(kind, &answer)) {
                took.push(answer.took);
            }
            if n + 1 == scale.checkpoint {
                at_checkpoint = function.memory_kib().unwrap_or_default();
            }
        }
        let at_end = function.memory_kib().unwrap_or_default();
        function.stop().await;
        // The latencies can leave a failure out; the process's peak memory cannot.
        if counted.failed > 0 {
            fail(format!(
                "{}: {} failed (first: {}); its peak RSS would count them",
                counted.what,
                counted.failed,
                counted.first_failure.as_deref().unwrap_or_default()
            ));
        }
        invocations.push(counted);
        took.sort();
        let mb = |kib: u64| format!("{:.1} MB", kib as f64 / 1024.0);
        let growth = at_end.1 as i64 - at_checkpoint.1 as i64;
        let _ = writeln!(
            memory,
            "| {} | {} | {} | {:+} KB | {} | {} | {} |",
            kind.name(),
            mb(at_checkpoint.0),
            mb(at_end.0),
            growth,
            ms(percentile(&took, 50.0)),
            ms(percentile(&took, 99.0)),
            if kind == Kind::Python {
                ""
            } else {
                "under 24 MB"
            }
        );
        if kind != Kind::Python {
            summary.push([
                format!(
                    "peak RSS over {} invocations, {}",
                    scale.invocations,
                    kind.name()
                ),
                format!(
                    "{} (growth {:+} KB after the {}th)",
                    mb(at_end.0),
                    growth,
                    scale.checkpoint
                ),
                "under 24 MB, no growth".to_owned(),
                String::new(),
            ]);
        } else {
            summary.push([
                format!(
                    "peak RSS over {} invocations, Python peer",
                    scale.invocations
                ),
                mb(at_end.0),
                String::new(),
                "(the peer)".to_owned(),
            ]);
        }
    }
    vec![
        Section {
            markdown: cold,
            summary: summary.drain(..3).collect(),
            invocations: counted,
        },
        Section {
            markdown: memory,
            summary,
            invocations,
        },
    ]
}
