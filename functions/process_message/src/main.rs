//! Lambda entry point of process_message: settings, the store client and the compiled
//! catalog are built once per process, then every request is served from them.

use lambda_http::Error;

use process_message::handler::{App, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let app = App::from_env(&|name: &str| std::env::var(name).ok()).await?;
    let app = &app;
    salesloop::edge::http::serve("process_message", |request| handle(app, request)).await
}
