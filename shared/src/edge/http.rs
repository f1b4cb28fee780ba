//! HTTP glue shared by the API functions: routing, the tenant from the authorizer, JSON bodies
//! with limits. Every client mistake becomes an [`ApiError`] (a 4xx response), never an `Err`
//! of the handler (which Lambda would turn into a bare 500).

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::de::DeserializeOwned;

use crate::domain::ids::{ConversationId, TenantId};
use crate::edge::error::ApiError;

/// Bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Serves an API function's requests with `handle` until the runtime stops, printing one EMF
/// line per request (its latency and whether it was a client or server error: the metrics the
/// alarms watch). A handler answers every request, errors included, as a response.
pub async fn serve<H, F>(function: &'static str, handle: H) -> Result<(), lambda_http::Error>
where
    H: Fn(Request) -> F + Sync,
    F: std::future::Future<Output = Response<Body>> + Send,
{
    let handle = &handle;
    let measured = move |request: Request| async move {
        let started = std::time::Instant::now();
        let response = handle(request).await;
        println!(
            "{}",
            crate::edge::emf::request_metrics(
                function,
                response.status().as_u16(),
                started.elapsed()
            )
        );
        Ok::<_, lambda_http::Error>(response)
    };
    // What `lambda_http::run` does, with the event parsed by `ApiEvent`, and an HTTP API event
    // turned into its request by `http_api_request` and its answer by `http_api_response`; any
    // other event goes through lambda_http's adapter as before.
    lambda_http::lambda_runtime::run(lambda_http::service_fn(
        move |event: lambda_http::LambdaEvent<ApiEvent>| async move {
            use lambda_http::Service;
            use lambda_http::request::LambdaRequest;
            let lambda_http::LambdaEvent {
                payload: ApiEvent(payload),
                context,
            } = event;
            match payload {
                LambdaRequest::ApiGatewayV2(event) => {
                    let mut request = http_api_request(event);
                    trace_header(request.headers_mut(), &context);
                    // Boxed, as lambda_http's adapter boxes it: the handler's future is deep.
                    let response = Box::pin(measured(request.with_lambda_context(context))).await?;
                    let response = lambda_http::IntoResponse::into_response(response).await;
                    Ok::<_, lambda_http::Error>(Answer::HttpApi(Box::new(http_api_response(
                        response,
                    ))))
                }
                other => lambda_http::Adapter::from(lambda_http::service_fn(measured))
                    .call(lambda_http::LambdaEvent::new(other, context))
                    .await
                    .map(Answer::Other),
            }
        },
    ))
    .await
}

/// What the runtime posts back: an HTTP API answer, or lambda_http's answer to any other event
/// (its type is not exported), written as it is.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Answer<T> {
    HttpApi(Box<lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse>),
    Other(T),
}

/// The X-Ray trace header lambda_http's adapter adds to a request from its invocation.
fn trace_header(headers: &mut lambda_http::http::HeaderMap, context: &lambda_http::Context) {
    if let Some(trace) = context.xray_trace_id.as_deref()
        && let Ok(value) = lambda_http::http::HeaderValue::from_str(trace)
    {
        headers.insert("x-amzn-trace-id", value);
    }
}

/// An answer to an HTTP API event, as lambda_http's adapter writes it: `set-cookie` headers
/// moved to `cookies`, a binary body base64-encoded, repeated headers joined by API Gateway.
pub fn http_api_response(
    response: Response<Body>,
) -> lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse {
    use lambda_http::http::header::SET_COOKIE;
    let (parts, body) = response.into_parts();
    let (is_base64_encoded, body) = match body {
        text @ Body::Text(_) => (false, Some(text)),
        binary @ Body::Binary(_) => (true, Some(binary)),
        _ => (false, None),
    };
    let mut headers = parts.headers;
    let cookies = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .collect();
    headers.remove(SET_COOKIE);
    let mut answer = lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse::default();
    answer.status_code = i64::from(parts.status.as_u16());
    answer.headers = headers;
    answer.multi_value_headers = lambda_http::http::HeaderMap::new();
    answer.body = body;
    answer.is_base64_encoded = is_base64_encoded;
    answer.cookies = cookies;
    answer
}

