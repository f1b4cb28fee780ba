//! The spool (issue 16, docs/spool.md) with real parts only: the embedded store and DynamoDB
//! Local, moto's SQS server (`salesloop_tests::moto`, started on first use) and the stand-in
//! for Lambda's SQS event source (`salesloop_tests::sqs`). A store that cannot be reached is a
//! `DynamoStore` pointed at a closed port: the SDK's own connection errors.
//!
//! - spool_consumer's batch handler on the store directly, with hand-built events: spool order
//!   within each conversation, a record twice recorded once, rejects dead-lettered with their
//!   reason and never blocking what follows, a record the store does not take holding what
//!   follows it (the rest of the batch when the store does not answer, the rest of its
//!   conversation when writers keep winning its turns), and what happens with no dead-letter
//!   queue to send to;
//! - process_message through a store outage: every message answered 200 `"recorded": false`,
//!   the exchange spooled (a repeat once), then recorded once each, in order, by the consumer;
//! - the last resort: the log line (the text hashed when so configured), replayed from a
//!   CloudWatch Logs export once, and a second replay writing nothing;
//! - a consumer killed mid-batch: nothing deleted, everything redelivered, nothing recorded
//!   twice;
//! - the dead-letter path end to end, the consumer's and the queue's redrive.
//!
//! Every store case runs on both stores (`salesloop_tests::store_cases!`); a case function in
//! no list is dead code, which this file denies. moto starts when the first case that needs it
//! runs (installing the pinned moto from PyPI on first use) and fails that case if it cannot.

#![deny(dead_code)]

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use lambda_http::{Body, Response};
use process_message::handler::{App as MessageApp, LastResort, handle};
use salesloop::clients::aws::SdkConfig;
use salesloop::clients::sqs::FifoQueue;
use salesloop::domain::config::TenantConfig;
use salesloop::domain::conversation::{Cursor, OutcomeRecord};
use salesloop::domain::engine::Engine;
use salesloop::domain::labels::{LabelCursor, StoredLabel};
use salesloop::domain::model::ServedModel;
use salesloop::domain::privacy::{TextStorage, is_hashed};
use salesloop::domain::spool::{SpooledExchange, Via};
use salesloop::edge::http::TenantSource;
use salesloop::service::{ConfigCache, ModelCache};
use salesloop::store::{
    ConversationEntry, ConversationLog, DynamoStoreConfig, Tracked, TrackingCounts,
};
use salesloop::{
    ConversationId, ConversationState, DynamoStore, Exchange, Lease, MessageId, Millis,
    ModelVersion, Outcome, Store, StoreError, TenantId, Write,
};
use salesloop_tests::contract::{draft, end_request};
use salesloop_tests::dynamo_local::DynamoLocal;
use salesloop_tests::events::{Flavor, request};
use salesloop_tests::flows::Flows;
use salesloop_tests::moto::SharedMoto;
use salesloop_tests::sqs::SpoolQueues;
use salesloop_tests::stores::{Backend, DynamoBackend, Harness};
use serde_json::{Value, json};
use spool_consumer::handler::{App, BatchSummary, handle_batch};
use spool_consumer::replay::{ReplaySummary, replay};

static MOTO: SharedMoto = SharedMoto::new();

/// Queues of a case's own on the one moto server.
async fn queues(tag: &str, visibility_timeout_s: i32, max_receive_count: u32) -> SpoolQueues {
    static QUEUES: AtomicUsize = AtomicUsize::new(0);
    let name = format!("{tag}-{}", QUEUES.fetch_add(1, Ordering::Relaxed));
    let endpoint = MOTO.get().endpoint();
    SpoolQueues::create(&endpoint, &name, visibility_timeout_s, max_receive_count).await
}

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn cid(raw: &str) -> ConversationId {
    ConversationId::parse(raw).unwrap()
}

fn mid(raw: &str) -> MessageId {
    MessageId::parse(raw).unwrap()
}

/// An exchange answered without a record, as process_message spools it: tenant `acme`, its
/// draft decided for a new conversation, answered at `at`.
fn record(conversation: &str, message_id: &str, text: &str, at: u64) -> SpooledExchange {
    let mut planned = draft(&mid(message_id), text, &ConversationState::New);
    planned.at = Millis(at);
    SpooledExchange::new(acme(), cid(conversation), planned)
}

/// An endpoint where nothing listens.
fn closed_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// A DynamoDB store that cannot be reached, with the functions' own client settings.
fn unreachable_store() -> DynamoStore {
    DynamoStore::new(
        DynamoLocal::production_client(&closed_endpoint()),
        DynamoStoreConfig {
            table: "salesloop-unreachable".into(),
            retention: None,
            end_shards: 1,
        },
    )
}

/// One message of a hand-built batch.
struct Delivered {
    message_id: String,
    body: String,
    group: String,
    deduplication: String,
}

fn delivered(message_id: &str, record: &SpooledExchange) -> Delivered {
    Delivered {
        message_id: message_id.to_owned(),
        body: serde_json::to_string(record).unwrap(),
        group: record.group_id(),
        deduplication: record.deduplication_id(),
    }
}

/// A message whose body is `body` as it is, in the message group of `like`.
fn raw_body(message_id: &str, body: &str, like: &SpooledExchange) -> Delivered {
    Delivered {
        message_id: message_id.to_owned(),
        body: body.to_owned(),
        group: like.group_id(),
        deduplication: message_id.to_owned(),
    }
}

