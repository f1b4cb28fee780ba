//! What the benchmarks share: the corpora, and process_message run on a store that keeps
//! nothing, so that its own work (parsing, detection, decision, reply) is measured alone.

pub mod counting;
pub mod nostore;
pub mod replaced;
pub mod runtime_api;

use std::path::PathBuf;

/// The workspace's top folder.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A named set of user messages.
pub struct Corpus {
    pub name: &'static str,
    pub texts: Vec<String>,
}

impl Corpus {
    pub fn bytes(&self) -> usize {
        self.texts.iter().map(String::len).sum()
    }
}

fn lines(files: &[&str]) -> Vec<String> {
    let mut texts = Vec::new();
    for file in files {
        let path = root().join(file);
        let raw = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        for line in raw.lines().filter(|l| !l.trim().is_empty()) {
            let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let text = value.get("text").unwrap_or(&value);
            texts.push(text.as_str().expect("a text").to_owned());
        }
    }
    texts
}

/// The CaSiNo negotiation utterances (CC BY 4.0, see benches/data/casino/README.md) and the
/// project's labelled sales utterances.
pub fn corpora() -> Vec<Corpus> {
    vec![
        Corpus {
            name: "casino",
            texts: lines(&["benches/data/casino/utterances.jsonl"]),
        },
        Corpus {
            name: "sales",
            texts: lines(&[
                "tests/fixtures/patterns/labelled.jsonl",
                "tests/fixtures/patterns/heldout.jsonl",
            ]),
        },
    ]
}

/// The raw API Gateway HTTP API events (payload 2.0) of these messages, as the Lambda service
/// hands them to a function: message `i` is `m-<i>` in conversation `c-<i>` of tenant `acme`.
pub fn message_events(texts: &[String]) -> Vec<String> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let body = serde_json::json!({"message_id": format!("m-{i}"), "text": text});
            http_api_event(&format!("/conversations/c-{i}/messages"), &body.to_string())
        })
        .collect()
}

/// An API Gateway HTTP API event (payload 2.0, JWT claim `tenant_id: acme`) for `POST path`
/// with `body`.
pub fn http_api_event(path: &str, body: &str) -> String {
    static FIXTURE: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    let fixture = FIXTURE.get_or_init(|| {
        let path =
            root().join("tests/fixtures/aws-events/example-apigw-v2-request-jwt-authorizer.json");
        let raw = std::fs::read_to_string(&path).expect("the HTTP API fixture");
        serde_json::from_str(&raw).expect("fixture is JSON")
    });
    let mut event = fixture.clone();
    event["rawPath"] = serde_json::json!(path);
    event["rawQueryString"] = serde_json::json!("");
    event["queryStringParameters"] = serde_json::json!({});
    event["requestContext"]["http"]["path"] = serde_json::json!(path);
    event["requestContext"]["http"]["method"] = serde_json::json!("POST");
    event["requestContext"]["authorizer"]["jwt"]["claims"] =
        serde_json::json!({"sub": "user-1", "tenant_id": "acme"});
    event["body"] = serde_json::json!(body);
    event["isBase64Encoded"] = serde_json::json!(false);
    event.to_string()
}

/// The expanded-phrase automaton that word-level detection replaced, built as the replaced code
/// built it (see `replaced`), from the built-in catalog: 58,271 phrases. Panics if its phrases
/// are not the ones `salesloop::domain::patterns::expanded_phrases` lists for the same catalog, i.e. if
/// the baseline no longer stands for the catalog detection runs.
pub fn replaced_catalog() -> replaced::Replaced {
    let replaced = replaced::compile(salesloop::domain::patterns::DEFAULT_CATALOG)
        .expect("the built-in catalog");
    let current =
        salesloop::domain::patterns::expanded_phrases(salesloop::domain::patterns::DEFAULT_CATALOG)
            .expect("the built-in catalog");
    assert!(
        replaced.named_phrases() == current,
        "the replaced expansion ({} phrases) differs from expanded_phrases ({} phrases)",
        replaced.phrases.len(),
        current.len()
    );
    replaced
}

/// process_message's whole own work on one Lambda event: the event parsed into a request, the
/// handler (detection, decision, reply) over the store that keeps nothing, the answer's status.
pub async fn process_event(
    app: &process_message::handler::App<nostore::NoStore>,
    event: &str,
) -> u16 {
    // As the deployed function reads its events (`salesloop::edge::http::ApiEvent`, then
    // `http_api_request` for an HTTP API event, as `serve` does).
    let request = salesloop::edge::http::request_from_event(event).expect("an API Gateway event");
    process_message::handler::handle(app, request)
        .await
        .status()
        .as_u16()
}