/// An API event as the runtime hands it over. lambda_http tries each event type it knows in
/// turn, the REST API's (payload 1.0) first, and an HTTP API event (payload 2.0, what the
/// template deploys; Function URLs send the same) fails that type only near its end: about half
/// of process_message's own work went into the failed attempt. An event that says it is
/// `"version": "2.0"` is read as one; any other (REST API, ALB, an HTTP API event that does not
/// say its version) goes through lambda_http's order as before, after one attempt more.
pub struct ApiEvent(pub lambda_http::request::LambdaRequest);

impl<'de> serde::Deserialize<'de> for ApiEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        parse_event(raw.get())
            .map(ApiEvent)
            .map_err(serde::de::Error::custom)
    }
}

/// An event's text as the request type lambda_http builds a [`Request`] from (see [`ApiEvent`]).
pub fn parse_event(text: &str) -> Result<lambda_http::request::LambdaRequest, serde_json::Error> {
    use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
    if let Ok(event) = serde_json::from_str::<ApiGatewayV2httpRequest>(text)
        && event.version.as_deref() == Some("2.0")
    {
        return Ok(lambda_http::request::LambdaRequest::ApiGatewayV2(event));
    }
    serde_json::from_str(text)
}

/// An event's text as the [`Request`] the handlers take, as the deployed functions read it.
pub fn request_from_event(text: &str) -> Result<Request, serde_json::Error> {
    parse_event(text).map(into_request)
}

/// The [`Request`] of an event, as lambda_http builds it (`Request::from`), an HTTP API event's
/// through [`http_api_request`].
pub fn into_request(event: lambda_http::request::LambdaRequest) -> Request {
    match event {
        lambda_http::request::LambdaRequest::ApiGatewayV2(event) => http_api_request(event),
        other => Request::from(other),
    }
}