/// The event Lambda would build for `messages` received from a FIFO queue, in this order.
fn event(messages: &[Delivered]) -> SqsEvent {
    let records: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({
                "messageId": m.message_id,
                "receiptHandle": format!("handle-{}", m.message_id),
                "body": m.body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1796264958441",
                    "SenderId": "AIDAIT2UOQQY3AUEKVGXU",
                    "ApproximateFirstReceiveTimestamp": "1796264958445",
                    "MessageGroupId": m.group,
                    "MessageDeduplicationId": m.deduplication,
                    "SequenceNumber": format!("{:020}", 18_000_000_000_000_000_000u64 + i as u64),
                },
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:hand-built.fifo",
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

fn failures(response: &SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

fn summary(recorded: u32, duplicates: u32, dead_lettered: u32, retried: u32) -> BatchSummary {
    BatchSummary {
        recorded,
        duplicates,
        dead_lettered,
        retried,
    }
}

async fn exchanges<S: Store>(store: &S, conversation: &str) -> Vec<Exchange> {
    store.exchanges(&acme(), &cid(conversation)).await.unwrap()
}

/// The conversation's message ids, in turn order; panics unless the turns are 1..n.
async fn message_ids<S: Store>(store: &S, conversation: &str) -> Vec<String> {
    let stored = exchanges(store, conversation).await;
    let turns: Vec<u32> = stored.iter().map(|e| e.turn).collect();
    let expected: Vec<u32> = (1..=stored.len() as u32).collect();
    assert_eq!(turns, expected, "{conversation}: turns");
    stored
        .iter()
        .map(|e| e.draft.message_id.as_str().to_owned())
        .collect()
}

async fn recovered<S: Store>(store: &S) -> u64 {
    store.tracking_counts(&acme()).await.unwrap().recovered
}

fn ids(raw: &[&str]) -> Vec<String> {
    raw.iter().map(|s| (*s).to_owned()).collect()
}

/// A real store with three faults a case turns on: conversations it routes to a store that
/// cannot be reached ([`unreachable_store`]: the SDK's own connection errors), conversations
/// whose every append loses its race (as if other writers kept taking the turn), and appends
/// that never return after the first `stall_after` (a consumer that stops mid-batch, as a
/// Lambda invocation that times out). Everything else goes to the real store.
struct Faulty<S> {
    inner: S,
    unreachable: DynamoStore,
    down: HashSet<String>,
    contended: HashSet<String>,
    appends: AtomicUsize,
    stall_after: Option<usize>,
}

impl<S> Faulty<S> {
    fn down(inner: S, conversations: &[&str]) -> Self {
        Faulty {
            inner,
            unreachable: unreachable_store(),
            down: conversations.iter().map(|c| (*c).to_owned()).collect(),
            contended: HashSet::new(),
            appends: AtomicUsize::new(0),
            stall_after: None,
        }
    }

    fn contended(inner: S, conversations: &[&str]) -> Self {
        Faulty {
            contended: conversations.iter().map(|c| (*c).to_owned()).collect(),
            ..Faulty::down(inner, &[])
        }
    }

    fn stalling_after(inner: S, appends: usize) -> Self {
        Faulty {
            stall_after: Some(appends),
            ..Faulty::down(inner, &[])
        }
    }

    fn is_down(&self, conversation: &ConversationId) -> bool {
        self.down.contains(conversation.as_str())
    }
}

impl<S: Store> Store for Faulty<S> {
    async fn conversation(
        &self,
        t: &TenantId,
        c: &ConversationId,
    ) -> Result<ConversationState, StoreError> {
        if self.is_down(c) {
            return self.unreachable.conversation(t, c).await;
        }
        self.inner.conversation(t, c).await
    }

    async fn find_message(
        &self,
        t: &TenantId,
        c: &ConversationId,
        m: &MessageId,
    ) -> Result<Option<Exchange>, StoreError> {
        if self.is_down(c) {
            return self.unreachable.find_message(t, c, m).await;
        }
        self.inner.find_message(t, c, m).await
    }

    async fn conversation_log(
        &self,
        t: &TenantId,
        c: &ConversationId,
    ) -> Result<ConversationLog, StoreError> {
        if self.is_down(c) {
            return self.unreachable.conversation_log(t, c).await;
        }
        self.inner.conversation_log(t, c).await
    }

    async fn append_exchange(
        &self,
        t: &TenantId,
        c: &ConversationId,
        e: &Exchange,
    ) -> Result<Write, StoreError> {
        if self.is_down(c) {
            return self.unreachable.append_exchange(t, c, e).await;
        }
        if self.contended.contains(c.as_str()) {
            return Ok(Write::Lost);
        }
        let n = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
        if self.stall_after.is_some_and(|limit| n > limit) {
            std::future::pending::<()>().await;
        }
        self.inner.append_exchange(t, c, e).await
    }

    async fn ended_count(&self, t: &TenantId) -> Result<u64, StoreError> {
        self.inner.ended_count(t).await
    }

    async fn append_end(
        &self,
        t: &TenantId,
        r: &OutcomeRecord,
        before: u64,
    ) -> Result<Write, StoreError> {
        self.inner.append_end(t, r, before).await
    }

    async fn count_tracking(&self, t: &TenantId, w: Tracked, n: u64) -> Result<(), StoreError> {
        self.inner.count_tracking(t, w, n).await
    }

    async fn tracking_counts(&self, t: &TenantId) -> Result<TrackingCounts, StoreError> {
        self.inner.tracking_counts(t).await
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        self.inner.tenants().await
    }

    async fn pending_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        self.inner.pending_tenants().await
    }

    async fn pending_marks(&self, t: &TenantId) -> Result<Vec<salesloop::PendingMark>, StoreError> {
        self.inner.pending_marks(t).await
    }

    async fn clear_pending(
        &self,
        t: &TenantId,
        marks: &[salesloop::PendingMark],
    ) -> Result<usize, StoreError> {
        self.inner.clear_pending(t, marks).await
    }

    async fn acquire_lease(
        &self,
        t: &TenantId,
        name: &str,
        holder: &str,
        now: Millis,
        ttl_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        self.inner.acquire_lease(t, name, holder, now, ttl_ms).await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.inner.release_lease(lease).await
    }

    async fn outcomes_since(
        &self,
        t: &TenantId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<OutcomeRecord>, StoreError> {
        self.inner.outcomes_since(t, after, limit).await
    }

    async fn labels(
        &self,
        t: &TenantId,
        c: &ConversationId,
    ) -> Result<Vec<StoredLabel>, StoreError> {
        self.inner.labels(t, c).await
    }

    async fn put_labels(
        &self,
        t: &TenantId,
        c: &ConversationId,
        labels: &[StoredLabel],
    ) -> Result<Write, StoreError> {
        self.inner.put_labels(t, c, labels).await
    }

    async fn labels_since(
        &self,
        t: &TenantId,
        after: Option<&LabelCursor>,
        limit: usize,
    ) -> Result<Vec<StoredLabel>, StoreError> {
        self.inner.labels_since(t, after, limit).await
    }

    async fn current_model(&self, t: &TenantId) -> Result<Option<ModelVersion>, StoreError> {
        self.inner.current_model(t).await
    }

    async fn served_model(&self, t: &TenantId) -> Result<Option<ServedModel>, StoreError> {
        self.inner.served_model(t).await
    }

    async fn publish_model(&self, t: &TenantId, m: &ModelVersion) -> Result<Write, StoreError> {
        self.inner.publish_model(t, m).await
    }

    async fn model_history(
        &self,
        t: &TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ModelVersion>, StoreError> {
        self.inner.model_history(t, before, limit).await
    }

    async fn model_version(
        &self,
        t: &TenantId,
        version: u64,
    ) -> Result<Option<ModelVersion>, StoreError> {
        self.inner.model_version(t, version).await
    }

    async fn current_config(&self, t: &TenantId) -> Result<Option<TenantConfig>, StoreError> {
        self.inner.current_config(t).await
    }

    async fn config_version(
        &self,
        t: &TenantId,
        version: u64,
    ) -> Result<Option<TenantConfig>, StoreError> {
        self.inner.config_version(t, version).await
    }

    async fn config_history(
        &self,
        t: &TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<TenantConfig>, StoreError> {
        self.inner.config_history(t, before, limit).await
    }

    async fn publish_config(&self, t: &TenantId, c: &TenantConfig) -> Result<Write, StoreError> {
        self.inner.publish_config(t, c).await
    }

    async fn conversations(
        &self,
        t: &TenantId,
        since: Millis,
        before: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<ConversationEntry>, StoreError> {
        self.inner.conversations(t, since, before, limit).await
    }
}

// ---------------------------------------------------------------------------------------------
// The consumer's ordering and deduplication, on the store directly.

/// Records of two conversations interleaved in one batch are recorded each in its spool order,
/// whatever times they were answered at: turn n of a conversation is its n-th spooled record.
async fn a_batch_records_each_conversation_in_spool_order<B: Backend>(backend: &B) {
    let app = App {
        store: backend.open().await,
        dead_letters: None,
    };
    // Answered at times that run backwards: the order is the spool's, not the clock's.
    let a1 = record("c-a", "a-1", "too expensive for us", 1_700_000_000_300);
    let b1 = record("c-b", "b-1", "who else uses this", 1_700_000_000_250);
    let a2 = record("c-a", "a-2", "we use a competitor", 1_700_000_000_200);
    let b2 = record("c-b", "b-2", "send me a case study", 1_700_000_000_150);
    let a3 = record("c-a", "a-3", "let's talk next week", 1_700_000_000_100);
    let batch = event(&[
        delivered("q-1", &a1),
        delivered("q-2", &b1),
        delivered("q-3", &a2),
        delivered("q-4", &b2),
        delivered("q-5", &a3),
    ]);
    let (response, done) = handle_batch(&app, batch).await;
    assert_eq!(failures(&response), Vec::<String>::new());
    assert_eq!(done, summary(5, 0, 0, 0));
    assert_eq!(
        message_ids(&app.store, "c-a").await,
        ids(&["a-1", "a-2", "a-3"])
    );
    assert_eq!(message_ids(&app.store, "c-b").await, ids(&["b-1", "b-2"]));
    // Each as it was answered: the spooled draft, its time, and where it came from.
    let stored = exchanges(&app.store, "c-a").await;
    for (exchange, spooled) in stored.iter().zip([&a1, &a2, &a3]) {
        assert_eq!(exchange.draft.via, Via::Spool);
        assert_eq!(exchange.draft.at, spooled.draft.at);
        assert_eq!(exchange.draft.user_text, spooled.draft.user_text);
        assert_eq!(exchange.draft.reply, spooled.draft.reply);
        assert_eq!(exchange.draft.strategy, spooled.draft.strategy);
    }
    assert_eq!(recovered(&app.store).await, 5, "one per recorded record");
}

/// The same record twice (in one batch, and again in a later one: sent twice, or delivered
/// again) is recorded once; the others are duplicates, write no exchange, and are not counted
/// as recovered again. A record whose message was recorded directly (the direct append landed
/// after the budget ran out) is a duplicate that does count: its answer was counted unrecorded.
async fn the_same_record_twice_is_recorded_once<B: Backend>(backend: &B) {
    let app = App {
        store: backend.open().await,
        dead_letters: None,
    };
    let a1 = record("c-a", "a-1", "too expensive for us", 1_700_000_000_000);
    let (response, done) =
        handle_batch(&app, event(&[delivered("q-1", &a1), delivered("q-2", &a1)])).await;
    assert_eq!(failures(&response), Vec::<String>::new());
    assert_eq!(done, summary(1, 1, 0, 0));
    let items = backend.raw_items(&app.store).await.len();
    let (response, done) = handle_batch(&app, event(&[delivered("q-3", &a1)])).await;
    assert_eq!(failures(&response), Vec::<String>::new());
    assert_eq!(done, summary(0, 1, 0, 0));
    assert_eq!(message_ids(&app.store, "c-a").await, ids(&["a-1"]));
    assert_eq!(
        backend.raw_items(&app.store).await.len(),
        items,
        "a duplicate writes no item"
    );
    assert_eq!(
        recovered(&app.store).await,
        1,
        "once for the record, never for its duplicates"
    );
    // Recorded directly first, then spooled: the copy is a duplicate, and it does count.
    let b1 = record(
        "c-b",
        "b-1",
        "we are evaluating other vendors",
        1_700_000_000_500,
    );
    let direct = b1.draft.clone();
    let recorded = salesloop::service::record_message(
        &app.store,
        &b1.tenant,
        &b1.conversation_id,
        &b1.draft.message_id,
        &b1.draft.user_text,
        salesloop::service::PlanFn(move |_: &_| direct.clone()),
    )
    .await
    .unwrap();
    assert!(!recorded.duplicate);
    let (response, done) = handle_batch(&app, event(&[delivered("q-4", &b1)])).await;
    assert_eq!(failures(&response), Vec::<String>::new());
    assert_eq!(done, summary(0, 1, 0, 0));
    assert_eq!(message_ids(&app.store, "c-b").await, ids(&["b-1"]));
    assert_eq!(exchanges(&app.store, "c-b").await[0].draft.via, Via::Direct);
    assert_eq!(
        recovered(&app.store).await,
        2,
        "the direct record's copy counts"
    );
}

/// Records that can never be recorded go to the dead-letter queue with their reason, write
/// nothing, and never hold back the records after them, of their conversation or others: a
/// message id recorded with another text, unreadable JSON, another schema version, a record
/// of a conversation that has ended.
async fn records_that_can_never_be_recorded_are_dead_lettered_and_block_nothing<B: Backend>(
    backend: &B,
) {
    let queues = queues("reject", 30, 5).await;
    let app = App {
        store: backend.open().await,
        dead_letters: Some(queues.dead_letters()),
    };
    let t = acme();
    let a1 = record("c-a", "a-1", "too expensive for us", 1_700_000_000_000);
    let (_, done) = handle_batch(&app, event(&[delivered("q-0", &a1)])).await;
    assert_eq!(done, summary(1, 0, 0, 0));
    // c-c: one message recorded directly, then ended.
    let c1_text = "we signed with you";
    app.store
        .record_exchange(&t, &cid("c-c"), &mid("c-1"), |state| {
            draft(&mid("c-1"), c1_text, state)
        })
        .await
        .unwrap();
    app.store
        .end_conversation(
            &t,
            &cid("c-c"),
            end_request(Outcome::Won, 1_700_000_001_000),
        )
        .await
        .unwrap();

    let reused = record("c-a", "a-1", "a different text, same id", 1_700_000_000_010);
    let a2 = record("c-a", "a-2", "we use a competitor", 1_700_000_000_020);
    let corrupt = "{\"schema\": 1, \"tenant\": \"acme\", \"conver";
    let a3 = record("c-a", "a-3", "who else uses this", 1_700_000_000_030);
    let mut schema2 = serde_json::to_value(record("c-a", "a-9", "from the future", 0)).unwrap();
    schema2["schema"] = json!(2);
    let schema2 = schema2.to_string();
    let a4 = record("c-a", "a-4", "let's talk next week", 1_700_000_000_040);
    let c2 = record("c-c", "c-2", "one more question", 1_700_000_002_000);
    let c1_again = record("c-c", "c-1", c1_text, 1_700_000_000_000);
    let b1 = record("c-b", "b-1", "send me a case study", 1_700_000_000_050);
    let before = exchanges(&app.store, "c-a").await;
    let batch = event(&[
        delivered("q-1", &reused),
        delivered("q-2", &a2),
        raw_body("q-3", corrupt, &a1),
        delivered("q-4", &a3),
        raw_body("q-5", &schema2, &a1),
        delivered("q-6", &a4),
        delivered("q-7", &c2),
        delivered("q-8", &c1_again),
        delivered("q-9", &b1),
    ]);
    let (response, done) = handle_batch(&app, batch).await;
    assert_eq!(failures(&response), Vec::<String>::new());
    assert_eq!(done, summary(4, 1, 4, 0));
    // Each record after a reject in its conversation was recorded, in order.
    assert_eq!(
        message_ids(&app.store, "c-a").await,
        ids(&["a-1", "a-2", "a-3", "a-4"])
    );
    // The reused id wrote nothing: the first exchange is as it was.
    assert_eq!(exchanges(&app.store, "c-a").await[0], before[0]);
    assert_eq!(message_ids(&app.store, "c-c").await, ids(&["c-1"]));
    assert!(matches!(
        app.store.conversation(&t, &cid("c-c")).await.unwrap(),
        ConversationState::Ended(_)
    ));
    assert_eq!(message_ids(&app.store, "c-b").await, ids(&["b-1"]));
    assert_eq!(
        recovered(&app.store).await,
        1 + 4 + 1,
        "recorded and duplicate records count; rejects do not"
    );

    let dead = queues.dead_lettered().await;
    let reason = |body: &str| -> Option<String> {
        dead.iter()
            .find(|(b, _)| b == body)
            .unwrap_or_else(|| panic!("{body} is not in the dead-letter queue: {dead:?}"))
            .1
            .clone()
    };
    assert_eq!(dead.len(), 4, "{dead:#?}");
    let reused_body = serde_json::to_string(&reused).unwrap();
    let c2_body = serde_json::to_string(&c2).unwrap();
    assert_eq!(
        reason(&reused_body).as_deref(),
        Some("the message_id is recorded with a different text")
    );
    let unreadable = reason(corrupt).unwrap();
    assert!(
        unreadable.starts_with("unreadable record: "),
        "{unreadable}"
    );
    assert_eq!(
        reason(&schema2).as_deref(),
        Some("schema version 2; this consumer reads 1")
    );
    assert_eq!(
        reason(&c2_body).as_deref(),
        Some("the conversation has ended")
    );
    // c-a's rejects in their spool order (one message group in the dead-letter queue too).
    let order: Vec<&str> = dead
        .iter()
        .map(|(b, _)| b.as_str())
        .filter(|b| [reused_body.as_str(), corrupt, schema2.as_str()].contains(b))
        .collect();
    assert_eq!(order, [reused_body.as_str(), corrupt, schema2.as_str()]);
}

/// A record the store does not take now is reported failed, and so is every record of its
/// conversation after it in the batch, unattempted (a reject among them too: it waits its
/// turn). When the store did not answer, every later record of the batch waits as well (each
/// would only wait out the store's timeouts); when writers kept winning the conversation's
/// turns, only that conversation's do, and the others are recorded. Records before it are
/// recorded either way. Delivered again once the store takes them, they are recorded in order.
async fn a_record_not_recorded_now_holds_the_records_after_it<B: Backend>(backend: &B) {
    let queues = queues("transient", 30, 5).await;
    let open = backend.opener().await;
    let a1 = record("c-a", "a-1", "too expensive for us", 1_700_000_000_000);
    let b1 = record("c-b", "b-1", "who else uses this", 1_700_000_000_010);
    let a2 = record("c-a", "a-2", "we use a competitor", 1_700_000_000_020);
    let b2 = record("c-b", "b-2", "send me a case study", 1_700_000_000_030);
    let corrupt = "not a record";
    let all = || {
        vec![
            delivered("q-1", &b1),
            delivered("q-2", &a1),
            delivered("q-3", &a2),
            raw_body("q-4", corrupt, &a1),
            delivered("q-5", &b2),
        ]
    };
    let store = open();

    // The whole store down: nothing recorded, nothing dead-lettered.
    let down = App {
        store: unreachable_store(),
        dead_letters: Some(queues.dead_letters()),
    };
    let (response, done) = handle_batch(&down, event(&all())).await;
    assert_eq!(
        failures(&response),
        ids(&["q-1", "q-2", "q-3", "q-4", "q-5"])
    );
    assert_eq!(done, summary(0, 0, 0, 5));

    // The store does not answer for c-a: what came before it is recorded, nothing after it.
    let app = App {
        store: Faulty::down(open(), &["c-a"]),
        dead_letters: Some(queues.dead_letters()),
    };
    let (response, done) = handle_batch(&app, event(&all())).await;
    assert_eq!(failures(&response), ids(&["q-2", "q-3", "q-4", "q-5"]));
    assert_eq!(done, summary(1, 0, 0, 4));
    assert_eq!(message_ids(&store, "c-a").await, Vec::<String>::new());
    assert_eq!(message_ids(&store, "c-b").await, ids(&["b-1"]));

    // Writers keep winning c-a's turns: only c-a's records wait.
    let app = App {
        store: Faulty::contended(open(), &["c-a"]),
        dead_letters: Some(queues.dead_letters()),
    };
    let (response, done) = handle_batch(&app, event(&all()[1..])).await;
    assert_eq!(failures(&response), ids(&["q-2", "q-3", "q-4"]));
    assert_eq!(done, summary(1, 0, 0, 3));
    assert_eq!(message_ids(&store, "c-a").await, Vec::<String>::new());
    assert_eq!(message_ids(&store, "c-b").await, ids(&["b-1", "b-2"]));
    assert_eq!(
        queues.dead_letter_counts().await.total(),
        0,
        "the held reject was not attempted"
    );

    // Delivered again, the store taking them.
    let up = App {
        store: open(),
        dead_letters: Some(queues.dead_letters()),
    };
    let (response, done) = handle_batch(&up, event(&all()[1..4])).await;
    assert_eq!(failures(&response), Vec::<String>::new());
    assert_eq!(done, summary(2, 0, 1, 0));
    assert_eq!(message_ids(&store, "c-a").await, ids(&["a-1", "a-2"]));
    assert_eq!(recovered(&store).await, 4);
    let dead = queues.dead_lettered().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, corrupt);
}

/// With no dead-letter queue configured, or one that cannot be reached, a reject is reported
/// failed and holds its conversation's later records (the queue's redrive moves it in time);
/// other conversations go on.
async fn a_reject_with_nowhere_to_go_waits_in_the_spool_with_its_conversation<B: Backend>(
    backend: &B,
) {
    let open = backend.opener().await;
    let a1 = record("c-a", "a-1", "too expensive for us", 1_700_000_000_000);
    let b1 = record("c-b", "b-1", "who else uses this", 1_700_000_000_010);
    let unreachable = {
        let sdk = sdk_config(&closed_endpoint());
        FifoQueue::new(
            &sdk,
            format!("{}/123456789012/gone-dlq.fifo", closed_endpoint()),
        )
    };
    for (n, dead_letters) in [None, Some(unreachable)].into_iter().enumerate() {
        let app = App {
            store: open(),
            dead_letters,
        };
        let (response, done) = handle_batch(
            &app,
            event(&[
                raw_body("q-1", "{}", &a1),
                delivered("q-2", &a1),
                delivered("q-3", &b1),
            ]),
        )
        .await;
        assert_eq!(failures(&response), ids(&["q-1", "q-2"]), "{n}");
        assert_eq!(
            done,
            summary(if n == 0 { 1 } else { 0 }, n as u32, 0, 2),
            "{n}"
        );
        assert_eq!(message_ids(&app.store, "c-a").await, Vec::<String>::new());
        assert_eq!(message_ids(&app.store, "c-b").await, ids(&["b-1"]));
    }
}

// ---------------------------------------------------------------------------------------------
// process_message, the spool and the consumer.

fn message_app<S: Store>(store: S) -> MessageApp<S> {
    MessageApp {
        store,
        engine: Engine::builtin(),
        models: ModelCache::new(Duration::from_secs(30)),
        configs: ConfigCache::new(Duration::from_secs(30)),
        tenants: TenantSource {
            claim: "tenant_id".into(),
            local: false,
        },
        llm: None,
        text_storage: TextStorage::Text,
        unrecorded: Default::default(),
        record_budget: Duration::from_millis(salesloop::edge::settings::DEFAULT_RECORD_BUDGET_MS),
        spool: None,
        last_resort: LastResort::Stdout,
    }
}

/// Sends a message of tenant `acme`; the status, the answer, and how long it took.
async fn say<S: Store>(
    app: &MessageApp<S>,
    conversation: &str,
    message_id: &str,
    text: &str,
) -> (u16, Value, Duration) {
    let body = json!({"message_id": message_id, "text": text}).to_string();
    let path = format!("/conversations/{conversation}/messages");
    let started = Instant::now();
    let response: Response<Body> = handle(
        app,
        request(Flavor::HttpApi, "POST", &path, &body, Some("acme"), &[]),
    )
    .await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    let answer = match response.body() {
        Body::Text(text) => serde_json::from_str(text).unwrap(),
        other => panic!("{other:?}"),
    };
    (status, answer, took)
}

fn sdk_config(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "tests",
        )))
        .build()
}

/// With its store down, process_message answers every message 200 `"recorded": false` with a
/// reply and no turn, and spools each exchange to the FIFO queue (the conversation its message
/// group, tenant, conversation and message id its deduplication id): a repeat of a message id
/// spooled once. The consumer, on DynamoDB Local, then records each exactly once, in order,
/// as the prospect was answered.
async fn process_message_answers_through_an_outage_and_the_spool_records_each_once(
    backend: &DynamoBackend,
) {
    let queues = queues("outage", 30, 5).await;
    let mut down = message_app(unreachable_store());
    down.spool = Some(queues.spool());
    let lines = Arc::new(Mutex::new(Vec::new()));
    down.last_resort = LastResort::Memory(lines.clone());
    let sent = [
        ("c-1", "m-1", "Honestly this looks too expensive for us."),
        ("c-2", "n-1", "Who else in our industry uses this?"),
        ("c-1", "m-2", "We already work with another vendor."),
        ("c-1", "m-3", "Can you send me a case study?"),
        ("c-2", "n-2", "Is there a free trial?"),
        ("c-1", "m-2", "We already work with another vendor."),
        ("c-1", "m-4", "Let's talk again next quarter."),
    ];
    let mut answered: Vec<(&str, &str, Value)> = Vec::new();
    for (conversation, message_id, text) in sent {
        let (status, answer, took) = say(&down, conversation, message_id, text).await;
        eprintln!("{conversation}/{message_id}: {status} in {took:?} with the store down");
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["recorded"], false, "{answer}");
        assert_eq!(answer["turn"], Value::Null, "{answer}");
        assert_eq!(answer["message_id"], message_id);
        assert!(
            !answer["reply"]["text"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{answer}"
        );
        answered.push((conversation, message_id, answer));
    }
    assert_eq!(
        lines.lock().unwrap().len(),
        0,
        "the spool took every exchange"
    );
    assert_eq!(
        down.unrecorded.pending(),
        6,
        "every message answered unrecorded noted once, the repeat too"
    );
    let counts = queues.spool_counts().await;
    assert_eq!(
        (counts.visible, counts.in_flight),
        (6, 0),
        "the repeat was spooled once"
    );

    // The consumer on DynamoDB Local, through the event source's polls.
    let consumer = App {
        store: backend.open().await,
        dead_letters: Some(queues.dead_letters()),
    };
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut total = BatchSummary::default();
    let started = Instant::now();
    while queues.spool_counts().await.total() > 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "{seen:?}");
        let batch = queues.receive_event().await;
        for message in &batch.records {
            assert_eq!(message.event_source.as_deref(), Some("aws:sqs"));
            assert_eq!(
                message.event_source_arn.as_deref(),
                Some(queues.spool_arn().as_str())
            );
            let body = message.body.as_deref().unwrap();
            let spooled = SpooledExchange::parse(body).unwrap();
            assert_eq!(
                message.attributes.get("MessageGroupId"),
                Some(&spooled.group_id())
            );
            assert_eq!(
                message.attributes.get("MessageDeduplicationId"),
                Some(&spooled.deduplication_id())
            );
            assert_eq!(
                message.attributes.get("ApproximateReceiveCount").unwrap(),
                "1"
            );
            seen.push((
                spooled.conversation_id.as_str().to_owned(),
                spooled.draft.message_id.as_str().to_owned(),
            ));
        }
        let (response, done) = handle_batch(&consumer, batch.clone()).await;
        queues.complete(&batch, &response).await;
        total.recorded += done.recorded;
        total.duplicates += done.duplicates;
        total.dead_lettered += done.dead_lettered;
        total.retried += done.retried;
    }
    let of = |conversation: &str| -> Vec<String> {
        seen.iter()
            .filter(|(c, _)| c == conversation)
            .map(|(_, m)| m.clone())
            .collect()
    };
    assert_eq!(of("c-1"), ids(&["m-1", "m-2", "m-3", "m-4"]), "spool order");
    assert_eq!(of("c-2"), ids(&["n-1", "n-2"]), "spool order");
    assert_eq!(total, summary(6, 0, 0, 0));

    // Each recorded once, in order, as it was answered.
    let store = &consumer.store;
    assert_eq!(
        message_ids(store, "c-1").await,
        ids(&["m-1", "m-2", "m-3", "m-4"])
    );
    assert_eq!(message_ids(store, "c-2").await, ids(&["n-1", "n-2"]));
    for conversation in ["c-1", "c-2"] {
        for exchange in exchanges(store, conversation).await {
            let (_, _, answer) = answered
                .iter()
                .find(|(c, m, _)| *c == conversation && *m == exchange.draft.message_id.as_str())
                .unwrap();
            assert_eq!(exchange.draft.via, Via::Spool);
            assert_eq!(answer["reply"]["text"], exchange.draft.reply.text);
            assert_eq!(answer["strategy"]["name"], exchange.draft.strategy.name);
        }
    }
    assert_eq!(recovered(store).await, 6);
    assert_eq!(queues.spool_counts().await.total(), 0);
    assert_eq!(queues.dead_letter_counts().await.total(), 0);
}

