//! The store contract: every guarantee the functions rely on, proved against any adapter. The
//! same cases run against the embedded store and against DynamoDB Local.
//!
//! Concurrency is proved by racing many tokio tasks, spread over several handles to one store
//! (separate SQLite connections, or clones of one DynamoDB client), and then checking the
//! stored result as a whole: every turn present once, no message twice, each counter step
//! reported once, one winner per compare-and-set.
//!
//! Every case is registered for both stores by [`store_cases!`](crate::store_cases): a case
//! function missing from the list is dead code, which this module denies.

#![deny(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use salesloop::domain::conversation::{DetectionLabel, MAX_TURNS};
use salesloop::domain::labels::{LabelCursor, MAX_LABELS_PER_REQUEST, StoredLabel};
use salesloop::store::TIME_INDEX;
use salesloop::{
    ConversationId, ConversationState, Cursor, Detection, EndRequest, ExchangeDraft, MessageId,
    Millis, Model, ModelVersion, Outcome, Reply, ReplySource, ServiceError, Store, StoreError,
    StrategyChoice, TenantId, Write,
};

use crate::flows::Flows;
use salesloop::domain::config::TenantConfig;
use salesloop::service::Published;
use salesloop::service::admin::{self, AdminError};

pub use crate::stores::{Backend, DynamoBackend, EmbeddedBackend};

fn tenant(raw: &str) -> TenantId {
    TenantId::parse(raw).expect("valid tenant")
}

fn conversation(raw: &str) -> ConversationId {
    ConversationId::parse(raw).expect("valid conversation id")
}

fn message(raw: &str) -> MessageId {
    MessageId::parse(raw).expect("valid message id")
}

/// A draft as process_message would build it; the text names the message so tests can check
/// which draft was stored.
pub fn draft(message_id: &MessageId, text: &str, state: &ConversationState) -> ExchangeDraft {
    let price = text.contains("expensive");
    ExchangeDraft {
        message_id: message_id.clone(),
        at: Millis(1_700_000_000_000 + u64::from(state.turns())),
        model_version: 0,
        user_text: text.to_owned(),
        reply: Reply {
            text: format!("reply to {text}"),
            source: ReplySource::Template,
        },
        strategy: StrategyChoice {
            name: if price {
                "handle_price_objection".into()
            } else {
                "ask_discovery_question".into()
            },
            context: if price {
                "objection.price".into()
            } else {
                "none".into()
            },
            probability: 0.5,
        },
        patterns: if price {
            vec![Detection {
                pattern: "objection.price".into(),
                confidence: 0.9,
                evidence: "expensive".into(),
                start: 0,
                end: 9,
                calibrated: true,
            }]
        } else {
            Vec::new()
        },
        experiments: BTreeMap::from([("reply_tone".to_owned(), "warm".to_owned())]),
        latency_us: 100,
        config_version: 0,
        treatment: None,
        via: Default::default(),
    }
}

pub fn end_request(outcome: Outcome, at: u64) -> EndRequest {
    EndRequest {
        outcome,
        value: Some(100.0),
        reason: None,
        labels: Vec::new(),
        at: Millis(at),
        model_version: 0,
    }
}

pub async fn send<S: Store>(
    store: &S,
    tenant: &TenantId,
    conversation: &ConversationId,
    message_id: &str,
    text: &str,
) -> Result<salesloop::Recorded, ServiceError> {
    let id = message(message_id);
    store
        .record_exchange(tenant, conversation, &id, |state| draft(&id, text, state))
        .await
}

fn model_version(version: u64) -> ModelVersion {
    ModelVersion {
        version,
        published_at: Millis(1_700_000_000_000 + version),
        watermark: None,
        label_watermark: None,
        outcomes_learned: version * 10,
        model: Model::default(),
        state: Default::default(),
        report: None,
        activated_from: None,
    }
}

crate::store_cases! {
    pub fn trials;
    stores: [
        first_message_creates_the_conversation_at_turn_one,
        repeated_message_returns_the_first_exchange_and_writes_nothing,
        concurrent_messages_to_one_conversation_take_every_turn_once,
        concurrent_retries_of_one_message_record_it_once,
        exchanges_read_back_in_turn_order_past_one_page,
        ended_conversation_refuses_new_messages_but_answers_retries,
        ending_twice_repeats_the_same_outcome_and_refuses_another,
        ending_an_unknown_conversation_is_not_found,
        concurrent_ends_count_each_conversation_once_and_report_each_multiple_once,
        an_end_racing_messages_closes_the_log_after_the_last_turn,
        a_conversation_stops_at_its_turn_limit,
        lease_has_one_holder_and_expires_when_the_holder_dies,
        concurrent_lease_takers_have_one_winner,
        tracking_counters_add_atomically_per_tenant,
        outcomes_since_a_watermark_page_in_time_order,
        outcome_reads_cross_the_one_megabyte_page,
        model_versions_publish_by_compare_and_set_and_keep_history,
        racing_publishers_of_one_version_have_one_winner,
        configuration_versions_publish_by_compare_and_set_and_keep_history,
        racing_admins_without_if_match_lose_no_change,
        racing_admins_with_if_match_have_one_winner,
        an_activated_model_is_a_copy_published_next,
        the_caches_keep_the_current_version_for_their_age_and_read_a_pinned_one_once,
        tenants_never_see_each_others_data,
        labels_read_back_in_turn_and_pattern_order,
        a_taken_label_loses_the_whole_write,
        racing_writers_of_one_label_have_one_winner,
        labels_since_page_in_cursor_order_across_conversations,
        labels_stay_with_their_tenant,
        label_items_leave_the_log_reads_alone,
    ],
}

async fn first_message_creates_the_conversation_at_turn_one<B: Backend>(backend: &B) {
    let store = &backend.fresh(1).await[0];
    let (t, c) = (tenant("acme"), conversation("c-1"));
    assert_eq!(
        store.conversation(&t, &c).await.unwrap(),
        ConversationState::New
    );
    let recorded = send(&**store, &t, &c, "m-1", "too expensive")
        .await
        .unwrap();
    assert!(!recorded.duplicate);
    assert_eq!(recorded.exchange.turn, 1);
    let state = store.conversation(&t, &c).await.unwrap();
    assert_eq!(state.turns(), 1);
    let summary = state.summary().expect("open conversation");
    assert!(summary.patterns_seen.contains("objection.price"));
    assert_eq!(summary.started_at, Some(recorded.exchange.draft.at));
    let exchanges = store.exchanges(&t, &c).await.unwrap();
    assert_eq!(exchanges, vec![recorded.exchange.clone()]);
    let events = exchanges[0].events(&t, &c);
    let types: Vec<_> = events.iter().map(|e| e.body.type_name()).collect();
    assert_eq!(types, ["message_exchange", "pattern_detected"]);
}

