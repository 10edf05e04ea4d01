# clayhook — the two commands a fresh machine needs are `make local` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
export SAM_CLI_TELEMETRY := 0
export MOTO_SERVER := $(abspath $(VENV))/bin/moto_server

.PHONY: test venv fmt-check clippy unit clean

## Python tools (moto_server, ...) pinned in requirements-dev.txt, in a project-local venv.
$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

fmt-check:
	cargo fmt --check

clippy:
	cargo clippy --all-targets -- -D warnings

## Unit and integration tests (debug build; the harness starts moto_server itself).
unit: venv
	cargo test --all-targets

test: fmt-check clippy unit

clean:
	cargo clean
	rm -rf $(VENV) .aws-sam
