#!/usr/bin/env bash
# `make run`: the API functions and feedback_loop under cargo lambda watch with the embedded store, which only
# local builds carry (the `embedded` feature; Lambda builds leave SQLite out). Extra arguments
# go to `cargo lambda watch`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/cargo-lambda.sh watch \
    --features process_message/embedded,end_conversation/embedded,feedback_loop/embedded,read_api/embedded,admin_api/embedded,spool_consumer/embedded "$@"
