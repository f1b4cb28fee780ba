#!/usr/bin/env bash
# make bench: every benchmark side by side in one run, then BENCHMARKS.md rewritten with the
# figures, the machine, the date and the command.
#   SMOKE=1 bash scripts/bench.sh   a few iterations of each (criterion: 10 samples), report
#                                   to ${OUT:-$TARGET/bench-smoke.md}: a check
#                                   that the benchmarks still run. BENCHMARKS.md is left alone.
# Exits non-zero, leaving BENCHMARKS.md as it was, if a figure would include a failed invocation.
# Two release builds for the host triple: cargo lambda's of the functions (scripts/package.sh,
# the bootstraps the cold starts run) and `cargo bench`'s of the bench binary and criterion's bench.
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

# The feedback scaling also runs feedback_loop on the embedded store, which deploy builds leave
# out: a build with the `embedded` feature, kept apart under another name.
cargo build --release --locked --target "$TRIPLE" -p feedback_loop --features embedded
cp "$TARGET/$TRIPLE/release/feedback_loop" "$TARGET/$TRIPLE/release/feedback_loop_embedded"
# The three bootstraps, zipped (package sizes), built as cargo lambda builds them (after the
# build above, so the cold starts time the deploy build of feedback_loop).
bash scripts/package.sh
# The bench binary and criterion's bench in one build: `cargo bench` resolves features with the
# dev-dependencies, so a separate `cargo build --release` of the binary compiled every dependency
# a second time.
cargo bench --no-run --locked --target "$TRIPLE" -p salesloop-benches

# The report reads criterion's estimates from CRITERION_HOME: only this run's may be there (a
# bench that wrote none then stops the report instead of showing an older run's figure).
rm -rf "$CRITERION_HOME"
if [[ ${SMOKE:-0} == 1 ]]; then
    # A few samples each (benches/benches/detection.rs reads SMOKE), written where the report
    # reads them: the smoke run checks that path end to end.
    SMOKE=1 cargo bench --locked --target "$TRIPLE" -p salesloop-benches --bench detection
    "$TARGET/$TRIPLE/release/bench" --smoke --out "${OUT:-$TARGET/bench-smoke.md}"
else
    cargo bench --locked --target "$TRIPLE" -p salesloop-benches --bench detection
    "$TARGET/$TRIPLE/release/bench"
fi
