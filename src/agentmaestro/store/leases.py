"""Leases: workers claim runnable runs, renew and give up their leases; stalled holders are ended."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from agentmaestro.store import _ops
from agentmaestro.store.records import Claim, HeartbeatResult
from agentmaestro.store.wakeups import MYSQL_WAKE_POLL_S, RUNNABLE, STATUSES_KEY

if TYPE_CHECKING:
    from agentmaestro.store.base import Store


class LeaseRepository:
    """The worker side of runs: claims, heartbeats, releases; ``store.leases``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def claim(
        self,
        *,
        owner: str,
        limit: int,
        lease_ttl: float,
        agent_names: Collection[str] | None = None,
        run_ids: Collection[str] | None = None,
    ) -> list[Claim]:
        """Lease up to ``limit`` runnable runs for ``owner``."""
        if limit <= 0:
            return []
        store = self._store

        def op(conn: Connection) -> list[Claim]:
            # The clock is read in the writer thread, when the claim actually runs: a claim that
            # waited behind other writes still gets a full lease.
            claims = _ops.claim_runs(
                conn,
                owner=owner,
                limit=limit,
                lease_ttl=lease_ttl,
                now=time.time(),
                agent_names=agent_names,
                run_ids=run_ids,
                skip_locked=store.dialect != "sqlite",
            )
            conn.info[STATUSES_KEY] = {c.record.run_id: c.record.status for c in claims}  # for status watchers
            return claims

        claims = await store._write(op)
        if claims:
            store._notify_runs([c.record.run_id for c in claims], watchers=False)
        return claims

    async def heartbeat(self, *, owner: str, leases: Sequence[tuple[str, int]], lease_ttl: float) -> HeartbeatResult:
        """Extend leases; report lost ones and pending cancel requests."""
        if not leases:
            return HeartbeatResult()

        def op(conn: Connection) -> HeartbeatResult:
            # Read the clock when the renewal runs, not when it was queued behind commits.
            return _ops.heartbeat(conn, owner=owner, leases=leases, lease_ttl=lease_ttl, now=time.time())

        return await self._store._write(op)

    async def release(self, *, owner: str, leases: Sequence[tuple[str, int]], delay_s: float = 0.0) -> None:
        """Give leases up so that any worker can claim the runs at once (or after ``delay_s`` seconds)."""
        if leases:

            def op(conn: Connection) -> None:
                _ops.release_leases(conn, owner=owner, leases=leases, now=time.time(), delay_s=delay_s)

            await self._store._write(op)
            self._store._notify_runs([r for r, _ in leases], runnable=delay_s <= 0)

    async def wait_runnable(self, timeout: float) -> bool:
        """Wait until a run may have become claimable (in-process or NOTIFY), or ``timeout``.

        On MySQL/MariaDB other processes' runs are seen by polling: the wait ends after at most
        :data:`MYSQL_WAKE_POLL_S`, and the caller's next claim is the poll.
        """
        self._store._ensure_listener()
        if self._store.dialect == "mysql":
            timeout = min(timeout, MYSQL_WAKE_POLL_S)
        return await self._store.waiters.wait([RUNNABLE], timeout)

    async def end_stalled_holders(self, *, older_than_s: float) -> list[dict[str, Any]]:
        """PostgreSQL: terminate maestro sessions frozen inside a transaction that locks a run with an expired lease.

        Only transactions older than ``older_than_s`` are ended (see ``store/_stalled.py``). Returns
        the sessions ended (``pid``, ``application_name``); always empty on SQLite.
        """
        if self._store.dialect != "postgresql" or older_than_s <= 0:
            return []
        from agentmaestro.store._stalled import end_stalled_holders

        return await self._store._read(end_stalled_holders, older_than_s=older_than_s, now=time.time())
