# AgentMaestro developer entry points. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
MAESTRO_HOME ?= .maestro

.PHONY: setup run demo test test-fast lint bench clean

$(STAMP): requirements/bootstrap.lock requirements/dev.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements/bootstrap.lock
	$(VENV)/bin/uv pip sync --quiet --require-hashes --python $(PY) requirements/dev.lock
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

## Set everything up, migrate the embedded SQLite database, run the demo.
run: setup
	$(VENV)/bin/maestro db upgrade
	$(VENV)/bin/maestro demo

## Set everything up and run the whole suite (PostgreSQL half when MAESTRO_TEST_PG_URL is set).
test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

bench: setup
	$(PY) -m benchmarks.run

## Regenerate the pinned lock files (needs the registry).
lock: setup
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements/dev.lock -q

clean:
	rm -rf $(VENV) $(MAESTRO_HOME) .pytest_cache .mypy_cache .ruff_cache
