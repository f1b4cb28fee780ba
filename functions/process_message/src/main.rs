//! Lambda entry point of process_message: settings, the store client, the LLM's key (read from
//! SSM) and the compiled catalog are built once per process, then every request is served from
//! them. An error here (a key that cannot be read, say) ends the init: Lambda records it, and the
//! next request starts a process that tries again.

use lambda_http::Error;

use process_message::handler::{App, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let app = App::from_env(&|name: &str| std::env::var(name).ok()).await?;
    let app = &app;
    salesloop::edge::http::serve("process_message", |request| handle(app, request)).await
}