async fn repeated_message_returns_the_first_exchange_and_writes_nothing<B: Backend>(backend: &B) {
    let store = &backend.fresh(1).await[0];
    let (t, c) = (tenant("acme"), conversation("c-1"));
    let first = send(&**store, &t, &c, "m-1", "first text").await.unwrap();
    send(&**store, &t, &c, "m-2", "second text").await.unwrap();
    let mut called = false;
    let id = message("m-1");
    let again = store
        .record_exchange(&t, &c, &id, |state| {
            called = true;
            draft(&id, "a different text", state)
        })
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.exchange, first.exchange);
    assert!(!called, "a duplicate must not even build a new draft");
    let exchanges = store.exchanges(&t, &c).await.unwrap();
    assert_eq!(exchanges.len(), 2);
    assert_eq!(exchanges[0].draft.user_text, "first text");
}

async fn concurrent_messages_to_one_conversation_take_every_turn_once<B: Backend>(backend: &B) {
    const WRITERS: usize = 50;
    let stores = backend.fresh(4).await;
    let (t, c) = (tenant("acme"), conversation("busy"));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..WRITERS {
        let store = stores[i % stores.len()].clone();
        let (t, c) = (t.clone(), c.clone());
        tasks.spawn(
            async move { send(&*store, &t, &c, &format!("m-{i}"), &format!("text {i}")).await },
        );
    }
    let mut turns_answered = BTreeSet::new();
    while let Some(result) = tasks.join_next().await {
        let recorded = result.unwrap().unwrap();
        assert!(!recorded.duplicate);
        assert!(
            turns_answered.insert(recorded.exchange.turn),
            "turn given twice"
        );
    }
    let exchanges = stores[0].exchanges(&t, &c).await.unwrap();
    let turns: Vec<u32> = exchanges.iter().map(|e| e.turn).collect();
    assert_eq!(turns, (1..=WRITERS as u32).collect::<Vec<_>>());
    let ids: BTreeSet<String> = exchanges
        .iter()
        .map(|e| e.draft.message_id.to_string())
        .collect();
    assert_eq!(ids.len(), WRITERS, "a message is missing or doubled");
    // Each exchange's summary counts every turn before it: the store ordered them, not just
    // numbered them.
    for exchange in &exchanges {
        let counted: u32 = exchange.summary.strategies_used.values().sum();
        assert_eq!(counted, exchange.turn);
    }
}

async fn concurrent_retries_of_one_message_record_it_once<B: Backend>(backend: &B) {
    let stores = backend.fresh(4).await;
    let (t, c) = (tenant("acme"), conversation("retries"));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let store = stores[i % stores.len()].clone();
        let (t, c) = (t.clone(), c.clone());
        // Three messages, each sent eight times at once, as impatient clients retry.
        tasks.spawn(async move {
            send(
                &*store,
                &t,
                &c,
                &format!("m-{}", i % 3),
                &format!("try {i}"),
            )
            .await
        });
    }
    let mut first_writes = 0;
    let mut answers: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    while let Some(result) = tasks.join_next().await {
        let recorded = result.unwrap().unwrap();
        if !recorded.duplicate {
            first_writes += 1;
        }
        answers
            .entry(recorded.exchange.draft.message_id.to_string())
            .or_default()
            .insert(recorded.exchange.turn);
    }
    assert_eq!(first_writes, 3);
    assert!(
        answers.values().all(|turns| turns.len() == 1),
        "every retry must get the same turn: {answers:?}"
    );
    assert_eq!(stores[0].exchanges(&t, &c).await.unwrap().len(), 3);
}

async fn exchanges_read_back_in_turn_order_past_one_page<B: Backend>(backend: &B) {
    // 300 exchanges of about 8 KB each (4 KB of text and its 4 KB reply) exceed DynamoDB's 1 MB
    // query page.
    let store = &backend.fresh(1).await[0];
    let (t, c) = (tenant("acme"), conversation("long"));
    let long_text = "x".repeat(4_000);
    for i in 0..300 {
        send(&**store, &t, &c, &format!("m-{i}"), &long_text)
            .await
            .unwrap();
    }
    let exchanges = store.exchanges(&t, &c).await.unwrap();
    assert_eq!(exchanges.len(), 300);
    assert!(
        exchanges
            .iter()
            .enumerate()
            .all(|(i, e)| e.turn == i as u32 + 1)
    );
    assert!(exchanges.iter().all(|e| e.draft.user_text.len() == 4_000));
    // Nothing skipped or doubled: turn n holds the n-th message sent, each once.
    let ids: Vec<String> = exchanges
        .iter()
        .map(|e| e.draft.message_id.to_string())
        .collect();
    assert_eq!(ids, (0..300).map(|i| format!("m-{i}")).collect::<Vec<_>>());
    // On DynamoDB the log (the only thing in this table) is more than one page: one query
    // page cannot hold all 300, so the store read past its first page.
    if let Some(pages) = backend.pages(store, None).await {
        assert!(pages.bytes > 1 << 20, "only {} bytes stored", pages.bytes);
        assert!(
            pages.items.len() >= 2,
            "one page held everything: {pages:?}"
        );
        assert!(pages.items[0] < 300, "{pages:?}");
        assert_eq!(pages.items.iter().sum::<usize>(), 300, "{pages:?}");
    }
}

async fn ended_conversation_refuses_new_messages_but_answers_retries<B: Backend>(backend: &B) {
    let store = &backend.fresh(1).await[0];
    let (t, c) = (tenant("acme"), conversation("closed"));
    let first = send(&**store, &t, &c, "m-1", "hello").await.unwrap();
    store
        .end_conversation(&t, &c, end_request(Outcome::Won, 1_700_000_100_000))
        .await
        .unwrap();
    match send(&**store, &t, &c, "m-2", "one more thing").await {
        Err(ServiceError::Ended(record)) => assert_eq!(record.outcome, Outcome::Won),
        other => panic!("expected Ended, got {other:?}"),
    }
    let retry = send(&**store, &t, &c, "m-1", "hello").await.unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.exchange, first.exchange);
    assert_eq!(store.exchanges(&t, &c).await.unwrap().len(), 1);
}

