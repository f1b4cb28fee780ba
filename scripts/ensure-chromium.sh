#!/usr/bin/env bash
# ensure-chromium.sh — print the path of a headless-capable Chromium,
# installing Debian's `chromium` package if none is on PATH.
#
# Usage:  CHROMIUM="$(scripts/ensure-chromium.sh)"
#
# stdout: exactly one line, the absolute path of the browser binary.
# stderr: progress messages.
# Exit codes: 0 found/installed, 1 install failed, 2 cannot install here
# (neither root nor password-less sudo, or no apt-get).
set -euo pipefail

log() { printf 'ensure-chromium: %s\n' "$*" >&2; }

find_chromium() {
    local name
    for name in chromium chromium-browser; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if path="$(find_chromium)"; then
    printf '%s\n' "$path"
    exit 0
fi

# Decide how to run apt-get: directly as root, or through password-less sudo.
if [[ "$(id -u)" -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    log "chromium is not installed and this user can neither run apt-get as root nor use 'sudo -n'."
    log "Install it yourself, e.g.:  sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium"
    exit 2
fi
if ! command -v apt-get >/dev/null 2>&1; then
    log "chromium is not installed and apt-get is not available; install the Debian/Ubuntu 'chromium' package (or put a chromium binary on PATH)."
    exit 2
fi

export DEBIAN_FRONTEND=noninteractive
apt_update() {
    log "running apt-get update"
    "${SUDO[@]}" apt-get update >&2 || { log "apt-get update failed"; exit 1; }
}
apt_install() {
    log "installing chromium (apt-get install --no-install-recommends chromium)"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends chromium >&2
}

# Only refresh the package lists when there are none (a fresh image has just
# lock and partial/ there), or when the install fails without it (stale lists
# naming versions the mirror no longer has).
if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -type f -name '*_Packages*' -print -quit 2>/dev/null)" ]]; then
    apt_update
fi
if ! apt_install; then
    log "install failed; refreshing package lists and retrying"
    apt_update
    apt_install || { log "apt-get install chromium failed"; exit 1; }
fi

if path="$(find_chromium)"; then
    log "installed: $("$path" --version 2>/dev/null || echo unknown version)"
    printf '%s\n' "$path"
    exit 0
fi
log "chromium package installed but no chromium binary found on PATH"
exit 1
