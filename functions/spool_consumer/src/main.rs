//! Lambda entry point of spool_consumer (an SQS event source on the spool, with partial batch
//! failure reporting), and its command line for people:
//!
//! ```text
//! spool_consumer replay FILE...   record the unrecorded-exchange lines of log files
//! ```
//!
//! Both read the functions' store settings (`TABLE_NAME` for DynamoDB, else the embedded store
//! in `SALESLOOP_DATA_DIR`, in a build with the `embedded` feature). The function also reads
//! `SPOOL_DEAD_LETTER_QUEUE_URL`, where a record that can never be recorded goes.

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use salesloop::clients::sqs::FifoQueue;
use salesloop::edge::settings::StoreSettings;

use spool_consumer::handler::{App, handle};
use spool_consumer::replay::{ReplaySummary, replay};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = |name: &str| std::env::var(name).ok();
    let settings = StoreSettings::from_env(&env)?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        return cli(&args, settings).await;
    }
    lambda_runtime::tracing::init_default_subscriber();
    let dead_letters = match env("SPOOL_DEAD_LETTER_QUEUE_URL").filter(|u| !u.is_empty()) {
        Some(url) => {
            let sdk = salesloop::clients::aws::sdk_config(settings.native_roots).await;
            Some(FifoQueue::new(sdk, url))
        }
        None => None,
    };
    let store = settings.open().await?;
    let app = App {
        store,
        dead_letters,
    };
    let app = &app;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(handle(app, event.payload).await)
    }))
    .await
}

async fn cli(args: &[String], settings: StoreSettings) -> Result<(), Error> {
    let ("replay", files) = (args[0].as_str(), &args[1..]) else {
        return Err(USAGE.into());
    };
    if files.is_empty() {
        return Err(USAGE.into());
    }
    let store = settings.choice.open(settings.native_roots).await?;
    let mut summary = ReplaySummary::default();
    for file in files {
        let input = std::fs::File::open(file).map_err(|e| format!("{file}: {e}"))?;
        replay(&store, file, std::io::BufReader::new(input), &mut summary)
            .await
            .map_err(|e| format!("{file}: {e}"))?;
    }
    println!("{summary}");
    if summary.retry.is_empty() {
        Ok(())
    } else {
        Err("the store did not take every line; run the replay again".into())
    }
}

const USAGE: &str = "usage: spool_consumer replay FILE...";
