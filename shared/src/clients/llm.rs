//! Optional reply generation by an OpenAI-compatible chat-completions endpoint, configured by
//! `LLM_BASE_URL`, `LLM_API_KEY`, `LLM_MODEL` and `LLM_TIMEOUT_MS` (see `edge::settings`). Any failure (timeout,
//! refusal, malformed answer) is an `LlmError`, and the caller falls back to the template reply.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
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
}

#[derive(Clone)]
pub struct LlmConfig {
    pub endpoint: Uri,
    pub api_key: Option<String>,
    pub model: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("LlmConfig")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A client built once per process.
pub struct LlmClient {
    config: LlmConfig,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl LlmClient {
    pub fn new(config: LlmConfig) -> Result<LlmClient, LlmError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| LlmError::Transport(format!("no TLS roots: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(LlmClient {
            config,
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
        if let Some(key) = &self.config.api_key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| LlmError::Transport(e.to_string()))?;
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
