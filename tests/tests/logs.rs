//! The functions' logs as Lambda's JSON log format produces them (`AWS_LAMBDA_LOG_FORMAT=JSON`,
//! `AWS_LAMBDA_LOG_LEVEL`, read by the same subscriber the functions install): every line a
//! request writes carries its request ids, tenant and conversation, and no line carries the
//! user's message text.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lambda_http::Body;
use salesloop::domain::engine::Engine;
use salesloop::edge::http::TenantSource;
use salesloop::service::{ConfigCache, ModelCache};
use salesloop_tests::events::{Flavor, request};
use serde_json::Value;

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn json_logs_name_the_request_tenant_and_conversation_and_never_the_text() {
    // SAFETY: set before any other thread of this test binary exists.
    unsafe {
        std::env::set_var("AWS_LAMBDA_LOG_FORMAT", "JSON");
        std::env::set_var("AWS_LAMBDA_LOG_LEVEL", "info");
    }
    let buffer = Capture(Arc::new(Mutex::new(Vec::new())));
    let writer = buffer.clone();
    lambda_http::tracing::init_default_subscriber_with_writer(move || writer.clone());

    let dir = tempfile::tempdir().unwrap();
    let tenants = TenantSource {
        claim: "tenant_id".into(),
        local: false,
    };
    let messages = process_message::handler::App {
        store: salesloop::EmbeddedStore::open_dir(dir.path()).unwrap(),
        engine: Engine::builtin(),
        models: ModelCache::new(Duration::from_secs(30)),
        configs: ConfigCache::new(Duration::from_secs(30)),
        tenants: tenants.clone(),
        llm: None,
        text_storage: Default::default(),
        unrecorded: Default::default(),
        record_budget: salesloop_tests::RECORD_BUDGET_UNDER_TEST,
        spool: None,
        last_resort: Default::default(),
    };
    let ends = end_conversation::handler::App {
        store: salesloop::EmbeddedStore::open_dir(dir.path()).unwrap(),
        models: ModelCache::new(Duration::from_secs(30)),
        tenants,
        patterns: end_conversation::handler::pattern_names(
            salesloop::domain::patterns::DEFAULT_CATALOG,
        )
        .unwrap(),
        feedback_every: 100,
        trigger: None,
        text_storage: Default::default(),
    };
    let secret = "our CFO Jane Doe says it is too expensive";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let body = serde_json::json!({"message_id": "m-1", "text": secret}).to_string();
        let path = "/conversations/c-log/messages";
        let response = process_message::handler::handle(
            &messages,
            request(Flavor::HttpApi, "POST", path, &body, Some("acme"), &[]),
        )
        .await;
        assert_eq!(response.status(), 200);
        let reused = serde_json::json!({"message_id": "m-1", "text": "other"}).to_string();
        let response = process_message::handler::handle(
            &messages,
            request(Flavor::HttpApi, "POST", path, &reused, Some("acme"), &[]),
        )
        .await;
        assert_eq!(response.status(), 409);
        let response = end_conversation::handler::handle(
            &ends,
            request(
                Flavor::HttpApi,
                "POST",
                "/conversations/c-log/end",
                r#"{"outcome":"won"}"#,
                Some("acme"),
                &[],
            ),
        )
        .await;
        assert_eq!(
            response.status(),
            200,
            "{:?}",
            match response.body() {
                Body::Text(t) => t.clone(),
                _ => String::new(),
            }
        );
    });

    let raw = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    assert!(messages.contains(&"message answered"), "{raw}");
    assert!(messages.contains(&"conversation ended"), "{raw}");
    for line in &lines {
        let span = &line["span"];
        assert_eq!(span["name"], "request", "{line}");
        assert_eq!(span["tenant"], "acme", "{line}");
        assert_eq!(span["conversation"], "c-log", "{line}");
        assert!(
            span["api_request_id"].as_str().is_some_and(|id| id != "-"),
            "{line}"
        );
        assert!(span.get("request_id").is_some(), "{line}");
    }
    for word in ["Jane", "CFO", "expensive"] {
        assert!(
            !raw.contains(word),
            "the message text leaked into the logs: {raw}"
        );
    }
}
