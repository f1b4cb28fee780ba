//! Start-up configuration from environment variables. A malformed value stops the function at
//! start-up with a message that names the variable, rather than surfacing on some request later.

use std::path::PathBuf;
use std::time::Duration;

use crate::store::{AnyStore, DynamoStore, DynamoStoreConfig, EmbeddedStore, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(variable: &'static str, message: impl Into<String>) -> Self {
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
    },
    Embedded {
        dir: PathBuf,
    },
}

/// Reads a variable, treating an empty value as unset.
fn get(env: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|value| !value.is_empty())
}

/// The AWS SDK's shared configuration (region, credentials, endpoint overrides), loaded from
/// the environment once per process, however many clients are built from it.
pub async fn aws_sdk_config() -> &'static aws_config::SdkConfig {
    static CONFIG: tokio::sync::OnceCell<aws_config::SdkConfig> =
        tokio::sync::OnceCell::const_new();
    CONFIG
        .get_or_init(|| async {
            let native = std::env::var("SALESLOOP_NATIVE_ROOTS").is_ok_and(|v| v == "1");
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .http_client(https_client(native))
                .load()
                .await
        })
        .await
}

/// The roots every AWS service endpoint chains to (Amazon Trust Services), compiled in.
pub const AWS_ROOTS: &str = include_str!("../certs/aws-roots.pem");

/// The SDK's HTTPS client, trusting the AWS roots only, unless `native` asks for the
/// platform's store (a proxy with its own CA, say). The SDK's default loads the platform store
/// at start-up: on Debian that is 146 certificates read twice (the bundle and the folder),
/// 10 to 15 ms of every cold start for roots no AWS endpoint uses.
pub fn https_client(native: bool) -> aws_sdk_dynamodb::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
    let trust = if native {
        TrustStore::default()
    } else {
        TrustStore::empty().with_pem_certificate(AWS_ROOTS.as_bytes())
    };
    let context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .unwrap_or_else(|e| panic!("TLS context: {e}"));
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https()
}

/// A whole number from `name`, `default` when unset, refused outside `min..=max`.
pub fn number(
    env: &impl Fn(&str) -> Option<String>,
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
pub fn local_mode(env: &impl Fn(&str) -> Option<String>) -> Result<bool, ConfigError> {
    match get(env, "SALESLOOP_LOCAL").as_deref() {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(_) => Err(ConfigError::new("SALESLOOP_LOCAL", "must be 1 or 0")),
    }
}

/// `SALESLOOP_WARM_UP=0` skips opening the DynamoDB connection during init (on by default: the
/// first request then pays no handshake; see `DynamoStore::warm_up`).
pub fn warm_up(env: &impl Fn(&str) -> Option<String>) -> Result<bool, ConfigError> {
    match get(env, "SALESLOOP_WARM_UP").as_deref() {
        None | Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(_) => Err(ConfigError::new("SALESLOOP_WARM_UP", "must be 1 or 0")),
    }
}

impl StoreChoice {
    /// `TABLE_NAME` set means DynamoDB; unset means the embedded store in `SALESLOOP_DATA_DIR`,
    /// which is refused on Lambda: there a missing table is a deployment mistake.
    pub fn from_env(env: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
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
            return Ok(StoreChoice::Dynamo { table, retention });
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
    pub async fn open(self) -> Result<AnyStore, StoreError> {
        match self {
            StoreChoice::Dynamo { table, retention } => Ok(AnyStore::Dynamo(
                DynamoStore::from_env(DynamoStoreConfig { table, retention }).await,
            )),
            StoreChoice::Embedded { dir } => Ok(AnyStore::Embedded(EmbeddedStore::open_dir(&dir)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_roots_are_the_five_aws_roots() {
        use rustls_pki_types::pem::PemObject;
        let ders: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(AWS_ROOTS.as_bytes())
            .collect::<Result<_, _>>()
            .expect("valid PEM");
        assert_eq!(ders.len(), 5);
        // Building the client parses them (it panics on a bad certificate).
        let _ = https_client(false);
    }
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
                retention: None
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
}
