"""Shared fixtures: every storage test runs on a real SQLite file, a real PostgreSQL and a real MariaDB/MySQL.

PostgreSQL runs when ``MAESTRO_TEST_PG_URL`` is set (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``);
each test gets a fresh database copied from a migrated template. SQLite works the same way: each test gets a
copy of one migrated file (migrating a new file costs far more than copying one). With
``MAESTRO_TEST_REQUIRE_PG=1`` (CI) a missing or unreachable PostgreSQL fails the suite instead of skipping.

MariaDB/MySQL runs when ``MAESTRO_TEST_MYSQL_URL`` is set (e.g. ``mysql://root@127.0.0.1:3306/test``; the
user must be allowed to create databases), for the storage-level tests only (:data:`MYSQL_MODULES`: the
tests whose outcome depends on the database; the rest run on SQLite and PostgreSQL). MySQL has no template
databases: each test gets a database of its own, emptied after the test and handed to a later one (see
:class:`_MysqlDatabases`). ``MAESTRO_TEST_REQUIRE_MYSQL=1`` (CI) fails the suite if that half is skipped.

The suite runs in parallel under pytest-xdist (``make test`` uses ``-n 3``). Every worker process keeps its
own uniquely named PostgreSQL template and SQLite template (and drops only what it created) and its own
``MAESTRO_HOME``; the "PostgreSQL half actually ran" check counts test reports in the process that prints
the summary (the xdist controller, or the only process of a serial run), so it sees every worker's tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

PG_URL = os.environ.get("MAESTRO_TEST_PG_URL", "")
REQUIRE_PG = os.environ.get("MAESTRO_TEST_REQUIRE_PG") == "1"
MYSQL_URL = os.environ.get("MAESTRO_TEST_MYSQL_URL", "")
REQUIRE_MYSQL = os.environ.get("MAESTRO_TEST_REQUIRE_MYSQL") == "1"
MYSQL_MODULES = (
    "tests/integration/",
    "tests/e2e/test_crash_recovery.py::test_stalled_worker_cannot_commit",
    "tests/e2e/test_uncertain_kill.py",
    "tests/e2e/test_budget_sharing.py",
)
"""Where the ``db_url`` tests also run on MariaDB/MySQL (test id prefixes): the storage-level tests (store,
engine, leases and fencing, budgets, audit chain, workspaces, recovery) and the process tests: SIGSTOP,
SIGKILL during tool calls, a budget shared by two processes. The 20-kill SIGKILL test
(``test_sigkill_mid_run_loses_nothing``) passes on MariaDB alone but not reliably beside the rest of the
suite on a loaded 2-core machine: lock waits on MySQL are whole seconds (1 s at the test's 1 s lease), and a
takeover then misses the test's recovery bound (see docs/architecture.md, "MySQL and MariaDB")."""
_pg_state: dict[str, object] = {"template": None, "databases": None}
_mysql_state: dict[str, object] = {"databases": None}
_sqlite_state: dict[str, Path | None] = {"template": None}
_home: dict[str, str] = {}
_reports = {"passed": 0, "pg_passed": 0, "mysql_passed": 0}
_MYSQL_ID = re.compile(r"[\[-]mysql[\]-]")
"""A test id naming the ``mysql`` parameter of ``db_url`` (alone or beside other parameters)."""
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


class _MysqlDatabases:
    """Per-test MySQL databases of this process, all named ``maestro_my_<worker>_<pid>_<hex>_<n>``.

    The first is migrated; the others are created from its tables' and triggers' DDL (no template
    databases in MySQL). After its test a database is emptied (every table but ``alembic_version``) and
    kept for a later test: creating two dozen InnoDB tables costs far more than deleting a test's rows.
    One background thread keeps a clean database ready ahead of the next test, as the PostgreSQL
    fixture does. A database that cannot be emptied (a test left a lock behind) is dropped instead.
    """

    def __init__(self) -> None:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.prefix = f"maestro_my_{worker}_{os.getpid()}_{secrets.token_hex(3)}"
        self._count = 0
        self._ddl: list[str] = []
        self._tables: list[str] = []
        self._triggers: set[str] = set()
        self._clean: list[str] = []
        self._all: set[str] = set()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maestro-test-mysql")
        self._next: Future[str] = self._thread.submit(self._create)
        self.drop_errors: list[str] = []

    @staticmethod
    def url_for(name: str) -> str:
        from sqlalchemy.engine import make_url

        return make_url(MYSQL_URL).set(database=name).render_as_string(hide_password=False)

    @staticmethod
    def _admin() -> Any:
        import pymysql
        from sqlalchemy.engine import make_url

        u = make_url(MYSQL_URL)
        return pymysql.connect(
            host=u.host or "127.0.0.1",
            port=u.port or 3306,
            user=u.username or "root",
            password=u.password or "",
            autocommit=True,
            charset="utf8mb4",
            ssl_disabled=u.host in ("localhost", "127.0.0.1", "::1"),  # (as the store does)
        )

    def _create(self) -> str:
        if self._clean:
            return self._clean.pop()
        self._count += 1
        name = f"{self.prefix}_{self._count}"
        with closing(self._admin()) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
            self._all.add(name)
            if not self._ddl:  # the first: migrate it, and keep its DDL for the others
                from agentmaestro.store.base import Store

                Store.open(self.url_for(name)).close_sync()
                cur.execute(f"USE `{name}`")
                cur.execute("SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'")
                self._tables = [r[0] for r in cur.fetchall()]
                for table in self._tables:
                    cur.execute(f"SHOW CREATE TABLE `{table}`")
                    self._ddl.append(cur.fetchone()[1])
                cur.execute("SHOW TRIGGERS")
                self._triggers = {r[0] for r in cur.fetchall()}
                for trigger in sorted(self._triggers):
                    cur.execute(f"SHOW CREATE TRIGGER `{trigger}`")
                    self._ddl.append(cur.fetchone()[2])
                cur.execute("SELECT version_num FROM alembic_version")
                self._ddl.append(f"INSERT INTO alembic_version VALUES ('{cur.fetchone()[0]}')")
                return name
            cur.execute(f"USE `{name}`")
            cur.execute("SET SESSION foreign_key_checks = 0")
            for statement in self._ddl:
                cur.execute(statement)
        return name

    def _empty(self, name: str) -> None:
        try:
            with closing(self._admin()) as conn, conn.cursor() as cur:
                cur.execute(f"USE `{name}`")
                cur.execute("SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'")
                if sorted(r[0] for r in cur.fetchall()) != sorted(self._tables):
                    raise RuntimeError("the test added or dropped tables")
                cur.execute("SHOW TRIGGERS")
                for trigger in {r[0] for r in cur.fetchall()} - self._triggers:  # (fault injection)
                    cur.execute(f"DROP TRIGGER `{trigger}`")
                cur.execute("SET SESSION foreign_key_checks = 0")
                cur.execute("SET SESSION innodb_lock_wait_timeout = 2")
                tables = [t for t in self._tables if t != "alembic_version"]
                cur.execute(" UNION ALL ".join(f"(SELECT '{t}' FROM `{t}` LIMIT 1)" for t in tables))
                used = {r[0] for r in cur.fetchall()}
                if "audit_log" in used:  # (its trigger refuses DELETE; TRUNCATE fires none)
                    cur.execute("TRUNCATE TABLE audit_log")
                conn.begin()  # one commit (one log flush) for all the rest
                for table in sorted(used - {"audit_log"}):
                    cur.execute(f"DELETE FROM `{table}`")
                conn.commit()
            self._clean.append(name)
        except Exception:
            self._drop(name)

    def _drop(self, name: str) -> None:
        try:
            with closing(self._admin()) as conn, conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            self._all.discard(name)
        except Exception as exc:
            self.drop_errors.append(f"{name}: {exc}")

    def take(self) -> str:
        """A clean, migrated database (its name); the next one is made ready at once."""
        try:
            return self._next.result()
        finally:
            self._next = self._thread.submit(self._create)

    def give_back(self, name: str) -> None:
        """Empty ``name`` in the background for a later test."""
        self._thread.submit(self._empty, name)

    def close(self) -> None:
        """Drop every database this process made."""
        with contextlib.suppress(Exception):
            self._next.result()
        self._thread.shutdown(wait=True)
        for name in sorted(self._all):
            self._drop(name)


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
        if _MYSQL_ID.search(report.nodeid):
            _reports["mysql_passed"] += 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the MariaDB/MySQL variants of the storage-level tests only (:data:`MYSQL_MODULES`)."""
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_mysql = callspec is not None and callspec.params.get("db_url") == "mysql"
        (dropped if on_mysql and not item.nodeid.startswith(MYSQL_MODULES) else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


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
    my_databases = _mysql_state["databases"]
    if isinstance(my_databases, _MysqlDatabases):
        my_databases.close()
        for error in my_databases.drop_errors:
            print(f"\ncould not drop test database {error}")
    if _is_xdist_worker(session.config):
        return  # the controller sees every worker's reports and checks once
    if REQUIRE_PG and exitstatus == 0 and session.testscollected and not _reports["pg_passed"]:
        print(f"\nMAESTRO_TEST_REQUIRE_PG=1 but no PostgreSQL test ran ({_reports['passed']} other tests passed)")
        session.exitstatus = 1
    if REQUIRE_MYSQL and exitstatus == 0 and session.testscollected and not _reports["mysql_passed"]:
        print(f"\nMAESTRO_TEST_REQUIRE_MYSQL=1 but no MariaDB/MySQL test ran ({_reports['passed']} other tests passed)")
        session.exitstatus = 1


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, migrated database URL: an SQLite file, a PostgreSQL database or a MariaDB/MySQL database."""
    if request.param == "sqlite":
        path = tmp_path / "maestro.db"
        shutil.copyfile(_sqlite_template(tmp_path_factory), path)
        yield f"sqlite:///{path}"
        return
    if request.param == "mysql":
        yield from _mysql_url()
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


def _mysql_url() -> Iterator[str]:
    if not MYSQL_URL:
        if REQUIRE_MYSQL:
            pytest.fail("MAESTRO_TEST_REQUIRE_MYSQL=1 but MAESTRO_TEST_MYSQL_URL is not set")
        pytest.skip("MariaDB/MySQL tests need MAESTRO_TEST_MYSQL_URL")
    try:
        if _mysql_state["databases"] is None:
            _mysql_state["databases"] = _MysqlDatabases()
        databases = _mysql_state["databases"]
        assert isinstance(databases, _MysqlDatabases)
        name = databases.take()
    except Exception as exc:
        _mysql_state["databases"] = None
        if REQUIRE_MYSQL:
            pytest.fail(f"MariaDB/MySQL at MAESTRO_TEST_MYSQL_URL is unusable: {exc}")
        pytest.skip(f"MariaDB/MySQL unavailable: {exc}")
    try:
        yield databases.url_for(name)
    finally:
        databases.give_back(name)
