//! Test support for salesloop: a DynamoDB Local server started on a free port for the length of
//! a test run, and the contract suite that every store adapter must pass.

pub mod contract;
pub mod dynamo_local;
pub mod events;
pub mod pattern_eval;

use std::path::PathBuf;

/// The workspace's top folder.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}
