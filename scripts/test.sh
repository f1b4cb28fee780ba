#!/usr/bin/env bash
# The test command behind `make test`: format, lints, then every test of the workspace, ending
# with one line that totals the tests cargo ran.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The template: sam validate --lint (cfn-lint 1.53.3) and checkov, zero failures.
bash scripts/infra-check.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets --locked 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
[[ $status == 0 ]] || exit "$status"
# The Lambda packages, built with cargo lambda for this machine, and their zipped sizes.
bash scripts/package.sh
