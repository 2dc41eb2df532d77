# STEDI lakehouse. `make demo` and `make test` set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
CARGO ?= cargo

.PHONY: setup build test demo lint fmt clean down

## Project-local virtualenv with moto_server (the local AWS).
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

build:
	$(CARGO) build --workspace --all-targets

## Unit tests (no network) and integration tests (each against its own moto_server).
test: setup
	$(CARGO) test --workspace

## Start the local stack, bootstrap it, drop the sample data, print every table's rows.
demo: setup
	$(CARGO) run --quiet -p stedi-cli -- demo

down:
	$(CARGO) run --quiet -p stedi-cli -- down

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	rm -rf $(VENV) .stedi
	$(CARGO) clean
