"""Alembic migrations, run programmatically (``maestro db upgrade`` and on open)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from agentmaestro.errors import SchemaMismatchError

_MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 7_311_946_201  # arbitrary, constant advisory-lock key for migrations on PostgreSQL


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest migration revision this code knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None if never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> str:
    """Migrate to head in one transaction (serialised across processes); returns the revision."""
    head = head_revision()
    if current_revision(engine) == head:
        return head
    cfg = _config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return head


def check_current(engine: Engine) -> None:
    """Raise SchemaMismatchError unless the database is at head."""
    cur, head = current_revision(engine), head_revision()
    if cur != head:
        raise SchemaMismatchError(
            f"database schema is at {cur!r}, this version needs {head!r}: run 'maestro db upgrade'"
        )
