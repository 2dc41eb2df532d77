# STEDI lakehouse. `make demo` and `make test` set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
CARGO ?= cargo

.PHONY: setup tools build test demo lint fmt clean down check-template lambda-smoke lambda-build bench bench-lambda bench-smoke bench-scale bench-dt bench-cost bench-compact bench-erasure

## Project-local virtualenv with moto_server (the local AWS).
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

## Deployment and benchmark tools from PyPI: cargo-lambda, ziglang, aws-sam-cli, cfn-lint, duckdb.
tools: $(VENV)/.tools

$(VENV)/.tools: $(VENV)/.installed requirements-tools.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-tools.txt
	touch $@

build:
	$(CARGO) build --workspace --all-targets

## cfn-lint, `sam validate --lint` and checkov (in .venv/checkov, see requirements-tools.txt) on template.yaml.
check-template: tools
	$(VENV)/bin/cfn-lint template.yaml
	SAM_CLI_TELEMETRY=0 $(VENV)/bin/sam validate --lint --template template.yaml --region us-east-1
	test -x $(VENV)/checkov/bin/pip || $(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet --disable-pip-version-check \
	  $$(sed -n 's/^# isolated: *//p' requirements-tools.txt)
	$(VENV)/checkov/bin/checkov -f template.yaml --framework cloudformation \
	  --compact --quiet --skip-download

## A function under `cargo lambda watch`, invoked with `cargo lambda invoke`, against moto.
lambda-smoke: setup tools
	bash infra/lambda-smoke.sh

## Release arm64 bootstraps of every function (what `sam build` runs), with their sizes.
lambda-build: tools
	rustup target list --installed | grep -q aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --release --arm64 \
	  $(foreach f,$(FUNCTIONS),--bin $(f))
	@for f in $(FUNCTIONS); do \
	  b="$${CARGO_TARGET_DIR:-target}/lambda/$$f/bootstrap"; \
	  printf '%-40s %s bytes\n' "$$f" "$$(stat -c %s "$$b")"; done

## One Lambda binary per folder of functions/ (its crate and binary share the name).
FUNCTIONS := $(notdir $(wildcard functions/*))

## Template checks, the cargo-lambda smoke test, then unit tests (no network) and
## integration tests (each against its own moto_server).
test: setup tools check-template lambda-smoke
	$(CARGO) test --workspace

## Start the local stack, bootstrap it, drop the sample data, print every table's rows.
demo: setup
	$(CARGO) run --quiet -p stedi-cli -- demo

down:
	$(CARGO) run --quiet -p stedi-cli -- down

## The benchmark (see README "Performance"): the compute path per function, the parser
## candidates and the whole pipeline against DuckDB, end to end on the sample, the 1 GB file
## under a 256 MiB cap; prints the table and RESULT lines. Builds only the host release
## `stedi-bench` (minutes on a cold machine), never the arm64 bootstraps.
bench: setup tools
	$(VENV)/bin/python bench/run.py

## Release arm64 bootstrap sizes and cold-start init time (waits for `make lambda-build`).
bench-lambda: setup tools lambda-build
	$(VENV)/bin/python bench/run.py --lambda

## Customer-scale probe (not in `make test`): 100k and 1M registrations through the
## functions' own code path; peak RSS, ms and bytes per function, cold and warm.
bench-scale: setup
	$(VENV)/bin/python bench/scale.py

## One dt filling up (not in `make test`): 91 phone files arriving one by one; rows the ML
## function writes and handler time per arrival, first vs last (SCALE.md's probe).
bench-dt: setup
	cd bench && ../$(VENV)/bin/python dt_probe.py

## Requests per landing object and their list price on a launch-shaped arrival (not in
## `make test`): per-session files, 50 sessions together into a busy dt.
bench-cost: setup
	cd bench && ../$(VENV)/bin/python cost.py

## Objects and full-table query time before and after compaction on N=10 data split into
## per-session-sized phone files (not in `make test`).
bench-compact: setup
	cd bench && ../$(VENV)/bin/python compact_probe.py

## What one erasure reads and writes on N=10 data split into per-session-sized phone files,
## compacted (not in `make test`).
bench-erasure: setup
	cd bench && ../$(VENV)/bin/python erasure_probe.py

## The benchmark's compute path on the sample: asserts the counts it processed.
bench-smoke: setup tools
	$(CARGO) test -p stedi-bench
	$(VENV)/bin/python bench/run.py --smoke

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	rm -rf $(VENV) .stedi
	$(CARGO) clean
