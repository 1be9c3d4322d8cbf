"""Runs: create (group-committed), read, list, wait for a status, and the operator's cancel, resume and fork.

The step commit and the claims that change a run as it executes are in :mod:`agentmaestro.store.steps`
and :mod:`agentmaestro.store.leases`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from agentmaestro.store import _audit, _ops, _rows
from agentmaestro.store._ops import NewRun
from agentmaestro.store.records import AuditFor, RunRecord
from agentmaestro.store.schema import DEFAULT_WORKSPACE
from agentmaestro.store.wakeups import STATUSES_KEY, StatusTest

if TYPE_CHECKING:
    from agentmaestro.store.base import Store

__all__ = ["NewRun", "RunRepository"]

log = logging.getLogger("agentmaestro.store")

_REREAD_S = 5.0
"""Longest a status waiter goes without reading its run, even when nothing told it to."""


class RunRepository:
    """Runs of a workspace; ``store.runs``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending_creates: list[tuple[list[NewRun], asyncio.Future[list[RunRecord]]]] = []
        self._create_task: asyncio.Task[None] | None = None
        self._watch_poll: asyncio.Task[None] | None = None
        self.watch_poll_s = 0.5
        """How often the statuses of runs waited for are read (changes made by other processes)."""

    async def create(self, new_runs: Sequence[NewRun]) -> list[RunRecord]:
        """Insert PENDING runs with their RUN_CREATED events and wake workers.

        Concurrent calls are group-committed: the runs of every call waiting meanwhile go in one
        transaction (one fsync for many ``start_async`` calls at once). If that transaction fails, each
        call's runs are written on their own, so one bad run fails only its own call.
        """
        if not new_runs:
            return []
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[RunRecord]] = loop.create_future()
        self._pending_creates.append((list(new_runs), fut))
        if self._create_task is None or self._create_task.done():
            self._create_task = loop.create_task(self._flush_creates())
        return await fut

    async def drain(self) -> None:
        """Wait for the creations queued so far to be written (the store does before closing)."""
        if self._create_task is not None:
            await asyncio.shield(self._create_task)

    def _insert_runs(self, conn: Connection, new_runs: list[NewRun]) -> list[RunRecord]:
        now = time.time()
        out = _ops.create_runs(conn, new_runs, now)
        _audit.append_notes(conn, [n.audit for n in new_runs], now)  # each run's start, recorded with it
        self._store._pg_notify(conn)
        conn.info[STATUSES_KEY] = {r.run_id: r.status for r in out}  # for status watchers
        return out

    async def _flush_creates(self) -> None:
        store = self._store
        while self._pending_creates:
            batch = self._pending_creates[: store.max_batch]
            del self._pending_creates[: store.max_batch]
            try:
                records = await store._write(self._insert_runs, [n for runs, _ in batch for n in runs])
            except Exception as exc:
                if len(batch) == 1:
                    batch[0][1].set_exception(exc)
                    continue
                for runs, fut in batch:  # find the bad one: each call on its own
                    try:
                        fut.set_result(await store._write(self._insert_runs, runs))
                    except Exception as one_exc:
                        fut.set_exception(one_exc)
                    else:
                        store._notify_runs([r.run_id for r in fut.result()], runnable=True, watchers=False)
                continue
            store._notify_runs([r.run_id for r in records], runnable=True, watchers=False)
            i = 0
            for runs, fut in batch:
                if not fut.done():
                    fut.set_result(records[i : i + len(runs)])
                i += len(runs)

    async def get(self, run_id: str, workspace_id: str | None = None) -> RunRecord:
        """One run (NotFoundError if missing or in another workspace)."""
        return await self._store._read(_rows.get_run, run_id, workspace_id)

    async def page(
        self,
        *,
        workspace_id: str | None = DEFAULT_WORKSPACE,
        statuses: Collection[str] | None = None,
        agent: str | None = None,
        parent_run_id: str | None = None,
        top_level: bool = False,
        kind: str | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Runs newest first, filtered; ``before`` is the last run id of the previous page.

        ``top_level`` keeps only runs without a parent; ``kind`` is ``agent``, ``workflow``, ``objective`` or
        ``escalation`` (``RunRecord.to_json()["kind"]``).
        """
        return await self._store._read(
            _ops.list_runs,
            workspace_id=workspace_id,
            statuses=statuses,
            agent=agent,
            parent_run_id=parent_run_id,
            top_level=top_level,
            kind=kind,
            before=before,
            limit=limit,
        )

    async def count_children(self, run_ids: Collection[str]) -> dict[str, tuple[int, int]]:
        """``{run_id: (child runs, finished child runs)}`` for those of ``run_ids`` that have children."""
        return await self._store._read(_ops.count_children, run_ids)

    async def count_by_status(self, workspace_id: str | None = None) -> dict[str, int]:
        """Number of runs per status."""
        return await self._store._read(_ops.count_runs_by_status, workspace_id)

    async def wait_for_status(
        self, run_id: str, test: StatusTest, timeout: float | None, *, workspace_id: str | None = None
    ) -> RunRecord:
        """Wait until the run's status passes ``test``; returns the run then (raises TimeoutError).

        Reads the run once, then only when told it reached such a status or changed in a way this
        process cannot see the status of: a step commit of this process costs no read. Other
        processes' changes arrive by NOTIFY on PostgreSQL; on both databases one query every
        :attr:`watch_poll_s` checks the statuses of the runs waited for that no commit of this process
        named for a second (a single read however many waiters there are).
        """
        self._store._ensure_listener()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with self._store.watchers.watch(run_id, test) as fut:  # armed before the read: no commit is missed
                poll = self._watch_poll
                if poll is None or poll.done() or poll.get_loop() is not loop:
                    self._watch_poll = loop.create_task(self._poll_watched())
                rec = await self.get(run_id, workspace_id)
                if test(rec.status):
                    return rec
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"run {run_id} still {rec.status.value} after {timeout}s")
                with contextlib.suppress(TimeoutError):  # re-read now and then whatever happens (belt and braces)
                    await asyncio.wait_for(fut, _REREAD_S if remaining is None else min(remaining, _REREAD_S))

    async def _poll_watched(self) -> None:
        """While runs are waited for: read their statuses every ``watch_poll_s`` (other processes' changes)."""
        store = self._store
        while not store.closed:
            await asyncio.sleep(self.watch_poll_s)
            if not store.watchers:
                return
            # Runs whose commits this process made a moment ago need no poll: it would see them change.
            run_ids = store.watchers.quiet_run_ids(max(1.0, 2 * self.watch_poll_s))
            if not run_ids:
                continue
            try:
                statuses = await store._read(_ops.run_statuses, run_ids)
            except Exception as exc:  # a failed poll is retried at the next tick
                log.debug("polling watched runs failed: %s", exc)
                continue
            store.watchers.changed(list(statuses), statuses)

    # ------------------------------------------------------------------------- operator side

    async def cancel(
        self,
        run_id: str,
        *,
        workspace_id: str | None = None,
        reason: str = "cancelled",
        by: str = "operator",
        audit: AuditFor[RunRecord] | None = None,
    ) -> RunRecord:
        """Cancel a run: at once if it is not running, cooperatively (at its next step) if it is.

        ``audit``: the audit entry recording the cancel, written in the same transaction.
        """

        def op(conn: Connection) -> RunRecord:
            now = time.time()
            rec, _immediate = _ops.request_cancel(conn, run_id, workspace_id, reason, by, now)
            if audit is not None:
                _audit.append_notes(conn, [audit(rec)], now)
            return rec

        rec = await self._store._write(op)
        self._store._notify_runs([run_id])
        return rec

    async def resume(
        self,
        run_id: str,
        *,
        workspace_id: str | None = None,
        by: str = "operator",
        policy: dict[str, Any] | None = None,
        audit: AuditFor[RunRecord] | None = None,
    ) -> RunRecord:
        """Resume a FAILED or CANCELLED run from its last completed step (optionally with new limits)."""

        def op(conn: Connection) -> RunRecord:
            now = time.time()
            out = _ops.resume_run(conn, run_id, workspace_id, by, policy, now)
            if audit is not None:
                _audit.append_notes(conn, [audit(out)], now)
            self._store._pg_notify(conn)
            return out

        rec = await self._store._write(op)
        self._store._notify_runs([run_id], runnable=True)
        return rec

    async def fork(
        self,
        run_id: str,
        *,
        at_seq: int,
        workspace_id: str | None = None,
        by: str = "operator",
        policy: dict[str, Any] | None = None,
        audit: AuditFor[RunRecord] | None = None,
    ) -> RunRecord:
        """Fork a run at event ``at_seq`` into a new PENDING run (optionally with new limits)."""
        from agentmaestro.store.records import new_run_id

        def op(conn: Connection) -> RunRecord:
            now = time.time()
            out = _ops.fork_run(conn, run_id, workspace_id, at_seq, new_run_id(), by, now, policy)
            if audit is not None:
                _audit.append_notes(conn, [audit(out)], now)
            self._store._pg_notify(conn)
            return out

        rec = await self._store._write(op)
        self._store._notify_runs([rec.run_id], runnable=True)
        return rec
