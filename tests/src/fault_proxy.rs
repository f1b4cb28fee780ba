//! A fault-injecting HTTP proxy for the chaos suite, put between the DynamoDB client and
//! DynamoDB Local. It answers a share of calls with DynamoDB's throttling errors and drops a
//! share of connections, some before forwarding the call and some after DynamoDB Local has
//! carried it out (the write happened, its answer is lost), can hold calls unanswered, and
//! counts what it injected.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use salesloop::domain::random::Rng;

/// The share of calls that meet each fault; the rest are forwarded untouched.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// Answered `400 ThrottlingException`.
    pub throttle: f64,
    /// Answered `400 ProvisionedThroughputExceededException`.
    pub capacity: f64,
    /// The connection is closed before the call reaches DynamoDB Local.
    pub drop_before: f64,
    /// The call is carried out, then the connection is closed instead of answering.
    pub drop_after: f64,
    /// The call is held unanswered for a minute, then its connection is closed: a store that
    /// hangs.
    pub stall: f64,
}

/// What the proxy did, counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injected {
    pub calls: u64,
    pub throttled: u64,
    pub capacity_exceeded: u64,
    pub dropped_before: u64,
    pub dropped_after: u64,
    pub stalled: u64,
}

impl Injected {
    pub fn faults(&self) -> u64 {
        self.throttled
            + self.capacity_exceeded
            + self.dropped_before
            + self.dropped_after
            + self.stalled
    }
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} calls, {} faults injected: {} ThrottlingException, {} \
             ProvisionedThroughputExceededException, {} dropped before forwarding, {} dropped \
             after forwarding (answer lost), {} held unanswered",
            self.calls,
            self.faults(),
            self.throttled,
            self.capacity_exceeded,
            self.dropped_before,
            self.dropped_after,
            self.stalled
        )
    }
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    throttled: AtomicU64,
    capacity_exceeded: AtomicU64,
    dropped_before: AtomicU64,
    dropped_after: AtomicU64,
    stalled: AtomicU64,
}

/// Returned by the proxy's service to make hyper close the connection without answering.
#[derive(Debug)]
struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by the fault proxy")
    }
}

impl std::error::Error for DropConnection {}

enum Fault {
    None,
    Throttle,
    Capacity,
    DropBefore,
    DropAfter,
    Stall,
}

struct State {
    upstream: String,
    rates: Mutex<FaultRates>,
    rng: Mutex<Rng>,
    counters: Counters,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl State {
    fn draw(&self) -> Fault {
        let rates = *self.rates.lock().unwrap_or_else(|p| p.into_inner());
        let u = self.rng.lock().unwrap_or_else(|p| p.into_inner()).uniform();
        let mut edge = rates.throttle;
        if u < edge {
            return Fault::Throttle;
        }
        edge += rates.capacity;
        if u < edge {
            return Fault::Capacity;
        }
        edge += rates.drop_before;
        if u < edge {
            return Fault::DropBefore;
        }
        edge += rates.drop_after;
        if u < edge {
            return Fault::DropAfter;
        }
        edge += rates.stall;
        if u < edge {
            return Fault::Stall;
        }
        Fault::None
    }

    async fn handle(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, DropConnection> {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map_err(|_| DropConnection)?.to_bytes();
        match self.draw() {
            Fault::Throttle => {
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                return Ok(dynamodb_error(
                    "ThrottlingException",
                    "Rate of requests exceeds the allowed throughput.",
                ));
            }
            Fault::Capacity => {
                self.counters
                    .capacity_exceeded
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(dynamodb_error(
                    "ProvisionedThroughputExceededException",
                    "The level of configured provisioned throughput for the table was exceeded.",
                ));
            }
            Fault::DropBefore => {
                self.counters.dropped_before.fetch_add(1, Ordering::Relaxed);
                return Err(DropConnection);
            }
            Fault::DropAfter => {
                self.forward(parts, body).await?;
                self.counters.dropped_after.fetch_add(1, Ordering::Relaxed);
                return Err(DropConnection);
            }
            Fault::Stall => {
                self.counters.stalled.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                return Err(DropConnection);
            }
            Fault::None => {}
        }
        self.forward(parts, body).await
    }

    /// Sends the call on to DynamoDB Local and reads its whole answer. If DynamoDB Local
    /// cannot be reached, the client's connection is dropped, as a network failure would.
    async fn forward(
        &self,
        parts: hyper::http::request::Parts,
        body: Bytes,
    ) -> Result<Response<Full<Bytes>>, DropConnection> {
        let path = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let mut builder = Request::builder()
            .method(parts.method)
            .uri(format!("{}{path}", self.upstream));
        for (name, value) in &parts.headers {
            builder = builder.header(name, value);
        }
        let request = builder.body(Full::new(body)).map_err(|_| DropConnection)?;
        let answer = self
            .client
            .request(request)
            .await
            .map_err(|_| DropConnection)?;
        let (parts, body) = answer.into_parts();
        let body = body.collect().await.map_err(|_| DropConnection)?.to_bytes();
        let mut response = Response::builder().status(parts.status);
        for (name, value) in &parts.headers {
            // The body is passed on whole, with its length: no chunking, no hop-by-hop headers.
            if name != hyper::header::TRANSFER_ENCODING && name != hyper::header::CONNECTION {
                response = response.header(name, value);
            }
        }
        response.body(Full::new(body)).map_err(|_| DropConnection)
    }
}

/// DynamoDB's error answer, as the service sends it (JSON 1.0 protocol).
fn dynamodb_error(code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "__type": format!("com.amazonaws.dynamodb.v20120810#{code}"),
        "message": message,
    })
    .to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    response
}

/// A running proxy on a free loopback port; it stops accepting when dropped.
pub struct FaultProxy {
    address: SocketAddr,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://host:port`) that injects faults at `rates`,
    /// drawn from a generator seeded with `seed`.
    pub async fn start(upstream: &str, rates: FaultRates, seed: u64) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_owned(),
            rates: Mutex::new(rates),
            rng: Mutex::new(Rng::seeded(seed)),
            counters: Counters::default(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { state.handle(request).await }
                    });
                    // An error here is a dropped connection, injected or the client's own.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(FaultProxy {
            address,
            state,
            accept,
        })
    }

    /// The address to give the DynamoDB client as its endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn set_rates(&self, rates: FaultRates) {
        *self.state.rates.lock().unwrap_or_else(|p| p.into_inner()) = rates;
    }

    pub fn injected(&self) -> Injected {
        let c = &self.state.counters;
        Injected {
            calls: c.calls.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            capacity_exceeded: c.capacity_exceeded.load(Ordering::Relaxed),
            dropped_before: c.dropped_before.load(Ordering::Relaxed),
            dropped_after: c.dropped_after.load(Ordering::Relaxed),
            stalled: c.stalled.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