/// An HTTP API event (payload 2.0) as the [`Request`] lambda_http's conversion builds from it:
/// the same method, URI, headers (cookies folded into one `cookie` header), body and
/// extensions (raw path, query parameters, path parameters, stage variables, request context).
/// lambda_http runs `https://{host}{path}` through a URL parser and prints it again; a plain
/// host and path (lower-case DNS labels; path segments of unreserved characters) come out of
/// that unchanged, so they are joined as they are, and anything else still goes through the
/// parser. About a fifth of process_message's own work was that round trip and the
/// conversion's copies.
pub fn http_api_request(
    event: lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest,
) -> Request {
    use lambda_http::http::{HeaderValue, header};
    let method = event.request_context.http.method.clone();
    let raw_path = event.raw_path.unwrap_or_default();
    let path = path_with_stage(event.request_context.stage.as_deref(), &raw_path);
    let host = event
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(event.request_context.domain_name.as_deref());
    let scheme = event
        .headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("https");
    let mut uri = request_uri(scheme, host, &path);
    // As lambda_http: the raw query string, never `queryStringParameters`, which API Gateway
    // has already joined with commas.
    let query = match &event.raw_query_string {
        Some(raw) => raw
            .parse::<lambda_http::aws_lambda_events::query_map::QueryMap>()
            .unwrap_or_default(),
        None => event.query_string_parameters,
    };
    if let Some(raw) = event.raw_query_string.as_deref()
        && !raw.is_empty()
    {
        uri.push('?');
        uri.push_str(raw);
    }
    let body = event.body.as_deref().map_or_else(Body::default, |b| {
        Body::from_maybe_encoded(event.is_base64_encoded, b)
    });
    let mut request = lambda_http::http::Request::builder()
        .uri(uri)
        .body(body)
        .unwrap_or_else(|e| panic!("the request of an HTTP API event: {e}"))
        .with_raw_http_path(raw_path)
        .with_query_string_parameters(query)
        .with_path_parameters(event.path_parameters)
        .with_stage_variables(event.stage_variables)
        .with_request_context(RequestContext::ApiGatewayV2(event.request_context));
    let mut headers = event.headers;
    if let Some(cookies) = event.cookies
        && let Ok(value) = HeaderValue::from_str(&cookies.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
    *request.headers_mut() = headers;
    *request.method_mut() = method;
    request
}

/// The path lambda_http gives a request: the stage put in front of the raw path unless it is
/// `$default`, already there, or `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` is set (read once).
fn path_with_stage(stage: Option<&str>, path: &str) -> String {
    static IGNORE_STAGE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ignore =
        *IGNORE_STAGE.get_or_init(|| std::env::var("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH").is_ok());
    match stage {
        Some(stage) if !ignore && stage != "$default" => {
            let staged = path
                .strip_prefix('/')
                .and_then(|rest| rest.strip_prefix(stage))
                .is_some_and(|rest| rest.starts_with('/'));
            if staged {
                path.to_owned()
            } else {
                format!("/{stage}{path}")
            }
        }
        _ => path.to_owned(),
    }
}

/// The request's URI without its query, as lambda_http writes it: `{scheme}://{host}{path}`
/// as a URL parser prints it back, or, with no host, the path alone as the parser resolves it.
fn request_uri(scheme: &str, host: Option<&str>, path: &str) -> String {
    match host {
        Some(host)
            if matches!(scheme, "https" | "http") && plain_host(host) && plain_path(path) =>
        {
            let mut uri = String::with_capacity(scheme.len() + 3 + host.len() + path.len() + 16);
            uri.push_str(scheme);
            uri.push_str("://");
            uri.push_str(host);
            uri.push_str(path);
            uri
        }
        Some(host) => url::Url::parse(&format!("{scheme}://{host}{path}"))
            .unwrap_or_else(|e| panic!("the URL of an HTTP API event: {e}"))
            .to_string(),
        None => url::Url::parse(&format!("http://localhost{path}"))
            .unwrap_or_else(|e| panic!("the URL of an HTTP API event: {e}"))
            .path()
            .to_owned(),
    }
}

/// A host a URL parser prints back unchanged: dot-separated labels of lower-case letters,
/// digits and hyphens, none empty, none an IDNA label (`xn--`), the last starting with a letter
/// (so it is no IP address), no port.
fn plain_host(host: &str) -> bool {
    let mut labels = host.split('.').peekable();
    while let Some(label) = labels.next() {
        let plain = !label.is_empty()
            && !label.starts_with("xn--")
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !plain {
            return false;
        }
        if labels.peek().is_none() && !label.as_bytes()[0].is_ascii_lowercase() {
            return false;
        }
    }
    true
}

/// A path a URL parser prints back unchanged: `/`, then segments of letters, digits and
/// `-._~`, none empty and none `.` or `..`.
fn plain_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    rest.is_empty()
        || rest.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        })
}

/// A JSON response with a status.
pub fn json_response(status: u16, value: &serde_json::Value) -> Response<Body> {
    json_text_response(status, value.to_string())
}

