//! Lambda entry point of feedback_loop, and its command line for people:
//!
//! ```text
//! feedback_loop report [--tenant T] [--json]   current model, metrics and A/B tables
//! feedback_loop run [--tenant T]               one feedback run now, on the configured store
//! ```
//!
//! Both read the same settings as the function (`TABLE_NAME` for DynamoDB, else the embedded
//! store in `SALESLOOP_DATA_DIR`, in a build with the `embedded` feature).

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use salesloop::edge::settings::FeedbackSettings;
use salesloop::{AnyStore, Store, TenantId};
use serde_json::Value;

use feedback_loop::{App, FanOut, Trigger, handle, parse_trigger, report, run_settings};
use salesloop::clients::lambda::Invoker;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let settings = FeedbackSettings::from_env(&|name: &str| std::env::var(name).ok())?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        return cli(&args, &settings).await;
    }
    lambda_runtime::tracing::init_default_subscriber();
    let store = settings.store.open().await?;
    let mut app = with_detector(App::new(store, run_settings(&settings)), &settings)?;
    if let Some(function) = &settings.fan_out_function {
        let sdk = salesloop::clients::aws::sdk_config(settings.store.native_roots).await;
        app = app.with_fan_out(FanOut::Invoke(Invoker::aws(sdk, function.clone())));
    }
    let app = &app;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let trigger = parse_trigger(&event.payload)?;
        handle(app, trigger, &event.context.request_id, &|line| {
            println!("{line}")
        })
        .await
        .map_err(Error::from)
    }))
    .await
}

/// The app over the weights `PATTERN_DETECTOR` names, if it names any; unreadable weights stop
/// the start-up, as they stop process_message's.
fn with_detector<S: Store>(app: App<S>, settings: &FeedbackSettings) -> Result<App<S>, Error> {
    match &settings.detector {
        None => Ok(app),
        Some(bytes) => app
            .with_detector(bytes)
            .map_err(|e| Error::from(format!("PATTERN_DETECTOR: {e}"))),
    }
}

async fn cli(args: &[String], settings: &FeedbackSettings) -> Result<(), Error> {
    let mut tenant = None;
    let mut json = false;
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--tenant" => {
                let raw = rest.next().ok_or("--tenant needs a value")?;
                tenant = Some(TenantId::parse(raw)?);
            }
            "--json" => json = true,
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    let store: AnyStore = settings
        .store
        .choice
        .clone()
        .open(settings.store.native_roots)
        .await?;
    let tenants = match tenant {
        Some(t) => vec![t],
        None => store.tenants().await?,
    };
    match args[0].as_str() {
        "report" => {
            if tenants.is_empty() {
                println!("no tenant has ended a conversation yet");
            }
            for tenant in &tenants {
                let current = store.current_model(tenant).await?;
                if json {
                    // What `GET /report` answers for the tenant.
                    let view = salesloop::service::reads::report(&store, tenant).await?;
                    println!("{}", serde_json::to_string_pretty(&view)?);
                } else {
                    println!("{}", report::render(tenant, current.as_ref()));
                }
            }
        }
        "run" => {
            let app = with_detector(App::new(store, run_settings(settings)), settings)?;
            let holder = format!("cli-{}", std::process::id());
            for tenant in tenants {
                let summary = handle(&app, Trigger::Tenant(tenant), &holder, &|_| {}).await?;
                println!("{summary}");
            }
        }
        _ => return Err(USAGE.into()),
    }
    Ok(())
}

const USAGE: &str =
    "usage: feedback_loop report [--tenant T] [--json] | feedback_loop run [--tenant T]";
