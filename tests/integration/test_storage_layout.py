"""Migration 0017 (compact step storage): contents unchanged across upgrade and downgrade, on every database.

SQLite keeps ``run_events`` in its primary-key b-tree (``WITHOUT ROWID``); PostgreSQL leaves room on the ``runs``
pages for in-place snapshot updates (``fillfactor``). New step commits store no ``PHASE_CHANGED`` event that the
step event implies.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, text

from agentmaestro import Agent, Orchestrator, RiskLevel, ScriptedModel, tool
from agentmaestro.core.states import EventType, Phase, RunStatus
from agentmaestro.store import migrate
from agentmaestro.store.dialects import normalize_url


@tool(risk=RiskLevel.SAFE, idempotent=True)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _agent() -> Agent:
    script = [
        {"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]},
        {"tool_calls": [{"name": "add", "arguments": {"a": 5, "b": 1}}]},
        {"content": "six"},
    ]
    return Agent(name="calc", model=ScriptedModel(script), tools=[add])


def _dump(conn: Any, run_id: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    events = conn.execute(
        text("SELECT seq, type, step_index, created_at FROM run_events WHERE run_id = :r ORDER BY seq"), {"r": run_id}
    ).all()
    steps = conn.execute(
        text("SELECT step_index, kind, name, status, seq FROM steps WHERE run_id = :r ORDER BY step_index"),
        {"r": run_id},
    ).all()
    return [tuple(r) for r in events], [tuple(r) for r in steps]


def _layout(conn: Any) -> str:
    if conn.dialect.name == "sqlite":
        sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'run_events'")).scalar()
        return "clustered" if sql.rstrip().upper().endswith("WITHOUT ROWID") else "rowid"
    if conn.dialect.name == "postgresql":
        opts = conn.execute(text("SELECT reloptions FROM pg_class WHERE relname = 'runs'")).scalar() or []
        return "fillfactor" if any(o.startswith("fillfactor=") for o in opts) else "default"
    return "n/a"


def test_a_step_stores_one_event_and_the_migration_keeps_every_row(db_url: str) -> None:
    from alembic import command

    with Orchestrator(database_url=db_url) as orch:
        report = orch.run(_agent(), "add them")
        assert report.status is RunStatus.COMPLETED and report.output == "six"
        events = orch.events(report.run_id)
        # 5 steps (3 model calls, 2 tool calls): RUN_CREATED, RUN_STARTED, 5 step events, RUN_COMPLETED.
        assert [e.type for e in events].count(EventType.PHASE_CHANGED) == 0
        assert [e.type for e in events].count(EventType.STEP_COMPLETED) == 5 and len(events) == 8
        assert orch.get_run(report.run_id).state.phase is Phase.TERMINATE
    engine = create_engine(normalize_url(db_url))
    try:
        with engine.connect() as conn:
            before = _dump(conn, report.run_id)
            assert _layout(conn) in ("clustered", "fillfactor", "n/a")
        cfg = migrate._config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0016")
        with engine.connect() as conn:
            assert _dump(conn, report.run_id) == before
            assert _layout(conn) in ("rowid", "default", "n/a")
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert _dump(conn, report.run_id) == before
            assert _layout(conn) in ("clustered", "fillfactor", "n/a")
    finally:
        engine.dispose()
    with Orchestrator(database_url=db_url) as orch:  # the upgraded database keeps working
        again = orch.run(_agent(), "once more")
        assert again.status is RunStatus.COMPLETED
        assert len(orch.events(report.run_id)) == 8
