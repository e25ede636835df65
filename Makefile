# `make test` is the one command CI runs (.ci/run) and the README's test command.
# It creates .venv with Python 3.13 (the Lambda runtime's version) and the pinned
# dependencies when they are missing or changed, then lints, validates, builds and tests.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
BIN := $(VENV)/bin
PRIMARY_REGION ?= ca-central-1
REGION ?=
PYTEST_ARGS ?=

export SAM_CLI_TELEMETRY := 0
# sam build resolves `python3.13` from PATH: the virtual environment provides it.
export PATH := $(abspath $(BIN)):$(PATH)

# A working python3.13: on PATH, else under pyenv. (A pyenv shim may exist without
# the version being active, so each candidate is run, not just looked up.)
PYTHON313 ?= $(shell for p in python3.13 $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3.13; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)

.PHONY: help venv lint cfn-lint validate build unit-test unit test sandbox drill bench chaos residency-audit deploy clean

help:
	@echo "make test                    lint, validate, build and run every test (what CI runs)"
	@echo "make unit                    the fast tier: unit and chaos-checker tests, no sandbox (< 30 s)"
	@echo "make sandbox                 run the whole multi-region system locally (no AWS, no Docker)"
	@echo "make drill                   failover + failback under concurrent writers -> bench/results/drill.json"
	@echo "make bench                   sandbox start-up, routing overhead, throughput -> bench/results/sandbox.json"
	@echo "                             failover steps over 200,000 items -> bench/results/failover_scale.json"
	@echo "                             text detection through the bridge -> bench/results/bridge.json"
	@echo "make chaos [SEEDS=20|SEED=n] seeded faults + load, invariants checked -> bench/results/chaos.json"
	@echo "make residency-audit         every user x region x operation against the policy -> bench/results/residency.json"
	@echo "make build                   sam build"
	@echo "make deploy REGION=<region>  sam build && sam deploy --region REGION; the region decides its role"
	@echo "                             (in order: ca-central-1, us-west-2, us-east-2; see samconfig.toml)"

$(BIN)/.installed: requirements-dev.txt layers/shared/requirements.txt constraints.txt
	@if [ -z "$(PYTHON313)" ]; then \
		echo "error: Python 3.13 is required (the Lambda runtime is python3.13) and none was found:" >&2; \
		echo "  looked for python3.13 on PATH and under \$${PYENV_ROOT:-~/.pyenv}/versions/3.13*/bin." >&2; \
		echo "  Install it (e.g. 'pyenv install 3.13') or run: make PYTHON313=/path/to/python3.13 test" >&2; \
		exit 1; fi
	@if [ ! -x "$(BIN)/python" ] || ! "$(BIN)/python" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then \
		rm -rf "$(VENV)"; "$(PYTHON313)" -m venv "$(VENV)"; fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	@touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

cfn-lint: venv
	$(BIN)/cfn-lint -t template.yaml -a cfn_lint_serverless.rules

validate: venv
	$(BIN)/sam validate --lint --region $(PRIMARY_REGION) --template-file template.yaml

build: venv
	$(BIN)/sam build --template-file template.yaml

unit-test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/python -m pytest tests/unit tests/chaos -m "not chaos" $(PYTEST_ARGS)

test: lint cfn-lint validate build unit-test

sandbox: venv
	$(BIN)/python -m sandbox up

# Benchmarks and drills import the shared package and the test support, like the tests.
drill: venv
	PYTHONPATH=.:layers/shared $(BIN)/python -m bench.drill

bench: venv
	PYTHONPATH=.:layers/shared $(BIN)/python -m bench.sandbox_bench
	PYTHONPATH=.:layers/shared $(BIN)/python -m bench.failover_scale
	PYTHONPATH=.:layers/shared $(BIN)/python -m bench.bridge_bench

# SEED=n replays one seed's exact schedule; SEEDS=N runs seeds 1..N (default 20).
chaos: venv
	PYTHONPATH=.:layers/shared $(BIN)/python -m chaos $(if $(SEED),--seed $(SEED),--seeds $(or $(SEEDS),20))

# A fresh sandbox; exits non-zero on a violation or a misplaced object.
residency-audit: venv
	PYTHONPATH=.:layers/shared $(BIN)/python -m bench.residency_audit

# What users type, once per region, the primary first (it creates the global table). A
# region outside the topology is refused by the template's Rules, naming the three.
deploy: venv
	@if [ -z "$(REGION)" ]; then \
		echo "error: REGION is required: make deploy REGION=<region> (primary first: it creates the global table)" >&2; \
		exit 2; fi
	$(BIN)/sam build --template-file template.yaml
	$(BIN)/sam deploy --region $(REGION)

clean:
	rm -rf .aws-sam .sandbox
