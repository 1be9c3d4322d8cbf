"""Worker presence: which worker processes are alive, for operators and for the queue's pickup estimate."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agentmaestro.store import _workers

if TYPE_CHECKING:
    from agentmaestro.store.base import Store


class WorkerRepository:
    """Worker heartbeats; ``store.workers``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def beat(self, *, owner: str, host: str, pid: int, concurrency: int, ttl: float) -> None:
        """Record that the worker ``owner`` is alive for the next ``ttl`` seconds."""
        await self._store._write(
            _workers.beat, owner=owner, host=host, pid=pid, concurrency=concurrency, now=time.time(), ttl=ttl
        )

    async def gone(self, owner: str) -> None:
        """Forget a worker that stopped."""
        await self._store._write(_workers.gone, owner)

    async def alive(self) -> list[dict[str, Any]]:
        """Workers (claiming any run) heard of within their lease length: owner, host, pid, last_seen, ..."""
        return await self._store._read(_workers.alive, time.time())
