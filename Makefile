# Targets for running, testing and checking settlement-workers.
# Every target creates .venv and installs the project into it when needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CELERY := $(BIN)/celery

.PHONY: help install run worker beat migrate test lint demo demo-data bench compose-up clean

help:
	@echo "make run      migrate, then start a worker with beat on the configured broker"
	@echo "make test     run the test suite (needs PostgreSQL and Redis for integration tests)"
	@echo "make lint     ruff and mypy"
	@echo "make migrate  upgrade the database at DATABASE_URL to the latest schema"
	@echo "make bench    run the benchmarks (PostgreSQL, Redis, RabbitMQ) into docs/benchmarks.md"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is required; set PYTHON=python3.11"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

migrate: $(STAMP)
	$(BIN)/python -m app.migrate

run: migrate
	$(CELERY) -A app worker --beat --loglevel INFO --schedule var/celerybeat-schedule

worker: migrate
	$(CELERY) -A app worker --loglevel INFO

beat: migrate
	$(CELERY) -A app beat --loglevel INFO --schedule var/celerybeat-schedule

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
