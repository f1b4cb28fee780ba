//! process_message's handler served over plain HTTP, as a real process the chaos suite can kill
//! mid-request: `message_server <port>`. The function is configured from the environment exactly
//! as on Lambda (`App::from_env`: `TABLE_NAME`, `AWS_ENDPOINT_URL_DYNAMODB`, ...); only the
//! Lambda runtime is replaced by an HTTP server. With `SALESLOOP_LOCAL=1` the tenant comes
//! from `x-tenant-id`. It prints `listening` once it accepts connections.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use lambda_http::{Body, RequestExt};
use process_message::handler::{App, handle};
use salesloop::store::AnyStore;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The HTTP request as the Lambda runtime would hand it to the handler.
async fn to_lambda(request: hyper::Request<Incoming>) -> Result<lambda_http::Request, Error> {
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let body = match String::from_utf8(bytes.to_vec()) {
        Ok(text) if text.is_empty() => Body::Empty,
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    };
    let path = parts.uri.path().to_owned();
    let mut converted = lambda_http::http::Request::builder()
        .method(parts.method)
        .uri(parts.uri);
    for (name, value) in &parts.headers {
        converted = converted.header(name, value);
    }
    Ok(converted.body(body)?.with_raw_http_path(path))
}

fn from_lambda(response: lambda_http::Response<Body>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Text(text) => Bytes::from(text),
        Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    hyper::Response::from_parts(parts, Full::new(bytes))
}

async fn serve(
    app: &'static App<AnyStore>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Error> {
    let request = to_lambda(request).await?;
    Ok(from_lambda(handle(app, request).await))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let port: u16 = std::env::args()
        .nth(1)
        .ok_or("usage: message_server <port>")?
        .parse()?;
    let env = |name: &str| std::env::var(name).ok();
    let app: &'static App<AnyStore> = Box::leak(Box::new(App::from_env(&env).await?));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| serve(app, request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
