# The two commands: `make up` (the whole stack as local processes) and `make test` (the whole suite).
# Everything runs from .venv, which the first target that needs it creates (scripts/bootstrap.sh).

SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

# Settings: .env when present (see .env.example), exported to every command. A variable set in the
# environment wins over .env, as with docker compose (`DATABASE_URL=... make up` does what it says, even
# with .env copied from .env.example, whose empty values would otherwise override it): each KEY=VALUE line
# of .env becomes KEY ?= VALUE in .run/env.mk, which make then reads. The values are compose's: quotes
# removed, ` # comments` dropped, `$` and `#` kept (scripts/dotenv_mk.py, with the system's python3).
ifneq ($(wildcard .env),)
$(shell mkdir -p .run && python3 scripts/dotenv_mk.py .env > .run/env.mk)
include .run/env.mk
endif
export

.PHONY: up serve down test lint format load install lock nginx chromium help bench chaos

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

install:  ## create .venv and install the services and dev tools
	@scripts/bootstrap.sh

# Each image's exact dependencies, with hashes, for every Python from 3.11 (`--universal`): kept as they are
# where pyproject.toml still allows them; `make lock LOCK_FLAGS=--upgrade` moves every one to the newest.
lock: install  ## write services/*/requirements.lock from their pyproject.toml (what the images install)
	@for service in api etl; do .venv/bin/uv pip compile services/$$service/pyproject.toml --universal \
		--python-version 3.11 --generate-hashes --quiet $(LOCK_FLAGS) -o services/$$service/requirements.lock || exit 1; done

nginx:  ## make sure nginx is installed (apt as root, else says what to install)
	@scripts/ensure-nginx.sh

chromium:  ## make sure chromium is installed, for the browser test of /docs (apt as root, else says what)
	@scripts/ensure-chromium.sh

up: nginx install  ## embedded Postgres + sample data + 3 API replicas behind nginx on :8080 (Ctrl-C stops)
	@$(PY) scripts/stack.py up

serve: nginx install  ## the same stack, serving what the database already holds (after `make load`)
	@$(PY) scripts/stack.py serve

down:  ## stop a local stack started by `make up` or `make serve` in another terminal
	@$(PY) scripts/stack.py down

test: nginx chromium install  ## the whole test suite (container tests skip when no engine answers)
	@$(PY) -m pytest

lint: install  ## ruff (lint + format check) and mypy (the services, then bench/ and scripts/)
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@.venv/bin/mypy
	@.venv/bin/mypy bench scripts

format: install  ## apply ruff's fixes and formatting
	@.venv/bin/ruff check --fix .
	@.venv/bin/ruff format .

load: install  ## full-scale export (~1M products) generated into .data/full and loaded; then `make serve`
	@$(PY) scripts/stack.py load-full

# Each script prints its ratio against a baseline measured in the same run. Every one runs even when one
# misses a target (exit 1 at the end). db.py loads the full export that etl.py generated; writes.py
# writes into a copy of that database; http_bench.py and routing.py each load the full export into a
# database of their own, replica.py 10,000 products and cpu_profile.py 100,000.
bench: nginx install  ## benchmarks, most at full scale (never in CI): loader, SQL statements, writes, HTTP, routing, replica, profile; docs/benchmarks.md
	@status=0; for run in etl.py db.py writes.py "http_bench.py --products 1000011" "routing.py --products 1000011" replica.py cpu_profile.py; do \
		$(PY) bench/$$run || status=1; done; exit $$status

chaos: nginx install  ## soak: 10 min at 70% of peak through nginx, a replica restarted every minute (~12 min)
	@$(PY) bench/chaos.py
