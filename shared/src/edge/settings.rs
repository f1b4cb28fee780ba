//! Each function's settings, read from the environment once at start-up into typed structs:
//! nothing else in the workspace reads an environment variable. An empty value counts as unset.
//! A malformed value stops the function at start-up with a message that names the variable,
//! rather than surfacing on some request later.

use std::path::PathBuf;
use std::time::Duration;

use crate::clients::llm::{LlmConfig, LlmKey};
use crate::domain::patterns::DEFAULT_THRESHOLD;
use crate::domain::privacy::TextStorage;
use crate::edge::admin::{AdminSource, DEFAULT_ADMIN_SCOPE};
use crate::edge::http::TenantSource;
#[cfg(feature = "embedded")]
use crate::store::EmbeddedStore;
use crate::store::{AnyStore, DynamoStore, DynamoStoreConfig, StoreError};

/// Reads one variable; the functions pass `|name| std::env::var(name).ok()`, tests a map.
pub trait Env: Fn(&str) -> Option<String> {}
impl<F: Fn(&str) -> Option<String>> Env for F {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(variable: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            variable,
            message: message.into(),
        }
    }
}

/// Which store a process runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    Dynamo {
        table: String,
        retention: Option<Duration>,
        /// `END_SHARDS` (default 1): see `DynamoStoreConfig::end_shards`.
        end_shards: u32,
    },
    Embedded {
        dir: PathBuf,
    },
}

/// Reads a variable, treating an empty value as unset.
fn get(env: &impl Env, name: &str) -> Option<String> {
    env(name).filter(|value| !value.is_empty())
}

/// A whole number from `name`, `default` when unset, refused outside `min..=max`.
fn number(
    env: &impl Env,
    name: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match get(env, name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                ConfigError::new(name, format!("must be a whole number from {min} to {max}"))
            }),
    }
}

/// `SALESLOOP_LOCAL=1` turns on local-only conveniences; anything but `1`, `0` or unset is an
/// error, so a typo cannot switch them on or off silently.
pub fn local_mode(env: &impl Env) -> Result<bool, ConfigError> {
    flag(env, "SALESLOOP_LOCAL", false)
}

/// `SALESLOOP_WARM_UP=0` skips opening the DynamoDB connection during init (on by default: the
/// first request then pays no handshake; see `DynamoStore::warm_up`).
fn warm_up(env: &impl Env) -> Result<bool, ConfigError> {
    flag(env, "SALESLOOP_WARM_UP", true)
}

impl StoreChoice {
    /// `TABLE_NAME` set means DynamoDB; unset means the embedded store in `SALESLOOP_DATA_DIR`,
    /// which is refused on Lambda: there a missing table is a deployment mistake.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        // Under a local emulator (cargo lambda watch) the Lambda variables are set too.
        let local = local_mode(env)?;
        let on_lambda = get(env, "AWS_LAMBDA_FUNCTION_NAME").is_some() && !local;
        let retention = match get(env, "SALESLOOP_RETENTION_DAYS") {
            None => None,
            Some(raw) => match raw.parse::<u64>() {
                Ok(days) if (1..=36_500).contains(&days) => {
                    Some(Duration::from_secs(days * 24 * 3600))
                }
                _ => {
                    return Err(ConfigError::new(
                        "SALESLOOP_RETENTION_DAYS",
                        "must be a whole number of days from 1 to 36500",
                    ));
                }
            },
        };
        if let Some(table) = get(env, "TABLE_NAME") {
            let valid = (3..=255).contains(&table.len())
                && table
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !valid {
                return Err(ConfigError::new(
                    "TABLE_NAME",
                    "must be 3 to 255 characters of A-Z a-z 0-9 _ - .",
                ));
            }
            let end_shards = number(
                env,
                "END_SHARDS",
                1,
                1,
                u64::from(crate::store::MAX_END_SHARDS),
            )? as u32;
            return Ok(StoreChoice::Dynamo {
                table,
                retention,
                end_shards,
            });
        }
        if on_lambda {
            return Err(ConfigError::new(
                "TABLE_NAME",
                "is required on AWS Lambda (the embedded store is for local runs only)",
            ));
        }
        let dir = get(env, "SALESLOOP_DATA_DIR").unwrap_or_else(|| ".salesloop".to_owned());
        Ok(StoreChoice::Embedded {
            dir: PathBuf::from(dir),
        })
    }

    /// Opens the chosen store; DynamoDB clients are built here, once per process.
    pub async fn open(self, native_roots: bool) -> Result<AnyStore, StoreError> {
        match self {
            StoreChoice::Dynamo {
                table,
                retention,
                end_shards,
            } => {
                let sdk = crate::clients::aws::sdk_config(native_roots).await;
                Ok(AnyStore::Dynamo(DynamoStore::with_sdk_config(
                    sdk,
                    DynamoStoreConfig {
                        table,
                        retention,
                        end_shards,
                    },
                )))
            }
            #[cfg(feature = "embedded")]
            StoreChoice::Embedded { dir } => Ok(AnyStore::Embedded(EmbeddedStore::open_dir(&dir)?)),
            #[cfg(not(feature = "embedded"))]
            StoreChoice::Embedded { .. } => Err(StoreError::Unavailable(
                "TABLE_NAME is not set, and this build has no embedded store (it is built \
                 without the `embedded` feature, as for Lambda)"
                    .into(),
            )),
        }
    }
}

