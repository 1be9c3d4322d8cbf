"""Shared fixtures: every storage test runs on a real SQLite file and on a real PostgreSQL.

PostgreSQL runs when ``MAESTRO_TEST_PG_URL`` is set (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``);
each test gets a fresh database copied from a migrated template. With ``MAESTRO_TEST_REQUIRE_PG=1``
(CI) a missing or unreachable PostgreSQL fails the suite instead of skipping.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_URL = os.environ.get("MAESTRO_TEST_PG_URL", "")
REQUIRE_PG = os.environ.get("MAESTRO_TEST_REQUIRE_PG") == "1"
_pg_state: dict[str, object] = {"template": None, "passed": 0}


def _admin_connect():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(PG_URL, autocommit=True)


def _pg_url_for(dbname: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(PG_URL).set(database=dbname).render_as_string(hide_password=False)


def _pg_template() -> str:
    if _pg_state["template"] is None:
        from agentmaestro.store.base import Store

        name = f"maestro_tmpl_{os.getpid()}_{secrets.token_hex(3)}"
        with _admin_connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        store = Store.open(_pg_url_for(name))
        store.close_sync()
        _pg_state["template"] = name
    return str(_pg_state["template"])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    name = _pg_state["template"]
    if name:
        try:
            with _admin_connect() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception:
            pass
    if REQUIRE_PG and exitstatus == 0 and session.testscollected and not _pg_state["passed"]:
        print("\nMAESTRO_TEST_REQUIRE_PG=1 but no PostgreSQL test ran")
        session.exitstatus = 1


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call" and report.passed and "[postgres" in item.nodeid:
        _pg_state["passed"] = int(_pg_state["passed"]) + 1  # type: ignore[call-overload]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database URL: an SQLite file, or a PostgreSQL database copied from a template."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'maestro.db'}"
        return
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("MAESTRO_TEST_REQUIRE_PG=1 but MAESTRO_TEST_PG_URL is not set")
        pytest.skip("PostgreSQL tests need MAESTRO_TEST_PG_URL")
    try:
        template = _pg_template()
    except Exception as exc:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL at MAESTRO_TEST_PG_URL is unusable: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    name = f"maestro_t_{secrets.token_hex(5)}"
    with _admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _pg_url_for(name)
    finally:
        with _admin_connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
