# Everything installs from nothing: a venv with requirements-dev.txt, and Azurite from package-lock.json.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
COUNT ?= 100000

.PHONY: setup demo test lint format bench clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(PY) -m fanout demo --count $(COUNT)

test: setup lint
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) node_modules .pytest_cache .hypothesis __azurite_db_* __blobstorage__ __queuestorage__
