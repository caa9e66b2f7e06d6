# Targets for running, testing and checking settlement-workers.
# Every target creates .venv and installs the project into it when needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CELERY := $(BIN)/celery

.PHONY: help install run worker beat migrate test lint demo demo-data bench compose-up clean

#: Size of the data set that make run generates into an empty database.
RUN_PLAYERS ?= 500
RUN_BETS ?= 20000
#: Size of make demo-data (the realistic default of python -m settlement.demo).
DEMO_PLAYERS ?= 20000
DEMO_BETS ?= 1000000

help:
	@echo "make run         migrate, add a small data set if empty, start a worker with beat"
	@echo "make test        run the test suite (needs PostgreSQL and Redis for integration tests)"
	@echo "make lint        ruff and mypy"
	@echo "make migrate     upgrade the database at DATABASE_URL to the latest schema"
	@echo "make demo        run the whole job for a bounded time and print a report"
	@echo "make demo-data   generate the realistic data set ($(DEMO_PLAYERS) players, $(DEMO_BETS) bets)"
	@echo "make bench       run the benchmarks and write docs/benchmarks.md"
	@echo "make compose-up  validate docker-compose.yml and start the stack (needs Docker)"

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
	$(BIN)/python -m settlement.demo --if-empty --players $(RUN_PLAYERS) --bets $(RUN_BETS)
	@echo
	@echo "Starting worker and beat. In another shell (with the same environment):"
	@echo "  $(BIN)/python -m health check            readiness of every loop"
	@echo "  $(BIN)/python -m outbox status           outbox backlog, oldest age, parked rows"
	@echo "  $(BIN)/python -m settlement report --kind rebate --period YYYY-MM-DD"
	@echo "  $(BIN)/python -m settlement run --kind rebate   settle yesterday now"
	@echo
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

demo: $(STAMP)
	$(BIN)/python scripts/run_demo.py

demo-data: migrate
	$(BIN)/python -m settlement.demo --players $(DEMO_PLAYERS) --bets $(DEMO_BETS)

compose-up:
	docker-compose config --quiet
	docker-compose up --build --detach

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