/// With the spool unreachable too, the exchange is the last-resort log line: it holds the
/// hash of the text, never the text, when the text is kept hashed. Replayed from a CloudWatch
/// Logs export (timestamps before each line, other lines between), each is recorded once, in
/// order; a line that is not a whole record is reported with its place; a second replay
/// writes nothing.
async fn the_last_resort_log_replays_once_and_never_holds_the_text<B: Backend>(backend: &B) {
    let mut down = message_app(unreachable_store());
    down.text_storage = TextStorage::Hash;
    let spool_endpoint = closed_endpoint();
    down.spool = Some(FifoQueue::new(
        &sdk_config(&spool_endpoint),
        format!("{spool_endpoint}/123456789012/spool.fifo"),
    ));
    let lines = Arc::new(Mutex::new(Vec::new()));
    down.last_resort = LastResort::Memory(lines.clone());
    let sent = [
        (
            "m-1",
            "We are losing leads every single week to a competitor.",
        ),
        (
            "m-2",
            "Honestly this looks far too expensive for a team our size.",
        ),
        (
            "m-3",
            "Could you send me a case study from a company like ours?",
        ),
    ];
    for (message_id, text) in sent {
        let (status, answer, took) = say(&down, "c-log", message_id, text).await;
        eprintln!("c-log/{message_id}: {status} in {took:?} with the store and spool down");
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            (&answer["recorded"], &answer["turn"]),
            (&json!(false), &Value::Null)
        );
    }
    let logged = lines.lock().unwrap().clone();
    assert_eq!(logged.len(), 3, "{logged:#?}");
    for (line, (message_id, text)) in logged.iter().zip(sent) {
        assert!(!line.contains(text), "the text is in the log: {line}");
        let record = SpooledExchange::from_log_line(line).unwrap().unwrap();
        assert_eq!(record.draft.message_id.as_str(), message_id);
        assert!(is_hashed(&record.draft.user_text), "{line}");
        assert_eq!(
            record.draft.user_text,
            TextStorage::Hash.stored(&acme(), text)
        );
    }

    // A CloudWatch Logs export of the function's log group.
    let mut export = tempfile::NamedTempFile::new().unwrap();
    let mut at = 0;
    let mut stamp = |line: &str| {
        at += 7;
        format!(
            "2026-12-03T02:00:{:02}.{:03}Z {line}\n",
            at / 1000,
            at % 1000
        )
    };
    let mut text = stamp("START RequestId: 8f0c Version: $LATEST");
    for line in &logged {
        text += &stamp(concat!(
            r#"{"level":"ERROR","fields":{"message":"#,
            r#""the exchange was not recorded and could not be spooled; logged"}}"#
        ));
        text += &stamp(line);
    }
    // Cut short: the marker and a record that is not whole.
    text += &stamp(r#"{"salesloop_unrecorded": 1, "record": {"schema": 1, "tenant": "acme"}}"#);
    text += &stamp("END RequestId: 8f0c");
    export.write_all(text.as_bytes()).unwrap();
    export.flush().unwrap();

    let store = backend.open().await;
    let run = || async {
        let mut summary = ReplaySummary::default();
        let file = std::fs::File::open(export.path()).unwrap();
        replay(
            &store,
            "export.log",
            std::io::BufReader::new(file),
            &mut summary,
        )
        .await
        .unwrap();
        summary
    };
    let first = run().await;
    assert_eq!(
        (first.lines, first.recorded, first.duplicates),
        (4, 3, 0),
        "{first}"
    );
    assert_eq!(first.rejected.len(), 1, "{first}");
    assert!(
        first.rejected[0].starts_with("export.log:8: unreadable record"),
        "{first}"
    );
    assert!(first.retry.is_empty(), "{first}");
    assert_eq!(
        message_ids(&store, "c-log").await,
        ids(&["m-1", "m-2", "m-3"])
    );
    let stored = exchanges(&store, "c-log").await;
    assert!(stored.iter().all(|e| e.draft.via == Via::Replay));
    let items = backend.raw_items(&store).await;
    for (_, text) in sent {
        assert!(
            !items
                .iter()
                .flat_map(|i| i.values())
                .any(|v| v.contains(text)),
            "the text is stored: {text}"
        );
    }

    let second = run().await;
    assert_eq!(
        (second.lines, second.recorded, second.duplicates),
        (4, 0, 3),
        "{second}"
    );
    assert_eq!(exchanges(&store, "c-log").await, stored);
    assert_eq!(backend.raw_items(&store).await.len(), items.len());
    assert_eq!(
        recovered(&store).await,
        3,
        "each line once: a second replay counts nothing"
    );
}

