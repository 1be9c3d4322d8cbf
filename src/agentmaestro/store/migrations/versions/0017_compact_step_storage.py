"""compact step storage: SQLite events in their primary-key b-tree, room for in-place run updates on PostgreSQL

SQLite: ``run_events`` becomes a ``WITHOUT ROWID`` table. A rowid table stores every event twice over its key:
once in the table b-tree (under a hidden rowid) and once more in the automatic index of its text primary key
``(run_id, seq)``. Clustered on the primary key, the row is stored once (about 36 bytes less per event). The
table is rebuilt with the same columns, constraints and indexes; its contents are copied unchanged. (``steps``
stays a rowid table: its secondary index would carry the whole primary key instead of the rowid, which costs
what the clustering saves.)

PostgreSQL: ``runs`` gets ``fillfactor = 60``. Every step commit rewrites the run's snapshot row; with room left
on its page the new version is a heap-only tuple (no new index entries) and the dead one is pruned in place, so
the table grows less per step. Only pages written from now on keep the room.

Other databases: nothing to do (InnoDB tables are already clustered on their primary key).

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import re

from alembic import op
from sqlalchemy import text

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_CLUSTERED = ("run_events",)
RUNS_FILLFACTOR = 60


def _rebuild_sqlite(table: str, *, without_rowid: bool) -> None:
    conn = op.get_bind()
    sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}).scalar()
    if sql is None:
        return
    clustered = re.search(r"\)\s*WITHOUT\s+ROWID\s*$", sql, re.I) is not None
    if clustered == without_rowid:
        return
    indexes = [
        row[0]
        for row in conn.execute(
            text("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :t AND sql IS NOT NULL"),
            {"t": table},
        )
    ]
    temp = f"_{table}_rebuild"
    body = re.sub(r'^\s*CREATE\s+TABLE\s+"?' + table + r'"?', f"CREATE TABLE {temp}", sql, count=1, flags=re.I)
    body = re.sub(r"\s*WITHOUT\s+ROWID\s*$", "", body, flags=re.I)
    conn.execute(text(body + (" WITHOUT ROWID" if without_rowid else "")))
    conn.execute(text(f"INSERT INTO {temp} SELECT * FROM {table}"))
    conn.execute(text(f"DROP TABLE {table}"))
    conn.execute(text(f"ALTER TABLE {temp} RENAME TO {table}"))
    for index in indexes:
        conn.execute(text(index))


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in _CLUSTERED:
            _rebuild_sqlite(table, without_rowid=True)
    elif dialect == "postgresql":
        op.execute(f"ALTER TABLE runs SET (fillfactor = {RUNS_FILLFACTOR})")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in _CLUSTERED:
            _rebuild_sqlite(table, without_rowid=False)
    elif dialect == "postgresql":
        op.execute("ALTER TABLE runs RESET (fillfactor)")
