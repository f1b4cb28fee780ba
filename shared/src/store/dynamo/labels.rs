//! Labels given after the fact: one item per (turn, pattern) in the conversation's partition,
//! `B#{turn:05}#{pattern}`, beside the log (whose reads all ask for `L#`), and an entry in the
//! sparse GSI `by_time` under `T#{tenant}#LABEL`, sorted by the label's cursor key, which the
//! feedback loop reads in the order labels were stored.
//!
//! A request's labels are one `TransactWriteItems` (at most 100 puts, DynamoDB's limit, which
//! is the most labels a request may carry), each put conditional on its key being free: a label
//! another request stored first cancels the whole transaction, and the service reads again.

use aws_sdk_dynamodb::types::{Put, TransactWriteItem};

use super::DynamoStore;
use super::errors::{lost_race, malformed, unavailable};
use super::keys::{
    BodyItem, Item, KIND_LABEL, LABEL_PREFIX, LogItem, conversation_pk, from_item, label_index_pk,
    label_sk, s, to_item,
};
use crate::domain::ids::{ConversationId, TenantId};
use crate::domain::labels::{LabelCursor, StoredLabel};
use crate::store::{StoreError, Write, check_label_batch, from_json, to_json};

impl DynamoStore {
    /// Every label of the conversation, in (turn, pattern) order (the sort key's), read
    /// strongly consistently.
    pub(super) async fn read_labels(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
    ) -> Result<Vec<StoredLabel>, StoreError> {
        let pk = conversation_pk(tenant, conversation);
        let mut labels = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.config.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :labels)")
                .expression_attribute_values(":pk", s(pk.as_str()))
                .expression_attribute_values(":labels", s(LABEL_PREFIX))
                .projection_expression("body")
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in output.items() {
                labels.push(from_json(&from_item::<BodyItem>(item.clone())?.body)?);
            }
            match output.last_evaluated_key() {
                Some(next) => start = Some(next.clone()),
                None => return Ok(labels),
            }
        }
    }

    pub(super) async fn write_labels(
        &self,
        tenant: &TenantId,
        conversation: &ConversationId,
        labels: &[StoredLabel],
    ) -> Result<Write, StoreError> {
        check_label_batch(conversation, labels)?;
        if labels.is_empty() {
            return Ok(Write::Done);
        }
        if let Some(newest) = labels.iter().map(|label| label.at).max() {
            self.mark_pending(tenant, newest).await?;
        }
        let pk = conversation_pk(tenant, conversation);
        let mut transaction = self.client.transact_write_items();
        for label in labels {
            let item = LogItem {
                pk: pk.clone(),
                sk: label_sk(label.turn, &label.pattern),
                kind: KIND_LABEL.to_owned(),
                body: to_json(label)?,
                mid: None,
                gsi1pk: Some(label_index_pk(tenant)),
                gsi1sk: Some(label.cursor().key()),
                gsi2pk: None,
                gsi2sk: None,
                expires_at: self.expires_at(label.at),
            };
            let put = Put::builder()
                .table_name(&self.config.table)
                .set_item(Some(to_item(&item)?))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(malformed)?;
            transaction = transaction.transact_items(TransactWriteItem::builder().put(put).build());
        }
        match transaction.send().await {
            Ok(_) => Ok(Write::Done),
            Err(e) if lost_race(&e) => Ok(Write::Lost),
            Err(e) => Err(unavailable(e)),
        }
    }

    pub(super) async fn query_labels(
        &self,
        tenant: &TenantId,
        after: Option<&LabelCursor>,
        limit: usize,
    ) -> Result<Vec<StoredLabel>, StoreError> {
        // "0" sorts before every `{at:013}#...` key, so no cursor means from the first label.
        let after = after
            .map(LabelCursor::key)
            .unwrap_or_else(|| "0".to_owned());
        self.query_time_index(label_index_pk(tenant), after, limit)
            .await
    }
}
