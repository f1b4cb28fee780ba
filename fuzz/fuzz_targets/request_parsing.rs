#![no_main]
//! The request parsing of both API handlers (route, method, tenant, body) on arbitrary bytes,
//! carried in real Lambda events of each front door. Whatever the bytes, parsing answers: either
//! a checked request, or a 4xx with a documented error code and a JSON body; never a panic.
//!
//! Input: one flags byte (front door, local mode, base64 body, tenant form, whether the route
//! is fuzzed too), then either the body alone, or `method 0xFF path 0xFF claim 0xFF headers
//! 0xFF body` with headers as `name:value` lines.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use base64::Engine as _;
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayProxyRequest, ApiGatewayRequestAuthorizer, ApiGatewayV2httpRequest,
};
use lambda_http::http::{HeaderName, HeaderValue, Method};
use lambda_http::request::LambdaRequest;
use libfuzzer_sys::fuzz_target;
use salesloop::edge::error::ApiError;
use salesloop::edge::http::TenantSource;
use salesloop_tests::events::Flavor;
use salesloop_tests::hostile::event;
use serde_json::{Value, json};

/// The codes docs/api.md documents for refused requests.
const DOCUMENTED: &[&str] = &[
    "not_found",
    "method_not_allowed",
    "invalid_conversation_id",
    "unauthenticated",
    "invalid_tenant",
    "body_too_large",
    "invalid_json",
    "invalid_field",
    "invalid_message_id",
    "invalid_text",
    "invalid_outcome",
    "invalid_value",
    "invalid_reason",
    "invalid_labels",
];

fn patterns() -> &'static BTreeSet<String> {
    static PATTERNS: OnceLock<BTreeSet<String>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        end_conversation::handler::pattern_names(salesloop::domain::patterns::DEFAULT_CATALOG)
            .expect("the built-in catalog names its patterns")
    })
}

/// The front doors' events (the tests' fixtures), parsed once: each run changes a copy and
/// hands it to lambda_http's own conversion, which costs far less than a JSON round trip.
struct Templates {
    http_api: ApiGatewayV2httpRequest,
    rest: ApiGatewayProxyRequest,
    function_url: ApiGatewayV2httpRequest,
}

fn templates() -> &'static Templates {
    static TEMPLATES: OnceLock<Templates> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let base = |flavor| event(flavor, "POST", "/", &[], None, None, false);
        Templates {
            http_api: serde_json::from_value(base(Flavor::HttpApi)).expect("HTTP API event"),
            rest: serde_json::from_value(base(Flavor::Rest)).expect("REST event"),
            function_url: serde_json::from_value(base(Flavor::FunctionUrl))
                .expect("Function URL event"),
        }
    })
}

/// What a run sends, before it becomes a request.
struct Parts<'a> {
    flavor: Flavor,
    method: &'a Method,
    path: &'a str,
    headers: &'a [(HeaderName, HeaderValue)],
    authorizer: Option<&'a Value>,
    body: &'a str,
    base64: bool,
}

fn build(parts: &Parts<'_>) -> Option<lambda_http::Request> {
    let lambda_request = match parts.flavor {
        Flavor::HttpApi | Flavor::FunctionUrl => {
            let t = templates();
            let mut e = if parts.flavor == Flavor::HttpApi {
                t.http_api.clone()
            } else {
                t.function_url.clone()
            };
            e.raw_path = Some(parts.path.to_owned());
            e.request_context.http.path = Some(parts.path.to_owned());
            e.request_context.http.method = parts.method.clone();
            e.request_context.authorizer = match parts.authorizer {
                Some(a) => Some(serde_json::from_value(a.clone()).ok()?),
                None => None,
            };
            // Payload 2.0 joins a repeated header's values with commas.
            let mut joined: Vec<(HeaderName, Vec<u8>)> = Vec::new();
            for (name, value) in parts.headers {
                match joined.iter_mut().find(|(n, _)| n == name) {
                    Some((_, all)) => {
                        all.push(b',');
                        all.extend_from_slice(value.as_bytes());
                    }
                    None => joined.push((name.clone(), value.as_bytes().to_vec())),
                }
            }
            for (name, value) in joined {
                e.headers
                    .insert(name, HeaderValue::from_bytes(&value).ok()?);
            }
            e.body = Some(parts.body.to_owned());
            e.is_base64_encoded = parts.base64;
            LambdaRequest::ApiGatewayV2(e)
        }
        Flavor::Rest => {
            let mut e = templates().rest.clone();
            e.path = Some(parts.path.to_owned());
            e.http_method = parts.method.clone();
            e.request_context.http_method = parts.method.clone();
            let mut authorizer = ApiGatewayRequestAuthorizer::default();
            if let Some(Value::Object(fields)) = parts.authorizer {
                authorizer.fields = fields.clone().into_iter().collect();
            }
            e.request_context.authorizer = authorizer;
            for (name, _) in parts.headers {
                e.headers.remove(name);
                e.multi_value_headers.remove(name);
            }
            for (name, value) in parts.headers {
                e.headers.insert(name.clone(), value.clone());
                e.multi_value_headers.append(name.clone(), value.clone());
            }
            e.body = Some(parts.body.to_owned());
            e.is_base64_encoded = parts.base64;
            LambdaRequest::ApiGatewayV1(e)
        }
    };
    Some(lambda_request.into())
}

