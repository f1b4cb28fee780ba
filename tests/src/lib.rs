//! Test support for salesloop: a DynamoDB Local server started on a free port for the length of
//! a test run, the two stores every store-generic case runs on and the macro that registers a
//! case for both (`stores`), the contract suite that every store adapter must pass, and the
//! chaos suite's fault proxy and load clients.

pub mod contract;
pub mod detector_training;
pub mod dynamo_local;
pub mod events;
pub mod fake_llm;
pub mod fault_proxy;
pub mod flows;
pub mod hostile;
pub mod learning_curve;
pub mod load;
pub mod moto;
pub mod pattern_eval;
pub mod sqs;
pub mod stores;

use std::path::PathBuf;
use std::time::Duration;

/// The record budget a test gives process_message when the case is about what gets recorded,
/// not about how long the store may take. The default (1 s) is a production bound: on a loaded
/// two-core CI machine, DynamoDB Local shared by parallel cases has answered a single write in
/// more than a second, and the case then saw an honest unrecorded answer instead of the
/// recording it checks. The budget itself is tested where a store hangs (chaos, spool), with the
/// default.
pub const RECORD_BUDGET_UNDER_TEST: Duration = Duration::from_secs(30);

/// The workspace's top folder.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// What a `harness = false` test binary needs: DynamoDB Local, started for this run (the run
/// fails if it cannot start: never skipped), and a multi-threaded runtime for the trials.
pub fn server_and_runtime() -> (
    std::sync::Arc<dynamo_local::DynamoLocal>,
    std::sync::Arc<tokio::runtime::Runtime>,
) {
    let server = match dynamo_local::DynamoLocal::start() {
        Ok(server) => std::sync::Arc::new(server),
        Err(why) => {
            eprintln!("error: DynamoDB Local could not start, so these tests cannot run: {why}");
            std::process::exit(1);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    (server, std::sync::Arc::new(runtime))
}
