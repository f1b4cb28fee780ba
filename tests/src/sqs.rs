//! The spool's queues on moto's server (`crate::moto`), and a stand-in for the SQS event
//! source mapping that runs spool_consumer on Lambda: one poll receives up to 10 messages as
//! the mapping does, hands spool_consumer the `SqsEvent` Lambda would (built as Lambda's JSON
//! and read back through `aws_lambda_events`, as the runtime reads it), and deletes what the
//! function did not report failed (`ReportBatchItemFailures`).
//!
//! The poller is as plain as Lambda's: it does not order, hold or deduplicate anything itself.
//! Ordering within a conversation therefore rests on the queue, and here on what moto 5.2.5
//! reproduces of SQS FIFO (measured against its server, docs/spool.md):
//!
//! - reproduced: order within a message group; the group lock (while a message of a group is
//!   in flight, later messages of that group are withheld, other groups are delivered); the
//!   visibility timeout and redelivery; `ApproximateReceiveCount`; the redrive to the FIFO
//!   dead-letter queue after `maxReceiveCount` receives, group order and attributes kept;
//!   deduplication of a second send with the same deduplication id while the first is still in
//!   the queue; message attributes; all system attributes (with an explicit deduplication id);
//!   `DeleteMessageBatch`; exact message counts.
//! - not reproduced, and it matters here: the order in which a conversation's messages come
//!   back when two or more of them were left in flight by one batch and their visibility
//!   timeout runs out (a failed invocation, or a record reported failed with the later records
//!   of its conversation held behind it). moto releases such messages from its group lock one
//!   at a time while it walks the queue, so it skips each while a later one of the group is
//!   still marked in flight, and delivers the group's last message first (then the rest, in
//!   order, once that one is done); its redrive moves them in the same reversed order. SQS
//!   delivers the group's first message first. This poller does nothing about it, as Lambda
//!   would not: a test that needs the order after a redelivery makes the batch visible at once
//!   with [`SpoolQueues::release`] (on SQS the same as waiting out the timeout; on moto it also
//!   clears the group lock in order), and one that waits the timeout out must not assert that
//!   order. (Measured: 10 messages of one group received, not deleted, visible again after 1
//!   s: the next receive returned the 10th alone.)
//! - not reproduced: `DeduplicationScope=messageGroup` (moto deduplicates queue-wide: the
//!   spool's deduplication ids name the conversation, so this changes nothing here); the
//!   five-minute deduplication window (moto forgets a deduplication id once its message is
//!   deleted, so a repeat sent after the first was consumed is delivered again: the consumer's
//!   idempotent append is what keeps it once, there as on AWS after five minutes); the
//!   original `MessageId` answered to a deduplicated send; increasing `SequenceNumber`s; the
//!   redrive happens during the next `ReceiveMessage`, not in the background (a poll moves
//!   it); a redriven message whose deduplication id the dead-letter queue already holds is
//!   dropped; `ReceiveRequestAttemptId`; stale receipt handles (moto deletes with any handle a
//!   message ever had); IAM, KMS and signatures (any credentials); byte-accurate size limits.
//!
//! What Lambda does that this poller does not: long polling by several pollers at once,
//! scaling up to `MaximumConcurrency` concurrent batches, batching windows, and retrying its
//! own failed deletes. One poll is one batch, one at a time.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use salesloop::Store;
use salesloop::clients::sqs::FifoQueue;
use serde_json::{Value, json};
use spool_consumer::handler::{App, BatchSummary, handle_batch};

/// The region moto's queues are created in (moto takes it from the request's signature).
pub const REGION: &str = "us-east-1";

/// The most messages one receive (and one Lambda batch of the spool, `BatchSize: 10`) holds.
pub const BATCH_SIZE: i32 = 10;

/// An SQS client of moto's server at `endpoint`: fake credentials (moto routes a request by
/// its signature's service, so it must be signed), `us-east-1`.
pub fn client(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// The spool and its dead-letter queue, as infra/template.yaml declares them.
pub struct SpoolQueues {
    pub client: aws_sdk_sqs::Client,
    pub spool_url: String,
    pub dead_letter_url: String,
}

/// A queue's messages as `GetQueueAttributes` counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// `ApproximateNumberOfMessages`: waiting to be received.
    pub visible: u64,
    /// `ApproximateNumberOfMessagesNotVisible`: received, not deleted, not yet visible again.
    pub in_flight: u64,
}

