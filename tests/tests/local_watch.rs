//! End to end through `cargo lambda watch` (the README's run command): real HTTP requests to the
//! emulator's router reach process_message, end_conversation and read_api, which answer from
//! the embedded store; then headless Chromium opens the dashboard the local run serves, fails
//! on any browser-side error, and saves screenshots.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use salesloop::Store;
use salesloop_tests::workspace_root;
use serde_json::Value;

/// The emulator in its own process group, stopped (with the functions it started) on drop.
struct Watch {
    child: Child,
    port: u16,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let group = self.child.id() as i32;
        // SAFETY: signals a process group this test created.
        unsafe {
            libc::killpg(group, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        unsafe {
            libc::killpg(group, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn start_watch(data_dir: &std::path::Path) -> Watch {
    start_watch_with(data_dir, &[])
}

fn start_watch_with(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Watch {
    start_watch_to(data_dir, env, Stdio::inherit(), Stdio::inherit())
}

fn start_watch_to(
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
    stdout: Stdio,
    stderr: Stdio,
) -> Watch {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let mut command = Command::new("bash");
    command
        .arg(workspace_root().join("scripts/watch.sh"))
        .args(["--invoke-address", "127.0.0.1", "--invoke-port"])
        .arg(port.to_string())
        .current_dir(workspace_root())
        .env("SALESLOOP_DATA_DIR", data_dir)
        // end_conversation's trigger reaches the emulator's invoke API, every second end.
        .env(
            "AWS_ENDPOINT_URL_LAMBDA",
            format!("http://127.0.0.1:{port}"),
        )
        .env("FEEDBACK_EVERY", "2")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // SAFETY: setsid and prctl only change the child's own process state.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = command.spawn().expect("start cargo lambda watch");
    Watch { child, port }
}

/// One HTTP/1.1 request; returns the status, the headers (lower-cased names) and the body.
fn exchange(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Option<(u16, String, String)> {
    exchange_with(port, method, path, &[], body, timeout)
}

/// [`exchange`] with more request headers.
fn exchange_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> Option<(u16, String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, payload) = text.split_once("\r\n\r\n")?;
    Some((status, head.to_ascii_lowercase(), payload.to_owned()))
}

/// The JSON object of a body (the emulator may answer chunked: the object sits between the
/// first `{` and the last `}`).
fn json_of(payload: &str) -> Option<Value> {
    serde_json::from_str(&payload[payload.find('{')?..=payload.rfind('}')?]).ok()
}

/// A POST; returns the status and the JSON body.
fn post(port: u16, path: &str, body: &str, timeout: Duration) -> Option<(u16, Value)> {
    let (status, _, payload) = exchange(port, "POST", path, body, timeout)?;
    Some((status, json_of(&payload)?))
}

/// A GET of a read route; returns the status and the JSON body.
fn get(port: u16, path: &str, timeout: Duration) -> Option<(u16, Value)> {
    let (status, _, payload) = exchange(port, "GET", path, "", timeout)?;
    Some((status, json_of(&payload)?))
}

/// The issue's check, through the README's run command: with `TABLE_NAME` set and DynamoDB's
/// endpoint a closed port (fake credentials), a message still answers 200 with a reply,
/// `"recorded": false`, and the exchange is written as the last-resort log line (a local run
/// has no spool).
#[test]
fn a_local_run_whose_store_is_down_answers_unrecorded() {
    let data = tempfile::tempdir().unwrap();
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let log = tempfile::NamedTempFile::new().unwrap();
    let endpoint = format!("http://127.0.0.1:{closed}");
    let watch = start_watch_logged(
        data.path(),
        &[
            ("TABLE_NAME", "salesloop-down"),
            ("AWS_ENDPOINT_URL_DYNAMODB", &endpoint),
            ("AWS_ACCESS_KEY_ID", "local"),
            ("AWS_SECRET_ACCESS_KEY", "local"),
            ("AWS_REGION", "us-east-1"),
        ],
        log.path(),
    );
    let message = r#"{"message_id":"m1","text":"too expensive for us"}"#;
    // The emulator builds process_message on its first request: allow for the build.
    let deadline = Instant::now() + Duration::from_secs(600);
    let answer = loop {
        let sent = Instant::now();
        if let Some(answer) = post(
            watch.port,
            "/conversations/c1/messages",
            message,
            Duration::from_secs(600),
        ) {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "cargo lambda watch never answered ({:?})",
            sent.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(answer.1["recorded"], false);
    assert_eq!(answer.1["turn"], Value::Null);
    assert!(!answer.1["reply"]["text"].as_str().unwrap().is_empty());
    // Warm: the time of one more message, printed (speed is measured by benchmarks, not here).
    let sent = Instant::now();
    let again = post(
        watch.port,
        "/conversations/c1/messages",
        r#"{"message_id":"m2","text":"how do I sign up?"}"#,
        Duration::from_secs(60),
    )
    .expect("an answer");
    println!("a warm message with the store down: {:?}", sent.elapsed());
    assert_eq!((again.0, &again.1["recorded"]), (200, &Value::Bool(false)));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logged = std::fs::read_to_string(log.path()).unwrap_or_default();
        let records: Vec<_> = logged
            .lines()
            .filter_map(salesloop::domain::spool::SpooledExchange::from_log_line)
            .collect();
        if records.len() == 2 {
            let ids: Vec<_> = records
                .into_iter()
                .map(|r| r.unwrap().draft.message_id.to_string())
                .collect();
            assert_eq!(ids, ["m1", "m2"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the log holds {} records",
            records.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`start_watch_with`], its output (the functions' logs) written to `log`.
fn start_watch_logged(
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
    log: &std::path::Path,
) -> Watch {
    let out = std::fs::File::create(log).expect("the log file");
    let err = out.try_clone().expect("the log file");
    start_watch_to(data_dir, env, Stdio::from(out), Stdio::from(err))
}

#[test]
fn the_local_run_command_answers_real_http_requests() {
    let data = tempfile::tempdir().unwrap();
    let watch = start_watch(data.path());
    let message = r#"{"message_id":"m1","text":"too expensive"}"#;
    // The emulator builds process_message on its first request: allow for the build.
    let deadline = Instant::now() + Duration::from_secs(600);
    let first = loop {
        if let Some(answer) = post(
            watch.port,
            "/conversations/c1/messages",
            message,
            Duration::from_secs(600),
        ) {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "cargo lambda watch never answered"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(first.1["turn"], 1);
    assert_eq!(first.1["patterns"][0]["name"], "objection.price");
    let again = post(
        watch.port,
        "/conversations/c1/messages",
        message,
        Duration::from_secs(60),
    )
    .expect("second answer");
    assert_eq!(again, first, "a repeated message gets the same answer");
    let next = post(
        watch.port,
        "/conversations/c1/messages",
        r#"{"message_id":"m2","text":"how do I sign up?"}"#,
        Duration::from_secs(60),
    )
    .expect("third answer");
    assert_eq!(next.1["turn"], 2);
    let bad = post(
        watch.port,
        "/conversations/c1/messages",
        "{oops",
        Duration::from_secs(60),
    )
    .expect("answer to bad JSON");
    assert_eq!(bad.0, 400);
    assert_eq!(bad.1["error"]["code"], "invalid_json");
    // The embedded store file the functions wrote is where the run command said.
    assert!(data.path().join("salesloop.sqlite3").exists());

    // Labels go to end_conversation (built on its first request).
    let labelled = post(
        watch.port,
        "/conversations/c1/labels",
        r#"[{"turn":1,"pattern":"objection.price","correct":true}]"#,
        Duration::from_secs(600),
    )
    .expect("labels answer");
    assert_eq!(labelled.0, 200, "{}", labelled.1);
    assert_eq!(labelled.1["stored"], 1);

    // Ending a conversation goes to end_conversation too, and the second end reaches
    // feedback_loop through the emulator's invoke API.
    let ended = post(
        watch.port,
        "/conversations/c1/end",
        r#"{"outcome":"won"}"#,
        Duration::from_secs(60),
    )
    .expect("end answer");
    assert_eq!(ended.0, 200, "{}", ended.1);
    assert_eq!(ended.1["turns"], 2);
    // The run learns outcomes older than its settle time (1 s locally): let c1 settle.
    std::thread::sleep(Duration::from_millis(1500));
    post(
        watch.port,
        "/conversations/c2/messages",
        r#"{"message_id":"m1","text":"let's do it"}"#,
        Duration::from_secs(60),
    )
    .expect("c2 message");
    let second = post(
        watch.port,
        "/conversations/c2/end",
        r#"{"outcome":"lost"}"#,
        Duration::from_secs(60),
    )
    .expect("second end");
    assert_eq!(second.0, 200, "{}", second.1);
    let store = salesloop::EmbeddedStore::open_dir(data.path()).unwrap();
    let tenant = salesloop::TenantId::parse("local").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let model = loop {
        if let Some(model) = runtime.block_on(store.current_model(&tenant)).unwrap() {
            break model;
        }
        assert!(
            Instant::now() < deadline,
            "the triggered feedback run never published"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(model.version, 1);
    assert!(model.outcomes_learned >= 1, "{model:?}");

    // The read routes (read_api, built on its first request) answer what was stored.
    let long = Duration::from_secs(600);
    let (status, conversation) = get(watch.port, "/conversations/c1", long).expect("read c1");
    assert_eq!(status, 200, "{conversation}");
    let log = runtime
        .block_on(store.conversation_log(&tenant, &salesloop::ConversationId::parse("c1").unwrap()))
        .unwrap();
    assert_eq!(conversation["turns"].as_array().unwrap().len(), 2);
    assert_eq!(conversation["turns"][0]["message_id"], "m1");
    assert_eq!(
        conversation["turns"][0]["patterns"][0]["pattern"],
        "objection.price"
    );
    assert_eq!(conversation["end"]["outcome"], "won");
    assert_eq!(conversation["labels"][0]["pattern"], "objection.price");
    assert_eq!(log.exchanges.len(), 2);
    let short = Duration::from_secs(60);
    let (status, list) = get(watch.port, "/conversations?limit=10", short).expect("list");
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["conversation_id"].as_str())
        .collect();
    assert_eq!(ids, ["c2", "c1"], "newest first");
    let (status, models) = get(watch.port, "/models", short).expect("models");
    assert_eq!(
        (status, models["models"][0]["version"].clone()),
        (200, 1.into())
    );
    let (status, one) = get(watch.port, "/models/1", short).expect("model 1");
    assert_eq!(status, 200, "{one}");
    assert!(!one["posteriors"].as_object().unwrap().is_empty(), "{one}");
    let (status, report) = get(watch.port, "/report", short).expect("report");
    assert_eq!((status, report["version"].clone()), (200, 1.into()));
    assert_eq!(report["tenant"], "local");
    assert!(
        report["report"]["experiments"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    );
    let (status, missing) = get(watch.port, "/models/7", short).expect("model 7");
    assert_eq!(
        (status, missing["error"]["code"].clone()),
        (404, "model_not_found".into())
    );
    let (status, head, page) =
        exchange(watch.port, "GET", "/dashboard", "", short).expect("dashboard");
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        page.contains("<svg") || page.contains("createElementNS"),
        "the page draws SVG"
    );

    // A real browser: the page must draw its charts and a conversation without one error
    // in the console, and without fetching anything from elsewhere.
    let chromium = Command::new("bash")
        .arg(workspace_root().join("scripts/ensure-chromium.sh"))
        .output()
        .expect("run scripts/ensure-chromium.sh");
    assert!(
        chromium.status.success(),
        "no Chromium: {}",
        String::from_utf8_lossy(&chromium.stderr)
    );
    let chromium = String::from_utf8_lossy(&chromium.stdout).trim().to_owned();
    let shots = screenshot_dir();
    let checked = Command::new("python3")
        .arg(workspace_root().join("scripts/browser_check.py"))
        .args([
            "--url",
            &format!("http://127.0.0.1:{}/dashboard", watch.port),
        ])
        .arg("--out")
        .arg(&shots)
        .args(["--chromium", &chromium, "--name", "dashboard"])
        .args([
            "--expect",
            "svg.chart>=5",
            "--expect",
            "[data-chart=learning-curve]>=1",
        ])
        .args([
            "--expect",
            "[data-chart=detection]>=1",
            "--expect",
            "[data-chart=tracking]>=1",
            "--expect",
            "[data-chart=configuration]>=1",
        ])
        .args(["--expect", "[data-conversation]>=2", "--expect", ".turn>=1"])
        .args([
            "--click",
            "[data-conversation=c1]",
            "--then-name",
            "dashboard-conversation",
        ])
        .args(["--then-expect", ".turn>=2"])
        .output()
        .expect("run scripts/browser_check.py");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    println!("{said}");
    assert!(
        checked.status.success(),
        "the browser check failed:\n{said}"
    );
    for name in ["dashboard.png", "dashboard-conversation.png"] {
        let size = std::fs::metadata(shots.join(name))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size > 10_000, "{name}: {size} bytes");
    }
    drop(watch);
}

/// Where the browser check saves its screenshots: `target/screenshots` (kept after the run).
fn screenshot_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tenant's admin and agent over the local run: requests as tenant `steer`, the admin ones
/// with the local admin header.
struct Steer {
    port: u16,
}

impl Steer {
    const TIMEOUT: Duration = Duration::from_secs(600);

    /// A request as the tenant; `admin` adds the admin header, `if_match` an `If-Match`.
    /// Returns the status, the `ETag` (if any) and the JSON body.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: &str,
        admin: bool,
        if_match: Option<&str>,
    ) -> (u16, Option<String>, Value) {
        let mut headers = vec![("x-tenant-id", "steer")];
        if admin {
            headers.push(("x-salesloop-role", "admin"));
        }
        if let Some(tag) = if_match {
            headers.push(("if-match", tag));
        }
        let (status, head, payload) =
            exchange_with(self.port, method, path, &headers, body, Self::TIMEOUT)
                .unwrap_or_else(|| panic!("{method} {path}: no answer"));
        let etag = head
            .lines()
            .find_map(|line| line.strip_prefix("etag: "))
            .map(|tag| tag.trim().to_owned());
        let json = json_of(&payload).unwrap_or_else(|| panic!("{method} {path}: {payload}"));
        (status, etag, json)
    }

    fn admin(&self, method: &str, path: &str, body: &str, if_match: Option<&str>) -> Value {
        let (status, _, json) = self.call(method, path, body, true, if_match);
        assert_eq!(status, 200, "{method} {path}: {json}");
        json
    }

    /// A message of conversation `conversation`; its answer.
    fn say(&self, conversation: &str, message_id: &str) -> Value {
        let body = format!(r#"{{"message_id":"{message_id}","text":"too expensive for us"}}"#);
        let path = format!("/conversations/{conversation}/messages");
        let (status, _, json) = self.call("POST", &path, &body, false, None);
        assert_eq!(status, 200, "{json}");
        json
    }
}

/// The issue's run-time steering, through the README's run command: change weights, stop an
/// experiment, ship a variant, replace the playbook, roll a model back. Each reaches new
/// conversations within the cache time (`CACHE_SECONDS=1` here) and leaves a conversation that
/// started before it as it was; a stale `If-Match` is a 412.
#[test]
fn admins_steer_new_conversations_at_run_time_and_running_ones_keep_theirs() {
    use salesloop::domain::config::TenantConfig;
    let data = tempfile::tempdir().unwrap();
    let watch = start_watch_with(data.path(), &[("CACHE_SECONDS", "1")]);
    let steer = Steer { port: watch.port };
    let tenant = salesloop::TenantId::parse("steer").unwrap();
    let conversation = |raw: &str| salesloop::ConversationId::parse(raw).unwrap();
    let builtin = TenantConfig::builtin();
    // A running conversation whose built-in variants are the ones every change moves away from.
    let running = (0..10_000)
        .map(|i| format!("run-{i}"))
        .find(|id| {
            let assigned = builtin.assign(&tenant, &conversation(id), 0.7);
            assigned.variants["reply_tone"] == "neutral"
                && assigned.variants["detection_threshold"] == "strict"
                && assigned.variants["strategy_policy"] == "thompson"
        })
        .expect("such a conversation id");
    // Two model versions in the tenant's store before anything runs (the functions share the
    // file); the conversation starts under version 2.
    let store = salesloop::EmbeddedStore::open_dir(data.path()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for version in [1, 2] {
        let mut model = salesloop::ModelVersion::priors();
        model.version = version;
        model.published_at = salesloop::Millis(version);
        let published = runtime.block_on(store.publish_model(&tenant, &model));
        assert_eq!(published, Ok(salesloop::Write::Done));
    }
    // The emulator builds process_message on its first request.
    let deadline = Instant::now() + Duration::from_secs(600);
    let first = loop {
        let body = r#"{"message_id":"m1","text":"too expensive for us"}"#;
        let path = format!("/conversations/{running}/messages");
        let headers = [("x-tenant-id", "steer")];
        if let Some((200, _, payload)) =
            exchange_with(watch.port, "POST", &path, &headers, body, Steer::TIMEOUT)
        {
            break json_of(&payload).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "cargo lambda watch never answered"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(first["config_version"], 0);
    assert_eq!(first["model_version"], 2);
    assert_eq!(first["experiments"]["reply_tone"], "neutral");
    let settle = || std::thread::sleep(Duration::from_millis(1_500));
    let mut fresh = 0;
    let mut new_conversation = |steer: &Steer| {
        fresh += 1;
        steer.say(&format!("new-{fresh}"), "m1")
    };

    // Without the admin right: 403, and nothing changes.
    let (status, _, refused) = steer.call("GET", "/experiments", "", false, None);
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, tag, experiments) = steer.call("GET", "/experiments", "", true, None);
    assert_eq!(
        (status, tag.as_deref()),
        (200, Some("\"0\"")),
        "{experiments}"
    );

    // 1. reply_tone's weights: nearly every new conversation is warm.
    let warm = r#"{"description":"warm wins","variants":[
        {"name":"neutral","weight":1,"control":true,"changes":{"tone":"neutral"}},
        {"name":"warm","weight":1000000,"changes":{"tone":"warm"}}]}"#;
    let changed = steer.admin("PUT", "/experiments/reply_tone", warm, Some("\"0\""));
    assert_eq!(changed["version"], 1, "{changed}");
    // Repeated against the version it was made against: 412, with the current version.
    let (status, tag, stale) =
        steer.call("PUT", "/experiments/reply_tone", warm, true, Some("\"0\""));
    assert_eq!(status, 412, "{stale}");
    assert_eq!(stale["error"]["code"], "precondition_failed");
    assert_eq!(tag.as_deref(), Some("\"1\""));
    settle();
    for _ in 0..3 {
        let answer = new_conversation(&steer);
        assert_eq!(answer["experiments"]["reply_tone"], "warm", "{answer}");
        assert_eq!(answer["config_version"], 1);
    }
    let kept = steer.say(&running, "m2");
    assert_eq!(kept["experiments"]["reply_tone"], "neutral", "{kept}");
    assert_eq!(kept["config_version"], 0);

    // 2. Stop detection_threshold: new conversations get its control.
    let stopped = steer.admin("POST", "/experiments/detection_threshold/stop", "", None);
    assert_eq!(stopped["version"], 2, "{stopped}");
    // 3. Ship strategy_policy's epsilon_greedy to every new conversation.
    let ship = r#"{"variant":"epsilon_greedy"}"#;
    let shipped = steer.admin(
        "POST",
        "/experiments/strategy_policy/ship",
        ship,
        Some("\"2\""),
    );
    assert_eq!(shipped["version"], 3, "{shipped}");
    let (status, _, stale) = steer.call(
        "POST",
        "/experiments/strategy_policy/ship",
        ship,
        true,
        Some("\"2\""),
    );
    assert_eq!(status, 412, "{stale}");
    settle();
    for _ in 0..3 {
        let answer = new_conversation(&steer);
        assert_eq!(
            answer["experiments"]["detection_threshold"], "default",
            "{answer}"
        );
        assert_eq!(
            answer["experiments"]["strategy_policy"], "epsilon_greedy",
            "{answer}"
        );
    }
    let kept = steer.say(&running, "m3");
    assert_eq!(
        kept["experiments"]["detection_threshold"], "strict",
        "{kept}"
    );
    assert_eq!(kept["experiments"]["strategy_policy"], "thompson", "{kept}");

    // 4. Replace the playbook: every template of the new one is marked.
    let (_, tag, current) = steer.call("GET", "/playbook", "", true, None);
    let mut playbook = current["playbook"].clone();
    for tones in playbook["strategies"].as_object_mut().unwrap().values_mut() {
        for templates in tones.as_object_mut().unwrap().values_mut() {
            for template in templates.as_array_mut().unwrap() {
                *template = Value::from(format!("[v4] {}", template.as_str().unwrap()));
            }
        }
    }
    let replaced = steer.admin("PUT", "/playbook", &playbook.to_string(), tag.as_deref());
    assert_eq!(replaced["version"], 4, "{replaced}");
    let (status, _, stale) = steer.call(
        "PUT",
        "/playbook",
        &playbook.to_string(),
        true,
        tag.as_deref(),
    );
    assert_eq!(status, 412, "{stale}");
    settle();
    let answer = new_conversation(&steer);
    assert!(
        answer["reply"]["text"]
            .as_str()
            .unwrap()
            .starts_with("[v4] "),
        "{answer}"
    );
    let kept = steer.say(&running, "m4");
    assert!(
        !kept["reply"]["text"].as_str().unwrap().starts_with("[v4]"),
        "{kept}"
    );

    // 5. Roll the model back to version 1: published as version 3, a copy.
    let (status, _, stale) = steer.call("POST", "/models/1/activate", "", true, Some("\"1\""));
    assert_eq!(status, 412, "{stale}");
    let activated = steer.admin("POST", "/models/1/activate", "", Some("\"2\""));
    assert_eq!(
        (
            activated["version"].clone(),
            activated["activated_from"].clone()
        ),
        (3.into(), 1.into())
    );
    settle();
    let answer = new_conversation(&steer);
    assert_eq!(answer["model_version"], 3, "{answer}");
    let kept = steer.say(&running, "m5");
    assert_eq!(kept["model_version"], 2, "{kept}");

    // The report says which configuration is current and what changed.
    let (status, _, report) = steer.call("GET", "/report", "", false, None);
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["config"]["version"], 4);
    assert_eq!(report["activated_from"], 1);
    let changes: Vec<String> = report["config"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v["changes"].as_array().unwrap().clone())
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        changes,
        [
            "playbook replaced",
            "experiment strategy_policy: shipped epsilon_greedy",
            "experiment detection_threshold: stopped, new conversations get default",
            "experiment reply_tone: neutral 1 / warm 1000000 (was neutral 50 / warm 50)",
        ],
        "{report}"
    );
    drop(watch);
}