/// A response with a status and `body`, already JSON text. A status that is no HTTP status is
/// answered 500.
pub fn json_text_response(status: u16, body: String) -> Response<Body> {
    let mut response = Response::new(Body::Text(body));
    *response.status_mut() = lambda_http::http::StatusCode::from_u16(status)
        .unwrap_or(lambda_http::http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        "content-type",
        lambda_http::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A 200 JSON answer that no shared cache may keep: one tenant's data.
pub fn private_json_response(value: &serde_json::Value) -> Response<Body> {
    let mut response = json_response(200, value);
    response.headers_mut().insert(
        "cache-control",
        lambda_http::http::HeaderValue::from_static("private, no-store"),
    );
    response
}

/// Where the tenant comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSource {
    /// The JWT claim (or Lambda-authorizer context key) that names the tenant.
    pub claim: String,
    /// Local runs only: accept an `x-tenant-id` header, and default to `local`.
    pub local: bool,
}

/// The tenant of a request: the authorizer's claim, never the body. Without one the request is
/// refused, except in local mode.
pub fn tenant(request: &Request, source: &TenantSource) -> Result<TenantId, ApiError> {
    let claimed = request
        .request_context_ref()
        .and_then(|context| claim_value(context, &source.claim));
    let raw = match claimed {
        Some(value) => value,
        None if source.local => {
            let mut headers = request.headers().get_all("x-tenant-id").iter();
            match (headers.next(), headers.next()) {
                (None, _) => "local".to_owned(),
                // A header that is not text, or two that may disagree, name no tenant; never
                // fall back to the default for them.
                (Some(value), None) => value.to_str().map(str::to_owned).map_err(|_| {
                    ApiError::InvalidTenant("x-tenant-id is not a valid tenant id".into())
                })?,
                (Some(_), Some(_)) => {
                    return Err(ApiError::InvalidTenant(
                        "x-tenant-id is given more than once".into(),
                    ));
                }
            }
        }
        None => {
            return Err(ApiError::Unauthenticated);
        }
    };
    TenantId::parse(&raw).map_err(|e| ApiError::InvalidTenant(e.to_string()))
}

fn claim_value(context: &RequestContext, claim: &str) -> Option<String> {
    let as_text = |value: &serde_json::Value| match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match context {
        RequestContext::ApiGatewayV2(context) => {
            let authorizer = context.authorizer.as_ref()?;
            authorizer
                .jwt
                .as_ref()
                .and_then(|jwt| jwt.claims.get(claim).cloned())
                .or_else(|| authorizer.fields.get(claim).and_then(as_text))
        }
        RequestContext::ApiGatewayV1(context) => {
            let fields = &context.authorizer.fields;
            // Cognito authorizers nest claims; Lambda authorizers put context keys at the top.
            fields
                .get("claims")
                .and_then(|claims| claims.get(claim))
                .and_then(as_text)
                .or_else(|| {
                    context
                        .authorizer
                        .jwt
                        .as_ref()
                        .and_then(|jwt| jwt.claims.get(claim).cloned())
                })
                .or_else(|| fields.get(claim).and_then(as_text))
        }
        _ => None,
    }
}

/// The span every log line of a request is written in: the Lambda request id, API Gateway's
/// request id (which the access log carries), the tenant and the conversation. Never the text.
pub fn request_span(
    request: &Request,
    tenant: &TenantId,
    conversation: &ConversationId,
) -> tracing::Span {
    let lambda_request_id = request.lambda_context_ref().map(|c| c.request_id.clone());
    let api_request_id = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(c)) => c.request_id.clone(),
        Some(RequestContext::ApiGatewayV1(c)) => c.request_id.clone(),
        _ => None,
    };
    tracing::info_span!(
        "request",
        request_id = lambda_request_id.as_deref().unwrap_or("-"),
        api_request_id = api_request_id.as_deref().unwrap_or("-"),
        tenant = %tenant,
        conversation = %conversation,
    )
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Message,
    End,
    Labels,
}

/// Every route, by the last segment of its path: `POST /conversations/{conversation_id}/{segment}`.
pub const ROUTES: [(&str, Action); 3] = [
    ("messages", Action::Message),
    ("end", Action::End),
    ("labels", Action::Labels),
];

/// Finds `/conversations/{id}/messages`, `/conversations/{id}/end` or
/// `/conversations/{id}/labels` at the end of the path (API Gateway may put a stage in front)
/// and checks the method.
pub fn route(request: &Request) -> Result<(ConversationId, Action), ApiError> {
    let path = request.raw_http_path();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let [.., "conversations", id, last] = segments.as_slice() else {
        return Err(ApiError::NotFound);
    };
    let Some(&(_, action)) = ROUTES.iter().find(|(segment, _)| segment == last) else {
        return Err(ApiError::NotFound);
    };
    if request.method() != lambda_http::http::Method::POST {
        return Err(ApiError::MethodNotAllowed("POST"));
    }
    let conversation =
        ConversationId::parse(id).map_err(|e| ApiError::InvalidConversationId(e.to_string()))?;
    Ok((conversation, action))
}

/// What a read asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRoute {
    /// `GET /conversations/{conversation_id}`
    Conversation(ConversationId),
    /// `GET /conversations`
    Conversations,
    /// `GET /models`
    Models,
    /// `GET /models/{version}`
    Model(u64),
    /// `GET /report`
    Report,
    /// `GET /dashboard`
    Dashboard,
}

