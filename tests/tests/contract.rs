//! Runs the store contract against both adapters: the embedded store, and DynamoDB through a
//! DynamoDB Local server that this run starts on a free port and stops at the end, pass or fail.
//! If the server cannot start, the DynamoDB cases fail; they are never skipped silently.

use salesloop_tests::contract::trials;
use salesloop_tests::stores::Harness;

fn main() {
    let harness = Harness::new();
    let all = trials(&harness);
    harness.run(all).exit();
}
