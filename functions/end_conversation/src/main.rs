//! Lambda entry point of end_conversation: settings, the store client and the trigger's
//! Lambda client are built once per process.

use lambda_http::Error;
use salesloop::domain::patterns::DEFAULT_CATALOG;
use salesloop::edge::settings::{ConfigError, EndSettings};
use salesloop::service::ModelCache;

use end_conversation::handler::{App, handle, pattern_names};
use end_conversation::trigger::Trigger;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let settings = EndSettings::from_env(&|name: &str| std::env::var(name).ok())?;
    let store = settings.api.store.open().await?;
    let local = settings.api.tenants.local;
    let function = settings.feedback_function.clone();
    let trigger = match (settings.feedback_every, local, &settings.lambda_endpoint) {
        (0, _, _) => None,
        (_, true, Some(endpoint)) => Some(Trigger::local(endpoint, function, true)),
        (_, true, None) => {
            tracing::warn!(
                "SALESLOOP_LOCAL=1 without AWS_ENDPOINT_URL_LAMBDA: no feedback trigger"
            );
            None
        }
        (_, false, _) => {
            let sdk = salesloop::clients::aws::sdk_config(settings.api.store.native_roots).await;
            Some(Trigger::aws(sdk, function))
        }
    };
    let catalog = settings.catalog.as_deref().unwrap_or(DEFAULT_CATALOG);
    let patterns =
        pattern_names(catalog).map_err(|message| ConfigError::new("PATTERN_CATALOG", message))?;
    let app = App {
        store,
        models: ModelCache::with_budget(settings.api.cache_age, settings.api.cache_bytes),
        tenants: settings.api.tenants.clone(),
        patterns,
        feedback_every: settings.feedback_every,
        trigger,
        text_storage: settings.text_storage,
    };
    let app = &app;
    salesloop::edge::http::serve("end_conversation", |request| handle(app, request)).await
}
