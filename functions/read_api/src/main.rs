//! Lambda entry point of read_api: settings and the store client are built once per process,
//! then every read is served from them. Its role may only read the table.

use lambda_http::{Error, Request, run, service_fn};
use salesloop::edge::settings::ApiSettings;

use read_api::handler::{App, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let settings = ApiSettings::from_env(&|name: &str| std::env::var(name).ok())?;
    let store = settings.store.open().await?;
    let app = App {
        store,
        tenants: settings.tenants.clone(),
    };
    let app = &app;
    run(service_fn(move |request: Request| async move {
        let started = std::time::Instant::now();
        let response = handle(app, request).await;
        // One EMF line per request: latency and error counts, as CloudWatch metrics.
        println!(
            "{}",
            salesloop::edge::emf::request_metrics(
                "read_api",
                response.status().as_u16(),
                started.elapsed()
            )
        );
        Ok::<_, Error>(response)
    }))
    .await
}
