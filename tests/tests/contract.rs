//! Runs the store contract against both adapters: the embedded store, and DynamoDB through a
//! DynamoDB Local server that this run starts on a free port and stops at the end, pass or fail.
//! If the server cannot start, the run fails; it never skips the DynamoDB half.

use std::sync::Arc;

use libtest_mimic::Arguments;
use salesloop_tests::contract::{DynamoBackend, EmbeddedBackend, trials};
use salesloop_tests::dynamo_local::DynamoLocal;

fn main() {
    let args = Arguments::from_args();
    let server = match DynamoLocal::start() {
        Ok(server) => Arc::new(server),
        Err(why) => {
            eprintln!("error: DynamoDB Local could not start, so the contract cannot run: {why}");
            std::process::exit(1);
        }
    };
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("tokio runtime"),
    );
    let mut all = trials(
        "embedded",
        Arc::new(EmbeddedBackend::default()),
        runtime.clone(),
    );
    all.extend(trials(
        "dynamodb",
        Arc::new(DynamoBackend {
            server: server.clone(),
        }),
        runtime,
    ));
    let conclusion = libtest_mimic::run(&args, all);
    // Stop the server before exiting: process::exit skips destructors.
    drop(server);
    conclusion.exit();
}
