//! The DynamoDB adapter: one table, tenant-prefixed keys.
//!
//! | item | pk | sk | notes |
//! |---|---|---|---|
//! | exchange | `T#{tenant}#C#{conversation}` | `L#{turn:05}` | `mid` = message id (LSI `by_message`) |
//! | end | same | `L#{turns+1:05}` | `gsi1pk` = `T#{tenant}#OUTCOME`, `gsi1sk` = `{at:013}#{conversation}` |
//! | counter | `T#{tenant}#COUNTER` | `ended_conversations` | `gsi1pk` = `TENANTS` lists tenants |
//! | lease | `T#{tenant}#LEASE` | lease name | `holder`, `until` (ms) |
//! | model | `T#{tenant}#MODEL` | `V#{version:010}` | the whole history is kept |
//!
//! An exchange is one conditional PutItem (its position must be free) after two strongly
//! consistent reads: the newest position, then the message id in the LSI. Positions are only
//! written after their predecessor was seen, so a message id found absent after the newest
//! position was read cannot be at any position up to it; the conditional put rules out the one
//! position left. A retry therefore never writes a message twice, and the write stays one
//! request of about two write units (the item, under 1 KB for a typical message, and its
//! keys-only LSI entry).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, LocalSecondaryIndex, Projection, ProjectionType, Put,
    ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem, Update,
};
use serde::{Deserialize, Serialize};

use super::{
    EndDecision, Ended, Lease, Recorded, Store, StoreError, decide_end, from_json, to_json,
};
use crate::conversation::{
    ConversationState, Cursor, EndRequest, Exchange, ExchangeDraft, MAX_TURNS, OutcomeRecord,
};
use crate::ids::{ConversationId, MessageId, TenantId};
use crate::model::ModelVersion;
use crate::time::Millis;

type Item = HashMap<String, AttributeValue>;

pub const MESSAGE_INDEX: &str = "by_message";
pub const TIME_INDEX: &str = "by_time";
const TTL_ATTRIBUTE: &str = "expires_at";
const TENANTS_PARTITION: &str = "TENANTS";
const ENDED_COUNTER: &str = "ended_conversations";
/// Attempts before a writer that keeps losing races reports contention.
const MAX_ATTEMPTS: u32 = 300;

/// How the adapter is set up.
#[derive(Debug, Clone)]
pub struct DynamoStoreConfig {
    pub table: String,
    /// When set, exchanges and outcomes carry a TTL this far after they happen.
    pub retention: Option<Duration>,
}

/// A store in one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    config: DynamoStoreConfig,
}

/// The attributes every log item has, as stored.
#[derive(Debug, Serialize, Deserialize)]
struct LogItem {
    pk: String,
    sk: String,
    kind: String,
    body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi1pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi1sk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
}

const KIND_EXCHANGE: &str = "exchange";
const KIND_END: &str = "end";

#[derive(Debug, Serialize, Deserialize)]
struct BodyItem {
    body: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct LeaseItem {
    pk: String,
    sk: String,
    holder: String,
    until: u64,
}

fn conversation_pk(tenant: &TenantId, conversation: &ConversationId) -> String {
    format!("T#{tenant}#C#{conversation}")
}

fn log_sk(position: u32) -> String {
    format!("L#{position:05}")
}

fn outcome_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}#OUTCOME")
}

fn outcome_sk(cursor: &Cursor) -> String {
    format!("{:013}#{}", cursor.at.0, cursor.conversation_id)
}

fn counter_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}#COUNTER")
}

fn lease_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}#LEASE")
}

fn model_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}#MODEL")
}