impl QueueCounts {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight
    }
}

impl SpoolQueues {
    /// Creates a FIFO spool queue `{name}.fifo` and its FIFO dead-letter queue
    /// `{name}-dlq.fifo` on moto's server at `endpoint` (names of the caller's own: at most 71
    /// characters of letters, digits, `-` and `_`). The spool as the template has it: explicit
    /// deduplication ids (`ContentBasedDeduplication` false), `DeduplicationScope`
    /// `messageGroup`, `FifoThroughputLimit` `perMessageGroupId`, the AWS-managed key, a
    /// `RedrivePolicy` to the dead-letter queue after `max_receive_count` receives, and the
    /// visibility timeout `visibility_timeout_s` (the template's is 180 s; tests shorten it to
    /// see redeliveries). The dead-letter queue with content-based deduplication, as the
    /// template has it. Panics if moto refuses any of it.
    pub async fn create(
        endpoint: &str,
        name: &str,
        visibility_timeout_s: i32,
        max_receive_count: u32,
    ) -> SpoolQueues {
        let client = client(endpoint);
        let dead_letter_url = client
            .create_queue()
            .queue_name(format!("{name}-dlq.fifo"))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "true")
            .attributes(QueueAttributeName::KmsMasterKeyId, "alias/aws/sqs")
            .send()
            .await
            .unwrap_or_else(|e| panic!("create the dead-letter queue {name}-dlq.fifo: {e:?}"))
            .queue_url
            .expect("a queue URL");
        let dead_letter_arn = queue_arn(&dead_letter_url);
        let redrive = json!({
            "deadLetterTargetArn": dead_letter_arn,
            "maxReceiveCount": max_receive_count,
        });
        let spool_url = client
            .create_queue()
            .queue_name(format!("{name}.fifo"))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
            .attributes(QueueAttributeName::DeduplicationScope, "messageGroup")
            .attributes(QueueAttributeName::FifoThroughputLimit, "perMessageGroupId")
            .attributes(QueueAttributeName::KmsMasterKeyId, "alias/aws/sqs")
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility_timeout_s.to_string(),
            )
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("create the spool {name}.fifo: {e:?}"))
            .queue_url
            .expect("a queue URL");
        let queues = SpoolQueues {
            client,
            spool_url,
            dead_letter_url,
        };
        // What moto took is what was asked (it read the ARN the same way).
        let arn = queues
            .attribute(&queues.dead_letter_url, QueueAttributeName::QueueArn)
            .await;
        assert_eq!(arn.as_deref(), Some(dead_letter_arn.as_str()));
        queues
    }

    /// The spool as process_message sends to it.
    pub fn spool(&self) -> FifoQueue {
        FifoQueue::with_client(self.client.clone(), self.spool_url.clone())
    }

    /// The dead-letter queue as spool_consumer sends to it.
    pub fn dead_letters(&self) -> FifoQueue {
        FifoQueue::with_client(self.client.clone(), self.dead_letter_url.clone())
    }

    /// The spool's ARN, the event source's `eventSourceARN`.
    pub fn spool_arn(&self) -> String {
        queue_arn(&self.spool_url)
    }

    /// One receive as the event source mapping makes it (up to 10 messages, no wait, every
    /// system attribute and message attribute), as the `SqsEvent` Lambda would invoke the
    /// function with. Empty when nothing is visible.
    pub async fn receive_event(&self) -> SqsEvent {
        let messages = self.receive(&self.spool_url, None).await;
        lambda_event(&messages, &self.spool_arn())
    }

    /// What the event source mapping does with the function's answer to `event`: deletes
    /// every message the response does not name in `batch_item_failures`. As on Lambda, a
    /// response naming an empty or unknown message id fails the whole batch: nothing is
    /// deleted. (A function that errs or times out is the same: call nothing.) Returns how
    /// many were deleted; panics if a delete fails.
    pub async fn complete(&self, event: &SqsEvent, response: &SqsBatchResponse) -> usize {
        let ids: HashSet<&str> = event
            .records
            .iter()
            .filter_map(|m| m.message_id.as_deref())
            .collect();
        let failed: HashSet<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        if failed.iter().any(|id| id.is_empty() || !ids.contains(id)) {
            return 0;
        }
        let entries: Vec<DeleteMessageBatchRequestEntry> = event
            .records
            .iter()
            .enumerate()
            .filter(|(_, m)| !failed.contains(m.message_id.as_deref().unwrap_or_default()))
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                    .build()
                    .expect("a delete entry")
            })
            .collect();
        let deleted = entries.len();
        for chunk in entries.chunks(BATCH_SIZE as usize) {
            let answer = self
                .client
                .delete_message_batch()
                .queue_url(&self.spool_url)
                .set_entries(Some(chunk.to_vec()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("delete from the spool: {e:?}"));
            assert!(
                answer.failed().is_empty(),
                "deletes failed: {:?}",
                answer.failed()
            );
        }
        deleted
    }

    /// Makes every message of `event`, a batch received and not completed (nothing deleted),
    /// visible again now, in the batch's order (`ChangeMessageVisibility` to 0): what waiting out
    /// the visibility timeout does on SQS, at once. Not something Lambda's event source does:
    /// a test calls it where it means "after the visibility timeout" and needs the order SQS
    /// keeps then, which moto only keeps this way (see above). Panics if moto refuses a handle.
    pub async fn release(&self, event: &SqsEvent) {
        for message in &event.records {
            self.client
                .change_message_visibility()
                .queue_url(&self.spool_url)
                .receipt_handle(message.receipt_handle.clone().unwrap_or_default())
                .visibility_timeout(0)
                .send()
                .await
                .unwrap_or_else(|e| panic!("make {:?} visible: {e:?}", message.message_id));
        }
    }

    /// One poll as Lambda's event source does it: [`receive_event`](Self::receive_event),
    /// `spool_consumer::handler::handle_batch` when anything came, then
    /// [`complete`](Self::complete). How many messages were received, and what the batch did.
    pub async fn poll_once<S: Store>(&self, app: &App<S>) -> (usize, BatchSummary) {
        let event = self.receive_event().await;
        let received = event.records.len();
        if received == 0 {
            return (0, BatchSummary::default());
        }
        let (response, summary) = handle_batch(app, event.clone()).await;
        self.complete(&event, &response).await;
        (received, summary)
    }

    /// Polls until the spool holds nothing, visible or in flight (records reported failed come
    /// back after the visibility timeout; records past `maxReceiveCount` are moved to the
    /// dead-letter queue by the next receive), and sums what the batches did. Panics with what
    /// is left if `deadline` passes first.
    pub async fn drain<S: Store>(&self, app: &App<S>, deadline: Duration) -> BatchSummary {
        let started = Instant::now();
        let mut total = BatchSummary::default();
        loop {
            let (received, summary) = self.poll_once(app).await;
            total.recorded += summary.recorded;
            total.duplicates += summary.duplicates;
            total.dead_lettered += summary.dead_lettered;
            total.retried += summary.retried;
            let left = self.counts(&self.spool_url).await;
            if left.total() == 0 {
                return total;
            }
            assert!(
                started.elapsed() < deadline,
                "the spool did not drain within {deadline:?}: {left:?} left; so far {total:?}"
            );
            if received == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Every message in the dead-letter queue, with its `reason` attribute when it has one (the
    /// consumer's rejects have it; records the queue's redrive moved have none). Each is read
    /// once: received with a long visibility timeout, then deleted, so that a conversation with
    /// more than one batch of dead letters is read whole (FIFO withholds a group's later
    /// messages while earlier ones are in flight). In the order received: each conversation's
    /// in its order.
    pub async fn dead_lettered(&self) -> Vec<(String, Option<String>)> {
        let mut all = Vec::new();
        loop {
            let messages = self.receive(&self.dead_letter_url, Some(3600)).await;
            if messages.is_empty() {
                return all;
            }
            for message in &messages {
                let reason = message
                    .message_attributes()
                    .and_then(|a| a.get("reason"))
                    .and_then(|v| v.string_value())
                    .map(str::to_owned);
                all.push((message.body().unwrap_or_default().to_owned(), reason));
            }
            let entries: Vec<DeleteMessageBatchRequestEntry> = messages
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .build()
                        .expect("a delete entry")
                })
                .collect();
            self.client
                .delete_message_batch()
                .queue_url(&self.dead_letter_url)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap_or_else(|e| panic!("delete from the dead-letter queue: {e:?}"));
        }
    }

    /// The spool's messages, waiting and in flight.
    pub async fn spool_counts(&self) -> QueueCounts {
        self.counts(&self.spool_url).await
    }

    /// The dead-letter queue's messages, waiting and in flight.
    pub async fn dead_letter_counts(&self) -> QueueCounts {
        self.counts(&self.dead_letter_url).await
    }

    async fn counts(&self, url: &str) -> QueueCounts {
        let answer = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap_or_else(|e| panic!("read the attributes of {url}: {e:?}"));
        let number = |name: QueueAttributeName| -> u64 {
            answer
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name:?} of {url}: {:?}", answer.attributes()))
        };
        QueueCounts {
            visible: number(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: number(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        }
    }

    async fn attribute(&self, url: &str, name: QueueAttributeName) -> Option<String> {
        self.client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(name.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("read {name:?} of {url}: {e:?}"))
            .attributes()
            .and_then(|a| a.get(&name))
            .cloned()
    }

    async fn receive(&self, url: &str, visibility_timeout_s: Option<i32>) -> Vec<Message> {
        self.client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(BATCH_SIZE)
            .wait_time_seconds(0)
            .set_visibility_timeout(visibility_timeout_s)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap_or_else(|e| panic!("receive from {url}: {e:?}"))
            .messages
            .unwrap_or_default()
    }
}

/// A queue's ARN from its URL (`…/<account>/<name>`), as SQS names it.
pub fn queue_arn(url: &str) -> String {
    let mut parts = url.trim_end_matches('/').rsplit('/');
    let name = parts.next().unwrap_or_default();
    let account = parts.next().unwrap_or_default();
    format!("arn:aws:sqs:{REGION}:{account}:{name}")
}

/// The event Lambda invokes the function with for `messages` received from the queue
/// `event_source_arn`: Lambda's JSON (camelCase fields, system attributes by name, message
/// attributes with their list fields), read the way the runtime reads it.
pub fn lambda_event(messages: &[Message], event_source_arn: &str) -> SqsEvent {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| lambda_record(m, event_source_arn))
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("an SqsEvent")
}