/// Where a function keeps its data, and how it connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    pub choice: StoreChoice,
    /// `SALESLOOP_WARM_UP` (default 1): open the DynamoDB connection during init.
    pub warm_up: bool,
    /// `SALESLOOP_NATIVE_ROOTS=1`: trust the platform's certificate store instead of the AWS
    /// roots compiled in (a proxy with its own CA, say).
    pub native_roots: bool,
}

impl StoreSettings {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        Ok(StoreSettings {
            choice: StoreChoice::from_env(env)?,
            warm_up: warm_up(env)?,
            native_roots: flag(env, "SALESLOOP_NATIVE_ROOTS", false)?,
        })
    }

    /// Opens the store and, when set to, its connection.
    pub async fn open(&self) -> Result<AnyStore, StoreError> {
        let store = self.choice.clone().open(self.native_roots).await?;
        if self.warm_up {
            store.warm_up().await;
        }
        Ok(store)
    }
}

/// What both API functions read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    pub store: StoreSettings,
    /// `TENANT_CLAIM` (default `tenant_id`), and `SALESLOOP_LOCAL=1` for `x-tenant-id`.
    pub tenants: TenantSource,
    /// `ADMIN_SCOPE` (default `salesloop/admin`), and `SALESLOOP_LOCAL=1` for
    /// `x-salesloop-role: admin`.
    pub admin: AdminSource,
    /// `CACHE_SECONDS` (default 30, 0 to 3600): how stale a tenant's current model and
    /// configuration may be when a conversation starts or ends (one read per tenant per
    /// period).
    pub cache_age: Duration,
    /// `CACHE_BUDGET_KB` (default 2048, 64 to 1,048,576): the bytes each per-tenant cache (the
    /// models, the configurations) may hold, least recently used tenant evicted first.
    pub cache_bytes: usize,
}

impl ApiSettings {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let local = local_mode(env)?;
        let scope = get(env, "ADMIN_SCOPE").unwrap_or_else(|| DEFAULT_ADMIN_SCOPE.to_owned());
        if scope.is_empty() || scope.len() > 256 || scope.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                "ADMIN_SCOPE",
                "must be one OAuth scope: no spaces, at most 256 characters",
            ));
        }
        Ok(ApiSettings {
            store: StoreSettings::from_env(env)?,
            tenants: TenantSource {
                claim: get(env, "TENANT_CLAIM").unwrap_or_else(|| "tenant_id".to_owned()),
                local,
            },
            admin: AdminSource { scope, local },
            cache_age: Duration::from_secs(number(env, "CACHE_SECONDS", 30, 0, 3_600)?),
            cache_bytes: number(
                env,
                "CACHE_BUDGET_KB",
                (crate::service::models::DEFAULT_CACHE_BYTES / 1024) as u64,
                64,
                1_048_576,
            )? as usize
                * 1024,
        })
    }
}

