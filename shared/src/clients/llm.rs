//! Optional reply generation by an OpenAI-compatible chat-completions endpoint, configured by
//! `LLM_BASE_URL`, `LLM_API_KEY_PARAMETER` (or `LLM_API_KEY` locally), `LLM_MODEL` and
//! `LLM_TIMEOUT_MS` (see `edge::settings`). Any failure (timeout, refusal, malformed answer) is
//! an `LlmError`, and the caller falls back to the template reply.
//!
//! Certificate roots are chosen as the AWS clients' are (`clients::aws`): compiled in by default,
//! so that no cold start reads the platform's CA store. An LLM endpoint can be anyone's, so the
//! compiled-in set here is Mozilla's (`webpki-roots`) rather than the five AWS roots.
//! `SALESLOOP_NATIVE_ROOTS=1` trusts the platform store instead, loaded once per process as the
//! AWS SDK's own client caches it (`aws-smithy-http-client`'s `NATIVE_ROOTS`). Either way the
//! TLS configuration is built once per process, with ring, the AWS clients' crypto provider.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// The longest answer we read from the endpoint.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    #[error("the LLM did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the LLM request failed: {0}")]
    Transport(String),
    #[error("the LLM answered with status {0}")]
    Status(u16),
    #[error("the LLM answer is not a chat completion: {0}")]
    Malformed(String),
    /// A client cannot be built: no usable roots, a key that cannot be sent, a key not read yet.
    #[error("the LLM client cannot be built: {0}")]
    Setup(String),
}

/// The LLM's API key, or where to read it from. Its `Debug` never prints a key.
#[derive(Clone, PartialEq, Eq)]
pub enum LlmKey {
    /// No key: an endpoint that wants none (a local model server, say).
    None,
    /// The key: `LLM_API_KEY` (local runs), or the parameter's value once read.
    Value(String),
    /// `LLM_API_KEY_PARAMETER`: the SSM parameter that holds the key, read during init
    /// (process_message's `llm_key`); no client is built before it has been read.
    Parameter(String),
}

impl std::fmt::Debug for LlmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LlmKey::None => f.write_str("None"),
            LlmKey::Value(_) => f.write_str("Value(<redacted>)"),
            LlmKey::Parameter(name) => f.debug_tuple("Parameter").field(name).finish(),
        }
    }
}

#[derive(Clone)]
pub struct LlmConfig {
    pub endpoint: Uri,
    pub api_key: LlmKey,
    pub model: String,
    pub timeout: Duration,
    /// `SALESLOOP_NATIVE_ROOTS=1`: trust the platform's CA store instead of Mozilla's roots
    /// compiled in (an endpoint behind a proxy with its own CA, say).
    pub native_roots: bool,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key's Debug never prints a key.
        f.debug_struct("LlmConfig")
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key)
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("native_roots", &self.native_roots)
            .finish()
    }
}

/// The TLS configuration over `roots`, as the AWS SDK's rustls client builds its own: ring,
/// rustls' safe default protocol versions, no client certificate.
fn tls_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|builder| Arc::new(builder.with_root_certificates(roots).with_no_client_auth()))
        .map_err(|e| e.to_string())
}

