# Two commands on a fresh machine: `make up` runs the platform, `make test` passes the tests.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip
STAMP_UP := $(VENV)/.installed-up
STAMP_TEST := $(VENV)/.installed-test

.PHONY: up test demo lint types unit system-deps clean

$(BIN)/python:
	@command -v $(PY) >/dev/null || { echo "Python 3.11 is needed: install python3.11 (e.g. apt-get install python3.11 python3.11-venv)"; exit 2; }
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP_UP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e '.[train,sim,serve]'
	@touch $@

$(STAMP_TEST): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e '.[all]'
	@touch $@ $(STAMP_UP)

up: $(STAMP_UP)
	$(BIN)/modelplane up --cluster examples/cluster.yaml

# The end-to-end scenario (pipeline, training with a lost worker, deployment, burst, guards,
# audit) against the platform `make up` runs, or on its own platform when none is running.
demo: system-deps $(STAMP_TEST)
	$(BIN)/python scripts/demo.py

system-deps:
	bash scripts/install-system-deps.sh

lint: $(STAMP_TEST)
	$(BIN)/ruff check src tests benchmarks examples scripts
	$(BIN)/lint-imports

types: $(STAMP_TEST)
	$(BIN)/mypy

unit: $(STAMP_TEST)
	$(BIN)/pytest -q

test: system-deps $(STAMP_TEST) lint types
	$(BIN)/pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .modelplane