async fn ending_twice_repeats_the_same_outcome_and_refuses_another<B: Backend>(backend: &B) {
    let store = &backend.fresh(1).await[0];
    let (t, c) = (tenant("acme"), conversation("c-9"));
    send(&**store, &t, &c, "m-1", "too expensive")
        .await
        .unwrap();
    send(&**store, &t, &c, "m-2", "fine, let's talk")
        .await
        .unwrap();
    let mut request = end_request(Outcome::Won, 1_700_000_100_000);
    request.labels = vec![DetectionLabel {
        turn: 1,
        pattern: "objection.price".into(),
        correct: true,
    }];
    let first = store.end_conversation(&t, &c, request).await.unwrap();
    assert!(first.first_time);
    assert_eq!(first.ended_count, Some(1));
    assert_eq!(first.record.turns, 2);
    assert_eq!(first.record.strategies_used.len(), 2);
    assert_eq!(first.record.patterns_seen.get("objection.price"), Some(&1));
    assert_eq!(first.record.labels.len(), 1);
    // Turn 1 detected the price objection: the label carries the detection's confidence.
    assert!(first.record.labels[0].confidence.is_some());

    let again = store
        .end_conversation(&t, &c, end_request(Outcome::Won, 1_700_000_200_000))
        .await
        .unwrap();
    assert!(!again.first_time);
    assert_eq!(again.record, first.record, "the first record is the answer");
    assert_eq!(again.ended_count, None);

    match store
        .end_conversation(&t, &c, end_request(Outcome::Lost, 1_700_000_300_000))
        .await
    {
        Err(ServiceError::OutcomeConflict(existing)) => assert_eq!(existing.outcome, Outcome::Won),
        other => panic!("expected OutcomeConflict, got {other:?}"),
    }
    assert_eq!(store.ended_count(&t).await.unwrap(), 1);
    assert_eq!(store.outcomes_since(&t, None, 10).await.unwrap().len(), 1);
}

async fn ending_an_unknown_conversation_is_not_found<B: Backend>(backend: &B) {
    let store = &backend.fresh(1).await[0];
    let (t, c) = (tenant("acme"), conversation("never-seen"));
    assert_eq!(
        store
            .end_conversation(&t, &c, end_request(Outcome::Lost, 1))
            .await,
        Err(ServiceError::NotFound)
    );
    assert_eq!(store.ended_count(&t).await.unwrap(), 0);
}

async fn concurrent_ends_count_each_conversation_once_and_report_each_multiple_once<B: Backend>(
    backend: &B,
) {
    const CONVERSATIONS: usize = 30;
    let stores = backend.fresh(4).await;
    let t = tenant("acme");
    for i in 0..CONVERSATIONS {
        send(
            &*stores[0],
            &t,
            &conversation(&format!("c-{i}")),
            "m-1",
            "hi",
        )
        .await
        .unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    // Every conversation is ended by three clients at once.
    for i in 0..CONVERSATIONS * 3 {
        let store = stores[i % stores.len()].clone();
        let t = t.clone();
        let c = conversation(&format!("c-{}", i % CONVERSATIONS));
        tasks.spawn(async move {
            store
                .end_conversation(
                    &t,
                    &c,
                    end_request(Outcome::Won, 1_700_000_000_000 + i as u64),
                )
                .await
        });
    }
    let mut counts = Vec::new();
    let mut crossings = 0;
    while let Some(result) = tasks.join_next().await {
        let ended = result.unwrap().unwrap();
        if ended.first_time {
            counts.push(ended.ended_count.expect("a first end reports the count"));
        }
        if ended.crossed_multiple_of(10) {
            crossings += 1;
        }
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=CONVERSATIONS as u64).collect::<Vec<_>>());
    assert_eq!(crossings, CONVERSATIONS / 10);
    assert_eq!(
        stores[0].ended_count(&t).await.unwrap(),
        CONVERSATIONS as u64
    );
    assert_eq!(
        stores[0]
            .outcomes_since(&t, None, 1_000)
            .await
            .unwrap()
            .len(),
        CONVERSATIONS
    );
}

async fn an_end_racing_messages_closes_the_log_after_the_last_turn<B: Backend>(backend: &B) {
    let stores = backend.fresh(4).await;
    let (t, c) = (tenant("acme"), conversation("race"));
    send(&*stores[0], &t, &c, "m-start", "hello").await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = stores[i % stores.len()].clone();
        let (t, c) = (t.clone(), c.clone());
        tasks.spawn(async move {
            send(&*store, &t, &c, &format!("m-{i}"), "more")
                .await
                .map(|r| Some(r.exchange.turn))
        });
    }
    {
        let store = stores[1].clone();
        let (t, c) = (t.clone(), c.clone());
        tasks.spawn(async move {
            store
                .end_conversation(&t, &c, end_request(Outcome::Lost, 1_800_000_000_000))
                .await
                .map(|_| None)
        });
    }
    let mut accepted = 0;
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(Some(_)) => accepted += 1,
            Ok(None) => {}
            Err(ServiceError::Ended(_)) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    let exchanges = stores[0].exchanges(&t, &c).await.unwrap();
    assert_eq!(exchanges.len(), accepted + 1);
    match stores[0].conversation(&t, &c).await.unwrap() {
        ConversationState::Ended(record) => {
            assert_eq!(record.turns as usize, exchanges.len());
            assert_eq!(record.strategies_used.len(), exchanges.len());
        }
        other => panic!("expected the conversation to be ended, got {other:?}"),
    }
}

