//! Lambda entry point of admin_api: settings and the store client are built once per process,
//! then every admin request is served from them. Its role may read and write only the tenants'
//! configuration and model partitions.

use lambda_http::Error;
use salesloop::edge::settings::ApiSettings;

use admin_api::handler::{App, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let settings = ApiSettings::from_env(&|name: &str| std::env::var(name).ok())?;
    let store = settings.store.open().await?;
    let app = App {
        store,
        tenants: settings.tenants.clone(),
        admin: settings.admin.clone(),
    };
    let app = &app;
    salesloop::edge::http::serve("admin_api", |request| handle(app, request)).await
}
