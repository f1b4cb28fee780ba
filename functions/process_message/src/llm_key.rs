//! The LLM's API key, read during init from the SSM Parameter Store SecureString that
//! `LLM_API_KEY_PARAMETER` names (`edge::settings`), so that the key is in neither the template
//! nor the function's configuration.
//!
//! Why Parameter Store rather than Secrets Manager: the key is read once per process, and a
//! standard SecureString does all that needs: it is encrypted with KMS (the account's `aws/ssm`
//! key unless another is chosen), costs nothing to keep or to read (a secret costs $0.40 a month
//! and $0.05 per 10,000 reads), and one action on one ARN (`ssm:GetParameter`) is the whole
//! grant. What Secrets Manager adds (rotation by a function of its own, staged versions,
//! cross-account resource policies) this key does not use: an operator rotates it by putting a
//! new value, which every process started after that reads. The trade: GetParameter's default
//! throughput (40 calls a second per account and region, shared by every caller) limits a
//! burst of cold starts; the SDK's retries spread a burst out, and Parameter Store's higher
//! throughput setting raises the limit.
//!
//! When: once per process, during init, never on a request. A process keeps the key it read
//! for its life; a new value reaches new processes, and every process after a deploy.
//!
//! A read that fails (no such parameter, not a SecureString, access or KMS denied, no answer
//! within [`READ_TIMEOUT`]) stops init with a `ConfigError` on `LLM_API_KEY_PARAMETER` that
//! names the parameter and says why, never with the value: main returns it, Lambda records an
//! init error (the request that started the process gets a 502), and the next request starts a
//! process that tries again. A process that carried on without its key would answer every
//! message from templates without saying why.

use std::time::Duration;

use aws_sdk_ssm::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::types::ParameterType;
use salesloop::clients::aws::SdkConfig;
use salesloop::clients::llm::LlmKey;
use salesloop::edge::settings::{ConfigError, MessageSettings};

/// The longest the read may take, retries included: well inside Lambda's 10 s for an init.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// The parameter whose key `settings` wait for, if any.
pub fn parameter(settings: &MessageSettings) -> Option<&str> {
    match settings.llm.as_ref().map(|llm| &llm.api_key) {
        Some(LlmKey::Parameter(name)) => Some(name),
        _ => None,
    }
}

/// Reads the key that `settings` name with the process's shared AWS configuration (the one the
/// DynamoDB client is built from), when they name one.
pub async fn read_for(settings: &MessageSettings) -> Result<Option<String>, ConfigError> {
    let Some(name) = parameter(settings) else {
        return Ok(None);
    };
    let sdk = salesloop::clients::aws::sdk_config(settings.api.store.native_roots).await;
    read(sdk, name).await.map(Some)
}

/// Puts a key [`read_for`] returned into `settings`, in place of its parameter's name.
pub fn set(settings: &mut MessageSettings, key: String) {
    if let Some(llm) = settings.llm.as_mut() {
        llm.api_key = LlmKey::Value(key);
    }
}

/// The value of the SecureString `parameter` (a name or an ARN), decrypted, with surrounding
/// whitespace removed (a value put from a file keeps its line break).
pub async fn read(sdk: &SdkConfig, parameter: &str) -> Result<String, ConfigError> {
    use aws_sdk_ssm::config::timeout::TimeoutConfig;
    let config = aws_sdk_ssm::config::Builder::from(sdk)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_attempt_timeout(Duration::from_secs(1))
                .operation_timeout(READ_TIMEOUT)
                .build(),
        )
        .build();
    let call = aws_sdk_ssm::Client::from_conf(config)
        .get_parameter()
        .name(parameter)
        .with_decryption(true)
        .send();
    // The operation timeout bounds the call; this bounds anything around it as well.
    let output = match tokio::time::timeout(READ_TIMEOUT, call).await {
        Err(_) => {
            return Err(failed(
                parameter,
                format!("no answer within {READ_TIMEOUT:?}"),
            ));
        }
        Ok(Err(error)) => return Err(failed(parameter, why(&error))),
        Ok(Ok(output)) => output,
    };
    let Some(found) = output.parameter else {
        return Err(failed(parameter, "the answer holds no parameter"));
    };
    if found.r#type() != Some(&ParameterType::SecureString) {
        let kind = found.r#type().map_or("untyped", |t| t.as_str());
        return Err(failed(
            parameter,
            format!("it is a {kind} parameter, not a SecureString (the key must be encrypted)"),
        ));
    }
    found
        .value
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .ok_or_else(|| failed(parameter, "its value is empty"))
}

/// Why a call failed, in words that can never hold the value: a service error's code and
/// message, a connection's error chain, and nothing of an answer that could not be read.
fn why<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            format!(
                "{}: {}",
                inner.code().unwrap_or("service error"),
                inner.message().unwrap_or("(no message)")
            )
        }
        SdkError::TimeoutError(_) => format!("no answer within {READ_TIMEOUT:?}"),
        SdkError::ResponseError(_) => "its answer could not be read".to_owned(),
        other => DisplayErrorContext(other).to_string(),
    }
}

fn failed(parameter: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::new(
        "LLM_API_KEY_PARAMETER",
        format!("cannot read the LLM API key from SSM parameter {parameter}: {why}"),
    )
}
