"""Run events: a run's log by ``seq``, waits for new events, and the reads behind live streams.

Streams (``server/streams.py``) read events from here by ``seq``; wake-ups only tell them when to
read again (see docs/streams.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, select

from agentmaestro.core.events import Event
from agentmaestro.store import _ops, _rows
from agentmaestro.store.schema import run_events, runs

if TYPE_CHECKING:
    from agentmaestro.store.base import Store


@dataclass(frozen=True, kw_only=True)
class EventFetch:
    """Which of a run's events to read in :meth:`EventRepository.read_many`."""

    run_id: str
    """The run."""
    after_seq: int
    """Only events with a greater ``seq``."""
    after_time: float | None
    """If set, only events created after this Unix time."""


class EventRepository:
    """The append-only event log of runs (appended by step commits); ``store.events``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def read(self, run_id: str, after_seq: int = 0, limit: int | None = None) -> list[Event]:
        """A run's events after ``after_seq``, in order."""
        return await self._store._read(_ops.list_events, run_id, after_seq, limit)

    async def wait(self, run_id: str | None, timeout: float) -> bool:
        """Wait until ``run_id`` (or any run) gets events or changes; False on timeout.

        Wakes on commits of this process and, on PostgreSQL, of other processes (NOTIFY on
        ``maestro_events``); on SQLite other processes' commits are only seen by polling.
        """
        self._store._ensure_listener()
        return await self._store.waiters.wait([f"run:{run_id}" if run_id else "any"], timeout)

    async def changed_runs(self, workspace_id: str, since: float) -> list[tuple[str, float]]:
        """``(run_id, created_at)`` of the workspace's runs updated after ``since`` (the firehose's candidates)."""
        return await self._store._read(_changed_runs, workspace_id, since)

    async def read_many(self, fetches: Sequence[EventFetch], limit: int) -> list[list[Event]]:
        """For each fetch, up to ``limit`` of its run's events in ``seq`` order, in one transaction."""
        if not fetches:
            return []
        return await self._store._read(_fetch_events, fetches, limit)


def _changed_runs(conn: Connection, workspace_id: str, since: float) -> list[tuple[str, float]]:
    q = select(runs.c.run_id, runs.c.created_at).where(runs.c.workspace_id == workspace_id, runs.c.updated_at > since)
    return [(r.run_id, r.created_at) for r in conn.execute(q)]


def _fetch_events(conn: Connection, fetches: Sequence[EventFetch], limit: int) -> list[list[Event]]:
    out = []
    for f in fetches:
        q = select(run_events).where(run_events.c.run_id == f.run_id, run_events.c.seq > f.after_seq)
        if f.after_time is not None:
            q = q.where(run_events.c.created_at > f.after_time)
        out.append([_rows.event_from_row(r) for r in conn.execute(q.order_by(run_events.c.seq).limit(limit))])
    return out
