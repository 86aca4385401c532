# Everything installs from nothing: a venv with requirements-dev.txt, Azurite from package-lock.json, and
# Debian's chromium for the dashboard's browser tests (Playwright drives it; it downloads no browser).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
COUNT ?= 100000
BATCH ?= 1
MINUTES ?= 60

.PHONY: setup chromium demo test unit soak lint typecheck format bench clean

setup: $(VENV)/.installed node_modules/.installed $(CHROMIUM)

chromium: $(CHROMIUM)

# Only when it is missing: a machine that has it is left alone.
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

.venv-checkov/.installed: requirements-checkov.txt
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(PY) -m fanout demo --count $(COUNT) --batch-max-items $(BATCH)

# Both tiers: tests/unit (no Azurite, seconds) and the rest against a real Azurite.
test: setup .venv-checkov/.installed lint typecheck
	$(PY) -m pytest

unit: setup
	$(PY) -m pytest tests/unit -n 0

# The generated invariant tests for MINUTES minutes, examples drawn afresh; Hypothesis's database is kept.
soak: setup
	$(PY) -m testkit.soak --minutes $(MINUTES)

typecheck: setup
	$(VENV)/bin/mypy

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	$(PY) -m benchmarks.enqueue --chart docs/enqueue-throughput.png
	$(PY) -m benchmarks.pipeline
	$(PY) -m benchmarks.chunking
	$(PY) -m benchmarks.json_items
	$(PY) -m benchmarks.reliability
	$(PY) -m benchmarks.status_read
	$(PY) -m benchmarks.azure_model --chart docs/azure-model.png
	$(PY) -m benchmarks.cpu_profile

clean:
	rm -rf $(VENV) .venv-checkov node_modules .pytest_cache .hypothesis __azurite_db_* __blobstorage__ __queuestorage__
