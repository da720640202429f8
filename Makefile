# The two commands a newcomer runs: `make test` and `make up`. Both set themselves up.
PYTHON ?= python3
PULUMI ?= pulumi
STACK ?= dev
VENV := venv
BIN := $(VENV)/bin
STATE := $(CURDIR)/.pulumi-state

.PHONY: setup system-packages test lint typecheck format benchmark up clean

setup: system-packages $(VENV)/.installed

# PostgreSQL 15 with pg_cron for the tests (Debian packages; installed only when missing).
system-packages:
	@./scripts/install-system-packages.sh postgresql-15 postgresql-15-cron

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Expiry needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) --version 2>&1)"; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || ./scripts/install-system-packages.sh python3-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	# The project itself, so that Pulumi's dynamic-provider process can import expiry.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

test: setup
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy on the package as it installs (expiry.components, expiry.runtime): see scripts/typecheck.sh.
typecheck: $(VENV)/.installed
	MYPY=$(BIN)/mypy ./scripts/typecheck.sh

benchmark: setup
	$(BIN)/python benchmarks/sweep_benchmark.py
	$(BIN)/python benchmarks/sweep_cost_model.py
	$(BIN)/python benchmarks/pg_purge_benchmark.py

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# `pulumi up` of one stack (STACK=dev by default) with a local file state backend in
# .pulumi-state/, so no Pulumi Cloud account is needed.
up: $(VENV)/.installed
	@command -v $(PULUMI) >/dev/null 2>&1 \
		|| { echo "make up needs the Pulumi CLI on PATH: https://www.pulumi.com/docs/iac/download-install/"; exit 1; }
	@$(BIN)/python -c 'import boto3, sys; sys.exit(boto3.Session().get_credentials() is None)' \
		|| { echo "make up needs AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"; exit 1; }
	mkdir -p $(STATE)
	PULUMI_BACKEND_URL=file://$(STATE) $(PULUMI) stack select --create $(STACK)
	PULUMI_BACKEND_URL=file://$(STATE) $(PULUMI) up --stack $(STACK)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
