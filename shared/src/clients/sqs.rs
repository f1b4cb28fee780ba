//! The spool's queues: an SQS FIFO queue process_message sends the exchanges it could not
//! record to, and its dead-letter queue, which the spool consumer sends a record to when it can
//! never be recorded. One client per process, built from the shared SDK configuration, with a
//! short budget: a send that cannot go through quickly falls back to the log (docs/spool.md).

use std::time::Duration;

use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::types::MessageAttributeValue;

use crate::domain::spool::SpooledExchange;

/// A FIFO queue and the client that sends to it.
#[derive(Clone, Debug)]
pub struct FifoQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl FifoQueue {
    /// The queue at `url`, through a client with the spool's budget: two attempts of at most
    /// 400 ms each, 1 s in all.
    pub fn new(sdk: &aws_config::SdkConfig, url: String) -> FifoQueue {
        let config = aws_sdk_sqs::config::Builder::from(sdk)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(2)
                    .with_initial_backoff(Duration::from_millis(20)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(400))
                    .operation_attempt_timeout(Duration::from_millis(400))
                    .operation_timeout(Duration::from_secs(1))
                    .build(),
            )
            .build();
        FifoQueue {
            client: aws_sdk_sqs::Client::from_conf(config),
            url,
        }
    }

    /// The queue at `url` through a client of the caller's (tests).
    pub fn with_client(client: aws_sdk_sqs::Client, url: String) -> FifoQueue {
        FifoQueue { client, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `record` to the queue: its conversation is its message group, and tenant,
    /// conversation and message id its deduplication id.
    pub async fn spool(&self, record: &SpooledExchange) -> Result<(), String> {
        let body = serde_json::to_string(record).map_err(|e| e.to_string())?;
        self.send(body, record.group_id(), record.deduplication_id(), None)
            .await
    }

    /// Sends `body` as it is, with `reason` as the `reason` message attribute when given.
    pub async fn send(
        &self,
        body: String,
        group: String,
        deduplication: String,
        reason: Option<&str>,
    ) -> Result<(), String> {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .message_group_id(group)
            .message_deduplication_id(deduplication);
        if let Some(reason) = reason {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(reason)
                .build()
                .map_err(|e| e.to_string())?;
            request = request.message_attributes("reason", value);
        }
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
    }
}
