//! Lambda entry point of process_message: settings, the store client and the compiled
//! catalog are built once per process, then every request is served from them.

use lambda_http::{Error, Request, run, service_fn};

use process_message::handler::{App, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let app = App::from_env(&|name: &str| std::env::var(name).ok()).await?;
    let app = &app;
    run(service_fn(move |request: Request| async move {
        let started = std::time::Instant::now();
        let response = handle(app, request).await;
        // One EMF line per request: latency and error counts, as CloudWatch metrics.
        println!(
            "{}",
            salesloop::edge::emf::request_metrics(
                "process_message",
                response.status().as_u16(),
                started.elapsed()
            )
        );
        Ok::<_, Error>(response)
    }))
    .await
}
