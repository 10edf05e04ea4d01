# clayhook — the two commands a fresh machine needs are `make local` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export SAM_CLI_TELEMETRY := 0
# moto_server with atomic DynamoDB writes (scripts/moto_server says why).
export MOTO_SERVER := $(abspath scripts/moto_server)
# The Lambda Runtime Interface Emulator shipped inside the aws-sam-cli package.
RIE = $(shell $(BIN)/python -c 'import samcli, os; print(os.path.join(os.path.dirname(samcli.__file__), "local/rapid/aws-lambda-rie-x86_64"))' 2>/dev/null)
# Tests run the built functions here, on x86_64; deployments default to arm64.
TEST_ARCH ?= x86_64

.PHONY: test venv fmt-check clippy unit validate sam-build e2e stress bench local sam-local sam-local-test clean

## Python tools (moto_server, sam, cargo-lambda, zig) pinned in requirements-dev.txt, in a
## project-local venv.
$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

## checkov apart: its pins would fight aws-sam-cli's.
CHECKOV_VENV ?= .venv-checkov
$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

fmt-check:
	cargo fmt --check

## Everything with the CLI, and the library and functions as the Lambda build sees them.
clippy:
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --no-default-features -- -D warnings

## Unit and integration tests (debug build; the harness starts moto_server itself).
unit: venv
	rm -rf target/test-logs
	cargo test --all-targets
	$(BIN)/python scripts/check_logs.py --json target/test-logs

validate: venv $(CHECKOV_VENV)/.installed
	sam validate --lint
	$(BIN)/python scripts/check_template.py template.yaml
	$(BIN)/python scripts/check_template.py --self-test template.yaml
	$(BIN)/python scripts/check_readme.py
	$(BIN)/python scripts/check_checkov.py $(abspath $(CHECKOV_VENV))/bin/checkov template.yaml --self-test

## One release build of the three functions, shared by `sam build` and the end-to-end test.
sam-build: venv
	sam build --parameter-overrides Architecture=$(TEST_ARCH)

## The built bootstrap files under aws-lambda-rie against moto_server (needs sam-build).
e2e: venv
	rm -rf target/e2e-logs
	CLAYHOOK_BUILD_DIR=$(abspath .aws-sam/build) AWS_LAMBDA_RIE=$(RIE) \
	  cargo test --test it end_to_end:: -- --include-ignored --nocapture
	$(BIN)/python scripts/check_logs.py target/e2e-logs

test: fmt-check clippy unit validate sam-build e2e

## Long suites (loopback only, bounded): a million property cases, the duplicate storm and
## the router fault storm; ends with one table.
STRESS_PROPTEST_CASES ?= 340000
stress: venv sam-build
	PROPTEST_CASES=$(STRESS_PROPTEST_CASES) cargo test --release --lib properties
	rm -rf target/stress-logs
	CLAYHOOK_BUILD_DIR=$(abspath .aws-sam/build) AWS_LAMBDA_RIE=$(RIE) CLAYHOOK_LOG_DIR=target/stress-logs \
	  cargo test --test stress -- --include-ignored --nocapture --exact nothing_lost_nothing_sent_twice
	$(BIN)/python scripts/check_logs.py target/stress-logs

## Cold start, warm cost and throughput beside the Node.js peer and the smallest lambda_http
## function, against a keep-alive DynamoDB/SQS stand-in; flame graphs of 1,000 warm invocations
## (a release build with symbols under perf); arm64 sizes. Prints one table and writes
## target/bench/results.md and target/bench/*-flamegraph.svg. Fails if a target is missed.
INFERNO_VERSION ?= 0.12.8
bench: venv sam-build
	cd bench/node-peer && npm ci --no-audit --no-fund --silent
	cargo install --quiet --locked --root target/tools inferno --version $(INFERNO_VERSION)
	rustup target add aarch64-unknown-linux-gnu
	cargo bench --bench pure
	cargo lambda build --release --bin minimal-http
	cargo build --profile profiling --no-default-features --bin ingest --bin router
	cargo lambda build --release --arm64 --bin ingest --bin router --bin feeder --lambda-dir target/lambda-arm64
	rm -rf target/bench-logs
	CLAYHOOK_BUILD_DIR=$(abspath .aws-sam/build) AWS_LAMBDA_RIE=$(RIE) NODE_PEER_DIR=$(abspath bench/node-peer) \
	  MINIMAL_HTTP_BOOTSTRAP=$(abspath target/lambda/minimal-http/bootstrap) PROFILING_DIR=$(abspath target/profiling) \
	  ARM64_DIR=$(abspath target/lambda-arm64) INFERNO_DIR=$(abspath target/tools/bin) \
	  CLAYHOOK_LOG_DIR=target/bench-logs cargo test --test bench -- --include-ignored --nocapture --exact bench_table

## The whole pipeline on this machine: ingest on :3000, moto_server, the router on the lead queue,
## and the feeder on the intake queue when CLAY_WEBHOOK_URLS is set.
local: venv
	cargo run --quiet --bin clayhook -- local

## `sam local` for real, under Docker: sam build for this machine, moto_server on 0.0.0.0:5000 with
## the table and queues, the destination printer on :9000, `sam local start-lambda` (:3001, fed
## by the queues) and `sam local start-api` (:3000). The commands are in scripts/sam-local.sh.
sam-local: venv
	scripts/sam-local.sh up

## The same commands as a test: `sam local invoke` of every file in events/, and start-api.
## SAM_INVOKE_IMAGE names a local Lambda base image where the real one cannot be pulled.
sam-local-test: venv sam-build
	cargo build --quiet --bin clayhook
	$(BIN)/python scripts/sam_local_test.py

clean:
	cargo clean
	rm -rf $(VENV) $(CHECKOV_VENV) .aws-sam