/// process_message's settings.
#[derive(Debug, Clone)]
pub struct MessageSettings {
    pub api: ApiSettings,
    /// `PATTERN_THRESHOLD` (default 0.7): the detection threshold outside experiments.
    pub threshold: f64,
    /// `PATTERN_CATALOG`: the JSON of a catalog file that replaces the built-in one.
    pub catalog: Option<String>,
    /// `PATTERN_DETECTOR`: a detector weights file (`make train-detector` writes one) that
    /// replaces the built-in weights.
    pub detector: Option<Vec<u8>>,
    /// `LLM_BASE_URL` and its companions; `None`: replies come from templates.
    pub llm: Option<LlmConfig>,
    /// `SALESLOOP_MESSAGE_TEXT` (`text` or `hash`).
    pub text_storage: TextStorage,
    /// `SPOOL_QUEUE_URL`: the SQS FIFO queue an exchange the store could not record goes to;
    /// without it such an exchange is written to the log (docs/spool.md).
    pub spool_queue: Option<String>,
    /// `RECORD_BUDGET_MS` (default 1000, 50 to 8000): how long the store may take to record an
    /// exchange (an LLM call's time not counted) before the message is answered without it.
    pub record_budget: Duration,
}

impl MessageSettings {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let threshold = match get(env, "PATTERN_THRESHOLD") {
            None => DEFAULT_THRESHOLD,
            Some(raw) => raw
                .parse::<f64>()
                .ok()
                .filter(|t| (0.0..=1.0).contains(t))
                .ok_or_else(|| {
                    ConfigError::new("PATTERN_THRESHOLD", "must be a number from 0 to 1")
                })?,
        };
        Ok(MessageSettings {
            api: ApiSettings::from_env(env)?,
            threshold,
            catalog: catalog(env)?,
            detector: detector_file(env)?,
            llm: llm(env)?,
            text_storage: text_storage(env)?,
            spool_queue: get(env, "SPOOL_QUEUE_URL"),
            record_budget: Duration::from_millis(number(
                env,
                "RECORD_BUDGET_MS",
                DEFAULT_RECORD_BUDGET_MS,
                50,
                8_000,
            )?),
        })
    }
}

/// The default `RECORD_BUDGET_MS`: with the spool's own 1 s at most, a message whose store
/// hangs is answered in about 1 s, inside the function's timeout.
pub const DEFAULT_RECORD_BUDGET_MS: u64 = 1_000;

/// end_conversation's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndSettings {
    pub api: ApiSettings,
    /// `FEEDBACK_EVERY` (default 100): ended conversations between triggered feedback runs;
    /// 0 turns the trigger off.
    pub feedback_every: u64,
    /// `FEEDBACK_FUNCTION` (default `feedback_loop`): the function the trigger invokes.
    pub feedback_function: String,
    /// `AWS_ENDPOINT_URL_LAMBDA`: where a local run's trigger reaches feedback_loop.
    pub lambda_endpoint: Option<String>,
    /// `PATTERN_CATALOG`, as for process_message: the pattern names a label may use.
    pub catalog: Option<String>,
    /// `SALESLOOP_MESSAGE_TEXT`, as for process_message: whether a label keeps its turn's text.
    pub text_storage: TextStorage,
}

impl EndSettings {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        Ok(EndSettings {
            api: ApiSettings::from_env(env)?,
            feedback_every: number(env, "FEEDBACK_EVERY", 100, 0, 1_000_000_000)?,
            feedback_function: get(env, "FEEDBACK_FUNCTION")
                .unwrap_or_else(|| "feedback_loop".to_owned()),
            lambda_endpoint: get(env, "AWS_ENDPOINT_URL_LAMBDA"),
            catalog: catalog(env)?,
            text_storage: text_storage(env)?,
        })
    }
}

/// `SALESLOOP_MESSAGE_TEXT`: `text` (the default) or `hash`.
fn text_storage(env: &impl Env) -> Result<TextStorage, ConfigError> {
    match get(env, "SALESLOOP_MESSAGE_TEXT").as_deref() {
        None | Some("text") => Ok(TextStorage::Text),
        Some("hash") => Ok(TextStorage::Hash),
        Some(_) => Err(ConfigError::new(
            "SALESLOOP_MESSAGE_TEXT",
            "must be text or hash",
        )),
    }
}

