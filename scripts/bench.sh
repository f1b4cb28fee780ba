#!/usr/bin/env bash
# make bench: every benchmark side by side in one run, then BENCHMARKS.md rewritten with the
# figures, the machine, the date and the command.
#   SMOKE=1 bash scripts/bench.sh   a few iterations of each (criterion in --test mode), report
#                                   to ${OUT:-$TARGET/bench-smoke.md}: the test command's check
#                                   that the benchmarks still run.
# Everything shares one release build per host triple: cargo lambda's (scripts/package.sh), the
# bench binary's and criterion's.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
# Absolute: criterion runs in benches/, the report is written from the top folder.
export CRITERION_HOME=$(realpath -m "$TARGET")/criterion

make -s tools

# The Python peer of the cold-start benchmark, pinned.
if ! cmp -s benches/python/requirements.txt .venv-bench/requirements.txt 2>/dev/null; then
    rm -rf .venv-bench
    python3 -m venv .venv-bench
    .venv-bench/bin/pip install --quiet --disable-pip-version-check -r benches/python/requirements.txt
    cp benches/python/requirements.txt .venv-bench/requirements.txt
fi

# The three bootstraps, zipped (package sizes), built as cargo lambda builds them.
bash scripts/package.sh
cargo build --release --locked --target "$TRIPLE" -p salesloop-benches --bin bench

if [[ ${SMOKE:-0} == 1 ]]; then
    cargo bench --locked --target "$TRIPLE" -p salesloop-benches --bench detection -- --test
    "$TARGET/$TRIPLE/release/bench" --smoke --out "${OUT:-$TARGET/bench-smoke.md}"
else
    cargo bench --locked --target "$TRIPLE" -p salesloop-benches --bench detection
    "$TARGET/$TRIPLE/release/bench"
fi
