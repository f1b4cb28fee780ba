//! A conversation's log: exchange items at positions 1..n, the end after them.
//!
//! An exchange is one conditional PutItem. The service reads the newest position, then the
//! message id in the LSI, both strongly consistent, before it appends: positions are only
//! written after their predecessor was seen, so a message id found absent after the newest
//! position was read cannot be at any position up to it, and the put's condition rules out the
//! one position left. The write stays one request of about two write units (the item, under
//! 1 KB for a typical message, and its keys-only LSI entry).
//!
//! A conversation's first exchange also carries its entry in the tenant's conversation list
//! (`gsi2pk` = `T#{tenant}#CONVERSATION` in the keys-only `by_start` index): one more write
//! unit, on the first turn only, whatever the message's length.
//!
//! The end is one `TransactWriteItems`: the end item (also the outcome index entry) and the
//! tenant's ended counter moved by compare-and-set, so each caller knows the exact count its end
//! produced and each multiple is reported once.

use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};

use super::DynamoStore;
use super::errors::{is_condition_failure, lost_race, malformed, unavailable};
use super::keys::{
    BodyItem, ENDED_COUNTER, Item, KIND_END, KIND_EXCHANGE, LAST_AT, LogItem, MARKED,
    MESSAGE_INDEX, PENDING_PARTITION, RECOVERED_EXCHANGES, TENANTS_PARTITION,
    conversation_index_pk, conversation_pk, conversation_sk, counter_pk, counter_shard_pk,
    end_shard, from_item, key, log_sk, n, outcome_pk, outcome_sk, s, shard_entry, to_item,
};
use crate::domain::conversation::{ConversationState, Cursor, Exchange, OutcomeRecord};
use crate::domain::ids::{ConversationId, MessageId, TenantId};
use crate::store::{ConversationLog, StoreError, Write, from_json, to_json};

fn parse_log_item(item: Item) -> Result<(String, String), StoreError> {
    let item: LogItem = from_item(item)?;
    Ok((item.kind, item.body))
}

