//! A load of chat messages through process_message, and the check of what it left in the store.
//!
//! Each client owns some conversations and sends their messages in order, one conversation's
//! next message only after the previous one was answered, interleaving its conversations. A
//! 503 is retried with the same message_id after its Retry-After (capped, to keep tests short),
//! and so is a failed connection; every `repeat_every`-th acknowledged message is sent again.
//! A 200 is an acknowledgement whether the exchange was recorded (`"recorded": true`, with its
//! turn) or not (`"recorded": false`, turn null: it went to the spool or the last-resort log,
//! and gets its turn when it is recorded later, docs/spool.md). Afterwards [`verify`] reads the
//! store back.
//!
//! What [`verify`] asserts about order, precisely: in each conversation the turns are 1..n
//! without gaps; the exchanges recorded directly (`via` absent) have increasing turns in the
//! order their messages were sent, and so do those recorded from the spool (`via: spool`) and
//! those replayed from the log (`via: replay`), each group among itself. Nothing is asserted
//! about how the groups interleave: a spooled exchange takes the next free turn when it gets
//! there, after the direct ones recorded meanwhile.
//!
//! What the answers imply: each acknowledged message is stored exactly once. If it got a
//! `"recorded": true` answer (first or repeat), the first such answer equals the stored
//! exchange, turn included, and that exchange was recorded directly. If all its answers were
//! `"recorded": false`, the stored exchange equals one of them apart from the turn: recorded
//! from the spool or the log, or directly when an append landed after its budget ran out; the
//! first answer, or the repeat's when the repeat's append landed before the first's spooled
//! copy got there (counted). The stored exchange's events are those the matching answer
//! implies at the stored turn, and the events counted from the table's raw items are those the
//! matching answers imply. A repeat of a recorded answer that is recorded too is identical to
//! it; a repeat answered `"recorded": false` (the store could not be read to find the first
//! answer) is counted, not compared.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lambda_http::Body;
use process_message::handler::{App, handle};
use salesloop::domain::conversation::ConversationSummary;
use salesloop::domain::spool::Via;
use salesloop::{ConversationId, Exchange, Millis, Store, TenantId};
use serde_json::{Value, json};

use crate::events::{Flavor, request};

/// Texts the clients send, with and without sales patterns in them.
const TEXTS: [&str; 12] = [
    "Honestly this looks too expensive for us.",
    "We are evaluating other vendors right now.",
    "I need to check with my boss before we decide.",
    "How do I sign up?",
    "Could you show me a demo next week?",
    "Sounds good, let's do it.",
    "Our reporting takes forever and it is a real pain.",
    "How much does the enterprise plan cost?",
    "Does it integrate with our CRM?",
    "Hello there, just looking around.",
    "Maybe next quarter, the timing is bad for us.",
    "I am not sure we really need this.",
];

/// Attempts at one message before a client gives up on it (and the run fails).
const MAX_ATTEMPTS: u32 = 2_000;
/// The pause before retrying after a failed connection.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// What to send.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tenant: String,
    /// Conversation ids are `{prefix}-{n:04}`.
    pub prefix: String,
    pub conversations: usize,
    pub messages_per_conversation: usize,
    pub clients: usize,
    /// Every n-th acknowledged message is sent again (0: never).
    pub repeat_every: usize,
    /// Retry-After is respected up to this long.
    pub retry_after_cap: Duration,
}

impl Plan {
    pub fn messages(&self) -> usize {
        self.conversations * self.messages_per_conversation
    }

    pub fn conversation(&self, c: usize) -> String {
        format!("{}-{c:04}", self.prefix)
    }

    pub fn message_id(&self, m: usize) -> String {
        format!("m-{m:04}")
    }

    pub fn text(&self, c: usize, m: usize) -> &'static str {
        TEXTS[(c * 7 + m * 5) % TEXTS.len()]
    }

    fn body(&self, c: usize, m: usize) -> String {
        json!({"message_id": self.message_id(m), "text": self.text(c, m)}).to_string()
    }
}

/// An HTTP answer, as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

/// Why no answer came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoAnswer {
    /// No connection could be made: the request never reached the function.
    Refused(String),
    /// The request was on its way or being served when its connection broke.
    Cut(String),
}

/// How a message reaches process_message.
pub trait Transport: Send + Sync + 'static {
    /// Posts `body` to `/conversations/{conversation}/messages` as `tenant`.
    fn post_message(
        &self,
        tenant: &str,
        conversation: &str,
        body: String,
    ) -> impl Future<Output = Result<Answer, NoAnswer>> + Send;
}

/// The handler called in this process, with API Gateway HTTP API events carrying the tenant as
/// the JWT authorizer's claim.
pub struct Handlers<S>(pub App<S>);