/// The read routes, as the OpenAPI document and the template name them.
pub const READ_ROUTES: [&str; 6] = [
    "/conversations/{conversation_id}",
    "/conversations",
    "/models",
    "/models/{version}",
    "/report",
    "/dashboard",
];

/// Finds a read route at the end of the path (a stage may come before it) and checks that the
/// method is GET. Any other path, a write route's included, is no route of read_api's.
pub fn read_route(request: &Request) -> Result<ReadRoute, ApiError> {
    /// A route found by its path, its parameter not yet checked.
    enum Found<'p> {
        Conversation(&'p str),
        Model(&'p str),
        Route(ReadRoute),
    }
    let path = request.raw_http_path();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let found = match segments.as_slice() {
        [.., "conversations", id] => Found::Conversation(id),
        [.., "models", version] => Found::Model(version),
        [.., "conversations"] => Found::Route(ReadRoute::Conversations),
        [.., "models"] => Found::Route(ReadRoute::Models),
        [.., "report"] => Found::Route(ReadRoute::Report),
        [.., "dashboard"] => Found::Route(ReadRoute::Dashboard),
        _ => return Err(ApiError::NotFound),
    };
    // The method first, then the path parameter, as for the write routes.
    if request.method() != lambda_http::http::Method::GET {
        return Err(ApiError::MethodNotAllowed("GET"));
    }
    match found {
        Found::Conversation(id) => ConversationId::parse(id)
            .map(ReadRoute::Conversation)
            .map_err(|e| ApiError::InvalidConversationId(e.to_string())),
        Found::Model(version) => parse_version(version).map(ReadRoute::Model),
        Found::Route(route) => Ok(route),
    }
}

/// A model version in a path or cursor: a whole number from 1, in plain decimal.
pub fn parse_version(text: &str) -> Result<u64, ApiError> {
    let valid = !text.is_empty()
        && text.len() <= 19
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0');
    match text.parse::<u64>() {
        Ok(version) if valid => Ok(version),
        _ => Err(ApiError::InvalidVersion(format!(
            "a model version is a whole number from 1, not {:?}",
            truncate(text, 40)
        ))),
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// The query string's parameters, each at most once and each one of `allowed`: anything else
/// is an `invalid_query` rather than silently ignored.
pub fn query_parameters(
    request: &Request,
    allowed: &[&str],
) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    let parameters = request.query_string_parameters_ref();
    let mut found = std::collections::BTreeMap::new();
    let Some(parameters) = parameters else {
        return Ok(found);
    };
    for (name, _) in parameters.iter() {
        if !allowed.contains(&name) {
            return Err(ApiError::InvalidQuery(if allowed.is_empty() {
                "this route takes no query parameters".into()
            } else {
                format!(
                    "unknown query parameter {:?}; this route takes {}",
                    truncate(name, 40),
                    allowed.join(", ")
                )
            }));
        }
        let values = parameters.all(name).unwrap_or_default();
        if values.len() > 1 {
            return Err(ApiError::InvalidQuery(format!(
                "{name} is given more than once"
            )));
        }
        if let Some(value) = values.first() {
            found.insert(name.to_owned(), (*value).to_owned());
        }
    }
    Ok(found)
}

/// The `limit` parameter: 1 to `max`, `default` when absent.
pub fn limit_parameter(
    parameters: &std::collections::BTreeMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let Some(text) = parameters.get("limit") else {
        return Ok(default);
    };
    match text.parse::<usize>() {
        Ok(limit) if (1..=max).contains(&limit) && text.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(limit)
        }
        _ => Err(ApiError::InvalidQuery(format!(
            "limit is a whole number from 1 to {max}, not {:?}",
            truncate(text, 40)
        ))),
    }
}

/// The body's bytes, at most [`MAX_BODY_BYTES`] and not empty.
fn body_bytes(request: &Request) -> Result<&[u8], ApiError> {
    body_bytes_within(request, MAX_BODY_BYTES)
}

/// The body as the text of one JSON object, at most `max` bytes: a syntax error (or a body
/// that is not an object) is `invalid_json` / `invalid_field`; its shape is left to the caller,
/// which names the field at fault.
pub fn json_object_text(request: &Request, max: usize) -> Result<&str, ApiError> {
    let bytes = body_bytes_within(request, max)?;
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::InvalidJson("the body is not UTF-8".into()))?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    if !value.is_object() {
        return Err(ApiError::InvalidField(
            "the body must be a JSON object".into(),
        ));
    }
    Ok(text)
}

