//! Requests built from the real AWS payloads in `tests/fixtures/aws-events/`: the fixture is
//! kept whole and only the fields a test is about (path, method, body, claims) are set.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use lambda_http::Request;
use serde_json::{Value, json};

use crate::workspace_root;

/// Which front door sent the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// API Gateway HTTP API, payload 2.0, with a JWT authorizer.
    HttpApi,
    /// API Gateway REST API, payload 1.0, with a Cognito-style authorizer.
    Rest,
    /// A Lambda Function URL (what `cargo lambda watch` emulates): no authorizer.
    FunctionUrl,
}

pub const FLAVORS: [Flavor; 3] = [Flavor::HttpApi, Flavor::Rest, Flavor::FunctionUrl];

/// The fixture, read once per process: the load tests build thousands of requests from it.
fn fixture(name: &str) -> Value {
    static READ: OnceLock<Mutex<HashMap<String, Value>>> = OnceLock::new();
    let mut read = READ
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    read.entry(name.to_owned())
        .or_insert_with(|| {
            let path = workspace_root()
                .join("tests/fixtures/aws-events")
                .join(name);
            let raw = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            serde_json::from_str(&raw).expect("fixture is JSON")
        })
        .clone()
}

/// The query string of `target` (`/path?a=1&b=2`) as each front door delivers it: the raw
/// text, one value a name (API Gateway HTTP API and function URLs join repeats with commas;
/// the REST API keeps the last), and every value a name (REST API only).
fn query_fields(query: &str) -> (Value, Value) {
    let mut all: serde_json::Map<String, Value> = serde_json::Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if let Some(values) = all
            .entry(decode(name))
            .or_insert_with(|| json!([]))
            .as_array_mut()
        {
            values.push(json!(decode(value)));
        }
    }
    let joined = all
        .iter()
        .map(|(name, values)| {
            let texts: Vec<&str> = values
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            (name.clone(), json!(texts.join(",")))
        })
        .collect();
    (Value::Object(joined), Value::Object(all))
}

/// Puts the query string `query` (raw, without `?`) into `event` as `flavor`'s front door does.
pub fn set_query(event: &mut Value, flavor: Flavor, query: &str) {
    let (joined, all) = query_fields(query);
    match flavor {
        Flavor::HttpApi | Flavor::FunctionUrl => {
            event["rawQueryString"] = json!(query);
            event["queryStringParameters"] = joined;
        }
        Flavor::Rest => {
            let last: serde_json::Map<String, Value> = all
                .as_object()
                .map(|all| {
                    all.iter()
                        .filter_map(|(name, values)| {
                            Some((name.clone(), values.as_array()?.last()?.clone()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if last.is_empty() {
                event["queryStringParameters"] = Value::Null;
                event["multiValueQueryStringParameters"] = Value::Null;
            } else {
                event["queryStringParameters"] = Value::Object(last);
                event["multiValueQueryStringParameters"] = all;
            }
        }
    }
}

/// Percent-decoding of a query string part (`+` is a space).
fn decode(text: &str) -> String {
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', high, low]) => hex(*high).zip(hex(*low)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, other) => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request of `flavor` for `method target` (a path, with a query string after `?` if any)
/// with `body`, carrying `tenant` as the authorizer's `tenant_id` claim when given, and extra
/// headers.
pub fn request(
    flavor: Flavor,
    method: &str,
    target: &str,
    body: &str,
    tenant: Option<&str>,
    headers: &[(&str, &str)],
) -> Request {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut event = match flavor {
        Flavor::HttpApi => {
            let mut e = fixture("example-apigw-v2-request-jwt-authorizer.json");
            e["rawPath"] = json!(path);
            e["requestContext"]["http"]["path"] = json!(path);
            e["requestContext"]["http"]["method"] = json!(method);
            e["requestContext"]["authorizer"]["jwt"]["claims"] = match tenant {
                Some(t) => json!({"sub": "user-1", "tenant_id": t}),
                None => json!({"sub": "user-1"}),
            };
            e
        }
        Flavor::Rest => {
            let mut e = fixture("example-apigw-request.json");
            e["path"] = json!(path);
            e["resource"] = json!("/conversations/{conversation_id}/{action}");
            e["httpMethod"] = json!(method);
            e["requestContext"]["path"] = json!(path);
            e["requestContext"]["httpMethod"] = json!(method);
            e["requestContext"]["authorizer"] = match tenant {
                Some(t) => json!({"claims": {"sub": "user-1", "tenant_id": t}}),
                None => json!({"principalId": "user-1"}),
            };
            e
        }
        Flavor::FunctionUrl => {
            let mut e = fixture("lambda_function_url_request.json");
            e["rawPath"] = json!(path);
            e["requestContext"]["http"]["path"] = json!(path);
            e["requestContext"]["http"]["method"] = json!(method);
            e
        }
    };
    set_query(&mut event, flavor, query);
    event["body"] = json!(body);
    event["isBase64Encoded"] = json!(false);
    for (name, value) in headers {
        event["headers"][*name] = json!(value);
        if flavor == Flavor::Rest {
            event["multiValueHeaders"][*name] = json!([value]);
        }
    }
    salesloop::edge::http::request_from_event(&event.to_string())
        .expect("event parses as a request")
}
