"""Alembic migrations, run programmatically (``maestro db upgrade`` and on open).

Opening a database that is already at the newest revision (the usual case) does not import Alembic: the
head is read from the migration files and the database's revision from ``alembic_version`` directly
(a CLI command starts faster by the ~0.3 s Alembic takes to import).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

from agentmaestro.errors import SchemaMismatchError

if TYPE_CHECKING:
    from alembic.config import Config

_MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 7_311_946_201  # arbitrary, constant advisory-lock key for migrations on PostgreSQL
_ASSIGNMENT = re.compile(r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(?:[\"']([^\"']+)[\"']|None)", re.M)


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


@functools.cache
def head_revision() -> str:
    """The newest migration revision this code knows (the one no other revision names as its parent)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (_MIGRATIONS / "versions").glob("*.py"):
        for name, value in _ASSIGNMENT.findall(path.read_text(encoding="utf-8")):
            if value:
                (revisions if name == "revision" else parents).add(value)
    heads = revisions - parents
    if len(heads) == 1:
        return heads.pop()
    from alembic.script import ScriptDirectory  # branches or an unusual file: let Alembic decide

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None if never migrated)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        rows = list(conn.execute(text("SELECT version_num FROM alembic_version")))
        return str(rows[0][0]) if len(rows) == 1 else None


def upgrade(engine: Engine) -> str:
    """Migrate to head in one transaction (serialised across processes); returns the revision.

    MySQL/MariaDB commit every DDL statement on their own, so there a migration is not one transaction:
    a named lock (``GET_LOCK``) serialises the processes instead, and a migration that failed half way is
    taken up from the last revision it recorded.
    """
    head = head_revision()
    if current_revision(engine) == head:
        return head
    if engine.dialect.name == "mysql":
        return _upgrade_mysql(engine, head)
    from alembic import command

    cfg = _config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return head


def _upgrade_mysql(engine: Engine, head: str) -> str:
    from alembic import command

    cfg = _config()
    with engine.connect() as conn:
        name = f"maestro_migrate_{_LOCK_KEY}"
        if conn.execute(text("SELECT GET_LOCK(:n, 600)"), {"n": name}).scalar() != 1:
            raise SchemaMismatchError("another process has been migrating this database for 10 minutes")
        try:
            conn.commit()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")  # (a no-op if the process that held the lock migrated already)
            conn.commit()
        finally:
            conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name})
            conn.commit()
    return head


def check_current(engine: Engine) -> None:
    """Raise SchemaMismatchError unless the database is at head."""
    cur, head = current_revision(engine), head_revision()
    if cur != head:
        raise SchemaMismatchError(
            f"database schema is at {cur!r}, this version needs {head!r}: run 'maestro db upgrade'"
        )
