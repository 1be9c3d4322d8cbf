"""Shared fixtures: every storage test runs on a real SQLite file and on a real PostgreSQL.

PostgreSQL runs when ``MAESTRO_TEST_PG_URL`` is set (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``);
each test gets a fresh database copied from a migrated template. SQLite works the same way: each test gets a
copy of one migrated file (migrating a new file costs far more than copying one). With
``MAESTRO_TEST_REQUIRE_PG=1`` (CI) a missing or unreachable PostgreSQL fails the suite instead of skipping.

The suite runs in parallel under pytest-xdist (``make test`` uses ``-n 3``). Every worker process keeps its
own uniquely named PostgreSQL template and SQLite template (and drops only what it created) and its own
``MAESTRO_HOME``; the "PostgreSQL half actually ran" check counts test reports in the process that prints
the summary (the xdist controller, or the only process of a serial run), so it sees every worker's tests.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

PG_URL = os.environ.get("MAESTRO_TEST_PG_URL", "")
REQUIRE_PG = os.environ.get("MAESTRO_TEST_REQUIRE_PG") == "1"
_pg_state: dict[str, object] = {"template": None, "databases": None}
_sqlite_state: dict[str, Path | None] = {"template": None}
_home: dict[str, str] = {}
_reports = {"passed": 0, "pg_passed": 0}
"""Passed tests seen by this process (under xdist, the controller sees every worker's reports)."""


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _admin_connect():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(PG_URL, autocommit=True)


def _pg_url_for(dbname: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(PG_URL).set(database=dbname).render_as_string(hide_password=False)


def _pg_template() -> str:
    """This process's migrated template database (created on first use; the name is unique per process)."""
    if _pg_state["template"] is None:
        from agentmaestro.store.base import Store

        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        name = f"maestro_tmpl_{worker}_{os.getpid()}_{secrets.token_hex(3)}"
        with _admin_connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        store = Store.open(_pg_url_for(name))
        store.close_sync()
        _pg_state["template"] = name
    return str(_pg_state["template"])


class _PgDatabases:
    """Per-test databases copied from this process's template one test ahead, and dropped after their test,
    by one background thread: a test does not wait for CREATE DATABASE (a copy of the template's ~8 MB) or
    DROP DATABASE. One thread does both, so the template is never copied twice at once."""

    def __init__(self, template: str) -> None:
        self.template = template
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maestro-test-pg")
        self._next: Future[str] = self._thread.submit(self._create)
        self.drop_errors: list[str] = []

    def _create(self) -> str:
        name = f"maestro_t_{secrets.token_hex(5)}"
        with _admin_connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def _drop(self, name: str) -> None:
        try:
            with _admin_connect() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as exc:
            self.drop_errors.append(f"{name}: {exc}")

    def take(self) -> str:
        """A fresh database (its name); the next one starts being copied at once."""
        try:
            return self._next.result()
        finally:
            self._next = self._thread.submit(self._create)

    def drop(self, name: str) -> None:
        """Drop ``name`` in the background (its connections are closed by force)."""
        self._thread.submit(self._drop, name)

    def close(self) -> None:
        """Drop the spare database and wait for every pending drop."""
        try:
            spare = self._next.result()
        except Exception:
            pass
        else:
            self._drop(spare)
        self._thread.shutdown(wait=True)


def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This process's migrated SQLite template: one self-contained file (no WAL beside it) to copy per test."""
    if _sqlite_state["template"] is None:
        from agentmaestro.store.base import Store

        folder = tmp_path_factory.mktemp("sqlite-template")
        store = Store.open(f"sqlite:///{folder / 'migrated.db'}")
        store.close_sync()
        template = folder / "template.db"
        with closing(sqlite3.connect(folder / "migrated.db")) as src, closing(sqlite3.connect(template)) as dst:
            src.backup(dst)  # a consistent copy whatever is still in the WAL
        _sqlite_state["template"] = template
    template = _sqlite_state["template"]
    assert template is not None
    return template


def pytest_configure(config: pytest.Config) -> None:
    """Give this pytest process (each xdist worker has its own) a ``MAESTRO_HOME`` of its own.

    Code under test keeps its secret key and run work folders there (default ``./.maestro``): the suite never
    touches the developer's, and two workers never race to create the same key file.
    """
    home = tempfile.mkdtemp(prefix="maestro-test-home-")
    _home["path"] = home
    os.environ["MAESTRO_HOME"] = home


def pytest_unconfigure(config: pytest.Config) -> None:
    home = _home.pop("path", None)
    if home:
        shutil.rmtree(home, ignore_errors=True)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count passed tests, and passed PostgreSQL tests, for the check in :func:`pytest_sessionfinish`."""
    if report.when == "call" and report.passed:
        _reports["passed"] += 1
        if "[postgres" in report.nodeid:
            _reports["pg_passed"] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    databases = _pg_state["databases"]
    if isinstance(databases, _PgDatabases):
        databases.close()
        for error in databases.drop_errors:
            print(f"\ncould not drop test database {error}")
    name = _pg_state["template"]
    if name:
        try:
            with _admin_connect() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception:
            pass
    if _is_xdist_worker(session.config):
        return  # the controller sees every worker's reports and checks once
    if REQUIRE_PG and exitstatus == 0 and session.testscollected and not _reports["pg_passed"]:
        print(f"\nMAESTRO_TEST_REQUIRE_PG=1 but no PostgreSQL test ran ({_reports['passed']} other tests passed)")
        session.exitstatus = 1


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, migrated database URL: an SQLite file or a PostgreSQL database, each copied from a template."""
    if request.param == "sqlite":
        path = tmp_path / "maestro.db"
        shutil.copyfile(_sqlite_template(tmp_path_factory), path)
        yield f"sqlite:///{path}"
        return
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("MAESTRO_TEST_REQUIRE_PG=1 but MAESTRO_TEST_PG_URL is not set")
        pytest.skip("PostgreSQL tests need MAESTRO_TEST_PG_URL")
    try:
        if _pg_state["databases"] is None:
            _pg_state["databases"] = _PgDatabases(_pg_template())
    except Exception as exc:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL at MAESTRO_TEST_PG_URL is unusable: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    databases = _pg_state["databases"]
    assert isinstance(databases, _PgDatabases)
    name = databases.take()
    try:
        yield _pg_url_for(name)
    finally:
        databases.drop(name)
