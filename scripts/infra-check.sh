#!/usr/bin/env bash
# Lints and scans infra/template.yaml with pinned tools installed into .venv-infra/ (git-ignored):
# `sam validate --lint` (aws-sam-cli with cfn-lint 1.53.3; newer cfn-lint stops checking SAM
# resources) and checkov. Both must report zero failures; checkov's skips carry their reason
# in the template (Metadata: checkov: skip: comment).
set -euo pipefail

SAM_VERSION=1.170.0
CFN_LINT_VERSION=1.53.3
CHECKOV_VERSION=3.2.459

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv-infra
STAMP=$VENV/.versions
WANT="sam=$SAM_VERSION cfn-lint=$CFN_LINT_VERSION checkov=$CHECKOV_VERSION"

install() {
    [[ -f $STAMP && $(cat "$STAMP") == "$WANT" ]] && return
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    echo "installing $WANT into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "aws-sam-cli==$SAM_VERSION" "cfn-lint==$CFN_LINT_VERSION" "checkov==$CHECKOV_VERSION"
    echo "$WANT" >"$STAMP"
}

if command -v flock >/dev/null; then
    exec 9<"${BASH_SOURCE[0]}"
    flock 9
    install
    exec 9<&-
else
    install
fi

export SAM_CLI_TELEMETRY=0
cd "$ROOT"
"$VENV/bin/sam" validate --lint --template-file infra/template.yaml --region us-east-1
"$VENV/bin/checkov" --file infra/template.yaml --framework cloudformation --skip-download \
    --quiet --compact