async fn a_conversation_stops_at_its_turn_limit<B: Backend>(backend: &B) {
    let store = &backend.fresh(1).await[0];
    let (t, c) = (tenant("acme"), conversation("chatty"));
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..10u32 {
        let store = store.clone();
        let (t, c) = (t.clone(), c.clone());
        tasks.spawn(async move {
            for i in 0..MAX_TURNS / 10 {
                send(&*store, &t, &c, &format!("m-{chunk}-{i}"), "hi")
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    assert_eq!(
        send(&**store, &t, &c, "m-over", "hi").await,
        Err(ServiceError::TooLong)
    );
    // The end still fits after the last turn.
    let ended = store
        .end_conversation(&t, &c, end_request(Outcome::NoDecision, 1))
        .await
        .unwrap();
    assert_eq!(ended.record.turns, MAX_TURNS);
}

/// The tracking counters (service/tracking.rs): zero before anything is counted, every
/// concurrent add kept (one atomic add each, no read-modify-write), and each tenant's own.
async fn tracking_counters_add_atomically_per_tenant<B: Backend>(backend: &B) {
    use salesloop::store::{Tracked, TrackingCounts};
    let store = std::sync::Arc::new(backend.fresh(1).await.remove(0));
    let (acme, other) = (tenant("acme"), tenant("other"));
    assert_eq!(
        store.tracking_counts(&acme).await.unwrap(),
        TrackingCounts::default()
    );
    let mut adds = tokio::task::JoinSet::new();
    for i in 0..20u64 {
        let (store, acme) = (store.clone(), acme.clone());
        adds.spawn(async move {
            let what = if i % 2 == 0 {
                Tracked::Unrecorded
            } else {
                Tracked::Recovered
            };
            store.count_tracking(&acme, what, i + 1).await
        });
    }
    while let Some(added) = adds.join_next().await {
        added.unwrap().unwrap();
    }
    // Unrecorded: 1 + 3 + ... + 19 = 100; recovered: 2 + 4 + ... + 20 = 110.
    let counts = store.tracking_counts(&acme).await.unwrap();
    assert_eq!(
        counts,
        TrackingCounts {
            unrecorded: 100,
            recovered: 110
        }
    );
    assert_eq!(counts.backlog(), 0);
    assert_eq!(
        store.tracking_counts(&other).await.unwrap(),
        TrackingCounts::default()
    );
    // Counting does not list the tenant for the feedback run: only an end does.
    assert!(store.tenants().await.unwrap().is_empty());
}

async fn lease_has_one_holder_and_expires_when_the_holder_dies<B: Backend>(backend: &B) {
    let store = &backend.fresh(1).await[0];
    let t = tenant("acme");
    let now = Millis(1_000_000);
    let a = store
        .acquire_lease(&t, "feedback", "run-a", now, 30_000)
        .await
        .unwrap()
        .expect("a free lease is granted");
    assert_eq!(a.until, Millis(1_030_000));
    assert_eq!(
        store
            .acquire_lease(&t, "feedback", "run-b", Millis(1_010_000), 30_000)
            .await
            .unwrap(),
        None,
        "a held lease is refused to another holder"
    );
    // The holder may renew its own lease.
    assert!(
        store
            .acquire_lease(&t, "feedback", "run-a", Millis(1_020_000), 30_000)
            .await
            .unwrap()
            .is_some()
    );
    // run-a dies; after its lease runs out run-b takes over.
    let b = store
        .acquire_lease(&t, "feedback", "run-b", Millis(1_050_001), 30_000)
        .await
        .unwrap()
        .expect("an expired lease is granted");
    // The late release of the dead holder does not free the new holder's lease.
    assert!(!store.release_lease(&a).await.unwrap());
    assert_eq!(
        store
            .acquire_lease(&t, "feedback", "run-c", Millis(1_060_000), 30_000)
            .await
            .unwrap(),
        None
    );
    assert!(store.release_lease(&b).await.unwrap());
    assert!(
        store
            .acquire_lease(&t, "feedback", "run-c", Millis(1_060_000), 30_000)
            .await
            .unwrap()
            .is_some()
    );
}

async fn concurrent_lease_takers_have_one_winner<B: Backend>(backend: &B) {
    let stores = backend.fresh(4).await;
    let t = tenant("acme");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let store = stores[i % stores.len()].clone();
        let t = t.clone();
        tasks.spawn(async move {
            store
                .acquire_lease(&t, "feedback", &format!("run-{i}"), Millis(5_000), 60_000)
                .await
        });
    }
    let mut winners = 0;
    while let Some(result) = tasks.join_next().await {
        if result.unwrap().unwrap().is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

/// When [`end_many`] ends conversation `i` of `count`: out of order, three to a millisecond.
fn end_at(i: usize, count: usize) -> u64 {
    1_700_000_000_000 + ((i * 7919) % count / 3) as u64
}

/// Ends `count` conversations of `t` from eight concurrent clients, out of time order and
/// several in the same millisecond.
async fn end_many<S: Store + 'static>(
    store: &Arc<S>,
    t: &TenantId,
    count: usize,
    reason: Option<String>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (store, t, reason) = (store.clone(), t.clone(), reason.clone());
        tasks.spawn(async move {
            for i in (worker..count).step_by(8) {
                let c = conversation(&format!("c-{i:04}"));
                send(&*store, &t, &c, "m-1", "hi").await.unwrap();
                let mut request = end_request(Outcome::Won, end_at(i, count));
                request.reason = reason.clone();
                store.end_conversation(&t, &c, request).await.unwrap();
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
}

async fn outcomes_since_a_watermark_page_in_time_order<B: Backend>(backend: &B) {
    let store = &backend.fresh(1).await[0];
    let t = tenant("acme");
    end_many(store, &t, 120, None).await;
    let mut seen: Vec<Cursor> = Vec::new();
    let mut after: Option<Cursor> = None;
    loop {
        let page = store.outcomes_since(&t, after.as_ref(), 7).await.unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        after = Some(last.cursor());
        seen.extend(page.iter().map(|o| o.cursor()));
    }
    assert_eq!(seen.len(), 120);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    assert!(
        seen.windows(2).any(|w| w[0].at == w[1].at),
        "the data has outcomes sharing a millisecond"
    );
    // A watermark in the middle yields exactly the later outcomes.
    let middle = seen[59].clone();
    let rest = store
        .outcomes_since(&t, Some(&middle), 1_000)
        .await
        .unwrap();
    assert_eq!(rest.len(), 60);
    assert!(rest.iter().all(|o| o.cursor() > middle));
}

async fn outcome_reads_cross_the_one_megabyte_page<B: Backend>(backend: &B) {
    // 300 outcomes of about 4 KB each: one read of all of them spans several DynamoDB pages.
    let store = &backend.fresh(1).await[0];
    let t = tenant("acme");
    end_many(store, &t, 300, Some("r".repeat(4_000))).await;
    let all = store.outcomes_since(&t, None, 10_000).await.unwrap();
    assert_eq!(all.len(), 300);
    assert!(all.windows(2).all(|w| w[0].cursor() < w[1].cursor()));
    // Exactly the outcomes end_many wrote, each once, in (time, conversation) order: nothing
    // skipped or doubled at a page boundary.
    let mut expected: Vec<(u64, String)> = (0..300)
        .map(|i| (end_at(i, 300), format!("c-{i:04}")))
        .collect();
    expected.sort();
    let read: Vec<(u64, String)> = all
        .iter()
        .map(|o| (o.at.0, o.conversation_id.to_string()))
        .collect();
    assert_eq!(read, expected);
    assert!(
        all.iter()
            .all(|o| o.reason.as_ref().is_some_and(|r| r.len() == 4_000))
    );
    // On DynamoDB the time index holds more than 1 MB of these outcomes (and one item more: the
    // tenant's entry in the list of tenants): its first page cannot hold all 300, so a store
    // that never asked for a second page would have returned fewer.
    if let Some(pages) = backend.pages(store, Some(TIME_INDEX)).await {
        assert!(
            pages.bytes > 1 << 20,
            "only {} bytes in the index",
            pages.bytes
        );
        assert!(
            pages.items.len() >= 2,
            "one page held everything: {pages:?}"
        );
        assert!(pages.items[0] < 300, "{pages:?}");
        assert_eq!(pages.items.iter().sum::<usize>(), 301, "{pages:?}");
    }
}

async fn model_versions_publish_by_compare_and_set_and_keep_history<B: Backend>(backend: &B) {
    let store = &backend.fresh(1).await[0];
    let t = tenant("acme");
    assert_eq!(store.current_model(&t).await.unwrap(), None);
    assert_eq!(
        store.publish_model(&t, &model_version(1)).await,
        Ok(Write::Done)
    );
    for stale_or_skipping in [0, 1, 3] {
        assert_eq!(
            store
                .publish_model(&t, &model_version(stale_or_skipping))
                .await,
            Ok(Write::Lost),
            "version {stale_or_skipping}"
        );
    }
    let mut second = model_version(2);
    second.watermark = Some(Cursor {
        at: Millis(42),
        conversation_id: conversation("c-1"),
    });
    assert_eq!(store.publish_model(&t, &second).await, Ok(Write::Done));
    assert_eq!(store.current_model(&t).await.unwrap(), Some(second.clone()));
    let history = store.model_history(&t, None, 10).await.unwrap();
    let versions: Vec<u64> = history.iter().map(|m| m.version).collect();
    assert_eq!(versions, [2, 1]);
}

async fn racing_publishers_of_one_version_have_one_winner<B: Backend>(backend: &B) {
    let stores = backend.fresh(4).await;
    let t = tenant("acme");
    assert_eq!(
        stores[0].publish_model(&t, &model_version(1)).await,
        Ok(Write::Done)
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..12 {
        let store = stores[i % stores.len()].clone();
        let t = t.clone();
        tasks.spawn(async move {
            let mut candidate = model_version(2);
            candidate.outcomes_learned = i as u64;
            salesloop::service::publish_model(&*store, &t, &candidate)
                .await
                .map(|published| (published, i as u64))
        });
    }
    let mut winners = Vec::new();
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok((Published::Done, i)) => winners.push(i),
            Ok((Published::Superseded, _)) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(winners.len(), 1);
    let current = stores[0].current_model(&t).await.unwrap().unwrap();
    assert_eq!(current.version, 2);
    assert_eq!(
        current.outcomes_learned, winners[0],
        "the winner's model is current"
    );
}

/// The built-in configuration with one more experiment, `name`, as version `version`.
fn config_with(name: &str, version: u64) -> TenantConfig {
    let mut config = TenantConfig::builtin();
    let mut experiment = config.experiments[0].clone();
    experiment.name = name.to_owned();
    config.experiments.push(experiment);
    config.version = version;
    config.published_at = Millis(1_700_000_000_000 + version);
    config.changes = vec![format!("experiment {name}: created")];
    config
}

async fn configuration_versions_publish_by_compare_and_set_and_keep_history<B: Backend>(
    backend: &B,
) {
    let store = &backend.fresh(1).await[0];
    let (t, other) = (tenant("acme"), tenant("globex"));
    assert_eq!(store.current_config(&t).await.unwrap(), None);
    assert_eq!(
        store.publish_config(&t, &config_with("first", 1)).await,
        Ok(Write::Done)
    );
    for stale_or_skipping in [0, 1, 3] {
        assert_eq!(
            store
                .publish_config(&t, &config_with("late", stale_or_skipping))
                .await,
            Ok(Write::Lost),
            "version {stale_or_skipping}"
        );
    }
    let second = config_with("second", 2);
    assert_eq!(store.publish_config(&t, &second).await, Ok(Write::Done));
    assert_eq!(
        store.current_config(&t).await.unwrap(),
        Some(second.clone())
    );
    let history = store.config_history(&t, None, 10).await.unwrap();
    let versions: Vec<u64> = history.iter().map(|c| c.version).collect();
    assert_eq!(versions, [2, 1]);
    let older = store.config_history(&t, Some(2), 10).await.unwrap();
    assert_eq!(older, vec![config_with("first", 1)]);
    assert_eq!(
        store.config_version(&t, 1).await.unwrap(),
        Some(config_with("first", 1))
    );
    assert_eq!(store.config_version(&t, 7).await.unwrap(), None);
    // Another tenant's configuration is its own.
    assert_eq!(store.current_config(&other).await.unwrap(), None);
    assert!(
        store
            .config_history(&other, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.publish_config(&other, &config_with("x", 2)).await,
        Ok(Write::Lost),
        "a version 2 needs this tenant's version 1"
    );
}

async fn racing_admins_without_if_match_lose_no_change<B: Backend>(backend: &B) {
    let stores = backend.fresh(4).await;
    let t = tenant("acme");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = stores[i % stores.len()].clone();
        let t = t.clone();
        tasks.spawn(async move {
            admin::change_config(&*store, &t, None, Millis(i as u64), |config| {
                let mut experiment = config.experiments[0].clone();
                experiment.name = format!("exp-{i}");
                config.experiments.push(experiment);
                Ok(())
            })
            .await
        });
    }
    while let Some(result) = tasks.join_next().await {
        let changed = result
            .unwrap()
            .expect("a change without If-Match is applied");
        assert!(changed.published);
    }
    let current = stores[0].current_config(&t).await.unwrap().unwrap();
    assert_eq!(current.version, 8);
    let names: BTreeSet<&str> = current
        .experiments
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    for i in 0..8 {
        assert!(names.contains(format!("exp-{i}").as_str()), "{names:?}");
    }
    // Each version says which experiment it added.
    let history = stores[0].config_history(&t, None, 20).await.unwrap();
    assert_eq!(history.len(), 8);
    for version in &history {
        assert_eq!(version.changes.len(), 1, "{:?}", version.changes);
        assert!(
            version.changes[0].contains(": created"),
            "{:?}",
            version.changes
        );
    }
}

async fn racing_admins_with_if_match_have_one_winner<B: Backend>(backend: &B) {
    let stores = backend.fresh(4).await;
    let t = tenant("acme");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8u32 {
        let store = stores[i as usize % stores.len()].clone();
        let t = t.clone();
        tasks.spawn(async move {
            let changed = admin::change_config(&*store, &t, Some(0), Millis(1), |config| {
                config.experiments[0].variants[0].weight = 100 + i;
                Ok(())
            })
            .await;
            (i, changed)
        });
    }
    let mut winners = Vec::new();
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            (i, Ok(changed)) => {
                assert_eq!(changed.current.version, 1);
                winners.push(i);
            }
            (_, Err(AdminError::Stale { current })) => assert_eq!(current, 1),
            (_, Err(other)) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(winners.len(), 1);
    let current = stores[0].current_config(&t).await.unwrap().unwrap();
    assert_eq!(current.version, 1);
    assert_eq!(
        current.experiments[0].variants[0].weight,
        100 + winners[0],
        "the winner's change is current"
    );
    // An experiment that does not exist is not found, whatever the If-Match says.
    let unknown =
        admin::change_config(&*stores[0], &t, Some(0), Millis(2), |config| {
            match config.experiments.iter_mut().find(|e| e.name == "nope") {
                Some(_) => Ok(()),
                None => Err(AdminError::ExperimentNotFound("nope".into())),
            }
        })
        .await;
    assert_eq!(unknown, Err(AdminError::ExperimentNotFound("nope".into())));
}

async fn an_activated_model_is_a_copy_published_next<B: Backend>(backend: &B) {
    let store = &backend.fresh(1).await[0];
    let t = tenant("acme");
    assert_eq!(
        admin::activate_model(&**store, &t, 1, None, Millis(5)).await,
        Err(AdminError::ModelNotFound(1))
    );
    let mut first = model_version(1);
    first
        .model
        .calibration
        .insert("objection.price".into(), 0.5);
    let mut second = model_version(2);
    second
        .model
        .calibration
        .insert("objection.price".into(), 1.5);
    second.watermark = Some(Cursor {
        at: Millis(42),
        conversation_id: conversation("c-9"),
    });
    for version in [&first, &second] {
        assert_eq!(store.publish_model(&t, version).await, Ok(Write::Done));
    }
    assert_eq!(
        admin::activate_model(&**store, &t, 1, Some(1), Millis(5)).await,
        Err(AdminError::Stale { current: 2 })
    );
    let activated = admin::activate_model(&**store, &t, 1, Some(2), Millis(7))
        .await
        .unwrap();
    assert_eq!(activated.version, 3);
    assert_eq!(activated.activated_from, Some(1));
    assert_eq!(activated.model, first.model, "version 1's model");
    assert_eq!(activated.watermark, second.watermark, "learning goes on");
    assert_eq!(activated.outcomes_learned, second.outcomes_learned);
    assert_eq!(store.current_model(&t).await.unwrap(), Some(activated));
    let history = store.model_history(&t, None, 10).await.unwrap();
    let versions: Vec<u64> = history.iter().map(|m| m.version).collect();
    assert_eq!(versions, [3, 2, 1], "the history stays append-only");
    assert_eq!(
        admin::activate_model(&**store, &t, 9, None, Millis(8)).await,
        Err(AdminError::ModelNotFound(9))
    );
}

async fn the_caches_keep_the_current_version_for_their_age_and_read_a_pinned_one_once<
    B: Backend,
>(
    backend: &B,
) {
    use salesloop::service::{ConfigCache, ModelCache};
    use std::time::Duration;
    let store = &backend.fresh(1).await[0];
    let t = tenant("acme");
    let configs = ConfigCache::new(Duration::from_secs(3600));
    let models = ModelCache::new(Duration::from_secs(3600));
    // Nothing stored: the built-in configuration and the priors.
    assert_eq!(configs.current(&**store, &t).await.unwrap().version, 0);
    assert_eq!(models.current(&**store, &t).await.unwrap().version, 0);
    assert_eq!(
        store.publish_config(&t, &config_with("first", 1)).await,
        Ok(Write::Done)
    );
    assert_eq!(
        store.publish_model(&t, &model_version(1)).await,
        Ok(Write::Done)
    );
    // Within its age the cache answers what it read, without reading again.
    assert_eq!(configs.current(&**store, &t).await.unwrap().version, 0);
    assert_eq!(models.current(&**store, &t).await.unwrap().version, 0);
    // A pinned version is read from the store, whatever the current one is.
    let pinned = configs.version(&**store, &t, 1).await.unwrap();
    assert_eq!(*pinned, config_with("first", 1));
    assert_eq!(models.version(&**store, &t, 1).await.unwrap().version, 1);
    // A version that is not stored is an error, never a stand-in.
    assert!(matches!(
        configs.version(&**store, &t, 9).await,
        Err(StoreError::Corrupt(_))
    ));
    // A cache of age zero reads every time.
    let fresh = ConfigCache::new(Duration::ZERO);
    assert_eq!(fresh.current(&**store, &t).await.unwrap().version, 1);
    let builtin = fresh.version(&**store, &t, 0).await.unwrap();
    assert_eq!(builtin.version, 0, "the built-in one");

    // Bounded by bytes: room for two tenants' configurations, the least recently used goes
    // first. A tenant still cached answers what it read (version 1) without reading; one that
    // was evicted reads again (version 2).
    let (a, b, c) = (tenant("lru-a"), tenant("lru-b"), tenant("lru-c"));
    for t in [&a, &b, &c] {
        assert_eq!(
            store.publish_config(t, &config_with("first", 1)).await,
            Ok(Write::Done)
        );
    }
    let heaviest = salesloop::service::lru::weight(&config_with("second", 2));
    // Three quarters of a cache's bytes hold current versions: two and a half of them here.
    let lru = ConfigCache::with_budget(Duration::from_secs(3600), heaviest * 10 / 3);
    let version = |t: &TenantId| {
        let (lru, t) = (&lru, t.clone());
        async move { lru.current(&**store, &t).await.unwrap().version }
    };
    assert_eq!((version(&a).await, version(&b).await), (1, 1));
    for t in [&a, &b, &c] {
        assert_eq!(
            store.publish_config(t, &config_with("second", 2)).await,
            Ok(Write::Done)
        );
    }
    assert_eq!(version(&a).await, 1, "cached; now the most recently used");
    assert_eq!(
        version(&c).await,
        2,
        "read; b, the least recently used, goes"
    );
    assert_eq!(version(&a).await, 1, "still cached");
    assert_eq!(version(&b).await, 2, "read again; c goes");
    assert_eq!(version(&a).await, 1, "still cached");
}

async fn tenants_never_see_each_others_data<B: Backend>(backend: &B) {
    let store = &backend.fresh(1).await[0];
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    let c = conversation("shared-name");
    send(&**store, &a, &c, "m-1", "a's secret").await.unwrap();
    store
        .end_conversation(&a, &c, end_request(Outcome::Won, 10))
        .await
        .unwrap();
    assert_eq!(
        store.publish_model(&a, &model_version(1)).await,
        Ok(Write::Done)
    );
    store
        .acquire_lease(&a, "feedback", "run-a", Millis(0), 60_000)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(
        store.conversation(&b, &c).await.unwrap(),
        ConversationState::New
    );
    assert!(store.exchanges(&b, &c).await.unwrap().is_empty());
    assert_eq!(
        store
            .end_conversation(&b, &c, end_request(Outcome::Lost, 11))
            .await,
        Err(ServiceError::NotFound)
    );
    assert!(
        store
            .outcomes_since(&b, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.ended_count(&b).await.unwrap(), 0);
    assert_eq!(store.current_model(&b).await.unwrap(), None);
    assert!(
        store
            .acquire_lease(&b, "feedback", "run-b", Millis(1), 60_000)
            .await
            .unwrap()
            .is_some()
    );
    // B's own conversation of the same name starts at turn 1.
    let mine = send(&**store, &b, &c, "m-1", "b's text").await.unwrap();
    assert!(!mine.duplicate);
    assert_eq!(mine.exchange.turn, 1);
    assert_eq!(store.tenants().await.unwrap(), vec![a.clone()]);
}

/// A label as the service would store it.
pub fn stored_label(conversation_id: &str, turn: u32, pattern: &str, at: u64) -> StoredLabel {
    StoredLabel {
        conversation_id: conversation(conversation_id),
        turn,
        pattern: pattern.to_owned(),
        correct: turn % 2 == 1,
        at: Millis(at),
        text: Some(format!("text of turn {turn}")),
        confidence: (pattern == "objection.price").then_some(0.9),
        // One label in three of a detection the calibration did not scale.
        calibrated: !turn.is_multiple_of(3),
    }
}

async fn labels_read_back_in_turn_and_pattern_order<B: Backend>(backend: &B) {
    let store = &backend.fresh(1).await[0];
    let (t, c) = (tenant("acme"), conversation("c-1"));
    assert!(store.labels(&t, &c).await.unwrap().is_empty());
    let mut written = vec![
        stored_label("c-1", 12, "question", 5),
        stored_label("c-1", 2, "objection.price", 5),
        stored_label("c-1", 2, "buying_signal", 5),
        stored_label("c-1", 1, "pain_point", 5),
    ];
    written[3].text = None;
    written[3].confidence = None;
    assert_eq!(store.put_labels(&t, &c, &written).await, Ok(Write::Done));
    let read = store.labels(&t, &c).await.unwrap();
    let order: Vec<(u32, &str)> = read.iter().map(|l| (l.turn, l.pattern.as_str())).collect();
    assert_eq!(
        order,
        [
            (1, "pain_point"),
            (2, "buying_signal"),
            (2, "objection.price"),
            (12, "question")
        ]
    );
    // Every field comes back as written, the absent text and confidence included.
    for label in &written {
        assert!(read.contains(label), "{label:?}");
    }
    // A write of nothing is no write at all.
    assert_eq!(store.put_labels(&t, &c, &[]).await, Ok(Write::Done));
    assert_eq!(store.labels(&t, &c).await.unwrap().len(), 4);
}

/// A stored item that is a tenant's pending mark: the embedded store's `pending` row, or the
/// DynamoDB counter item that carries the mark.
fn is_pending_mark(item: &crate::stores::RawItem) -> bool {
    item.get("table").map(String::as_str) == Some("pending")
        || item.get("gsi2pk").map(String::as_str) == Some("PENDING")
}

async fn a_taken_label_loses_the_whole_write<B: Backend>(backend: &B) {
    let store = &backend.fresh(1).await[0];
    let (t, c) = (tenant("acme"), conversation("c-1"));
    let first = stored_label("c-1", 1, "objection.price", 10);
    assert_eq!(
        store.put_labels(&t, &c, std::slice::from_ref(&first)).await,
        Ok(Write::Done)
    );
    let before = backend.raw_items(store).await;
    // Two free labels around a taken one (with the other verdict): none of them is written.
    let mut taken = stored_label("c-1", 1, "objection.price", 20);
    taken.correct = !first.correct;
    let batch = [
        stored_label("c-1", 1, "question", 20),
        taken,
        stored_label("c-1", 3, "buying_signal", 20),
    ];
    assert_eq!(store.put_labels(&t, &c, &batch).await, Ok(Write::Lost));
    assert_eq!(store.labels(&t, &c).await.unwrap(), vec![first.clone()]);
    // No label is written. The tenant's pending mark is, before the labels (so that no label
    // can be written unmarked): it costs the next run one read that finds nothing new.
    let (marks_after, items_after): (Vec<_>, Vec<_>) = backend
        .raw_items(store)
        .await
        .into_iter()
        .partition(is_pending_mark);
    let (marks_before, items_before): (Vec<_>, Vec<_>) =
        before.into_iter().partition(is_pending_mark);
    assert_eq!(items_after, items_before, "no label written");
    assert_eq!((marks_before.len(), marks_after.len()), (1, 1));
    assert_eq!(store.pending_tenants().await.unwrap(), vec![t.clone()]);
    assert_eq!(
        store.labels_since(&t, None, 100).await.unwrap(),
        vec![first]
    );
    // Free labels go in, a full request's worth in one write.
    let full: Vec<StoredLabel> = (1..=MAX_LABELS_PER_REQUEST as u32)
        .map(|turn| stored_label("c-1", turn, "question", 30))
        .collect();
    assert_eq!(store.put_labels(&t, &c, &full).await, Ok(Write::Done));
    assert_eq!(
        store.labels(&t, &c).await.unwrap().len(),
        MAX_LABELS_PER_REQUEST + 1
    );
}

async fn racing_writers_of_one_label_have_one_winner<B: Backend>(backend: &B) {
    let stores = backend.fresh(4).await;
    let (t, c) = (tenant("acme"), conversation("c-1"));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..12u64 {
        let store = stores[i as usize % stores.len()].clone();
        let (t, c) = (t.clone(), c.clone());
        tasks.spawn(async move {
            // Each writer has a label of its own and the one they all want.
            let labels = [
                stored_label("c-1", 1, "objection.price", 100 + i),
                stored_label("c-1", 2 + i as u32, "question", 100 + i),
            ];
            // DynamoDB may cancel both of two overlapping transactions: a writer that lost
            // while the label is still free tries again, as the service does.
            loop {
                let written = store.put_labels(&t, &c, &labels).await.unwrap();
                let taken = store
                    .labels(&t, &c)
                    .await
                    .unwrap()
                    .iter()
                    .any(|l| l.turn == 1);
                if written == Write::Done || taken {
                    return (i, written);
                }
                tokio::time::sleep(std::time::Duration::from_millis(i)).await;
            }
        });
    }
    let mut winners = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let (i, written) = result.unwrap();
        if written == Write::Done {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let stored = stores[0].labels(&t, &c).await.unwrap();
    assert_eq!(stored.len(), 2, "the winner's two labels, nobody else's");
    assert!(stored.iter().all(|l| l.at == Millis(100 + winners[0])));
}

async fn labels_since_page_in_cursor_order_across_conversations<B: Backend>(backend: &B) {
    let store = &backend.fresh(1).await[0];
    let t = tenant("acme");
    // Three conversations labelled in turns, several labels to a millisecond, written out of
    // cursor order.
    let mut written = Vec::new();
    for round in 0..4u64 {
        for id in ["c-b", "c-a", "c-c"] {
            let c = conversation(id);
            let at = 1_700_000_000_000 + (round % 2) * 10;
            let labels: Vec<StoredLabel> = (0..5u32)
                .map(|i| {
                    let turn = 20 - (round as u32 * 5 + i);
                    stored_label(
                        id,
                        turn,
                        ["question", "objection.price"][i as usize % 2],
                        at,
                    )
                })
                .collect();
            assert_eq!(store.put_labels(&t, &c, &labels).await, Ok(Write::Done));
            written.extend(labels.iter().map(StoredLabel::cursor));
        }
    }
    written.sort();
    let mut seen: Vec<LabelCursor> = Vec::new();
    let mut after: Option<LabelCursor> = None;
    loop {
        let page = store.labels_since(&t, after.as_ref(), 7).await.unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        after = Some(last.cursor());
        seen.extend(page.iter().map(StoredLabel::cursor));
    }
    assert_eq!(seen, written, "every label once, in cursor order");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    assert!(seen.windows(2).any(|w| w[0].at == w[1].at));
    // A cursor in the middle yields exactly the later labels; the last one, none.
    let middle = seen[29].clone();
    let rest = store.labels_since(&t, Some(&middle), 1_000).await.unwrap();
    assert_eq!(
        rest.iter().map(StoredLabel::cursor).collect::<Vec<_>>(),
        seen[30..]
    );
    let last = seen.last().unwrap();
    assert!(
        store
            .labels_since(&t, Some(last), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.labels_since(&t, None, 0).await.unwrap().is_empty());
}

async fn labels_stay_with_their_tenant<B: Backend>(backend: &B) {
    let store = &backend.fresh(1).await[0];
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    let c = conversation("shared-name");
    let label = stored_label("shared-name", 1, "objection.price", 10);
    assert_eq!(
        store.put_labels(&a, &c, std::slice::from_ref(&label)).await,
        Ok(Write::Done)
    );
    assert!(store.labels(&b, &c).await.unwrap().is_empty());
    assert!(store.labels_since(&b, None, 100).await.unwrap().is_empty());
    // B's conversation of the same name has the same (turn, pattern) free.
    let mut theirs = label.clone();
    theirs.correct = !label.correct;
    assert_eq!(
        store
            .put_labels(&b, &c, std::slice::from_ref(&theirs))
            .await,
        Ok(Write::Done)
    );
    assert_eq!(store.labels(&a, &c).await.unwrap(), vec![label.clone()]);
    assert_eq!(store.labels(&b, &c).await.unwrap(), vec![theirs.clone()]);
    assert_eq!(
        store.labels_since(&a, None, 100).await.unwrap(),
        vec![label]
    );
    assert_eq!(
        store.labels_since(&b, None, 100).await.unwrap(),
        vec![theirs]
    );
    // Labels alone list no tenant for the feedback loop: only an end does.
    assert!(store.tenants().await.unwrap().is_empty());
}

async fn label_items_leave_the_log_reads_alone<B: Backend>(backend: &B) {
    let store = &backend.fresh(1).await[0];
    let (t, c) = (tenant("acme"), conversation("c-1"));
    let first = send(&**store, &t, &c, "m-1", "too expensive")
        .await
        .unwrap();
    send(&**store, &t, &c, "m-2", "tell me more").await.unwrap();
    let label = |turn, pattern, at| stored_label("c-1", turn, pattern, at);
    // Labels on every turn, and on turns the log does not have (the store does not check).
    let labels = [
        label(1, "objection.price", 1),
        label(2, "question", 1),
        label(3, "question", 1),
        label(MAX_TURNS, "question", 1),
    ];
    assert_eq!(store.put_labels(&t, &c, &labels).await, Ok(Write::Done));
    assert!(matches!(
        store.conversation(&t, &c).await.unwrap(),
        ConversationState::Open { turns: 2, .. }
    ));
    let log = store.conversation_log(&t, &c).await.unwrap();
    assert_eq!(log.exchanges.len(), 2);
    assert_eq!(log.end, None);
    assert_eq!(
        store.find_message(&t, &c, &message("m-1")).await.unwrap(),
        Some(first.exchange)
    );
    assert_eq!(
        store.find_message(&t, &c, &message("m-3")).await.unwrap(),
        None
    );
    // The next message still takes turn 3; the end goes after it.
    let third = send(&**store, &t, &c, "m-3", "ok").await.unwrap();
    assert_eq!(third.exchange.turn, 3);
    let ended = store
        .end_conversation(&t, &c, end_request(Outcome::Won, 1_700_000_100_000))
        .await
        .unwrap();
    assert_eq!(ended.record.turns, 3);
    assert_eq!(ended.record.strategies_used.len(), 3);
    // Labels after the end change nothing in the log either.
    assert_eq!(
        store
            .put_labels(&t, &c, &[label(3, "objection.price", 2)])
            .await,
        Ok(Write::Done)
    );
    match store.conversation(&t, &c).await.unwrap() {
        ConversationState::Ended(record) => assert_eq!(record.turns, 3),
        other => panic!("expected the conversation to be ended, got {other:?}"),
    }
    let log = store.conversation_log(&t, &c).await.unwrap();
    assert_eq!(log.exchanges.len(), 3);
    assert!(log.end.is_some());
    assert_eq!(store.labels(&t, &c).await.unwrap().len(), 5);
    assert_eq!(store.outcomes_since(&t, None, 10).await.unwrap().len(), 1);
}