/// A consumer that stops mid-batch (its invocation times out after the store recorded 4 of
/// 10) deletes nothing; after the visibility timeout the whole batch comes again, and a fresh
/// consumer records the 6 left, finds the 4 duplicates, in order: each exactly once.
async fn a_consumer_killed_mid_batch_loses_nothing_and_records_nothing_twice<B: Backend>(
    backend: &B,
) {
    let queues = queues("killed", 1, 5).await;
    let spool = queues.spool();
    let records: Vec<SpooledExchange> = (1..=10)
        .map(|i| {
            record(
                "c-k",
                &format!("m-{i:02}"),
                &format!("message number {i}"),
                1_700_000_000_000 + i,
            )
        })
        .collect();
    for r in &records {
        spool.spool(r).await.unwrap();
    }
    let open = backend.opener().await;
    let stalling = App {
        store: Faulty::stalling_after(open(), 4),
        dead_letters: Some(queues.dead_letters()),
    };
    let batch = queues.receive_event().await;
    assert_eq!(batch.records.len(), 10, "one batch of the conversation");
    // Stopped once the fifth append hangs (the first four recorded), as an invocation that
    // times out is: its future dropped where it was.
    let stalled = async {
        let started = Instant::now();
        while stalling.store.appends.load(Ordering::SeqCst) < 5 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no fifth append"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        (_, done) = handle_batch(&stalling, batch.clone()) => {
            panic!("the batch finished: {done:?}")
        }
        () = stalled => {}
    }
    drop(stalling);
    // The invocation failed: the event source deletes nothing, and the batch comes back after
    // the visibility timeout. `release` is that timeout running out at once: moto, left to
    // it, would hand back the conversation's last message first (salesloop_tests::sqs).
    queues.release(&batch).await;
    let store = open();
    assert_eq!(
        message_ids(&store, "c-k").await,
        ids(&["m-01", "m-02", "m-03", "m-04"])
    );
    assert_eq!(queues.spool_counts().await.total(), 10);

    let fresh = App {
        store: open(),
        dead_letters: Some(queues.dead_letters()),
    };
    let done = queues.drain(&fresh, Duration::from_secs(60)).await;
    assert_eq!(done, summary(6, 4, 0, 0));
    let expected: Vec<String> = (1..=10).map(|i| format!("m-{i:02}")).collect();
    assert_eq!(message_ids(&store, "c-k").await, expected);
    assert_eq!(queues.dead_letter_counts().await.total(), 0);
}