fn text(bytes: Option<&[u8]>) -> String {
    String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned()
}

/// The authorizer of a front door naming `claim` as the tenant, in one of four forms.
fn authorizer(flavor: Flavor, form: u8, claim: &str) -> Option<Value> {
    match (flavor, form) {
        (Flavor::FunctionUrl, _) | (_, 1) => None,
        (Flavor::HttpApi, 0) => {
            Some(json!({"jwt": {"claims": {"sub": "u", "tenant_id": claim}, "scopes": null}}))
        }
        (Flavor::HttpApi, 2) => Some(json!({"lambda": {"tenant_id": claim}})),
        (Flavor::HttpApi, _) => Some(json!({"tenant_id": claim})),
        (Flavor::Rest, 0) => Some(json!({"claims": {"sub": "u", "tenant_id": claim}})),
        (Flavor::Rest, 2) => Some(json!({"principalId": "u", "tenant_id": claim})),
        // Any JSON value as the claim, when the bytes are JSON.
        (Flavor::Rest, _) => Some(json!({"claims": {
            "tenant_id": serde_json::from_str::<Value>(claim).unwrap_or_else(|_| json!(claim))
        }})),
    }
}

fn check_refusal(error: ApiError) {
    assert!(
        (400..500).contains(&error.status()),
        "a request was refused with {}: {error:?}",
        error.status()
    );
    assert!(
        DOCUMENTED.contains(&error.code()),
        "undocumented code {error:?}"
    );
    assert!(!error.to_string().is_empty());
    let code = error.code();
    let response = error.into_response();
    let body = match response.body() {
        lambda_http::Body::Text(text) => text.clone(),
        other => panic!("error body is not text: {other:?}"),
    };
    let value: Value = serde_json::from_str(&body).expect("error body is JSON");
    assert_eq!(value["error"]["code"], code);
}

/// Parses each request with both tenant sources: deployed, and local mode.
fn parse_both(messages: Option<lambda_http::Request>, ends: Option<lambda_http::Request>) {
    for local in [false, true] {
        let tenants = TenantSource {
            claim: "tenant_id".into(),
            local,
        };
        if let Some(request) = &messages {
            match process_message::handler::parse_request(request, &tenants) {
                Ok(parsed) => {
                    assert!(!parsed.text.is_empty() && parsed.text.trim() == parsed.text);
                    assert!(
                        parsed.text.chars().count() <= process_message::handler::MAX_TEXT_CHARS
                    );
                }
                Err(e) => check_refusal(e),
            }
        }
        if let Some(request) = &ends {
            match end_conversation::handler::parse_request(request, &tenants, patterns()) {
                Ok((_, _, end)) => {
                    if let Some(value) = end.value {
                        assert!(value.is_finite() && (0.0..=1e12).contains(&value));
                    }
                    assert!(end.labels.len() <= end_conversation::handler::MAX_LABELS);
                }
                Err(e) => check_refusal(e),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let flavor = [Flavor::HttpApi, Flavor::Rest, Flavor::FunctionUrl][usize::from(flags % 3)];
    let base64 = flags & 0x08 != 0;
    let tenant_form = (flags >> 4) & 0x03;
    let fuzz_route = flags & 0x80 != 0;

    let (method, path, claim, headers, body) = if fuzz_route {
        let mut parts = rest.splitn(5, |&b| b == 0xff);
        let method = text(parts.next());
        let path = text(parts.next());
        let claim = text(parts.next());
        let headers: Vec<(HeaderName, HeaderValue)> = text(parts.next())
            .lines()
            .filter_map(|line| line.split_once(':'))
            .filter_map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.trim().as_bytes()).ok()?,
                    HeaderValue::from_str(v.trim()).ok()?,
                ))
            })
            // lambda_http builds the request URI from these two and unwraps the result; the
            // front doors set them, clients cannot.
            .filter(|(n, _)| n != "host" && n != "x-forwarded-proto")
            .collect();
        (
            Some(method),
            Some(path),
            claim,
            headers,
            parts.next().unwrap_or_default(),
        )
    } else {
        (None, None, "acme".to_owned(), Vec::new(), rest)
    };
    let (body, base64) = match std::str::from_utf8(body) {
        Ok(text) if !base64 => (text.to_owned(), false),
        _ => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let authorizer = authorizer(flavor, tenant_form, &claim);
    let method = match &method {
        Some(m) => match Method::from_bytes(m.as_bytes()) {
            Ok(m) => m,
            Err(_) => return,
        },
        None => Method::POST,
    };
    let request_for = |action: &str| {
        let path = match &path {
            // lambda_http joins the path to a host and unwraps the URL: front doors always
            // send an absolute path.
            Some(p) if p.starts_with('/') => p.clone(),
            Some(p) => format!("/{p}"),
            None => format!("/conversations/c-1/{action}"),
        };
        build(&Parts {
            flavor,
            method: &method,
            path: &path,
            headers: &headers,
            authorizer: authorizer.as_ref(),
            body: &body,
            base64,
        })
    };
    if fuzz_route {
        // One request, whatever its route: both handlers see it.
        parse_both(request_for(""), request_for(""));
    } else {
        parse_both(request_for("messages"), request_for("end"));
    }
});
