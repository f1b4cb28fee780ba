//! An asynchronous invoke (`InvocationType: Event`) of a function: end_conversation's threshold
//! trigger and the scheduled feedback run's fan-out both ask for feedback runs this way.
//! Lambda queues the event and answers at once, so the caller waits only for the queueing;
//! Lambda then runs it (retrying a failed run twice, holding events while the function's
//! concurrency is used up, then sending it to the function's failure destination).
//!
//! Locally, `AWS_ENDPOINT_URL_LAMBDA` points the client at `cargo lambda watch`, whose invoke
//! API runs the function synchronously; there the invoke is detached from the request instead
//! (a local process is not frozen between requests, as a Lambda environment is).

use std::time::Duration;

use aws_sdk_lambda::Client;
use aws_sdk_lambda::config::retry::RetryConfig;
use aws_sdk_lambda::config::timeout::TimeoutConfig;
use aws_sdk_lambda::config::{Credentials, Region};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use serde_json::Value;

/// The longest the caller waits for the invoke to be queued, retries included.
pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Invoker {
    client: Client,
    function: String,
    /// Fire and forget on a spawned task instead of awaiting the queueing (local runs).
    detach: bool,
}

impl Invoker {
    pub fn new(client: Client, function: impl Into<String>, detach: bool) -> Invoker {
        Invoker {
            client,
            function: function.into(),
            detach,
        }
    }

    /// The client for AWS: region and credentials from the environment (the function's role),
    /// the same configuration the store's client was built from.
    pub fn aws(shared: &crate::clients::aws::SdkConfig, function: impl Into<String>) -> Invoker {
        let config = aws_sdk_lambda::config::Builder::from(shared)
            .timeout_config(timeouts())
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .build();
        Invoker::new(Client::from_conf(config), function, false)
    }

    /// A client for a local invoke API (cargo lambda watch, or a test server), which checks
    /// no signature: fixed region and placeholder credentials.
    ///
    /// A detached invoke waits as long as the emulator needs (it builds the function on its
    /// first invoke and runs it synchronously) and is not retried: a retry after a timeout
    /// would start a second run.
    pub fn local(endpoint: &str, function: impl Into<String>, detach: bool) -> Invoker {
        let (timeouts, attempts) = if detach {
            (
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(1))
                    .operation_timeout(Duration::from_secs(900))
                    .build(),
                1,
            )
        } else {
            (timeouts(), 2)
        };
        let config = aws_sdk_lambda::Config::builder()
            .behavior_version_latest()
            // The SDK's own HTTPS client is left out of deploy builds: ours, as for AWS.
            .http_client(crate::clients::aws::https_client(false))
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                "local",
                "local",
                None,
                None,
                "salesloop-local",
            ))
            .endpoint_url(endpoint)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(attempts))
            .build();
        Invoker::new(Client::from_conf(config), function, detach)
    }

    pub fn function(&self) -> &str {
        &self.function
    }

    /// Queues `payload` for the function. Errors are returned for the caller to log.
    pub async fn invoke(&self, payload: &Value) -> Result<(), InvokeError> {
        let request = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload.to_string()));
        if self.detach {
            tokio::spawn(async move {
                if let Err(e) = request.send().await {
                    tracing::warn!(error = %aws_sdk_lambda::error::DisplayErrorContext(&e), "asynchronous invoke failed");
                }
            });
            return Ok(());
        }
        match tokio::time::timeout(INVOKE_TIMEOUT, request.send()).await {
            Ok(Ok(output)) if (200..300).contains(&output.status_code()) => Ok(()),
            Ok(Ok(output)) => Err(InvokeError::Status(output.status_code())),
            Ok(Err(e)) => Err(InvokeError::Invoke(
                aws_sdk_lambda::error::DisplayErrorContext(&e).to_string(),
            )),
            Err(_) => Err(InvokeError::Timeout(INVOKE_TIMEOUT)),
        }
    }
}

/// Why an invoke was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    #[error("invoke answered status {0}")]
    Status(i32),
    #[error("invoke failed: {0}")]
    Invoke(String),
    #[error("invoke not queued within {0:?}")]
    Timeout(Duration),
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(500))
        .operation_attempt_timeout(Duration::from_secs(1))
        .operation_timeout(INVOKE_TIMEOUT)
        .build()
}
