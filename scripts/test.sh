#!/usr/bin/env bash
# The test command behind `make test`: format, lints, then every test of the workspace, ending
# with one line that totals the tests cargo ran.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The template: sam validate --lint (cfn-lint 1.53.3) and checkov, zero failures.
bash scripts/infra-check.sh
# The API contract: api/openapi.yaml is a valid OpenAPI 3.1 document (a pinned validator);
# tests/tests/openapi.rs then holds every handler's responses to it.
bash scripts/openapi-validate.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# The benchmark crate (salesloop-benches) is type-checked and linted by clippy above, all its
# targets, so it cannot rot; `make bench` runs it. Running its criterion bench in test mode here
# cost ~15 s of CPU per run (a debug build: the 58,271-phrase automaton, every corpus message
# through process_message) and tests nothing that ships.
cargo test --workspace --all-targets --locked --exclude salesloop-benches 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
[[ $status == 0 ]] || exit "$status"
# The Lambda packages, built with cargo lambda for this machine, and their zipped sizes.
bash scripts/package.sh
