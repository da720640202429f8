# The two commands a newcomer runs: `make test` and `make up`. Both set themselves up: `make test`
# with everything (requirements-dev.txt), `make up` and `make preview` with only what deploying needs
# (requirements.txt), after checking for the Pulumi CLI and AWS credentials.
PYTHON ?= python3
PULUMI ?= pulumi
STACK ?= dev
VENV := venv
BIN := $(VENV)/bin
STATE := $(CURDIR)/.pulumi-state
# The TypeScript compiler that checks examples/typescript against the served schema (tests/test_examples.py).
TSC := .tools/node_modules/.bin/tsc

.PHONY: setup system-packages test lint typecheck format benchmark up preview deploy-prerequisites clean

setup: system-packages $(VENV)/.installed $(TSC)

# PostgreSQL 15 with pg_cron, and Node for the TypeScript check, for the tests (Debian packages;
# installed only when missing).
system-packages:
	@./scripts/install-system-packages.sh postgresql-15 postgresql-15-cron nodejs
	@command -v npm >/dev/null || ./scripts/install-system-packages.sh npm  # NodeSource's nodejs has its own

$(TSC):
	npm install --prefix .tools --no-audit --no-fund --silent typescript@5.9.3

# The venv both installs start from.
define new-venv
@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	|| { echo "Expiry needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) --version 2>&1)"; exit 1; }
@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || ./scripts/install-system-packages.sh python3-venv
$(PYTHON) -m venv $(VENV)
$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
endef

# Everything: deploying, testing, linting. It also satisfies what `make up` needs.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(new-venv)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	# The project itself, so that Pulumi's dynamic-provider process can import expiry.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(VENV)/.deploy-installed $@

# Only what deploying needs. Under `make up` or `make preview`, the prerequisites are checked first.
$(VENV)/.deploy-installed: requirements.txt pyproject.toml | $(if $(filter up preview,$(MAKECMDGOALS)),deploy-prerequisites)
	$(new-venv)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	# The project itself (its build backend fetched by pip unless the venv already has setuptools).
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		$$($(BIN)/python -c 'import setuptools' 2>/dev/null && echo --no-build-isolation) -e .
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
	$(BIN)/python benchmarks/fan_out_benchmark.py
	$(BIN)/python benchmarks/orphan_pass_benchmark.py
	$(BIN)/python benchmarks/pg_purge_benchmark.py
	$(BIN)/python benchmarks/install_footprint.py

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# `pulumi up` (or `pulumi preview`) of one stack (STACK=dev by default) with a local file state
# backend in .pulumi-state/, so no Pulumi Cloud account is needed.
DEPLOY_GOAL = $(firstword $(filter up preview,$(MAKECMDGOALS)) up)
NO_CREDENTIALS = echo "make $(DEPLOY_GOAL) needs AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"

# Before anything is installed: the Pulumi CLI, and AWS credentials as far as the standard library
# can tell (scripts/aws-credentials-present.py).
deploy-prerequisites:
	@command -v $(PULUMI) >/dev/null 2>&1 \
		|| { echo "make $(DEPLOY_GOAL) needs the Pulumi CLI on PATH: https://www.pulumi.com/docs/iac/download-install/"; exit 1; }
	@$(PYTHON) scripts/aws-credentials-present.py || { $(NO_CREDENTIALS); exit 1; }

up preview: deploy-prerequisites $(VENV)/.deploy-installed
	@$(BIN)/python -c 'import boto3, sys; sys.exit(boto3.Session().get_credentials() is None)' \
		|| { $(NO_CREDENTIALS); exit 1; }
	mkdir -p $(STATE)
	PULUMI_BACKEND_URL=file://$(STATE) $(PULUMI) stack select --create $(STACK)
	PULUMI_BACKEND_URL=file://$(STATE) $(PULUMI) $@ --stack $(STACK)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