fn model_sk(version: u64) -> String {
    format!("V#{version:010}")
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn key(pk: String, sk: String) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

fn to_item<T: Serialize>(value: &T) -> Result<Item, StoreError> {
    serde_dynamo::to_item(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_item<T: for<'de> Deserialize<'de>>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Any failure other than a lost condition: the caller may retry later.
fn unavailable<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    StoreError::Unavailable(format!("dynamodb: {}", DisplayErrorContext(&e)))
}

fn is_condition_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// Why a transaction was cancelled, when it lost to someone else rather than failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LostRace {
    /// One of its conditions did not hold.
    Condition,
    /// A concurrent transaction touched the same item; the same transaction may succeed now.
    Conflict,
}

fn lost_race<R>(e: &SdkError<TransactWriteItemsError, R>) -> Option<LostRace> {
    match e.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(cancelled) => {
            let codes: Vec<&str> = cancelled
                .cancellation_reasons()
                .iter()
                .filter_map(|reason| reason.code())
                .collect();
            if codes.contains(&"ConditionalCheckFailed") {
                Some(LostRace::Condition)
            } else if codes.contains(&"TransactionConflict") {
                Some(LostRace::Conflict)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// How the DynamoDB client retries and gives up, set so that a request to an API function
/// fails over to a 503 (the client retries with the same key) well within the function's 10 s
/// timeout, while a throttled or dropped call is retried before the caller ever sees it.
///
/// - the SDK's standard retry mode: 3 attempts in all, full-jitter exponential back-off from
///   50 ms (at most 1 s), throttling and transient errors and dropped connections retried,
///   within the SDK's retry quota;
/// - 1 s to connect, 1 s per attempt, 3 s per call, retries included.
///
/// Every write is conditional, so retrying one whose answer was lost cannot apply it twice:
/// the retry finds its own item and the adapter answers with what was written.
pub fn retry_settings(
    builder: aws_sdk_dynamodb::config::Builder,
) -> aws_sdk_dynamodb::config::Builder {
    use aws_sdk_dynamodb::config::retry::RetryConfig;
    use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
    builder
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(50))
                .with_max_backoff(Duration::from_secs(1)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_attempt_timeout(Duration::from_secs(1))
                .operation_timeout(Duration::from_secs(3))
                .build(),
        )
}

/// A short randomised pause, growing with the attempt, so racing writers spread out.
async fn back_off(attempt: u32) {
    let jitter = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % 8;
    let ms = u64::from(attempt.min(10)) * 2 + jitter;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// What one conversation's log says, read in turn order.
struct LogRead {
    exchanges: Vec<Exchange>,
    end: Option<OutcomeRecord>,
}

fn parse_log_item(item: Item) -> Result<(String, String), StoreError> {
    let item: LogItem = from_item(item)?;
    Ok((item.kind, item.body))
}

impl DynamoStore {
    pub fn new(client: Client, config: DynamoStoreConfig) -> Self {
        DynamoStore { client, config }
    }

    /// Builds the client from the environment (region, credentials, and the SDK's own
    /// `AWS_ENDPOINT_URL_DYNAMODB` override for local servers), with [`retry_settings`].
    pub async fn from_env(config: DynamoStoreConfig) -> Self {
        let sdk_config = crate::config::aws_sdk_config().await;
        let client_config = retry_settings(aws_sdk_dynamodb::config::Builder::from(sdk_config));
        DynamoStore::new(Client::from_conf(client_config.build()), config)
    }

    pub fn table(&self) -> &str {
        &self.config.table
    }

    /// Opens the connection to DynamoDB during init, so that the first request a user sends
    /// does not pay for the TCP and TLS handshakes (and the first use of the TLS library's
    /// random generator): one eventually consistent read of a key no tenant can have (tenant
    /// keys start with `T#`), 0.5 read units per cold start. Best effort: a failure is logged
    /// and the first real request connects as usual. One attempt, never retried.
    pub async fn warm_up(&self) {
        let read = self
            .client
            .get_item()
            .table_name(&self.config.table)
            .key("pk", s("WARMUP".to_owned()))
            .key("sk", s("WARMUP".to_owned()))
            .projection_expression("pk")
            .customize()
            .config_override(
                aws_sdk_dynamodb::Config::builder()
                    .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled()),
            )
            .send();
        match tokio::time::timeout(Duration::from_secs(2), read).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %unavailable(e), "warming the DynamoDB connection failed")
            }
            Err(_) => tracing::warn!("warming the DynamoDB connection timed out"),
        }
    }

    fn expires_at(&self, at: Millis) -> Option<u64> {
        let retention = self.config.retention?;
        let ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        Some(at.saturating_add_ms(ms).as_epoch_seconds())
    }

    /// Creates the table with its indexes and TTL, as `infra/template.yaml` does; for tests and
    /// local servers.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        let key_part = |name: &str, key_type: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        let message_index = LocalSecondaryIndex::builder()
            .index_name(MESSAGE_INDEX)
            .key_schema(key_part("pk", KeyType::Hash)?)
            .key_schema(key_part("mid", KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::KeysOnly)
                    .build(),
            )
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let time_index = GlobalSecondaryIndex::builder()
            .index_name(TIME_INDEX)
            .key_schema(key_part("gsi1pk", KeyType::Hash)?)
            .key_schema(key_part("gsi1sk", KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .non_key_attributes("body")
                    .build(),
            )
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.client
            .create_table()
            .table_name(&self.config.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute("pk")?)
            .attribute_definitions(attribute("sk")?)
            .attribute_definitions(attribute("mid")?)
            .attribute_definitions(attribute("gsi1pk")?)
            .attribute_definitions(attribute("gsi1sk")?)
            .key_schema(key_part("pk", KeyType::Hash)?)
            .key_schema(key_part("sk", KeyType::Range)?)
            .local_secondary_indexes(message_index)
            .global_secondary_indexes(time_index)
            .send()
            .await
            .map_err(unavailable)?;
        self.client
            .update_time_to_live()
            .table_name(&self.config.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(TTL_ATTRIBUTE)
                    .enabled(true)
                    .build()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// A strongly consistent query of a conversation's log items.
    fn log_query(
        &self,
        pk: &str,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.config.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :log)")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":log", s("L#"))
            .consistent_read(true)
    }

    /// The newest log entry, read strongly consistently.
    async fn read_tail(&self, pk: &str) -> Result<ConversationState, StoreError> {
        let output = self
            .log_query(pk)
            .scan_index_forward(false)
            .limit(1)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(item) = output.items().first().cloned() else {
            return Ok(ConversationState::New);
        };
        let (kind, body) = parse_log_item(item)?;
        if kind == KIND_END {
            Ok(ConversationState::Ended(Box::new(from_json(&body)?)))
        } else {
            Ok(ConversationState::from(&from_json::<Exchange>(&body)?))
        }
    }

    /// The whole log of a conversation, in turn order, read strongly consistently.
    async fn read_log(&self, pk: &str) -> Result<LogRead, StoreError> {
        let mut log = LogRead {
            exchanges: Vec::new(),
            end: None,
        };
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .log_query(pk)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in output.items() {
                let (kind, body) = parse_log_item(item.clone())?;
                if kind == KIND_END {
                    log.end = Some(from_json(&body)?);
                } else {
                    log.exchanges.push(from_json(&body)?);
                }
            }
            match output.last_evaluated_key() {
                Some(next) => start = Some(next.clone()),
                None => return Ok(log),
            }
        }
    }

    /// The exchange recorded under `message_id`, if any, read strongly consistently.
    async fn find_message(
        &self,
        pk: &str,
        message_id: &MessageId,
    ) -> Result<Option<Exchange>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.config.table)
            .index_name(MESSAGE_INDEX)
            .key_condition_expression("pk = :pk AND mid = :mid")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":mid", s(message_id.as_str()))
            .consistent_read(true)
            .limit(1)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(sk) = output
            .items()
            .first()
            .and_then(|item| item.get("sk"))
            .and_then(|sk| sk.as_s().ok())
            .cloned()
        else {
            return Ok(None);
        };
        let found = self
            .client
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(key(pk.to_owned(), sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        match found.item {
            Some(item) => Ok(Some(from_json(&from_item::<BodyItem>(item)?.body)?)),
            None => Err(StoreError::Corrupt(
                "message index points at a missing item".into(),
            )),
        }
    }

    async fn query_bodies<T: for<'de> Deserialize<'de>>(
        &self,
        pk: String,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.config.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pk))
            .scan_index_forward(!descending)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output
            .items()
            .iter()
            .map(|item| from_json(&from_item::<BodyItem>(item.clone())?.body))
            .collect()
    }
}