fn body_bytes_within(request: &Request, max: usize) -> Result<&[u8], ApiError> {
    let bytes: &[u8] = match request.body() {
        Body::Empty => &[],
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    };
    if bytes.len() > max {
        return Err(ApiError::BodyTooLarge(max));
    }
    if bytes.is_empty() {
        return Err(ApiError::InvalidJson("the body is empty".into()));
    }
    Ok(bytes)
}

/// `bytes` as JSON of type `T`: a syntax error is `invalid_json`, JSON of the wrong shape
/// `invalid_field`.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() {
            ApiError::InvalidField(e.to_string())
        } else {
            ApiError::InvalidJson(e.to_string())
        }
    })
}

/// The body as JSON of type `T`, at most [`MAX_BODY_BYTES`].
pub fn json_body<T: DeserializeOwned>(request: &Request) -> Result<T, ApiError> {
    let bytes = body_bytes(request)?;
    let value = parse_json(bytes)?;
    // serde also fills a struct from a JSON array of its fields in order (`["won"]`); the API
    // takes objects only.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::InvalidField(
            "the body must be a JSON object".into(),
        ));
    }
    Ok(value)
}

/// The body as a JSON array of objects, each a `T`, at most [`MAX_BODY_BYTES`].
pub fn json_array_body<T: DeserializeOwned>(request: &Request) -> Result<Vec<T>, ApiError> {
    let bytes = body_bytes(request)?;
    // Syntax first: serde stops at the first item of the wrong shape, before it would see
    // that the text goes on to break off or turn into something that is not JSON.
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let items: Vec<T> = parse_json(bytes)?;
    // As in `json_body`, serde would fill each `T` from an array of its fields too: the items
    // must be objects. (A map accepts objects only.)
    if serde_json::from_slice::<Vec<serde_json::Map<String, serde_json::Value>>>(bytes).is_err() {
        return Err(ApiError::InvalidField(
            "the body must be a JSON array of objects".into(),
        ));
    }
    Ok(items)
}

