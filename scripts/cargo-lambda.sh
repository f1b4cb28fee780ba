#!/usr/bin/env bash
# Runs `cargo lambda "$@"` with a pinned cargo-lambda, installed from PyPI into the project-local
# virtualenv .venv/ (git-ignored) the first time, or again when the pin changes.
# Needs only python3 (with the venv module) and cargo. Example: scripts/cargo-lambda.sh watch
set -euo pipefail

CARGO_LAMBDA_VERSION=1.9.2

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv

installed_version() {
    # `cargo-lambda lambda --version` prints "cargo-lambda 1.9.2 (<commit> <date>)".
    "$VENV/bin/cargo-lambda" lambda --version 2>/dev/null | awk '{ print $2 }'
}

ensure_cargo_lambda() {
    [[ -x $VENV/bin/cargo-lambda && $(installed_version) == "$CARGO_LAMBDA_VERSION" ]] && return
    command -v python3 >/dev/null || { echo "error: python3 is required to install cargo-lambda" >&2; exit 1; }
    if ! "$VENV/bin/python" -c '' 2>/dev/null; then
        rm -rf "$VENV"
        python3 -m venv "$VENV" || {
            echo "error: 'python3 -m venv' failed; on Debian/Ubuntu install the python3-venv package" >&2
            exit 1
        }
    fi
    echo "installing cargo-lambda $CARGO_LAMBDA_VERSION into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "cargo-lambda==$CARGO_LAMBDA_VERSION"
    [[ $(installed_version) == "$CARGO_LAMBDA_VERSION" ]] || {
        echo "error: cargo-lambda $CARGO_LAMBDA_VERSION did not install into $VENV" >&2
        exit 1
    }
}

if command -v flock >/dev/null; then
    # Two runs starting at once must not install into the same virtualenv together; the lock is
    # held on this script, so it leaves no file behind.
    exec 9<"${BASH_SOURCE[0]}"
    flock 9
    ensure_cargo_lambda
    exec 9<&-
else
    ensure_cargo_lambda
fi

export PATH="$VENV/bin:$PATH"
exec cargo lambda "$@"