/// feedback_loop's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackSettings {
    pub store: StoreSettings,
    /// `FEEDBACK_SETTLE_SECONDS` (default 30): outcomes younger than this wait for the next run.
    pub settle_seconds: u64,
    /// `FEEDBACK_BATCH_SIZE` (default 10,000): outcomes learned into one model version.
    pub batch_size: u64,
    /// `PATTERN_DETECTOR`: the detector weights process_message runs, when not the built-in
    /// ones: tenants' detector layers are learned over them.
    pub detector: Option<Vec<u8>>,
    /// The function the scheduled invocation invokes once per pending tenant (itself:
    /// `AWS_LAMBDA_FUNCTION_NAME`), when `FEEDBACK_FAN_OUT` is `invoke`, its default on Lambda;
    /// none (`in_process`, the default elsewhere): the scheduled invocation runs them itself.
    pub fan_out_function: Option<String>,
}

impl FeedbackSettings {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let function = get(env, "AWS_LAMBDA_FUNCTION_NAME");
        let on_lambda = function.is_some() && !local_mode(env)?;
        let fan_out_function = match get(env, "FEEDBACK_FAN_OUT").as_deref() {
            None if on_lambda => function,
            None | Some("in_process") => None,
            Some("invoke") => Some(function.ok_or_else(|| {
                ConfigError::new(
                    "FEEDBACK_FAN_OUT",
                    "is invoke, which needs AWS_LAMBDA_FUNCTION_NAME (the function to invoke)",
                )
            })?),
            Some(_) => {
                return Err(ConfigError::new(
                    "FEEDBACK_FAN_OUT",
                    "must be invoke or in_process",
                ));
            }
        };
        Ok(FeedbackSettings {
            store: StoreSettings::from_env(env)?,
            settle_seconds: number(env, "FEEDBACK_SETTLE_SECONDS", 30, 0, 3_600)?,
            batch_size: number(env, "FEEDBACK_BATCH_SIZE", 10_000, 1, 1_000_000)?,
            detector: detector_file(env)?,
            fan_out_function,
        })
    }
}

/// `PATTERN_DETECTOR`: the detector weights file's bytes, read at start-up.
fn detector_file(env: &impl Env) -> Result<Option<Vec<u8>>, ConfigError> {
    get(env, "PATTERN_DETECTOR")
        .map(|path| {
            std::fs::read(&path).map_err(|e| {
                ConfigError::new("PATTERN_DETECTOR", format!("cannot read {path}: {e}"))
            })
        })
        .transpose()
}

/// `PATTERN_CATALOG`: the catalog file's text, read at start-up.
fn catalog(env: &impl Env) -> Result<Option<String>, ConfigError> {
    get(env, "PATTERN_CATALOG")
        .map(|path| {
            std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new("PATTERN_CATALOG", format!("cannot read {path}: {e}"))
            })
        })
        .transpose()
}

/// `LLM_BASE_URL`, the key (`llm_key`), `LLM_MODEL` (default gpt-4o-mini), `LLM_TIMEOUT_MS`
/// (default 2000) and `SALESLOOP_NATIVE_ROOTS`. Without `LLM_BASE_URL` replies come from
/// templates and none of its companions is read (the template passes them all, empty or not).
fn llm(env: &impl Env) -> Result<Option<LlmConfig>, ConfigError> {
    let Some(base) = get(env, "LLM_BASE_URL") else {
        return Ok(None);
    };
    let endpoint = format!("{}/chat/completions", base.trim_end_matches('/'))
        .parse::<hyper::Uri>()
        .ok()
        .filter(|uri| matches!(uri.scheme_str(), Some("http" | "https")))
        .ok_or_else(|| ConfigError::new("LLM_BASE_URL", "must be an http or https URL"))?;
    let timeout_ms = number(env, "LLM_TIMEOUT_MS", 2_000, 1, 60_000)?;
    Ok(Some(LlmConfig {
        endpoint,
        api_key: llm_key(env)?,
        model: get(env, "LLM_MODEL").unwrap_or_else(|| "gpt-4o-mini".to_owned()),
        timeout: Duration::from_millis(timeout_ms),
        native_roots: flag(env, "SALESLOOP_NATIVE_ROOTS", false)?,
    }))
}

