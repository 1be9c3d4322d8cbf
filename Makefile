# AgentMaestro developer entry points. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
MAESTRO_HOME ?= .maestro

.PHONY: setup system-deps run demo test lint bench chaos lock clean

## OS packages: bubblewrap gives code-running tools an OS sandbox (no network, read-only root);
## Debian's chromium runs the dashboard's browser tests. Installed when running as root with apt;
## otherwise a note (code tools then refuse DANGEROUS execution; browser tests are skipped).
SYSTEM_PACKAGES := bubblewrap chromium
system-deps:
	@missing=""; command -v bwrap >/dev/null 2>&1 || missing="$$missing bubblewrap"; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "installing$$missing"; \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	        || echo "note: could not install$$missing"; \
	    else echo "note: install$$missing (apt-get install$$missing)"; fi; \
	  fi

$(STAMP): requirements/bootstrap.lock requirements/dev.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements/bootstrap.lock
	$(VENV)/bin/uv pip sync --quiet --require-hashes --compile-bytecode --python $(PY) requirements/dev.lock
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps --no-build-isolation -e .
	$(PY) -m compileall -q -j 0 src  # compiled once here: every maestro command starts fast, even under PYTHONDONTWRITEBYTECODE
	touch $(STAMP)

setup: $(STAMP) system-deps

## Set everything up, migrate the embedded SQLite database, run the demo, then serve the API on :8000.
run: setup
	$(VENV)/bin/maestro db upgrade
	$(VENV)/bin/maestro demo
	$(VENV)/bin/maestro serve --port $${PORT:-8000}

## Set everything up and run the whole suite (PostgreSQL half when MAESTRO_TEST_PG_URL is set) on
## TEST_WORKERS pytest-xdist processes; 0 runs it serially, auto one per core. The default, 3, is one more
## than this project's machines have cores: many tests wait on subprocesses, sockets and timers, and on
## 2 cores the suite took 8.0 min with 3 workers, 9.3 with 2, 8.6 with 4 (and ~19 serially).
## More pytest arguments: make test PYTEST_ARGS="tests/unit -x".
## Python's compiled bytecode is shared by pytest, its workers and the maestro processes the tests start,
## in a cache outside the repository: with PYTHONDONTWRITEBYTECODE set every process would compile the
## whole package again (seconds per process).
TEST_WORKERS ?= 3
PYTEST_ARGS  ?=
test: setup
	env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX="$${TMPDIR:-/tmp}/agentmaestro-test-pycache" \
	  $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

bench: setup
	$(PY) -m benchmarks.run

## Chaos runs (not part of the suite; 10-20 min): kill, stop, database-fault and server-kill scenarios against
## three worker processes on SQLite and PostgreSQL, printing trials, runs, lost, duplicated, stale commits
## accepted and the longest recovery per scenario (benchmarks/chaos.py). server-kill restarts the local
## PostgreSQL cluster with pg_ctlcluster a few times (and starts it again if needed): everything else using
## that server sees its sessions end. Without it: make chaos CHAOS_ARGS=.
CHAOS_ARGS ?= --pg-restart
chaos: setup
	$(PY) -m benchmarks.chaos $(CHAOS_ARGS)

## Regenerate the pinned lock files (needs the registry).
lock: setup
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements/dev.lock -q

clean:
	rm -rf $(VENV) $(MAESTRO_HOME) .pytest_cache .mypy_cache .ruff_cache
