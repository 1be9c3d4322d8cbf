"""Objectives: an objective run's folded task graph, and operator commands on it (engine/objective.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from agentmaestro.errors import ConflictError
from agentmaestro.store import _audit, _objectives
from agentmaestro.store.records import AuditFor, RunRecord

if TYPE_CHECKING:
    from agentmaestro.store.base import Store


class ObjectiveRepository:
    """Objective runs and their task graphs; ``store.objectives``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, run_id: str, *, workspace_id: str | None = None) -> tuple[RunRecord, Any]:
        """An objective run and its folded task graph (:class:`agentmaestro.core.tasks.Graph`)."""
        return await self._store._read(_objectives.get_objective, run_id, workspace_id)

    async def command(
        self,
        run_id: str,
        plan: Callable[[Any], Any],
        *,
        workspace_id: str | None = None,
        by: str = "operator",
        audit: AuditFor[RunRecord] | None = None,
    ) -> tuple[RunRecord, Any]:
        """Apply task graph changes (``plan(graph) -> changes``) to a waiting objective and wake it up.

        Child runs of tasks the changes took out of flight (abandoned) are cancelled. ``audit``: the audit
        entry recording the command, written in the same transaction as the changes.
        """

        def op(conn: Connection) -> tuple[RunRecord, Any, list[str]]:
            now = time.time()
            out = _objectives.command(conn, run_id, workspace_id, plan, by, now)
            if audit is not None:
                _audit.append_notes(conn, [audit(out[0])], now)
            self._store._pg_notify(conn)
            return out

        rec, graph, cancel = await self._store._write(op)
        self._store._notify_runs([run_id], runnable=True)
        for child in cancel:
            try:
                await self._store.runs.cancel(child, reason=f"task abandoned in objective {run_id}", by=by)
            except ConflictError:
                pass  # it ended meanwhile
        return rec, graph
