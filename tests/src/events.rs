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

/// A request of `flavor` for `method path` with `body`, carrying `tenant` as the authorizer's
/// `tenant_id` claim when given, and extra headers.
pub fn request(
    flavor: Flavor,
    method: &str,
    path: &str,
    body: &str,
    tenant: Option<&str>,
    headers: &[(&str, &str)],
) -> Request {
    let mut event = match flavor {
        Flavor::HttpApi => {
            let mut e = fixture("example-apigw-v2-request-jwt-authorizer.json");
            e["rawPath"] = json!(path);
            e["rawQueryString"] = json!("");
            e["queryStringParameters"] = json!({});
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
            e["queryStringParameters"] = Value::Null;
            e["multiValueQueryStringParameters"] = Value::Null;
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
            e["rawQueryString"] = json!("");
            e["queryStringParameters"] = json!({});
            e["requestContext"]["http"]["path"] = json!(path);
            e["requestContext"]["http"]["method"] = json!(method);
            e
        }
    };
    event["body"] = json!(body);
    event["isBase64Encoded"] = json!(false);
    for (name, value) in headers {
        event["headers"][*name] = json!(value);
        if flavor == Flavor::Rest {
            event["multiValueHeaders"][*name] = json!([value]);
        }
    }
    lambda_http::request::from_str(&event.to_string()).expect("event parses as a request")
}
