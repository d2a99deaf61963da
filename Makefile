# capsearch — `make run` and `make test` do all set-up on a fresh machine (venv, install, migrate).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOADSTAMP := $(VENV)/.load-installed
WEB    := web/node_modules/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install run demo test lint typecheck bench load migrate clean

help: ## show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	# torch is pinned to 2.13.0 in pyproject.toml: here that is the local CPU wheel, never a CUDA build.
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

# The page's JavaScript (htmx + its WebSocket extension), pinned by web/package-lock.json.
$(WEB): web/package.json web/package-lock.json
	npm ci --prefix web --no-audit --no-fund
	@touch $(WEB)

install: $(STAMP) $(WEB) ## create .venv, install everything (Python and the page's npm packages)

migrate: $(STAMP) ## apply database migrations (CAPSEARCH_DATABASE__URL)
	$(BIN)/capsearch migrate

run: migrate $(WEB) ## migrate, then serve on http://127.0.0.1:8000 with the real models
	$(BIN)/capsearch serve

demo: export CAPSEARCH_MODELS__PROFILE = tiny
demo: export CAPSEARCH_DATABASE__URL ?= sqlite+aiosqlite:///data/demo.db
demo: export CAPSEARCH_STORAGE__DIR ?= data/demo-media
demo: migrate $(WEB) ## serve offline with tiny random-weight models (no downloads)
	$(BIN)/capsearch serve

test: $(STAMP) $(WEB) ## run the test suite (SQLite; Postgres too when TEST_DATABASE_URL is set)
	$(BIN)/pytest

lint: $(STAMP) ## ruff lint + format check
	$(BIN)/ruff check src tests alembic loadtest
	$(BIN)/ruff format --check src tests alembic loadtest

typecheck: $(STAMP) ## strict mypy
	$(BIN)/mypy

bench: $(STAMP) ## print benchmark tables (captioner offline and full stack)
	$(BIN)/capsearch bench

# Locust and websocket-client: the `load` extra, only for this target.
$(LOADSTAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e '.[dev,load]'
	@touch $(LOADSTAMP)

# Scratch PostgreSQL database (LOAD_ADMIN_URL), demo server, Locust; loadtest/run.py says what it checks.
load: $(LOADSTAMP) ## load test on PostgreSQL (LOAD_USERS, LOAD_TIME; SOAK=1: 50 users, 10 min)
	$(BIN)/python loadtest/run.py $(if $(SOAK),--soak)

clean: ## remove the venv and caches (keeps data/ and models_cache/)
	rm -rf $(VENV) web/node_modules .pytest_cache .mypy_cache .ruff_cache