/// Mozilla's roots, compiled in: nothing is read from disk.
static COMPILED_IN_ROOTS: LazyLock<Result<Arc<rustls::ClientConfig>, String>> =
    LazyLock::new(|| {
        tls_config(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
    });

/// The platform's store, read at most once per process.
static PLATFORM_ROOTS: LazyLock<Result<Arc<rustls::ClientConfig>, String>> = LazyLock::new(|| {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (valid, _) = roots.add_parsable_certificates(found.certs);
    if valid == 0 {
        return Err(format!(
            "no usable certificate in the platform's CA store ({} errors)",
            found.errors.len()
        ));
    }
    tls_config(roots)
});

/// A client built once per process.
pub struct LlmClient {
    config: LlmConfig,
    /// `Bearer <key>`, marked sensitive, when there is a key.
    authorization: Option<HeaderValue>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl LlmClient {
    /// The client for `config`. Fails when the key is still an unread parameter, or is not a
    /// valid header value (the error never holds the key), or when no roots can be had.
    pub fn new(config: LlmConfig) -> Result<LlmClient, LlmError> {
        let authorization = match &config.api_key {
            LlmKey::None => None,
            LlmKey::Value(key) => {
                let mut value = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
                    LlmError::Setup("the API key is not a valid HTTP header value".into())
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            LlmKey::Parameter(name) => {
                return Err(LlmError::Setup(format!(
                    "the API key in parameter {name} has not been read"
                )));
            }
        };
        let roots = if config.native_roots {
            &*PLATFORM_ROOTS
        } else {
            &*COMPILED_IN_ROOTS
        };
        let tls = roots.as_ref().map_err(|e| LlmError::Setup(e.clone()))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(rustls::ClientConfig::clone(tls))
            .https_or_http()
            .enable_http1()
            .build();
        Ok(LlmClient {
            config,
            authorization,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Asks for a reply to `user_text` that follows `strategy`, with the template as a guide.
    pub async fn reply(
        &self,
        user_text: &str,
        strategy: &str,
        template: &str,
    ) -> Result<String, LlmError> {
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, self.ask(user_text, strategy, template))
            .await
            .map_err(|_| LlmError::Timeout(timeout))?
    }

    async fn ask(
        &self,
        user_text: &str,
        strategy: &str,
        template: &str,
    ) -> Result<String, LlmError> {
        let body = json!({
            "model": self.config.model,
            "max_tokens": 200,
            "messages": [
                {"role": "system", "content": format!(
                    "You are a helpful B2B sales agent. Reply in at most three sentences. \
                     Strategy for this turn: {strategy}. A good reply in that spirit: {template}")},
                {"role": "user", "content": user_text},
            ],
        });
        let mut request =
            Request::post(self.config.endpoint.clone()).header("content-type", "application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header(hyper::header::AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| LlmError::Transport(with_causes(&e)))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(LlmError::Status(status));
        }
        let limited = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES);
        let bytes = limited
            .collect()
            .await
            .map_err(|e| LlmError::Transport(e.to_string()))?
            .to_bytes();
        let answer: Value =
            serde_json::from_slice(&bytes).map_err(|e| LlmError::Malformed(e.to_string()))?;
        let text = answer["choices"][0]["message"]["content"]
            .as_str()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| LlmError::Malformed("no choices[0].message.content".into()))?;
        Ok(text.chars().take(2_000).collect())
    }
}

/// An error with its causes: hyper's own says only `client error (Connect)`, its cause says
/// why (`invalid peer certificate: UnknownIssuer`: an endpoint behind a proxy with its own CA,
/// which `SALESLOOP_NATIVE_ROOTS=1` trusts).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(api_key: LlmKey) -> LlmConfig {
        LlmConfig {
            endpoint: "https://llm.example.com/v1/chat/completions"
                .parse()
                .unwrap(),
            api_key,
            model: "m".into(),
            timeout: Duration::from_secs(1),
            native_roots: false,
        }
    }

    #[test]
    fn the_key_never_prints() {
        let printed = format!("{:?}", config(LlmKey::Value("sk-very-secret".into())));
        assert!(!printed.contains("sk-very-secret"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
        let named = format!("{:?}", config(LlmKey::Parameter("/salesloop/llm".into())));
        assert!(named.contains("/salesloop/llm"), "{named}");
    }

    #[test]
    fn no_client_before_the_parameter_is_read_or_with_a_key_that_cannot_be_sent() {
        let unread = LlmClient::new(config(LlmKey::Parameter("/salesloop/llm".into())));
        assert!(
            matches!(&unread, Err(LlmError::Setup(why)) if why.contains("/salesloop/llm")),
            "{:?}",
            unread.err()
        );
        let bad = LlmClient::new(config(LlmKey::Value("sk-line\nbreak".into())));
        let why = bad.err().expect("refused").to_string();
        assert!(!why.contains("sk-line"), "{why}");
    }

    #[test]
    fn a_client_trusts_the_compiled_in_roots_and_sends_its_key_as_a_sensitive_header() {
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
        assert!(
            COMPILED_IN_ROOTS.is_ok(),
            "{:?}",
            COMPILED_IN_ROOTS.as_ref().err()
        );
        let client = LlmClient::new(config(LlmKey::Value("sk".into()))).unwrap();
        assert!(client.authorization.as_ref().unwrap().is_sensitive());
        assert!(
            LlmClient::new(config(LlmKey::None))
                .unwrap()
                .authorization
                .is_none()
        );
    }
}
