//! Lambda entry point. Configuration and the store are built once per process, before the
//! first request. The request handling itself is issue 4's work: until then every request is
//! answered with a JSON 501 that says so.

use lambda_http::{Body, Error, Request, Response, run, service_fn};
use salesloop::config::StoreChoice;
use salesloop::http::ApiError;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let choice = StoreChoice::from_env(&|name| std::env::var(name).ok())?;
    let _store = choice.open().await?;
    run(service_fn(|_request: Request| async {
        Ok::<Response<Body>, Error>(
            ApiError::new(501, "not_implemented", "this function is not built yet").into_response(),
        )
    }))
    .await
}
