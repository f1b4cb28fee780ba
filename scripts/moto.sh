#!/usr/bin/env bash
# Runs moto's server (`moto_server "$@"`), the stand-in for AWS APIs that tests/tests/secrets.rs
# starts on a free port (SSM Parameter Store), with a pinned moto installed from PyPI into the
# project-local virtualenv .venv-moto/ (git-ignored) the first time, or again when the pin
# changes. Needs only python3 (with the venv module). Example: scripts/moto.sh -H 127.0.0.1 -p 5000
set -euo pipefail

MOTO_VERSION=5.2.5

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv-moto

installed_version() {
    "$VENV/bin/python" -c 'from importlib.metadata import version; print(version("moto"))' 2>/dev/null
}

ensure_moto() {
    [[ -x $VENV/bin/moto_server && $(installed_version) == "$MOTO_VERSION" ]] && return
    command -v python3 >/dev/null || { echo "error: python3 is required to install moto" >&2; exit 1; }
    if ! "$VENV/bin/python" -c '' 2>/dev/null; then
        rm -rf "$VENV"
        python3 -m venv "$VENV" || {
            echo "error: 'python3 -m venv' failed; on Debian/Ubuntu install the python3-venv package" >&2
            exit 1
        }
    fi
    echo "installing moto $MOTO_VERSION into $VENV" >&2
    # server: moto_server and its web framework; ssm: what the SSM backend imports.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "moto[server,ssm]==$MOTO_VERSION"
    [[ $(installed_version) == "$MOTO_VERSION" ]] || {
        echo "error: moto $MOTO_VERSION did not install into $VENV" >&2
        exit 1
    }
}

if command -v flock >/dev/null; then
    # Two test runs starting at once must not install into the same virtualenv together; the
    # lock is held on this script, so it leaves no file behind.
    exec 9<"${BASH_SOURCE[0]}"
    flock 9
    ensure_moto
    exec 9<&-
else
    ensure_moto
fi

exec "$VENV/bin/moto_server" "$@"
