//! Lambda entry point of process_message: settings, the store client, the LLM's key (read from
//! SSM) and the compiled catalog are built once per process, then every request is served from
//! them. An error here (a key that cannot be read, say) ends the init: Lambda records it, and the
//! next request starts a process that tries again.

use lambda_http::Error;

use process_message::handler::{App, handle};
use salesloop::domain::detector::shipped_model;
use salesloop::domain::patterns::Catalog;

fn main() -> Result<(), Error> {
    // The built-in catalog (read from its compiled form) and the detector weights (each under
    // a millisecond of CPU, built once per process: BENCHMARKS.md times both) are built on
    // threads of their own from the first instant, alongside each other, the runtime, the
    // settings, the AWS configuration and the warm-up read; `App::from_env` takes them when it
    // gets there, waiting only for what is not finished yet.
    std::thread::spawn(|| drop(Catalog::builtin()));
    std::thread::spawn(|| {
        shipped_model();
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let app = App::from_env(&|name: &str| std::env::var(name).ok()).await?;
    let app = &app;
    salesloop::edge::http::serve("process_message", |request| handle(app, request)).await
}