impl<S: Store + 'static> Transport for Handlers<S> {
    async fn post_message(
        &self,
        tenant: &str,
        conversation: &str,
        body: String,
    ) -> Result<Answer, NoAnswer> {
        let path = format!("/conversations/{conversation}/messages");
        let event = request(Flavor::HttpApi, "POST", &path, &body, Some(tenant), &[]);
        let response = handle(&self.0, event).await;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match response.body() {
            Body::Text(text) => serde_json::from_str(text),
            Body::Binary(bytes) => serde_json::from_slice(bytes),
            _ => Ok(Value::Null),
        }
        .map_err(|e| NoAnswer::Cut(format!("the answer is not JSON: {e}")))?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// A function process serving plain HTTP on `base` (`http://127.0.0.1:port`), in local mode:
/// the tenant travels in `x-tenant-id`.
pub struct Http {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    pub fn new(base: impl Into<String>) -> Http {
        Http {
            base: base.into(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl Transport for Http {
    async fn post_message(
        &self,
        tenant: &str,
        conversation: &str,
        body: String,
    ) -> Result<Answer, NoAnswer> {
        let request = hyper::Request::post(format!(
            "{}/conversations/{conversation}/messages",
            self.base
        ))
        .header("content-type", "application/json")
        .header("x-tenant-id", tenant)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| NoAnswer::Refused(e.to_string()))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    NoAnswer::Refused(e.to_string())
                } else {
                    NoAnswer::Cut(e.to_string())
                }
            })?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| NoAnswer::Cut(e.to_string()))?
                .to_bytes();
            let body = serde_json::from_slice(&bytes)
                .map_err(|e| NoAnswer::Cut(format!("the answer is not JSON: {e}")))?;
            Ok(Answer {
                status,
                retry_after,
                body,
            })
        };
        tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .map_err(|_| NoAnswer::Cut("no answer within 30 s".to_owned()))?
    }
}

/// Whether a 200 answer says its exchange was recorded (`"recorded": true`, with its turn).
pub fn is_recorded(answer: &Value) -> bool {
    answer["recorded"] == json!(true)
}

/// A message answered 200.
#[derive(Debug, Clone)]
pub struct Acked {
    /// The first 200 answer.
    pub answer: Value,
    /// The 200 answer to the message sent again, when it was.
    pub repeat: Option<Value>,
    /// When the attempt that got the first answer was sent.
    pub sent_at: Millis,
    /// Whether earlier attempts went unanswered (503, or no answer at all).
    pub retried: bool,
}

impl Acked {
    /// The answer that binds the record: the first `"recorded": true` answer the message got
    /// (the repeat's, when only the repeat was recorded), else the first answer (which
    /// [`verify`] lets the repeat's unrecorded answer stand in for, see the module's text).
    pub fn binding(&self) -> &Value {
        [Some(&self.answer), self.repeat.as_ref()]
            .into_iter()
            .flatten()
            .find(|answer| is_recorded(answer))
            .unwrap_or(&self.answer)
    }
}

/// What one request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Got {
    /// 200, `"recorded": true`.
    Recorded,
    /// 200, `"recorded": false`.
    Unrecorded,
    /// Any other status.
    Status(u16),
    /// No answer: refused or cut.
    NoAnswer,
}

/// One request, as its client saw it: when it was sent, how long it took, what it got.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub sent: Instant,
    pub took: Duration,
    pub got: Got,
}

/// What the clients saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub messages: usize,
    pub conversations: usize,
    pub clients: usize,
    /// Requests sent, retries and repeats included.
    pub sent: u64,
    /// Messages answered 200.
    pub acknowledged: u64,
    /// Requests sent again after a 503 or a failed connection.
    pub retried: u64,
    /// 200 answers (repeats included) whose exchange was recorded, and those answered
    /// `"recorded": false`.
    pub answered_recorded: u64,
    pub answered_unrecorded: u64,
    pub unavailable: u64,
    /// 503s without a Retry-After header.
    pub missing_retry_after: u64,
    /// Requests that found no one listening, and requests cut off without an answer.
    pub refused: u64,
    pub cut: u64,
    /// Any other status, and messages given up on: each one fails the run.
    pub unexpected: Vec<String>,
    /// Acknowledged messages sent again, and those whose second answer differed although
    /// both were recorded (a failure).
    pub repeats: u64,
    pub repeat_mismatches: Vec<String>,
    /// Repeats answered `"recorded": false`: the store could not be read to find the first
    /// answer, so the repeat was answered anew (and its spooled copy is a duplicate, or the
    /// record). Of those after an unrecorded first answer, the ones that differed from it.
    pub repeats_unrecorded: u64,
    pub unrecorded_repeats_differing: u64,
    /// Messages first answered `"recorded": false` whose repeat was answered recorded: found
    /// recorded (the first append landed after all) or recorded anew (the store was back
    /// before the spooled copy got there). The record is the repeat's answer either way.
    pub recorded_by_repeat: u64,
    /// Time to each 200 answer (recorded or not), to each unrecorded 200, and to each 503.
    pub answered: Vec<Duration>,
    pub unrecorded_latency: Vec<Duration>,
    pub unavailable_latency: Vec<Duration>,
    /// Every request, in no particular order across clients.
    pub attempts: Vec<Attempt>,
    /// The acknowledged answer of each (conversation, message) index.
    pub acked: BTreeMap<(usize, usize), Acked>,
    pub wall: Duration,
}

impl LoadReport {
    fn merge(&mut self, other: LoadReport) {
        self.sent += other.sent;
        self.acknowledged += other.acknowledged;
        self.retried += other.retried;
        self.answered_recorded += other.answered_recorded;
        self.answered_unrecorded += other.answered_unrecorded;
        self.unavailable += other.unavailable;
        self.missing_retry_after += other.missing_retry_after;
        self.refused += other.refused;
        self.cut += other.cut;
        self.unexpected.extend(other.unexpected);
        self.repeats += other.repeats;
        self.repeat_mismatches.extend(other.repeat_mismatches);
        self.repeats_unrecorded += other.repeats_unrecorded;
        self.unrecorded_repeats_differing += other.unrecorded_repeats_differing;
        self.recorded_by_repeat += other.recorded_by_repeat;
        self.answered.extend(other.answered);
        self.unrecorded_latency.extend(other.unrecorded_latency);
        self.unavailable_latency.extend(other.unavailable_latency);
        self.attempts.extend(other.attempts);
        self.acked.extend(other.acked);
    }

