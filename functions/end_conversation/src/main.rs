//! Lambda entry point of end_conversation: configuration, the store client and the trigger's
//! Lambda client are built once per process.

use std::time::Duration;

use lambda_http::{Error, Request, run, service_fn};
use salesloop::config::{ConfigError, StoreChoice, local_mode, number};
use salesloop::http::TenantSource;
use salesloop::model_cache::ModelCache;
use salesloop::patterns::DEFAULT_CATALOG;

use end_conversation::handler::{App, handle, pattern_names};
use end_conversation::trigger::Trigger;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let local = local_mode(&env)?;
    let store = StoreChoice::from_env(&env)?.open().await?;
    if salesloop::config::warm_up(&env)? {
        store.warm_up().await;
    }
    let feedback_every = number(&env, "FEEDBACK_EVERY", 100, 0, 1_000_000_000)?;
    let function = env("FEEDBACK_FUNCTION").unwrap_or_else(|| "feedback_loop".to_owned());
    let trigger = match (feedback_every, local, env("AWS_ENDPOINT_URL_LAMBDA")) {
        (0, _, _) => None,
        (_, true, Some(endpoint)) => Some(Trigger::local(&endpoint, function, true)),
        (_, true, None) => {
            tracing::warn!(
                "SALESLOOP_LOCAL=1 without AWS_ENDPOINT_URL_LAMBDA: no feedback trigger"
            );
            None
        }
        (_, false, _) => Some(Trigger::aws(function).await),
    };
    let catalog = match env("PATTERN_CATALOG") {
        Some(path) => std::fs::read_to_string(&path).map_err(|e| ConfigError {
            variable: "PATTERN_CATALOG",
            message: format!("cannot read {path}: {e}"),
        })?,
        None => DEFAULT_CATALOG.to_owned(),
    };
    let patterns = pattern_names(&catalog).map_err(|message| ConfigError {
        variable: "PATTERN_CATALOG",
        message,
    })?;
    let app = App {
        store,
        models: ModelCache::new(Duration::from_secs(30)),
        tenants: TenantSource {
            claim: env("TENANT_CLAIM").unwrap_or_else(|| "tenant_id".to_owned()),
            local,
        },
        patterns,
        feedback_every,
        trigger,
    };
    let app = &app;
    run(service_fn(move |request: Request| async move {
        let started = std::time::Instant::now();
        let response = handle(app, request).await;
        // One EMF line per request: latency and error counts, as CloudWatch metrics.
        println!(
            "{}",
            salesloop::emf::request_metrics(
                "end_conversation",
                response.status().as_u16(),
                started.elapsed()
            )
        );
        Ok::<_, Error>(response)
    }))
    .await
}