/// Where the LLM's API key comes from. Deployed: `LLM_API_KEY_PARAMETER`, the name (such as
/// `/salesloop/llm-api-key`) or ARN of an SSM Parameter Store SecureString, which
/// process_message reads during init (`process_message::llm_key`), so the key is never in the
/// function's configuration. Locally: `LLM_API_KEY`, the key itself, which is refused on Lambda
/// (outside `SALESLOOP_LOCAL=1`). Both at once is refused rather than one silently preferred:
/// a key left in the environment beside the parameter is the mistake this setting exists to
/// end. Neither: no key is sent (a local model server).
fn llm_key(env: &impl Env) -> Result<LlmKey, ConfigError> {
    match (get(env, "LLM_API_KEY_PARAMETER"), get(env, "LLM_API_KEY")) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            "LLM_API_KEY_PARAMETER",
            "and LLM_API_KEY are both set: set only the parameter (LLM_API_KEY is for local runs)",
        )),
        (Some(name), None) if is_parameter_name(&name) => Ok(LlmKey::Parameter(name)),
        (Some(_), None) => Err(ConfigError::new(
            "LLM_API_KEY_PARAMETER",
            "must be an SSM parameter name of A-Z a-z 0-9 _ . - / (such as \
             /salesloop/llm-api-key), or the parameter's ARN",
        )),
        (None, Some(key)) => {
            let on_lambda = get(env, "AWS_LAMBDA_FUNCTION_NAME").is_some() && !local_mode(env)?;
            if on_lambda {
                return Err(ConfigError::new(
                    "LLM_API_KEY",
                    "is for local runs only: on AWS Lambda set LLM_API_KEY_PARAMETER, the SSM \
                     parameter that holds the key",
                ));
            }
            Ok(LlmKey::Value(key))
        }
        (None, None) => Ok(LlmKey::None),
    }
}

/// An SSM parameter name (at most 2048 characters of A-Z a-z 0-9 `_ . - /`), or a parameter's
/// ARN (`arn:<partition>:ssm:<region>:<account>:parameter/<name>`).
fn is_parameter_name(raw: &str) -> bool {
    let name = match raw.strip_prefix("arn:") {
        Some(arn) => {
            let fields: Vec<&str> = arn.splitn(5, ':').collect();
            match fields.as_slice() {
                [partition, "ssm", region, account, resource]
                    if !partition.is_empty() && !region.is_empty() && !account.is_empty() =>
                {
                    match resource.strip_prefix("parameter/") {
                        Some(name) if !name.is_empty() => name,
                        _ => return false,
                    }
                }
                _ => return false,
            }
        }
        None => raw,
    };
    !name.is_empty()
        && raw.len() <= 2048
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'))
}

