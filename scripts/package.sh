#!/usr/bin/env bash
# Builds each function's Lambda package with `cargo lambda build --release` for this machine's
# architecture (the deploy builds arm64: see docs/operations.md, "Deploy") and reports its zipped size
# against the 5 MB budget (issue 17).
set -euo pipefail
cd "$(dirname "$0")/.."

case $(uname -m) in
    x86_64) arch=--x86-64 ;;
    aarch64 | arm64) arch=--arm64 ;;
    *) echo "error: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac

bash scripts/cargo-lambda.sh build --release "$arch" --compiler cargo --output-format zip \
    --bin process_message --bin end_conversation --bin feedback_loop --bin read_api --bin admin_api \
    --bin spool_consumer \
    --lambda-dir "${CARGO_TARGET_DIR:-target}/lambda" >&2
budget=$((5 * 1000 * 1000))
status=0
for function in process_message end_conversation feedback_loop read_api admin_api spool_consumer; do
    zip=${CARGO_TARGET_DIR:-target}/lambda/$function/bootstrap.zip
    size=$(stat -c %s "$zip")
    printf 'package %-17s %9d bytes zipped (%.2f MB; budget 5 MB)\n' "$function" "$size" \
        "$(echo "$size / 1000000" | bc -l)"
    ((size < budget)) || { echo "error: $function is over budget" >&2; status=1; }
done
exit $status