impl Store for DynamoStore {
    async fn conversation(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<ConversationState, StoreError> {
        self.read_tail(&conversation_pk(tenant, conversation)).await
    }

    async fn exchanges(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<Vec<Exchange>, StoreError> {
        Ok(self
            .read_log(&conversation_pk(tenant, conversation))
            .await?
            .exchanges)
    }

    async fn record_exchange<F>(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        message_id: &MessageId,
        mut build: F,
    ) -> Result<Recorded, StoreError>
    where
        F: FnMut(&ConversationState) -> ExchangeDraft + Send,
    {
        let pk = conversation_pk(tenant, conversation);
        for attempt in 0..MAX_ATTEMPTS {
            // Order matters: the newest position first, then the message id (see module doc).
            let state = self.read_tail(&pk).await?;
            if let Some(first) = self.find_message(&pk, message_id).await? {
                return Ok(Recorded {
                    exchange: first,
                    duplicate: true,
                });
            }
            if let ConversationState::Ended(record) = state {
                return Err(StoreError::Ended(record));
            }
            if state.turns() >= MAX_TURNS {
                return Err(StoreError::TooLong);
            }
            let exchange = state.next_exchange(build(&state));
            let item = LogItem {
                pk: pk.clone(),
                sk: log_sk(exchange.turn),
                kind: KIND_EXCHANGE.to_owned(),
                body: to_json(&exchange)?,
                mid: Some(message_id.to_string()),
                gsi1pk: None,
                gsi1sk: None,
                expires_at: self.expires_at(exchange.draft.at),
            };
            let put = self
                .client
                .put_item()
                .table_name(&self.config.table)
                .set_item(Some(to_item(&item)?))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            match put {
                Ok(_) => {
                    return Ok(Recorded {
                        exchange,
                        duplicate: false,
                    });
                }
                Err(e) if is_condition_failure(&e) => back_off(attempt).await,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(StoreError::Contention(MAX_ATTEMPTS))
    }

    async fn end_conversation(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        request: EndRequest,
    ) -> Result<Ended, StoreError> {
        let pk = conversation_pk(tenant, conversation);
        let counter_key = key(counter_pk(tenant), ENDED_COUNTER.to_owned());
        for attempt in 0..MAX_ATTEMPTS {
            let log = self.read_log(&pk).await?;
            let record = match decide_end(conversation, &request, &log.exchanges, log.end)? {
                EndDecision::Repeat(record) => {
                    return Ok(Ended {
                        record,
                        first_time: false,
                        ended_count: None,
                    });
                }
                EndDecision::Write(record) => record,
            };
            // The counter is advanced by compare-and-set, so this caller knows the exact count
            // its end produced and each multiple is reported once.
            let counter = self
                .client
                .get_item()
                .table_name(&self.config.table)
                .set_key(Some(counter_key.clone()))
                .consistent_read(true)
                .send()
                .await
                .map_err(unavailable)?;
            let previous = counter
                .item()
                .and_then(|item| item.get("value"))
                .and_then(|value| value.as_n().ok())
                .and_then(|value| value.parse::<u64>().ok());
            let count = previous.unwrap_or(0) + 1;
            let end_item = LogItem {
                pk: pk.clone(),
                sk: log_sk(record.turns + 1),
                kind: KIND_END.to_owned(),
                body: to_json(&record)?,
                mid: None,
                gsi1pk: Some(outcome_pk(tenant)),
                gsi1sk: Some(outcome_sk(&record.cursor())),
                expires_at: self.expires_at(record.at),
            };
            let put_end = Put::builder()
                .table_name(&self.config.table)
                .set_item(Some(to_item(&end_item)?))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let mut bump = Update::builder()
                .table_name(&self.config.table)
                .set_key(Some(counter_key.clone()))
                .update_expression("SET #value = :count, gsi1pk = :tenants, gsi1sk = :tenant")
                .expression_attribute_names("#value", "value")
                .expression_attribute_values(":count", n(count))
                .expression_attribute_values(":tenants", s(TENANTS_PARTITION))
                .expression_attribute_values(":tenant", s(tenant.as_str()));
            bump = match previous {
                Some(value) => bump
                    .condition_expression("#value = :previous")
                    .expression_attribute_values(":previous", n(value)),
                None => bump.condition_expression("attribute_not_exists(pk)"),
            };
            let bump = bump
                .build()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let written = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put_end).build())
                .transact_items(TransactWriteItem::builder().update(bump).build())
                .send()
                .await;
            match written {
                Ok(_) => {
                    return Ok(Ended {
                        record,
                        first_time: true,
                        ended_count: Some(count),
                    });
                }
                Err(e) if lost_race(&e).is_some() => back_off(attempt).await,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(StoreError::Contention(MAX_ATTEMPTS))
    }

    async fn ended_count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let counter = self
            .client
            .get_item()
            .table_name(&self.config.table)
            .set_key(Some(key(counter_pk(tenant), ENDED_COUNTER.to_owned())))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(counter
            .item()
            .and_then(|item| item.get("value"))
            .and_then(|value| value.as_n().ok())
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0))
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        let mut tenants = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.config.table)
                .index_name(TIME_INDEX)
                .key_condition_expression("gsi1pk = :tenants")
                .expression_attribute_values(":tenants", s(TENANTS_PARTITION))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in output.items() {
                let raw = item
                    .get("gsi1sk")
                    .and_then(|v| v.as_s().ok())
                    .ok_or_else(|| StoreError::Corrupt("tenant entry without a name".into()))?;
                tenants.push(TenantId::parse(raw).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            }
            match output.last_evaluated_key() {
                Some(next) => start = Some(next.clone()),
                None => return Ok(tenants),
            }
        }
    }

    async fn acquire_lease(
        &self,
        tenant: &TenantId,
        name: &str,
        holder: &str,
        now: Millis,
        ttl_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        let until = now.saturating_add_ms(ttl_ms);
        let item = LeaseItem {
            pk: lease_pk(tenant),
            sk: name.to_owned(),
            holder: holder.to_owned(),
            until: until.0,
        };
        let put = self
            .client
            .put_item()
            .table_name(&self.config.table)
            .set_item(Some(to_item(&item)?))
            .condition_expression("attribute_not_exists(pk) OR #until < :now OR holder = :holder")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":now", n(now.0))
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match put {
            Ok(_) => Ok(Some(Lease {
                tenant: tenant.clone(),
                name: name.to_owned(),
                holder: holder.to_owned(),
                until,
            })),
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.config.table)
            .set_key(Some(key(lease_pk(&lease.tenant), lease.name.clone())))
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", s(lease.holder.as_str()))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn outcomes_since(
        &self,
        tenant: &TenantId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<OutcomeRecord>, StoreError> {
        // "0" sorts before every `{at:013}#...` key, so no cursor means from the beginning.
        let after = after.map(outcome_sk).unwrap_or_else(|| "0".to_owned());
        let mut outcomes = Vec::with_capacity(limit.min(1_000));
        let mut start: Option<Item> = None;
        // A page of the index may hold fewer than `limit` items (1 MB cap): keep reading.
        while outcomes.len() < limit {
            let want = i32::try_from(limit - outcomes.len()).unwrap_or(i32::MAX);
            let output = self
                .client
                .query()
                .table_name(&self.config.table)
                .index_name(TIME_INDEX)
                .key_condition_expression("gsi1pk = :pk AND gsi1sk > :after")
                .expression_attribute_values(":pk", s(outcome_pk(tenant)))
                .expression_attribute_values(":after", s(after.as_str()))
                .limit(want)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in output.items() {
                outcomes.push(from_json(&from_item::<BodyItem>(item.clone())?.body)?);
            }
            match output.last_evaluated_key() {
                Some(next) => start = Some(next.clone()),
                None => break,
            }
        }
        Ok(outcomes)
    }

    async fn current_model(&self, tenant: &TenantId) -> Result<Option<ModelVersion>, StoreError> {
        Ok(self.model_history(tenant, 1).await?.into_iter().next())
    }

    async fn publish_model(
        &self,
        tenant: &TenantId,
        model: &ModelVersion,
    ) -> Result<(), StoreError> {
        let pk = model_pk(tenant);
        let mut item = key(pk.clone(), model_sk(model.version));
        item.insert("body".to_owned(), s(to_json(model)?));
        let put = Put::builder()
            .table_name(&self.config.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if model.version == 0 {
            return Err(StoreError::VersionConflict { expected: 0 });
        }
        // Version n+1 may only follow version n: check that it exists in the same transaction.
        let predecessor = if model.version > 1 {
            Some(
                ConditionCheck::builder()
                    .table_name(&self.config.table)
                    .set_key(Some(key(pk, model_sk(model.version - 1))))
                    .condition_expression("attribute_exists(pk)")
                    .build()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            )
        } else {
            None
        };
        for attempt in 0..MAX_ATTEMPTS {
            let mut transaction = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put.clone()).build());
            if let Some(check) = &predecessor {
                transaction = transaction.transact_items(
                    TransactWriteItem::builder()
                        .condition_check(check.clone())
                        .build(),
                );
            }
            match transaction.send().await {
                Ok(_) => return Ok(()),
                Err(e) => match lost_race(&e) {
                    Some(LostRace::Condition) => {
                        return Err(StoreError::VersionConflict {
                            expected: model.version,
                        });
                    }
                    Some(LostRace::Conflict) => back_off(attempt).await,
                    None => return Err(unavailable(e)),
                },
            }
        }
        Err(StoreError::Contention(MAX_ATTEMPTS))
    }

    async fn model_history(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<Vec<ModelVersion>, StoreError> {
        self.query_bodies(model_pk(tenant), true, limit).await
    }
}
