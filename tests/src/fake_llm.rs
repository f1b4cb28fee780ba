//! A stand-in for an OpenAI-compatible LLM endpoint on a free local port: it answers
//! `POST /v1/chat/completions` as told and keeps every request it received, so tests can see
//! what the LLM client sent (the key in `authorization`, the model, the prompt).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

/// How the fake chat-completions server answers.
#[derive(Clone, Copy)]
pub enum LlmMode {
    Answer,
    Slow,
    Fail,
    Garbage,
}

/// A local OpenAI-compatible endpoint: answers `POST /v1/chat/completions` as told, and keeps
/// every request it received.
pub async fn fake_llm(mode: LlmMode) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head, then as many body bytes as content-length says.
                loop {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break;
                        }
                    }
                }
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&raw).to_string());
                let (status, body) = match mode {
                    LlmMode::Answer => (
                        "200 OK",
                        json!({"choices": [{"message": {"role": "assistant", "content": "  Written by the model.  "}}]}).to_string(),
                    ),
                    LlmMode::Slow => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        ("200 OK", json!({"choices": [{"message": {"content": "too late"}}]}).to_string())
                    }
                    LlmMode::Fail => ("500 Internal Server Error", "{}".to_owned()),
                    LlmMode::Garbage => ("200 OK", "<html>not json</html>".to_owned()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (format!("http://{address}/v1"), seen)
}
