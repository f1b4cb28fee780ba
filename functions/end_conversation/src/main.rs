//! Lambda entry point. Configuration and the store are built once per process, before the
//! first request; the request handling itself arrives with its issue.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use salesloop::config::StoreChoice;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let choice = StoreChoice::from_env(&|name| std::env::var(name).ok())?;
    let _store = choice.open().await?;
    run(service_fn(|_event: LambdaEvent<Value>| async {
        Ok::<_, Error>(json!({
            "statusCode": 501,
            "headers": {"content-type": "application/json"},
            "body": json!({"error": {"code": "not_implemented", "message": "this function is not built yet"}}).to_string(),
        }))
    }))
    .await
}