/// A 1/0 switch; anything else is an error, so a typo cannot flip it silently.
fn flag(env: &impl Env, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match get(env, name).as_deref() {
        None => Ok(default),
        Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(_) => Err(ConfigError::new(name, "must be 1 or 0")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn table_name_selects_dynamodb() {
        let choice = StoreChoice::from_env(&env(&[("TABLE_NAME", "salesloop-events")])).unwrap();
        assert_eq!(
            choice,
            StoreChoice::Dynamo {
                table: "salesloop-events".into(),
                retention: None,
                end_shards: 1,
            }
        );
    }

    #[test]
    fn no_table_selects_the_embedded_store_in_the_data_dir() {
        let choice = StoreChoice::from_env(&env(&[("SALESLOOP_DATA_DIR", "/tmp/x")])).unwrap();
        assert_eq!(
            choice,
            StoreChoice::Embedded {
                dir: "/tmp/x".into()
            }
        );
    }

    #[test]
    fn missing_table_on_lambda_is_a_startup_error_naming_the_variable() {
        let err = StoreChoice::from_env(&env(&[("AWS_LAMBDA_FUNCTION_NAME", "process_message")]))
            .unwrap_err();
        assert_eq!(err.variable, "TABLE_NAME");
    }

    #[test]
    fn local_emulator_may_run_without_a_table() {
        let choice = StoreChoice::from_env(&env(&[
            ("AWS_LAMBDA_FUNCTION_NAME", "process_message"),
            ("SALESLOOP_LOCAL", "1"),
        ]))
        .unwrap();
        assert!(matches!(choice, StoreChoice::Embedded { .. }));
    }

    #[test]
    fn malformed_values_name_their_variable() {
        let cases = [
            ("TABLE_NAME", "a b"),
            ("SALESLOOP_LOCAL", "yes"),
            ("SALESLOOP_RETENTION_DAYS", "-3"),
        ];
        for (variable, value) in cases {
            let err = StoreChoice::from_env(&env(&[(variable, value)])).unwrap_err();
            assert_eq!(err.variable, variable, "{variable}={value}");
        }
    }

    #[test]
    fn message_text_storage_is_text_or_hash() {
        let hashed =
            MessageSettings::from_env(&env(&[("SALESLOOP_MESSAGE_TEXT", "hash")])).unwrap();
        assert_eq!(hashed.text_storage, TextStorage::Hash);
        let err =
            MessageSettings::from_env(&env(&[("SALESLOOP_MESSAGE_TEXT", "plain")])).unwrap_err();
        assert_eq!(err.variable, "SALESLOOP_MESSAGE_TEXT");
    }

    #[test]
    fn feedback_reads_the_detector_weights_process_message_runs() {
        let dir = std::env::temp_dir().join(format!("salesloop-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("detector.bin");
        std::fs::write(&path, b"weights").unwrap();
        let pairs = [("PATTERN_DETECTOR", path.to_str().unwrap())];
        let vars = env(&pairs);
        let feedback = FeedbackSettings::from_env(&vars).unwrap();
        let message = MessageSettings::from_env(&vars).unwrap();
        assert_eq!(feedback.detector.as_deref(), Some(&b"weights"[..]));
        assert_eq!(feedback.detector, message.detector);
        assert_eq!(
            FeedbackSettings::from_env(&env(&[])).unwrap().detector,
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_tenant_claim_means_the_default_claim_for_both_api_functions() {
        let vars = env(&[("TENANT_CLAIM", "")]);
        let message = MessageSettings::from_env(&vars).unwrap();
        let end = EndSettings::from_env(&vars).unwrap();
        assert_eq!(message.api.tenants.claim, "tenant_id");
        assert_eq!(end.api.tenants.claim, "tenant_id");
    }

    fn llm_key_of(pairs: &[(&str, &str)]) -> Result<LlmKey, ConfigError> {
        let mut all = vec![("LLM_BASE_URL", "https://llm.example.com/v1")];
        all.extend_from_slice(pairs);
        MessageSettings::from_env(&env(&all)).map(|s| s.llm.expect("an LLM").api_key)
    }

    #[test]
    fn the_llm_key_comes_from_a_parameter_deployed_and_may_be_the_key_itself_locally() {
        let name = "/salesloop/llm-api-key";
        assert_eq!(
            llm_key_of(&[("LLM_API_KEY_PARAMETER", name)]),
            Ok(LlmKey::Parameter(name.into()))
        );
        let arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/salesloop/llm-api-key";
        assert_eq!(
            llm_key_of(&[("LLM_API_KEY_PARAMETER", arn)]),
            Ok(LlmKey::Parameter(arn.into()))
        );
        assert_eq!(
            llm_key_of(&[("LLM_API_KEY", "sk-local")]),
            Ok(LlmKey::Value("sk-local".into()))
        );
        // Under the local emulator the Lambda variables are set too.
        assert_eq!(
            llm_key_of(&[
                ("LLM_API_KEY", "sk-local"),
                ("AWS_LAMBDA_FUNCTION_NAME", "process_message"),
                ("SALESLOOP_LOCAL", "1"),
            ]),
            Ok(LlmKey::Value("sk-local".into()))
        );
        // Empty counts as unset, as for every variable.
        assert_eq!(
            llm_key_of(&[("LLM_API_KEY_PARAMETER", ""), ("LLM_API_KEY", "")]),
            Ok(LlmKey::None)
        );
        assert_eq!(
            llm_key_of(&[("LLM_API_KEY_PARAMETER", ""), ("LLM_API_KEY", "sk-local")]),
            Ok(LlmKey::Value("sk-local".into()))
        );
        assert_eq!(llm_key_of(&[]), Ok(LlmKey::None));
        // Without an endpoint the key is not needed, so its parameter is never read.
        let no_llm = MessageSettings::from_env(&env(&[("LLM_API_KEY_PARAMETER", name)])).unwrap();
        assert!(no_llm.llm.is_none());
    }

    #[test]
    fn a_key_in_the_environment_is_refused_beside_a_parameter_and_on_lambda_without_printing_it() {
        let both = llm_key_of(&[
            ("LLM_API_KEY_PARAMETER", "/salesloop/llm-api-key"),
            ("LLM_API_KEY", "sk-should-not-print"),
        ])
        .unwrap_err();
        assert_eq!(both.variable, "LLM_API_KEY_PARAMETER");
        assert!(both.message.contains("LLM_API_KEY"), "{both}");
        let on_lambda = llm_key_of(&[
            ("LLM_API_KEY", "sk-should-not-print"),
            ("AWS_LAMBDA_FUNCTION_NAME", "process_message"),
            ("TABLE_NAME", "salesloop-events"),
        ])
        .unwrap_err();
        assert_eq!(on_lambda.variable, "LLM_API_KEY");
        assert!(
            on_lambda.message.contains("LLM_API_KEY_PARAMETER"),
            "{on_lambda}"
        );
        for err in [both, on_lambda] {
            assert!(!format!("{err} {err:?}").contains("sk-should-not-print"));
        }
    }

    #[test]
    fn a_malformed_parameter_name_is_refused() {
        for bad in [
            "has space",
            "/salesloop/key\n",
            "arn:aws:s3:::bucket/key",
            "arn:aws:ssm:eu-west-1:123456789012:parameter/",
            "arn:aws:ssm:eu-west-1:123456789012:document/x",
            "arn:aws:ssm::123456789012:parameter/x",
            &"a".repeat(2049),
        ] {
            let err = llm_key_of(&[("LLM_API_KEY_PARAMETER", bad)]).unwrap_err();
            assert_eq!(err.variable, "LLM_API_KEY_PARAMETER", "{bad}");
        }
    }

    #[test]
    fn the_llm_client_trusts_the_platform_store_only_when_asked() {
        let base = ("LLM_BASE_URL", "https://llm.example.com/v1");
        let llm =
            |pairs: &[(&str, &str)]| MessageSettings::from_env(&env(pairs)).unwrap().llm.unwrap();
        assert!(!llm(&[base]).native_roots);
        assert!(llm(&[base, ("SALESLOOP_NATIVE_ROOTS", "1")]).native_roots);
        assert_eq!(llm(&[base]).model, "gpt-4o-mini");
        assert_eq!(llm(&[base]).timeout, Duration::from_millis(2_000));
    }

    #[test]
    fn malformed_function_settings_name_their_variable() {
        let cases = [
            ("PATTERN_THRESHOLD", "1.5"),
            ("LLM_BASE_URL", "ftp://x"),
            ("SALESLOOP_WARM_UP", "yes"),
            ("SALESLOOP_NATIVE_ROOTS", "true"),
        ];
        for (variable, value) in cases {
            let err = MessageSettings::from_env(&env(&[(variable, value)])).unwrap_err();
            assert_eq!(err.variable, variable, "{variable}={value}");
        }
        for (variable, value) in [
            ("FEEDBACK_EVERY", "-1"),
            ("PATTERN_CATALOG", "/no/such/file"),
        ] {
            let err = EndSettings::from_env(&env(&[(variable, value)])).unwrap_err();
            assert_eq!(err.variable, variable, "{variable}={value}");
        }
        for (variable, value) in [
            ("FEEDBACK_SETTLE_SECONDS", "x"),
            ("FEEDBACK_BATCH_SIZE", "0"),
            ("PATTERN_DETECTOR", "/no/such/file"),
        ] {
            let err = FeedbackSettings::from_env(&env(&[(variable, value)])).unwrap_err();
            assert_eq!(err.variable, variable, "{variable}={value}");
        }
    }
}