fn lambda_record(message: &Message, event_source_arn: &str) -> Value {
    let attributes: HashMap<&str, &str> = message
        .attributes()
        .map(|a| a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
        .unwrap_or_default();
    let message_attributes: serde_json::Map<String, Value> = message
        .message_attributes()
        .map(|a| {
            a.iter()
                .map(|(name, value)| {
                    let attribute = json!({
                        "stringValue": value.string_value(),
                        "binaryValue": value.binary_value().map(|b| base64(b.as_ref())),
                        "stringListValues": value.string_list_values(),
                        "binaryListValues": value
                            .binary_list_values()
                            .iter()
                            .map(|b| base64(b.as_ref()))
                            .collect::<Vec<_>>(),
                        "dataType": value.data_type(),
                    });
                    (name.clone(), attribute)
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "messageId": message.message_id(),
        "receiptHandle": message.receipt_handle(),
        "body": message.body(),
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.md5_of_body(),
        "md5OfMessageAttributes": message.md5_of_message_attributes(),
        "eventSource": "aws:sqs",
        "eventSourceARN": event_source_arn,
        "awsRegion": REGION,
    })
}

/// Standard base64 with padding, as Lambda's event carries binary attributes.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads_as_the_standard_does() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(&[0, 1, 255]), "AAH/");
    }

    #[test]
    fn an_arn_names_the_account_and_queue_of_the_url() {
        assert_eq!(
            queue_arn("http://127.0.0.1:5000/123456789012/spool-a.fifo"),
            "arn:aws:sqs:us-east-1:123456789012:spool-a.fifo"
        );
    }
}