/// A record of a conversation that ended meanwhile, spooled to the queue: one poll of the
/// event source and it is in the dead-letter queue with its reason, and the spool is empty.
async fn a_record_of_an_ended_conversation_reaches_the_dead_letter_queue_with_its_reason<
    B: Backend,
>(
    backend: &B,
) {
    let queues = queues("ended", 30, 5).await;
    let store = backend.open().await;
    let t = acme();
    store
        .record_exchange(&t, &cid("c-e"), &mid("m-1"), |state| {
            draft(&mid("m-1"), "we signed", state)
        })
        .await
        .unwrap();
    store
        .end_conversation(
            &t,
            &cid("c-e"),
            end_request(Outcome::Won, 1_700_000_001_000),
        )
        .await
        .unwrap();
    let late = record("c-e", "m-2", "one more question", 1_700_000_000_500);
    queues.spool().spool(&late).await.unwrap();
    let app = App {
        store,
        dead_letters: Some(queues.dead_letters()),
    };
    let (received, done) = queues.poll_once(&app).await;
    assert_eq!((received, done), (1, summary(0, 0, 1, 0)));
    assert_eq!(queues.spool_counts().await.total(), 0, "the spool is empty");
    let dead = queues.dead_lettered().await;
    assert_eq!(
        dead,
        vec![(
            serde_json::to_string(&late).unwrap(),
            Some("the conversation has ended".to_owned())
        )]
    );
    assert_eq!(message_ids(&app.store, "c-e").await, ids(&["m-1"]));
}