impl DynamoStore {
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
    pub(super) async fn read_tail(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<ConversationState, StoreError> {
        let output = self
            .log_query(&conversation_pk(tenant, conversation))
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
    pub(super) async fn read_log(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<ConversationLog, StoreError> {
        let pk = conversation_pk(tenant, conversation);
        let mut log = ConversationLog::default();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .log_query(&pk)
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
    pub(super) async fn read_message(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        message_id: &MessageId,
    ) -> Result<Option<Exchange>, StoreError> {
        let pk = conversation_pk(tenant, conversation);
        let output = self
            .client
            .query()
            .table_name(&self.config.table)
            .index_name(MESSAGE_INDEX)
            .key_condition_expression("pk = :pk AND mid = :mid")
            .expression_attribute_values(":pk", s(pk.as_str()))
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
            .set_key(Some(key(pk, sk)))
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

    pub(super) async fn put_exchange(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        exchange: &Exchange,
    ) -> Result<Write, StoreError> {
        let item = LogItem {
            pk: conversation_pk(tenant, conversation),
            sk: log_sk(exchange.turn),
            kind: KIND_EXCHANGE.to_owned(),
            body: to_json(&exchange.stored())?,
            mid: Some(exchange.draft.message_id.to_string()),
            gsi1pk: None,
            gsi1sk: None,
            // The first exchange is also the conversation's entry in the tenant's list.
            gsi2pk: (exchange.turn == 1).then(|| conversation_index_pk(tenant)),
            gsi2sk: (exchange.turn == 1).then(|| {
                let cursor = Cursor {
                    at: exchange.draft.at,
                    conversation_id: conversation.clone(),
                };
                format!(
                    "{}{}",
                    conversation_sk(&cursor),
                    exchange.draft.model_version
                )
            }),
            expires_at: self.expires_at(exchange.draft.at),
        };
        if !exchange.draft.via.is_direct() {
            return self.put_recovered_exchange(tenant, item).await;
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.config.table)
            .set_item(Some(to_item(&item)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(Write::Done),
            Err(e) if is_condition_failure(&e) => Ok(Write::Lost),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// An exchange recorded late (from the spool or a replayed log line): the same conditional
    /// put, and one more on the tenant's recovered counter, in one transaction, so the count is
    /// made exactly when the exchange is written (the SDK's client request token keeps a retried
    /// attempt from counting twice).
    async fn put_recovered_exchange(
        &self,
        tenant: &TenantId,
        item: LogItem,
    ) -> Result<Write, StoreError> {
        let put = self.put_if_free(&item)?;
        let count = Update::builder()
            .table_name(&self.config.table)
            .set_key(Some(key(counter_pk(tenant), ENDED_COUNTER.to_owned())))
            .update_expression("ADD #counter :one")
            .expression_attribute_names("#counter", RECOVERED_EXCHANGES)
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(malformed)?;
        self.put_and_update(put, count).await
    }

    /// A put of `item` on the condition that its key is free.
    fn put_if_free(&self, item: &LogItem) -> Result<Put, StoreError> {
        Put::builder()
            .table_name(&self.config.table)
            .set_item(Some(to_item(item)?))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(malformed)
    }

    /// `put` and `update` in one transaction: `Write::Lost` when a condition did not hold or a
    /// concurrent transaction touched either item.
    async fn put_and_update(&self, put: Put, update: Update) -> Result<Write, StoreError> {
        let written = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().update(update).build())
            .send()
            .await;
        match written {
            Ok(_) => Ok(Write::Done),
            Err(e) if lost_race(&e) => Ok(Write::Lost),
            Err(e) => Err(unavailable(e)),
        }
    }

    pub(super) async fn put_end(
        &self,
        tenant: &TenantId,
        record: &OutcomeRecord,
        ended_before: u64,
    ) -> Result<Write, StoreError> {
        let shard = end_shard(&record.conversation_id, self.config.end_shards);
        let end_item = LogItem {
            pk: conversation_pk(tenant, &record.conversation_id),
            sk: log_sk(record.turns + 1),
            kind: KIND_END.to_owned(),
            body: to_json(record)?,
            mid: None,
            gsi1pk: Some(outcome_pk(tenant, shard)),
            gsi1sk: Some(outcome_sk(&record.cursor())),
            gsi2pk: None,
            gsi2sk: None,
            expires_at: self.expires_at(record.at),
        };
        let put_end = self.put_if_free(&end_item)?;
        // The shard's entries in the tenants list (`by_time`) and the pending list (`by_start`,
        // keys only) are rewritten with the same keys by every end: an index is written only
        // when its keys or projected attributes change, so they cost an index write when they
        // appear, not per end. `last_at` and `marked` are projected into neither.
        let entry = shard_entry(tenant, shard);
        let bump = Update::builder()
            .table_name(&self.config.table)
            .set_key(Some(key(
                counter_shard_pk(tenant, shard),
                ENDED_COUNTER.to_owned(),
            )))
            .update_expression(
                "SET #value = :count, gsi1pk = :tenants, gsi1sk = :entry, gsi2pk = :pending, \
                 gsi2sk = :entry, #last = :at ADD #marked :one",
            )
            .expression_attribute_names("#value", "value")
            .expression_attribute_names("#last", LAST_AT)
            .expression_attribute_names("#marked", MARKED)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":count", n(ended_before + 1))
            .expression_attribute_values(":tenants", s(TENANTS_PARTITION))
            .expression_attribute_values(":pending", s(PENDING_PARTITION))
            .expression_attribute_values(":entry", s(entry))
            .expression_attribute_values(":at", n(record.at.0));
        // `value` is first written by the tenant's first end: before it, 0 ended. (The item
        // itself may exist already, holding the tracking counters.)
        let bump = if ended_before == 0 {
            bump.condition_expression("attribute_not_exists(#value)")
        } else {
            bump.condition_expression("#value = :previous")
                .expression_attribute_values(":previous", n(ended_before))
        };
        self.put_and_update(put_end, bump.build().map_err(malformed)?)
            .await
    }
}
