//! Runs the store contract against both adapters: the embedded store, and DynamoDB through a
//! DynamoDB Local server that this run starts on a free port and stops at the end, pass or fail.
//! If the server cannot start, the run fails; it never skips the DynamoDB half.

use std::sync::Arc;

use libtest_mimic::Arguments;
use salesloop_tests::contract::{DynamoBackend, EmbeddedBackend, trials};

fn main() {
    let args = Arguments::from_args();
    let (server, runtime) = salesloop_tests::server_and_runtime();
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