    /// The counts and latency percentiles, for the test output.
    pub fn summary(&self) -> String {
        let mut answered = self.answered.clone();
        answered.sort();
        let mut unrecorded = self.unrecorded_latency.clone();
        unrecorded.sort();
        let mut unavailable = self.unavailable_latency.clone();
        unavailable.sort();
        let rate = self.acknowledged as f64 / self.wall.as_secs_f64().max(1e-9);
        format!(
            "  {} messages over {} conversations from {} clients in {:.1} s ({rate:.0} acknowledged/s)\n  \
             requests sent {}: acknowledged {}, retried {} (503 {}, without Retry-After {}; connection refused {}, cut without an answer {}), \
             repeats {} (both recorded and different {}; answered unrecorded {}, of those after an unrecorded answer and different {}; \
             first unrecorded, repeat recorded {}), other statuses or given up {}\n  \
             200 answers {}: recorded {}, unrecorded {}\n  \
             latency of 200 answers: {}\n  latency of unrecorded 200 answers: {}\n  latency of 503 answers: {}",
            self.messages,
            self.conversations,
            self.clients,
            self.wall.as_secs_f64(),
            self.sent,
            self.acknowledged,
            self.retried,
            self.unavailable,
            self.missing_retry_after,
            self.refused,
            self.cut,
            self.repeats,
            self.repeat_mismatches.len(),
            self.repeats_unrecorded,
            self.unrecorded_repeats_differing,
            self.recorded_by_repeat,
            self.unexpected.len(),
            self.answered_recorded + self.answered_unrecorded,
            self.answered_recorded,
            self.answered_unrecorded,
            percentiles(&answered),
            percentiles(&unrecorded),
            percentiles(&unavailable),
        )
    }
}

/// The `q` quantile (0 < q <= 1) of `sorted` (nearest rank); zero when it is empty.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// p50, p90, p99 and max of `sorted`, for the output.
pub fn percentiles(sorted: &[Duration]) -> String {
    if sorted.is_empty() {
        return "none".to_owned();
    }
    let at = |q: f64| quantile(sorted, q).as_secs_f64() * 1000.0;
    format!(
        "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n {})",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0),
        sorted.len()
    )
}

/// Sends the plan's messages through `transport`; `progress` counts acknowledged messages as
/// they come, so a scenario can inject its fault part-way.
pub async fn run<T: Transport>(
    plan: &Plan,
    transport: Arc<T>,
    progress: Arc<AtomicU64>,
) -> LoadReport {
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..plan.clients {
        let plan = plan.clone();
        let transport = transport.clone();
        let progress = progress.clone();
        clients.push(tokio::spawn(async move {
            let mine: Vec<usize> = (client..plan.conversations).step_by(plan.clients).collect();
            let mut report = LoadReport::default();
            for m in 0..plan.messages_per_conversation {
                for &c in &mine {
                    let Some(mut acked) = deliver(&plan, &*transport, c, m, &mut report).await
                    else {
                        continue;
                    };
                    report.acknowledged += 1;
                    progress.fetch_add(1, Ordering::Relaxed);
                    let serial = c * plan.messages_per_conversation + m;
                    if plan.repeat_every > 0 && serial.is_multiple_of(plan.repeat_every) {
                        report.repeats += 1;
                        if let Some(again) = deliver(&plan, &*transport, c, m, &mut report).await {
                            let (first, again) = (&acked.answer, again.answer);
                            match (is_recorded(first), is_recorded(&again)) {
                                (true, true) if again != *first => {
                                    report.repeat_mismatches.push(format!(
                                        "{}/{}: first {first}, then {again}",
                                        plan.conversation(c),
                                        plan.message_id(m),
                                    ))
                                }
                                (true, true) => {}
                                (false, true) => report.recorded_by_repeat += 1,
                                (recorded, false) => {
                                    report.repeats_unrecorded += 1;
                                    if !recorded && again != *first {
                                        report.unrecorded_repeats_differing += 1;
                                    }
                                }
                            }
                            acked.repeat = Some(again);
                        }
                    }
                    report.acked.insert((c, m), acked);
                }
            }
            report
        }));
    }
    let mut total = LoadReport {
        messages: plan.messages(),
        conversations: plan.conversations,
        clients: plan.clients,
        ..LoadReport::default()
    };
    for client in clients {
        match client.await {
            Ok(report) => total.merge(report),
            Err(e) => total.unexpected.push(format!("a client panicked: {e}")),
        }
    }
    total.wall = started.elapsed();
    total
}