/// Records the store keeps refusing (their conversation's part of the store cannot be
/// reached) are reported failed at each delivery, and after `maxReceiveCount` receives the
/// queue's redrive policy moves them, without a reason, to the dead-letter queue.
async fn a_record_the_store_keeps_refusing_is_moved_by_the_redrive_policy<B: Backend>(backend: &B) {
    let queues = queues("redrive", 1, 2).await;
    let spool = queues.spool();
    let a1 = record("c-a", "a-1", "too expensive for us", 1_700_000_000_000);
    let a2 = record("c-a", "a-2", "we use a competitor", 1_700_000_000_010);
    for r in [&a1, &a2] {
        spool.spool(r).await.unwrap();
    }
    let open = backend.opener().await;
    let app = App {
        store: Faulty::down(open(), &["c-a"]),
        dead_letters: Some(queues.dead_letters()),
    };
    let done = queues.drain(&app, Duration::from_secs(60)).await;
    assert_eq!((done.recorded, done.duplicates), (0, 0), "{done:?}");
    assert_eq!(done.dead_lettered, 0, "{done:?}");
    assert!(done.retried >= 2 * 2, "each delivered twice: {done:?}");
    // Both moved, without a reason. Not their order: moto redrives a group's messages that
    // timed out together last first (salesloop_tests::sqs); SQS keeps their order.
    let mut dead = queues.dead_lettered().await;
    dead.sort();
    let mut expected = vec![
        (serde_json::to_string(&a1).unwrap(), None),
        (serde_json::to_string(&a2).unwrap(), None),
    ];
    expected.sort();
    assert_eq!(dead, expected, "moved by the redrive, without a reason");
    assert_eq!(queues.spool_counts().await.total(), 0);
    assert_eq!(message_ids(&open(), "c-a").await, Vec::<String>::new());
}

salesloop_tests::store_cases! {
    fn trials;
    stores: [
        a_batch_records_each_conversation_in_spool_order,
        the_same_record_twice_is_recorded_once,
        records_that_can_never_be_recorded_are_dead_lettered_and_block_nothing,
        a_record_not_recorded_now_holds_the_records_after_it,
        a_reject_with_nowhere_to_go_waits_in_the_spool_with_its_conversation,
        the_last_resort_log_replays_once_and_never_holds_the_text,
        a_consumer_killed_mid_batch_loses_nothing_and_records_nothing_twice,
        a_record_of_an_ended_conversation_reaches_the_dead_letter_queue_with_its_reason,
        a_record_the_store_keeps_refusing_is_moved_by_the_redrive_policy,
    ],
    dynamodb: [
        process_message_answers_through_an_outage_and_the_spool_records_each_once,
    ],
}

fn main() {
    let harness = Harness::new();
    let trials = trials(&harness);
    let conclusion = harness.run(trials);
    MOTO.stop();
    conclusion.exit();
}
