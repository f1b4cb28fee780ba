//! The hostile request corpus (`tests/fixtures/hostile/*.json`, written by `generate.py` beside
//! it): requests every HTTP handler must refuse with a JSON 4xx and a documented error code,
//! and the Lambda events that carry them, built from the real payloads of each front door. The
//! fuzz targets build their events here too.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use lambda_http::Request;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::events::Flavor;
use crate::workspace_root;

/// One request of the corpus and what each handler must answer to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostileRequest {
    pub name: String,
    /// `http_api`, `rest` or `function_url`.
    pub flavor: String,
    /// Whether the handlers run with `SALESLOOP_LOCAL=1` (the tenant may come from a header).
    #[serde(default)]
    pub local: bool,
    pub method: String,
    /// The raw path, as the front door passes it on (not decoded).
    pub path: String,
    /// The raw query string, without `?`.
    #[serde(default)]
    pub query: String,
    /// In order; a name may repeat.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// `requestContext.authorizer` as the front door sets it; absent means none.
    #[serde(default)]
    pub authorizer: Option<Value>,
    /// The body as text, or as base64 (`isBase64Encoded`) for bytes that are not UTF-8.
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub body_base64: Option<String>,
    /// Per handler (`process_message`, `end_conversation`, and `read_api` and `admin_api` unless
    /// the request is one they serve): the status and error code.
    pub expect: BTreeMap<String, Expected>,
}

/// `[status, code]`, or `[status, code, field]` for an `invalid_config` whose `field` is known.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Expected {
    pub status: u16,
    pub code: String,
    /// The `field` an `invalid_config` names, when the entry says.
    #[serde(default)]
    pub field: Option<String>,
}

impl HostileRequest {
    pub fn flavor(&self) -> Result<Flavor, String> {
        match self.flavor.as_str() {
            "http_api" => Ok(Flavor::HttpApi),
            "rest" => Ok(Flavor::Rest),
            "function_url" => Ok(Flavor::FunctionUrl),
            other => Err(format!("{}: unknown flavor {other:?}", self.name)),
        }
    }
}

/// Every request of the corpus, in file and then list order.
pub fn corpus() -> Result<Vec<HostileRequest>, String> {
    let dir = workspace_root().join("tests/fixtures/hostile");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut all = Vec::new();
    for file in files {
        let raw = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let requests: Vec<HostileRequest> =
            serde_json::from_str(&raw).map_err(|e| format!("{}: {e}", file.display()))?;
        all.extend(requests);
    }
    Ok(all)
}

fn template(flavor: Flavor) -> &'static Value {
    static TEMPLATES: OnceLock<[Value; 3]> = OnceLock::new();
    let templates = TEMPLATES.get_or_init(|| {
        let read = |name: &str| -> Value {
            let path = workspace_root()
                .join("tests/fixtures/aws-events")
                .join(name);
            let raw = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            serde_json::from_str(&raw).expect("fixture is JSON")
        };
        [
            read("example-apigw-v2-request-jwt-authorizer.json"),
            read("example-apigw-request.json"),
            read("lambda_function_url_request.json"),
        ]
    });
    match flavor {
        Flavor::HttpApi => &templates[0],
        Flavor::Rest => &templates[1],
        Flavor::FunctionUrl => &templates[2],
    }
}

/// The Lambda event that carries a request through `flavor`'s front door. Headers are
/// lower-cased; a repeated header is joined with commas in payload 2.0 events (as API Gateway
/// and Function URLs do) and listed in `multiValueHeaders` in REST events.
pub fn event(
    flavor: Flavor,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    authorizer: Option<&Value>,
    body: Option<&str>,
    base64: bool,
) -> Value {
    let mut e = template(flavor).clone();
    let mut joined: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        joined
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value.clone());
    }
    match flavor {
        Flavor::HttpApi | Flavor::FunctionUrl => {
            e["rawPath"] = json!(path);
            e["rawQueryString"] = json!("");
            e["queryStringParameters"] = json!({});
            e["requestContext"]["http"]["path"] = json!(path);
            e["requestContext"]["http"]["method"] = json!(method);
            if let Some(map) = e["requestContext"].as_object_mut() {
                match authorizer {
                    Some(a) => map.insert("authorizer".into(), a.clone()),
                    None => map.remove("authorizer"),
                };
            }
            for (name, values) in joined {
                e["headers"][name] = json!(values.join(","));
            }
        }
        Flavor::Rest => {
            e["path"] = json!(path);
            e["resource"] = json!("/conversations/{conversation_id}/{action}");
            e["httpMethod"] = json!(method);
            e["queryStringParameters"] = Value::Null;
            e["multiValueQueryStringParameters"] = Value::Null;
            e["requestContext"]["path"] = json!(path);
            e["requestContext"]["httpMethod"] = json!(method);
            e["requestContext"]["authorizer"] = authorizer.cloned().unwrap_or(json!({}));
            for (name, values) in joined {
                // The template's headers are capitalised; ours replace any of the same name.
                for map in ["headers", "multiValueHeaders"] {
                    if let Some(map) = e[map].as_object_mut() {
                        map.retain(|k, _| !k.eq_ignore_ascii_case(&name));
                    }
                }
                e["headers"][&name] = json!(values.last());
                e["multiValueHeaders"][&name] = json!(values);
            }
        }
    }
    e["body"] = body.map_or(Value::Null, |b| json!(b));
    e["isBase64Encoded"] = json!(base64);
    e
}

/// The request a handler receives for a corpus entry, through lambda_http's own parsing of the
/// event. An entry whose event lambda_http refuses is a corpus error: no front door sends it.
pub fn request(entry: &HostileRequest) -> Result<Request, String> {
    let flavor = entry.flavor()?;
    let (body, base64) = match (&entry.body, &entry.body_base64) {
        (Some(_), Some(_)) => return Err(format!("{}: body and body_base64", entry.name)),
        (Some(text), None) => (Some(text.as_str()), false),
        (None, Some(b64)) => (Some(b64.as_str()), true),
        (None, None) => (None, false),
    };
    let mut event = event(
        flavor,
        &entry.method,
        &entry.path,
        &entry.headers,
        entry.authorizer.as_ref(),
        body,
        base64,
    );
    crate::events::set_query(&mut event, flavor, &entry.query);
    salesloop::edge::http::request_from_event(&event.to_string())
        .map_err(|e| format!("{}: the event does not parse: {e}", entry.name))
}