/// Sends one message until it is answered 200, retrying 503s and failed connections with the
/// same message_id. `None` when it got another status or was given up on (recorded).
async fn deliver<T: Transport>(
    plan: &Plan,
    transport: &T,
    c: usize,
    m: usize,
    report: &mut LoadReport,
) -> Option<Acked> {
    let conversation = plan.conversation(c);
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            report.retried += 1;
        }
        report.sent += 1;
        let sent_at = Millis::now();
        let started = Instant::now();
        let answer = transport
            .post_message(&plan.tenant, &conversation, plan.body(c, m))
            .await;
        let took = started.elapsed();
        let got = match &answer {
            Ok(answer) if answer.status == 200 && is_recorded(&answer.body) => Got::Recorded,
            Ok(answer) if answer.status == 200 => Got::Unrecorded,
            Ok(answer) => Got::Status(answer.status),
            Err(_) => Got::NoAnswer,
        };
        report.attempts.push(Attempt {
            sent: started,
            took,
            got,
        });
        match answer {
            Ok(answer) if answer.status == 200 => {
                report.answered.push(took);
                if got == Got::Recorded {
                    report.answered_recorded += 1;
                } else {
                    report.answered_unrecorded += 1;
                    report.unrecorded_latency.push(took);
                }
                return Some(Acked {
                    answer: answer.body,
                    repeat: None,
                    sent_at,
                    retried: attempt > 0,
                });
            }
            Ok(answer) if answer.status == 503 => {
                report.unavailable += 1;
                report.unavailable_latency.push(took);
                let secs = match answer.retry_after.as_deref().map(str::parse::<u64>) {
                    Some(Ok(secs)) => secs,
                    _ => {
                        report.missing_retry_after += 1;
                        1
                    }
                };
                tokio::time::sleep(Duration::from_secs(secs).min(plan.retry_after_cap)).await;
            }
            Ok(answer) => {
                report.unexpected.push(format!(
                    "{conversation}/{}: {} {}",
                    plan.message_id(m),
                    answer.status,
                    answer.body
                ));
                return None;
            }
            Err(NoAnswer::Refused(_)) => {
                report.refused += 1;
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
            Err(NoAnswer::Cut(_)) => {
                report.cut += 1;
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
    report.unexpected.push(format!(
        "{conversation}/{}: no answer after {MAX_ATTEMPTS} attempts",
        plan.message_id(m)
    ));
    None
}

/// What the store holds after a load, against what the clients were told.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Exchanges read back through the store, and exchange items found by a scan of the table.
    pub stored: usize,
    pub scanned: usize,
    /// Acknowledged but not stored.
    pub lost: usize,
    /// Stored more than once (extra copies).
    pub duplicated: usize,
    /// Pattern detections stored.
    pub detections: usize,
    /// Events the acknowledged answers imply: one `message_exchange` per message and one
    /// `pattern_detected` per detection the client was told of.
    pub events_acknowledged: usize,
    /// Events the table's raw exchange items imply, counted from their stored bodies (neither
    /// the store's reading code nor `Exchange::events` is involved).
    pub events_in_table: usize,
    /// Retried messages whose exchange was written by an attempt that got no answer (or a
    /// 503): the retry was answered from the stored exchange.
    pub recovered: usize,
    /// Acknowledged messages by how their exchange was recorded: directly, by the spool's
    /// consumer, by the replay of the last-resort log.
    pub recorded_directly: usize,
    pub recorded_from_spool: usize,
    pub recorded_from_log: usize,
    /// Messages whose binding answer was `"recorded": false`, and of those, the ones whose
    /// direct append landed after all (the spooled copy was then a duplicate).
    pub unrecorded_answers: usize,
    pub unrecorded_landed_directly: usize,
    /// Messages answered unrecorded twice, differently, whose record is the repeat's answer
    /// (the repeat's append landed after its budget ran out, before the first's spooled copy
    /// got there).
    pub stored_as_repeat: usize,
    /// Anything else wrong: gaps in turns, answers that differ from what was stored, broken
    /// summaries, events that differ from what the client was told.
    pub problems: Vec<String>,
    /// Verification reads (a conversation read back, the table scan) that could not finish:
    /// the check itself failed, which says nothing about the messages.
    pub unverified: Vec<String>,
    /// How long the read-backs and the scan took, for the output (never asserted).
    pub took: Duration,
}

impl Verdict {
    pub fn summary(&self) -> String {
        format!(
            "  stored: {} exchanges read back ({} exchange items in the table, {} pattern detections); \
             recorded directly {}, from the spool {}, from the log {}; \
             answered unrecorded {} (of which the direct append landed after all {}, stored as the repeat's answer {}); \
             events: {} acknowledged, {} in the table; \
             {} retried messages answered from a write whose answer was lost; lost {}, duplicated {}, \
             other problems {}; verification reads that could not finish {} (read back in {:.1} s)",
            self.stored,
            self.scanned,
            self.detections,
            self.recorded_directly,
            self.recorded_from_spool,
            self.recorded_from_log,
            self.unrecorded_answers,
            self.unrecorded_landed_directly,
            self.stored_as_repeat,
            self.events_acknowledged,
            self.events_in_table,
            self.recovered,
            self.lost,
            self.duplicated,
            self.problems.len(),
            self.unverified.len(),
            self.took.as_secs_f64()
        )
    }

    /// Panics, listing the first problems, unless the store could be read back and nothing was
    /// lost, doubled or broken.
    pub fn assert_clean(&self, report: &LoadReport) {
        let unverified: Vec<&String> = self.unverified.iter().take(10).collect();
        assert!(
            self.unverified.is_empty(),
            "the verification could not read the store back (a failure of the check, not a lost \
             message): {unverified:#?}"
        );
        let first: Vec<&String> = self.problems.iter().take(10).collect();
        assert!(
            self.lost == 0 && self.duplicated == 0 && self.problems.is_empty(),
            "lost {}, duplicated {}, problems: {first:#?}",
            self.lost,
            self.duplicated
        );
        assert_eq!(self.stored, report.acked.len(), "every message stored");
        assert_eq!(self.scanned, self.stored, "the table holds no other item");
        assert_eq!(
            self.events_in_table, self.events_acknowledged,
            "the table holds the events of what the clients were told, no more and no fewer"
        );
        assert!(self.detections > 0, "patterns were detected and stored");
    }
}

/// Reads back every conversation of the plan through `store`, and scans `table` for the
/// plan's tenant through `client`, comparing both with what the clients were acknowledged.
/// Both must be set up for verification (see `DynamoLocal::verification_client`): no injected
/// faults, and not the functions' request-path timeouts.
pub async fn verify<S: Store>(
    store: &S,
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    plan: &Plan,
    report: &LoadReport,
) -> Verdict {
    let started = Instant::now();
    let mut verdict = Verdict::default();
    let tenant = TenantId::parse(&plan.tenant).expect("valid tenant");
    for c in 0..plan.conversations {
        let name = plan.conversation(c);
        let conversation = ConversationId::parse(&name).expect("valid conversation id");
        let exchanges = match store.exchanges(&tenant, &conversation).await {
            Ok(exchanges) => exchanges,
            Err(e) => {
                verdict
                    .unverified
                    .push(format!("{name}: could not be read back: {e}"));
                continue;
            }
        };
        verdict.stored += exchanges.len();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut summary = ConversationSummary::default();
        for (i, exchange) in exchanges.iter().enumerate() {
            let draft = &exchange.draft;
            let id = draft.message_id.to_string();
            if exchange.turn as usize != i + 1 {
                verdict.problems.push(format!(
                    "{name}: position {} holds turn {}",
                    i + 1,
                    exchange.turn
                ));
            }
            *seen.entry(id.clone()).or_default() += 1;
            // Each exchange was built on the one before it: its summary is the previous one
            // plus itself.
            if summary.started_at.is_none() {
                summary.started_at = Some(draft.at);
            }
            summary.patterns_seen.extend(
                draft
                    .patterns
                    .iter()
                    .map(|detection| detection.pattern.clone()),
            );
            *summary
                .strategies_used
                .entry(draft.strategy.name.clone())
                .or_default() += 1;
            summary.last_strategy = Some(draft.strategy.name.clone());
            // The first exchange pins the conversation's configuration, model and variants;
            // every later one runs under the same.
            if summary.pin.is_none()
                && let Some(treatment) = &draft.treatment
            {
                summary.pin = Some(salesloop::domain::conversation::Pin {
                    config_version: draft.config_version,
                    model_version: draft.model_version,
                    variants: draft.experiments.clone(),
                    treatment: treatment.clone(),
                });
            }
            if let Some(pin) = &summary.pin
                && (draft.experiments != pin.variants
                    || draft.config_version != pin.config_version
                    || draft.model_version != pin.model_version
                    || draft.treatment.as_ref() != Some(&pin.treatment))
            {
                verdict.problems.push(format!(
                    "{name} turn {}: decided under another pin than its first turn's ({pin:?})",
                    exchange.turn
                ));
            }
            if exchange.summary != summary {
                verdict.problems.push(format!(
                    "{name} turn {}: summary {:?} does not follow from the turns before ({summary:?})",
                    exchange.turn, exchange.summary
                ));
                summary = exchange.summary.clone();
            }
            if draft.reply.text.is_empty() || draft.user_text.is_empty() {
                verdict.problems.push(format!(
                    "{name} turn {}: an empty reply or user text",
                    exchange.turn
                ));
            }
            verdict.detections += draft.patterns.len();
        }
        for (id, count) in &seen {
            if *count > 1 {
                verdict.duplicated += count - 1;
            }
            let known = (0..plan.messages_per_conversation).any(|m| plan.message_id(m) == *id);
            if !known {
                verdict
                    .problems
                    .push(format!("{name}: unknown message {id}"));
            }
        }
        // Per way of recording, the message indexes in turn order: each must increase.
        let mut by_via: BTreeMap<&'static str, Vec<(u32, usize)>> = BTreeMap::new();
        for m in 0..plan.messages_per_conversation {
            let Some(acked) = report.acked.get(&(c, m)) else {
                continue;
            };
            let id = plan.message_id(m);
            let Some(exchange) = exchanges.iter().find(|e| e.draft.message_id.as_str() == id)
            else {
                verdict.lost += 1;
                verdict.events_acknowledged += events_told(acked.binding());
                continue;
            };
            let draft = &exchange.draft;
            let via = match draft.via {
                Via::Direct => "directly",
                Via::Spool => "from the spool",
                Via::Replay => "from the log",
            };
            by_via.entry(via).or_default().push((exchange.turn, m));
            match draft.via {
                Via::Direct => verdict.recorded_directly += 1,
                Via::Spool => verdict.recorded_from_spool += 1,
                Via::Replay => verdict.recorded_from_log += 1,
            }
            if acked.retried && draft.at < acked.sent_at {
                verdict.recovered += 1;
            }
            // The answers the record may be: the recorded one, else any unrecorded one (the
            // first, or its repeat when the repeat's record got there first).
            let binding = acked.binding();
            let recorded = is_recorded(binding);
            let candidates: Vec<&Value> = if recorded {
                vec![binding]
            } else {
                [Some(&acked.answer), acked.repeat.as_ref()]
                    .into_iter()
                    .flatten()
                    .collect()
            };
            let told = plan.text(c, m);
            let compared: Vec<Vec<String>> = candidates
                .iter()
                .map(|answer| answer_differences(&tenant, &conversation, answer, told, exchange))
                .collect();
            match compared.iter().position(Vec::is_empty) {
                Some(i) => {
                    verdict.events_acknowledged += events_told(candidates[i]);
                    if i > 0 {
                        verdict.stored_as_repeat += 1;
                    }
                }
                None => {
                    verdict.events_acknowledged += events_told(binding);
                    verdict.problems.extend(
                        compared[0]
                            .iter()
                            .map(|difference| format!("{name}/{id}: {difference}")),
                    );
                }
            }
            if recorded && draft.via != Via::Direct {
                verdict.problems.push(format!(
                    "{name}/{id}: answered recorded at turn {}, but recorded {via}",
                    binding["turn"]
                ));
            }
            if !recorded {
                verdict.unrecorded_answers += 1;
                if draft.via == Via::Direct {
                    verdict.unrecorded_landed_directly += 1;
                }
            }
        }
        for (via, recorded) in &by_via {
            if recorded.windows(2).any(|pair| pair[1].1 <= pair[0].1) {
                let order: Vec<String> = recorded
                    .iter()
                    .map(|(turn, m)| format!("turn {turn}: {}", plan.message_id(*m)))
                    .collect();
                verdict.problems.push(format!(
                    "{name}: the messages recorded {via} are not in sending order: {order:?}"
                ));
            }
        }
    }
    match scan_exchange_items(client, table, &plan.tenant).await {
        Ok(items) => {
            verdict.scanned = items.len();
            let conversations: HashSet<String> = (0..plan.conversations)
                .map(|c| plan.conversation(c))
                .collect();
            for item in items {
                check_raw_item(&mut verdict, &plan.tenant, &conversations, item);
            }
        }
        Err(e) => verdict
            .unverified
            .push(format!("the table scan could not finish: {e}")),
    }
    verdict.took = started.elapsed();
    verdict
}

/// The events a 200 answer implies: its `message_exchange` and one `pattern_detected` per
/// detection it told of.
fn events_told(answer: &Value) -> usize {
    1 + answer["patterns"].as_array().map_or(0, Vec::len)
}

/// Where a 200 answer to a message sent with `user_text` differs from the exchange stored for
/// it: a recorded answer names the stored turn and an unrecorded one names none; the same
/// message id, reply, strategy, number of detections, model and configuration versions and
/// text; the stored events those the answer implies at the stored turn. Empty when they agree.
fn answer_differences(
    tenant: &TenantId,
    conversation: &ConversationId,
    answer: &Value,
    user_text: &str,
    exchange: &Exchange,
) -> Vec<String> {
    let draft = &exchange.draft;
    let turn_told = if is_recorded(answer) {
        answer["turn"] == json!(exchange.turn)
    } else {
        answer["turn"].is_null()
    };
    let same = turn_told
        && answer["message_id"] == json!(draft.message_id)
        && answer["reply"]["text"] == json!(draft.reply.text)
        && answer["strategy"]["name"] == json!(draft.strategy.name)
        && answer["patterns"].as_array().map(Vec::len) == Some(draft.patterns.len())
        && answer["model_version"] == json!(draft.model_version)
        && answer["config_version"] == json!(draft.config_version)
        && draft.user_text == user_text;
    let mut found = Vec::new();
    if !same {
        found.push(format!(
            "the answer {answer} differs from the stored turn {} ({:?}, {:?})",
            exchange.turn, draft.strategy.name, draft.reply.text
        ));
    }
    let mut at_turn = answer.clone();
    at_turn["turn"] = json!(exchange.turn);
    found.extend(event_differences(
        tenant,
        conversation,
        &at_turn,
        user_text,
        exchange,
    ));
    found
}

/// Where the events of a stored exchange differ from those of the 200 answer a client got for
/// it (sent with `user_text`): its message_exchange event and one pattern_detected event per
/// detection the client was answered with, with the same ids, turn, texts, strategy, model
/// version and detections. Empty when they agree.
pub fn event_differences(
    tenant: &TenantId,
    conversation: &ConversationId,
    answer: &Value,
    user_text: &str,
    exchange: &Exchange,
) -> Vec<String> {
    let told = acknowledged_events(tenant.as_str(), conversation.as_str(), answer, user_text);
    let recorded: Vec<Value> = exchange
        .events(tenant, conversation)
        .iter()
        .map(|event| serde_json::to_value(event).unwrap_or(Value::Null))
        .collect();
    let mut found = Vec::new();
    if recorded.len() != told.len() {
        found.push(format!(
            "{} events recorded, {} told to the client",
            recorded.len(),
            told.len()
        ));
    }
    for (want, got) in told.iter().zip(&recorded) {
        let mut differences = Vec::new();
        compare(want, got, "", &mut differences);
        if !differences.is_empty() {
            found.push(format!(
                "event {} differs from the answer: {}",
                got["event_id"],
                differences.join("; ")
            ));
        }
    }
    found
}

/// The events a client's 200 answer implies, as far as the answer shows them: for a message
/// sent with `user_text`, its `message_exchange` event, then one `pattern_detected` event per
/// detection in the answer, in the answer's order.
fn acknowledged_events(
    tenant: &str,
    conversation: &str,
    answer: &Value,
    user_text: &str,
) -> Vec<Value> {
    let turn = &answer["turn"];
    let envelope = |event_id: String, kind: &str, data: Value| {
        json!({
            "event_id": event_id,
            "tenant": tenant,
            "conversation_id": conversation,
            "model_version": answer["model_version"],
            "type": kind,
            "data": data,
        })
    };
    let mut events = vec![envelope(
        format!("{conversation}/{turn}/message_exchange"),
        "message_exchange",
        json!({
            "turn": turn,
            "message_id": answer["message_id"],
            "user_text": user_text,
            "reply": answer["reply"],
            "strategy": {
                "name": answer["strategy"]["name"],
                "probability": answer["strategy"]["probability"],
            },
            "experiments": answer["experiments"],
        }),
    )];
    let detections = answer["patterns"].as_array().cloned().unwrap_or_default();
    for (i, detection) in detections.iter().enumerate() {
        events.push(envelope(
            format!("{conversation}/{turn}/pattern_detected/{i}"),
            "pattern_detected",
            json!({
                "turn": turn,
                "pattern": detection["name"],
                "confidence": detection["confidence"],
                "evidence": detection["evidence"],
            }),
        ));
    }
    events
}

/// Objects at these paths of an expected event are partial (the answer does not show the
/// event's time, schema version, latency or the strategy's context): only their keys are
/// compared. Every other value, objects included, must be equal.
const PARTIAL: [&str; 3] = ["", "data", "data.strategy"];

/// Appends to `differences` where `got` differs from `want`.
fn compare(want: &Value, got: &Value, path: &str, differences: &mut Vec<String>) {
    match want {
        Value::Object(fields) if PARTIAL.contains(&path) => {
            for (key, value) in fields {
                let inner = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                compare(
                    value,
                    got.get(key).unwrap_or(&Value::Null),
                    &inner,
                    differences,
                );
            }
        }
        _ if want != got => differences.push(format!("{path}: told {want}, recorded {got}")),
        _ => {}
    }
}

/// An exchange item as the table holds it.
struct RawExchange {
    pk: String,
    sk: String,
    mid: String,
    body: String,
}

/// Checks one raw exchange item against its own keys, and counts the events its body implies.
fn check_raw_item(
    verdict: &mut Verdict,
    tenant: &str,
    conversations: &HashSet<String>,
    item: RawExchange,
) {
    let at = format!("{} {}", item.pk, item.sk);
    let conversation = item.pk.strip_prefix(&format!("T#{tenant}#C#"));
    if !conversation.is_some_and(|c| conversations.contains(c)) {
        verdict
            .problems
            .push(format!("{at}: not a conversation of the load"));
    }
    let body: Value = match serde_json::from_str(&item.body) {
        Ok(body) => body,
        Err(e) => {
            verdict
                .problems
                .push(format!("{at}: the body is not JSON: {e}"));
            return;
        }
    };
    if body["message_id"] != json!(item.mid) {
        verdict.problems.push(format!(
            "{at}: indexed as message {} but holds {}",
            item.mid, body["message_id"]
        ));
    }
    match body["turn"].as_u64() {
        Some(turn) if item.sk == format!("L#{turn:05}") => {}
        _ => verdict
            .problems
            .push(format!("{at}: holds turn {}", body["turn"])),
    }
    match body["patterns"].as_array() {
        Some(patterns) => verdict.events_in_table += 1 + patterns.len(),
        None => verdict
            .problems
            .push(format!("{at}: the body has no list of patterns")),
    }
}

/// Items per page of the verification scan: pages small enough that DynamoDB Local answers
/// each well inside the verification client's attempt timeout.
const SCAN_PAGE: i32 = 500;

/// Every exchange item (those with a message id) of `tenant`, by a paged scan of the whole
/// table.
async fn scan_exchange_items(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    tenant: &str,
) -> Result<Vec<RawExchange>, String> {
    // A missing attribute is left empty, and the item's check reports it.
    let text = |item: &HashMap<String, AttributeValue>, name: &str| {
        item.get(name)
            .and_then(|value| value.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .filter_expression("begins_with(#pk, :prefix) AND attribute_exists(#mid)")
            .projection_expression("#pk, #sk, #mid, #body")
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_names("#sk", "sk")
            .expression_attribute_names("#mid", "mid")
            .expression_attribute_names("#body", "body")
            .expression_attribute_values(":prefix", AttributeValue::S(format!("T#{tenant}#C#")))
            .limit(SCAN_PAGE)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
        for item in page.items() {
            items.push(RawExchange {
                pk: text(item, "pk"),
                sk: text(item, "sk"),
                mid: text(item, "mid"),
                body: text(item, "body"),
            });
        }
        match page.last_evaluated_key() {
            Some(key) => start = Some(key.clone()),
            None => return Ok(items),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange() -> Exchange {
        serde_json::from_value(json!({
            "turn": 2,
            "message_id": "m-0001",
            "at": 1_700_000_000_000u64,
            "model_version": 3,
            "user_text": "Honestly this looks too expensive for us.",
            "reply": {"text": "Let me show you the value.", "source": "template"},
            "strategy": {
                "name": "handle_price_objection",
                "probability": 0.62,
                "context": "objection.price",
            },
            "patterns": [
                {
                    "pattern": "objection.price", "confidence": 0.9, "evidence": "too expensive",
                    "start": 21, "end": 34,
                },
                {
                    "pattern": "hesitation", "confidence": 0.55, "evidence": "honestly",
                    "start": 0, "end": 8,
                },
            ],
            "experiments": {"reply_tone": "warm"},
            "latency_us": 120,
            "summary": {
                "started_at": null,
                "patterns_seen": [],
                "strategies_used": {},
                "last_strategy": null,
            },
        }))
        .expect("an exchange")
    }

    /// The answer process_message gives for `exchange()`.
    fn answer() -> Value {
        json!({
            "conversation_id": "c-0007",
            "message_id": "m-0001",
            "turn": 2,
            "patterns": [
                {"name": "objection.price", "confidence": 0.9, "evidence": "too expensive"},
                {"name": "hesitation", "confidence": 0.55, "evidence": "honestly"},
            ],
            "strategy": {"name": "handle_price_objection", "probability": 0.62},
            "reply": {"text": "Let me show you the value.", "source": "template"},
            "experiments": {"reply_tone": "warm"},
            "model_version": 3,
        })
    }

    fn differences(answer: &Value, exchange: &Exchange) -> Vec<String> {
        event_differences(
            &TenantId::parse("load").unwrap(),
            &ConversationId::parse("c-0007").unwrap(),
            answer,
            "Honestly this looks too expensive for us.",
            exchange,
        )
    }

    #[test]
    fn the_events_of_an_exchange_agree_with_the_answer_it_was_acknowledged_with() {
        assert_eq!(differences(&answer(), &exchange()), Vec::<String>::new());
    }

    #[test]
    fn a_detection_stored_but_not_told_to_the_client_is_a_difference() {
        let mut told = answer();
        told["patterns"].as_array_mut().unwrap().pop();
        let found = differences(&told, &exchange());
        assert!(
            found
                .iter()
                .any(|d| d.contains("3 events recorded, 2 told")),
            "{found:?}"
        );
    }

    #[test]
    fn a_detection_told_but_not_stored_is_a_difference() {
        let mut stored = exchange();
        stored.draft.patterns.remove(0);
        let found = differences(&answer(), &stored);
        assert!(
            found
                .iter()
                .any(|d| d.contains("2 events recorded, 3 told")),
            "{found:?}"
        );
        // The remaining detection now sits at index 0, where the client was told another.
        assert!(
            found.iter().any(|d| d.contains("data.pattern")),
            "{found:?}"
        );
    }

    #[test]
    fn a_stored_event_field_unlike_the_answer_is_a_difference() {
        let mut stored = exchange();
        stored.draft.patterns[1].confidence = 0.56;
        stored
            .draft
            .experiments
            .insert("opening".into(), "short".into());
        stored.draft.model_version = 4;
        let found = differences(&answer(), &stored).join("\n");
        assert!(
            found.contains("data.confidence: told 0.55, recorded 0.56"),
            "{found}"
        );
        assert!(found.contains("data.experiments"), "{found}");
        assert!(
            found.contains("model_version: told 3, recorded 4"),
            "{found}"
        );
    }

    #[test]
    fn a_user_text_other_than_the_one_sent_is_a_difference() {
        let found = event_differences(
            &TenantId::parse("load").unwrap(),
            &ConversationId::parse("c-0007").unwrap(),
            &answer(),
            "How do I sign up?",
            &exchange(),
        );
        assert!(
            found.iter().any(|d| d.contains("data.user_text")),
            "{found:?}"
        );
    }

    #[test]
    fn the_binding_answer_is_the_first_recorded_one_else_the_first() {
        let recorded = |turn: u32| json!({"recorded": true, "turn": turn});
        let unrecorded = |reply: &str| json!({"recorded": false, "turn": null, "reply": reply});
        let acked = |answer: Value, repeat: Option<Value>| Acked {
            answer,
            repeat,
            sent_at: Millis(0),
            retried: false,
        };
        assert_eq!(*acked(recorded(2), None).binding(), recorded(2));
        assert_eq!(
            *acked(recorded(2), Some(unrecorded("b"))).binding(),
            recorded(2)
        );
        assert_eq!(
            *acked(unrecorded("a"), Some(recorded(3))).binding(),
            recorded(3)
        );
        assert_eq!(
            *acked(unrecorded("a"), Some(unrecorded("b"))).binding(),
            unrecorded("a")
        );
        assert!(!is_recorded(&json!({"turn": 1})), "no field, not recorded");
    }

    fn raw(sk: &str, mid: &str, body: Value) -> RawExchange {
        RawExchange {
            pk: "T#load#C#c-0007".into(),
            sk: sk.into(),
            mid: mid.into(),
            body: body.to_string(),
        }
    }

    #[test]
    fn raw_items_count_their_events_and_must_agree_with_their_keys() {
        let conversations = HashSet::from(["c-0007".to_owned()]);
        let body = serde_json::to_value(exchange()).unwrap();
        let mut verdict = Verdict::default();
        check_raw_item(
            &mut verdict,
            "load",
            &conversations,
            raw("L#00002", "m-0001", body.clone()),
        );
        assert!(verdict.problems.is_empty(), "{:?}", verdict.problems);
        assert_eq!(verdict.events_in_table, 3);

        check_raw_item(
            &mut verdict,
            "load",
            &conversations,
            raw("L#00003", "m-0002", body.clone()),
        );
        assert_eq!(verdict.problems.len(), 2, "{:?}", verdict.problems);
        check_raw_item(
            &mut verdict,
            "other",
            &conversations,
            raw("L#00002", "m-0001", body),
        );
        assert_eq!(verdict.problems.len(), 3, "{:?}", verdict.problems);
    }
}
