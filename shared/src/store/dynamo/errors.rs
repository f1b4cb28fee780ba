//! How DynamoDB's answers become the port's: a failed condition or a conflicting transaction
//! is a lost race ([`Write::Lost`](crate::store::Write)), anything else is unavailability; and
//! how the client retries and gives up.

use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;

use crate::store::StoreError;

/// Any failure other than a lost condition: the caller may retry later.
pub(super) fn unavailable<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    StoreError::Unavailable(format!("dynamodb: {}", DisplayErrorContext(&e)))
}

/// A request that could not even be built: a defect, never worth a retry.
pub(super) fn malformed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub(super) fn is_condition_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// Whether a transaction was cancelled because it lost to another writer (one of its
/// conditions did not hold, or a concurrent transaction touched the same item) rather than
/// because the store failed.
pub(super) fn lost_race<R>(e: &SdkError<TransactWriteItemsError, R>) -> bool {
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => cancelled
            .cancellation_reasons()
            .iter()
            .filter_map(|reason| reason.code())
            .any(|code| code == "ConditionalCheckFailed" || code == "TransactionConflict"),
        _ => false,
    }
}

/// How the DynamoDB client retries and gives up, set so that a request to an API function
/// fails over to a 503 (the client retries with the same key) well within the function's 10 s
/// timeout, while a throttled or dropped call is retried before the caller ever sees it:
///
/// - the SDK's standard retry mode: 3 attempts in all, full-jitter exponential back-off from
///   50 ms (at most 1 s), throttling and transient errors and dropped connections retried,
///   within the SDK's retry quota;
/// - 1 s to connect, 1 s per attempt, 3 s per call, retries included.
///
/// Every write is conditional, so retrying one whose answer was lost cannot apply it twice:
/// the retry finds its own item, loses its condition, and the service reads what was written.
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
