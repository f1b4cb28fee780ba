//! A minimal Lambda Runtime API (the protocol behind `AWS_LAMBDA_RUNTIME_API`): it hands a
//! function process one event per `GET .../invocation/next` and takes its answer, noting when
//! each happens. That is enough to time a bootstrap the way Lambda does (Init Duration: from
//! exec to the first request for work) and to drive it through thousands of invocations.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, mpsc};

const PREFIX: &str = "/2018-06-01/runtime";

/// What the function process said, and when.
#[derive(Debug)]
enum Heard {
    /// It asked for work.
    Next(Instant),
    /// It answered invocation `id` (or reported its failure).
    Answer {
        id: String,
        at: Instant,
        error: bool,
        body: Bytes,
    },
    /// It could not start.
    InitError(String),
}

struct Shared {
    events: Mutex<mpsc::Receiver<(String, String)>>,
    heard: mpsc::UnboundedSender<Heard>,
}

/// One function process under the harness.
pub struct Function {
    pub child: Child,
    events: mpsc::Sender<(String, String)>,
    heard: mpsc::UnboundedReceiver<Heard>,
    started: Instant,
    invoked: u64,
}

/// One invocation's answer.
pub struct Answer {
    pub took: Duration,
    pub body: Bytes,
    pub error: bool,
}

/// The command that starts a function, and its environment.
pub struct Launch<'a> {
    pub program: &'a Path,
    pub args: &'a [&'a str],
    pub dir: Option<&'a Path>,
    pub env: Vec<(String, String)>,
}

async fn serve(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let ok = |status: u16| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"status\":\"OK\"}")))
            .expect("a response")
    };
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return ok(404);
    };
    if method == hyper::Method::GET && rest == "/invocation/next" {
        let _ = shared.heard.send(Heard::Next(Instant::now()));
        let next = shared.events.lock().await.recv().await;
        let Some((id, event)) = next else {
            // The harness is done with this process: it is about to be killed.
            std::future::pending::<()>().await;
            unreachable!()
        };
        let deadline = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() + 900_000)
            .unwrap_or(0);
        return Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("lambda-runtime-aws-request-id", id)
            .header("lambda-runtime-deadline-ms", deadline.to_string())
            .header(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:bench",
            )
            .header(
                "lambda-runtime-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            )
            .body(Full::new(Bytes::from(event)))
            .expect("a response");
    }
    if method == hyper::Method::POST && rest == "/init/error" {
        let _ = shared.heard.send(Heard::InitError(
            String::from_utf8_lossy(&body).into_owned(),
        ));
        return ok(202);
    }
    if method == hyper::Method::POST
        && let Some(tail) = rest.strip_prefix("/invocation/")
        && let Some((id, kind)) = tail.split_once('/')
        && (kind == "response" || kind == "error")
    {
        let _ = shared.heard.send(Heard::Answer {
            id: id.to_owned(),
            at: Instant::now(),
            error: kind == "error",
            body,
        });
        return ok(202);
    }
    ok(404)
}

impl Function {
    /// Starts a Runtime API on a free port and then the function process against it.
    pub async fn start(launch: Launch<'_>) -> Result<Function, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
        let (events_tx, events_rx) = mpsc::channel(1);
        let (heard_tx, heard_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            events: Mutex::new(events_rx),
            heard: heard_tx,
        });
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(serve(shared, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let mut command = Command::new(launch.program);
        command
            .args(launch.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .envs(launch.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(dir) = launch.dir {
            command.current_dir(dir);
        }
        let started = Instant::now();
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", launch.program.display()))?;
        Ok(Function {
            child,
            events: events_tx,
            heard: heard_rx,
            started,
            invoked: 0,
        })
    }

    async fn hear(&mut self) -> Result<Heard, String> {
        match tokio::time::timeout(Duration::from_secs(60), self.heard.recv()).await {
            Ok(Some(heard)) => Ok(heard),
            Ok(None) => Err("the Runtime API stopped".into()),
            Err(_) => Err("the function said nothing for 60 s".into()),
        }
    }

    /// Init Duration: from exec to the first request for work.
    pub async fn init(&mut self) -> Result<Duration, String> {
        match self.hear().await? {
            Heard::Next(at) => Ok(at - self.started),
            Heard::InitError(why) => Err(format!("init failed: {why}")),
            other => Err(format!("unexpected before init: {other:?}")),
        }
    }

    /// Hands the function one event and waits for its answer (and its next request for work).
    pub async fn invoke(&mut self, event: String) -> Result<Answer, String> {
        self.invoked += 1;
        let id = format!("bench-{:08}", self.invoked);
        let sent = Instant::now();
        self.events
            .send((id.clone(), event))
            .await
            .map_err(|_| "the Runtime API stopped".to_string())?;
        loop {
            match self.hear().await? {
                Heard::Answer {
                    id: answered,
                    at,
                    error,
                    body,
                } if answered == id => {
                    return Ok(Answer {
                        took: at - sent,
                        body,
                        error,
                    });
                }
                Heard::Next(_) => continue,
                other => return Err(format!("unexpected during an invocation: {other:?}")),
            }
        }
    }

    /// Peak and current resident memory (VmHWM, VmRSS) in KiB, from /proc.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some((field("VmHWM:")?, field("VmRSS:")?))
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