/// Whether `text` holds a control character other than tab, line feed and carriage return.
pub fn has_control_characters(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

/// Whether `text` shows nothing: only white space, control characters and invisible format
/// characters (zero-width spaces and joiners, direction marks, soft hyphens, variation
/// selectors, tags).
pub fn is_blank(text: &str) -> bool {
    text.chars().all(|c| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c,
                '\u{ad}' | '\u{34f}' | '\u{61c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
                | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
                | '\u{ffa0}' | '\u{fff0}'..='\u{fff8}' | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}' | '\u{e0000}'..='\u{e007f}' | '\u{e0100}'..='\u{e01ef}')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> &'static str {
        match name {
            "rest" => include_str!("../../../tests/fixtures/aws-events/example-apigw-request.json"),
            "jwt" => include_str!(
                "../../../tests/fixtures/aws-events/example-apigw-v2-request-jwt-authorizer.json"
            ),
            "url" => {
                include_str!("../../../tests/fixtures/aws-events/lambda_function_url_request.json")
            }
            "sam" => include_str!("../../../tests/fixtures/aws-events/apigw_v2_sam_local.json"),
            _ => unreachable!(),
        }
    }

    /// What a handler can see of a request (the maps as JSON: they have no order).
    fn seen(request: &Request) -> (String, serde_json::Value, serde_json::Value) {
        (
            format!(
                "{} {} {:?} {:?} {}",
                request.method(),
                request.uri(),
                request.headers(),
                request.body(),
                request.raw_http_path(),
            ),
            serde_json::json!([
                request.query_string_parameters_ref(),
                request.path_parameters_ref(),
                request.stage_variables_ref(),
            ]),
            serde_json::to_value(request.request_context_ref()).unwrap(),
        )
    }

    /// The HTTP API fixture with `edit` applied.
    fn edited(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut event: serde_json::Value = serde_json::from_str(fixture("jwt")).unwrap();
        edit(&mut event);
        event.to_string()
    }

    #[test]
    fn an_http_api_event_becomes_the_request_lambda_http_builds() {
        use serde_json::json;
        let mut events = vec![
            fixture("jwt").to_owned(),
            fixture("url").to_owned(),
            fixture("sam").to_owned(),
        ];
        // Hosts and paths the URL parser prints back as they are, and ones it changes.
        for host in [
            "abc123.execute-api.eu-west-1.amazonaws.com",
            "API.Example.com",
            "example.com:443",
            "example.com:8443",
            "127.0.0.1",
            "xn--nxasmq6b.example",
            "bücher.example",
            "a..b",
        ] {
            events.push(edited(|e| e["headers"]["host"] = json!(host)));
        }
        for path in [
            "/conversations/c-1/messages",
            "/",
            "",
            "/prod/conversations/c-1/end",
            "/a//b",
            "/a/./b/../c",
            "/a b/%2e/ü",
            "/trailing/",
            "/q?x",
        ] {
            events.push(edited(|e| e["rawPath"] = json!(path)));
        }
        events.push(edited(|e| e["requestContext"]["stage"] = json!("prod")));
        events.push(edited(|e| {
            e["requestContext"]["stage"] = json!("prod");
            e["rawPath"] = json!("/prod/conversations");
        }));
        events.push(edited(|e| {
            e["headers"]["x-forwarded-proto"] = json!("http")
        }));
        events.push(edited(|e| {
            e["headers"]["x-forwarded-proto"] = json!("HTTPS")
        }));
        events.push(edited(|e| {
            e["requestContext"]
                .as_object_mut()
                .unwrap()
                .remove("domainName");
        }));
        events.push(edited(|e| {
            e.as_object_mut().unwrap().remove("rawQueryString");
        }));
        events.push(edited(|e| {
            e.as_object_mut().unwrap().remove("cookies");
            e["rawQueryString"] = json!("");
        }));
        events.push(edited(|e| {
            e["body"] = json!("eyJhIjogMX0=");
            e["isBase64Encoded"] = json!(true);
        }));
        events.push(edited(|e| {
            e.as_object_mut().unwrap().remove("body");
        }));
        let mut fast = 0;
        for text in &events {
            let ours = request_from_event(text).unwrap();
            let theirs = lambda_http::request::from_str(text).unwrap();
            assert_eq!(seen(&ours), seen(&theirs), "{text}");
            let event: serde_json::Value = serde_json::from_str(text).unwrap();
            let host = event["headers"]["host"]
                .as_str()
                .or(event["requestContext"]["domainName"].as_str());
            fast += usize::from(host.is_some_and(plain_host));
        }
        // Both ways of writing the URI were compared.
        assert!(
            fast > 5 && fast < events.len(),
            "{fast} of {}",
            events.len()
        );
        assert!(plain_host("id.execute-api.us-east-1.amazonaws.com"));
        assert!(!plain_host("API.example.com") && !plain_host("10.0.0.1"));
        assert!(plain_path("/conversations/c-1/messages") && plain_path("/"));
        assert!(!plain_path("") && !plain_path("/a/../b") && !plain_path("/a b"));
    }

    #[test]
    fn an_http_api_answer_is_written_as_lambda_http_writes_it() {
        use lambda_http::Service;
        use lambda_http::http::header::{CONTENT_TYPE, SET_COOKIE};
        let responses: Vec<fn() -> Response<Body>> = vec![
            || json_response(201, &serde_json::json!({"ok": true, "text": "é"})),
            || {
                let mut response = private_json_response(&serde_json::json!([1, 2]));
                response
                    .headers_mut()
                    .append(SET_COOKIE, "a=1; Path=/".parse().unwrap());
                response
                    .headers_mut()
                    .append(SET_COOKIE, "b=2".parse().unwrap());
                response
                    .headers_mut()
                    .append("vary", "origin".parse().unwrap());
                response
                    .headers_mut()
                    .append("vary", "accept".parse().unwrap());
                response
            },
            || {
                let mut response = Response::new(Body::Text("<p>page</p>".into()));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, "text/html; charset=utf-8".parse().unwrap());
                response
            },
            || {
                let mut response = Response::new(Body::Binary(vec![0, 159, 146, 150]));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, "application/octet-stream".parse().unwrap());
                response
            },
            || {
                let mut response = Response::new(Body::Empty);
                *response.status_mut() = lambda_http::http::StatusCode::NO_CONTENT;
                response
            },
        ];
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for respond in responses {
            let theirs = runtime
                .block_on(
                    lambda_http::Adapter::from(lambda_http::service_fn(
                        move |_: Request| async move { Ok::<_, lambda_http::Error>(respond()) },
                    ))
                    .call(lambda_http::LambdaEvent::new(
                        parse_event(fixture("jwt")).unwrap(),
                        lambda_http::Context::default(),
                    )),
                )
                .unwrap();
            let ours = runtime.block_on(lambda_http::IntoResponse::into_response(respond()));
            let ours = Answer::<()>::HttpApi(Box::new(http_api_response(ours)));
            assert_eq!(
                serde_json::to_value(&ours).unwrap(),
                serde_json::to_value(&theirs).unwrap()
            );
        }
    }

    #[test]
    fn an_event_reads_as_the_type_its_version_names_and_as_lambda_http_reads_it() {
        use lambda_http::request::LambdaRequest;
        for (name, v2) in [("rest", false), ("jwt", true), ("url", true), ("sam", true)] {
            let text = fixture(name);
            let parsed = parse_event(text).unwrap();
            assert_eq!(
                matches!(parsed, LambdaRequest::ApiGatewayV2(_)),
                v2,
                "{name}"
            );
            assert_eq!(
                matches!(parsed, LambdaRequest::ApiGatewayV1(_)),
                !v2,
                "{name}"
            );
            let theirs = lambda_http::request::from_str(text).unwrap();
            assert_eq!(seen(&Request::from(parsed)), seen(&theirs), "{name}");
        }
        // An HTTP API event that does not say its version goes through lambda_http's order.
        let mut unversioned: serde_json::Value = serde_json::from_str(fixture("jwt")).unwrap();
        unversioned.as_object_mut().unwrap().remove("version");
        let text = unversioned.to_string();
        assert_eq!(
            seen(&request_from_event(&text).unwrap()),
            seen(&lambda_http::request::from_str(&text).unwrap())
        );
        // What no event type takes is refused, as the runtime's deserialisation of it.
        for refused in [
            "{}",
            "[]",
            "\"text\"",
            "{\"version\": \"2.0\", \"rawPath\": 5}",
        ] {
            assert!(request_from_event(refused).is_err(), "{refused}");
            assert!(
                serde_json::from_str::<ApiEvent>(refused).is_err(),
                "{refused}"
            );
        }
        assert!(serde_json::from_str::<ApiEvent>(fixture("jwt")).is_ok());
    }

    #[test]
    fn blank_means_nothing_visible() {
        for blank in [
            "",
            " \t\n",
            "\u{200b}",
            "\u{feff}\u{200d} \u{ad}",
            "\u{202e}\u{2066}",
            "\0",
        ] {
            assert!(is_blank(blank), "{blank:?}");
        }
        for shown in [
            "a",
            " too expensive ",
            "\u{200b}x",
            "🙂",
            "👩\u{200d}💻",
            "日本",
        ] {
            assert!(!is_blank(shown), "{shown:?}");
        }
    }

    #[test]
    fn tabs_and_line_breaks_are_the_only_control_characters_allowed() {
        assert!(!has_control_characters("a\tb\r\nc"));
        for c in ['\0', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}', '\u{9b}'] {
            assert!(has_control_characters(&format!("a{c}b")), "{c:?}");
        }
    }
}
