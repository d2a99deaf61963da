# capsearch — `make run` and `make test` do all set-up on a fresh machine (venv, install, migrate).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOADSTAMP := $(VENV)/.load-installed
WEB    := web/node_modules/.installed
LOCK     := requirements.lock
LOADLOCK := requirements-load.lock
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install lock lock-check run demo test lint typecheck bench load migrate clean

help: ## show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Python packages come from $(LOCK): every runtime and dev dependency (pip and setuptools too) pinned
# exactly, the set CI tested; `make lock` derives it from pyproject.toml's ranges. torch==2.13.0 is the
# local CPU wheel here, never a CUDA build; a CUDA torch already in the venv satisfies the pin as well.
$(STAMP): $(LOCK) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	@touch $(STAMP)

# The page's JavaScript (htmx + its WebSocket extension), pinned by web/package-lock.json.
$(WEB): web/package.json web/package-lock.json
	npm ci --prefix web --no-audit --no-fund
	@touch $(WEB)

install: $(STAMP) $(WEB) ## create .venv, install everything (Python and the page's npm packages)

# pip-compile keeps every pin pyproject.toml still allows and resolves only the rest; UPGRADE=1 takes
# the newest releases instead. torch loses its local label (2.13.0+cpu -> 2.13.0): the pin must also
# admit a CUDA build (README "GPU"). $(LOADLOCK) is $(LOCK) plus the `load` extra, shared pins equal.
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile -q --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade) pyproject.toml
UNLABEL_TORCH = $(BIN)/python -c 'import pathlib, re, sys; p = pathlib.Path(sys.argv[1]); \
	p.write_text(re.sub(r"(?m)^(torch==[^+\s]+)\+\S+", r"\1", p.read_text()))'

lock: $(STAMP) ## re-derive requirements*.lock from pyproject.toml (UPGRADE=1: newest releases)
	$(PIP_COMPILE) --extra dev -o $(LOCK)
	$(UNLABEL_TORCH) $(LOCK)
	$(PIP_COMPILE) --extra dev --extra load -c $(LOCK) -o $(LOADLOCK)
	$(UNLABEL_TORCH) $(LOADLOCK)

lock-check: $(STAMP) ## fail if the lock files no longer follow from pyproject.toml (needs the index)
	@old=$$(mktemp -d) && cp $(LOCK) $(LOADLOCK) $$old/ && $(MAKE) --no-print-directory lock && \
	if ! diff -u $$old/$(LOCK) $(LOCK) || ! diff -u $$old/$(LOADLOCK) $(LOADLOCK); then \
	  echo "lock-check: the lock files were stale; rewritten from pyproject.toml: review and commit" >&2; \
	  exit 1; fi

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

lint: $(STAMP) $(WEB) ## ruff lint + format check, eslint over web/static/js
	$(BIN)/ruff check src tests alembic loadtest
	$(BIN)/ruff format --check src tests alembic loadtest
	npm --prefix web run lint

typecheck: $(STAMP) ## strict mypy
	$(BIN)/mypy

bench: $(STAMP) ## print benchmark tables (captioner offline and full stack)
	$(BIN)/capsearch bench

# Locust and websocket-client: the `load` extra, only for this target, pinned by $(LOADLOCK).
$(LOADSTAMP): $(STAMP) $(LOADLOCK)
	$(BIN)/pip install -q -r $(LOADLOCK)
	@touch $(LOADSTAMP)

# Scratch PostgreSQL database (LOAD_ADMIN_URL), demo server, Locust; loadtest/run.py says what it checks.
load: $(LOADSTAMP) ## load test on PostgreSQL (LOAD_USERS, LOAD_TIME; SOAK=1: 50 users, 10 min)
	$(BIN)/python loadtest/run.py $(if $(SOAK),--soak)

clean: ## remove the venv and caches (keeps data/ and models_cache/)
	rm -rf $(VENV) web/node_modules .pytest_cache .mypy_cache .ruff_cache
