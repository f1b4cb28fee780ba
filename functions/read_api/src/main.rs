//! Lambda entry point of read_api: settings and the store client are built once per process,
//! then every read is served from them. Its role may only read the table.

use lambda_http::Error;
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
    salesloop::edge::http::serve("read_api", |request| handle(app, request)).await
}
