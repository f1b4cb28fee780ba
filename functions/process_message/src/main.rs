//! Lambda entry point of process_message: configuration, the store client and the compiled
//! catalog are built once per process, then every request is served from them.

use std::time::Duration;

use lambda_http::{Error, Request, run, service_fn};
use salesloop::config::{StoreChoice, local_mode};
use salesloop::engine::Engine;
use salesloop::http::TenantSource;
use salesloop::llm::{LlmClient, LlmConfig};
use salesloop::model_cache::ModelCache;
use salesloop::privacy::TextStorage;

use process_message::handler::{App, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let env = |name: &str| std::env::var(name).ok();
    let store = StoreChoice::from_env(&env)?.open().await?;
    if salesloop::config::warm_up(&env)? {
        store.warm_up().await;
    }
    let llm = match LlmConfig::from_env(&env)? {
        Some(config) => Some(LlmClient::new(config)?),
        None => None,
    };
    let app = App {
        store,
        engine: Engine::from_env(&env)?,
        models: ModelCache::new(Duration::from_secs(30)),
        tenants: TenantSource {
            claim: env("TENANT_CLAIM").unwrap_or_else(|| "tenant_id".to_owned()),
            local: local_mode(&env)?,
        },
        llm,
        text_storage: TextStorage::from_env(&env)?,
    };
    let app = &app;
    run(service_fn(move |request: Request| async move {
        let started = std::time::Instant::now();
        let response = handle(app, request).await;
        // One EMF line per request: latency and error counts, as CloudWatch metrics.
        println!(
            "{}",
            salesloop::emf::request_metrics(
                "process_message",
                response.status().as_u16(),
                started.elapsed()
            )
        );
        Ok::<_, Error>(response)
    }))
    .await
}
