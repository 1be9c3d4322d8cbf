"""In-process wake-ups: waiters keyed by string, and watchers of a run's status told by the commit that made it.

Below :mod:`agentmaestro.store.base` and the repositories, which both use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence

from agentmaestro.core.states import RunStatus

STATUSES_KEY = "maestro.statuses"
"""``conn.info`` key: new statuses a write transaction knows (run id -> status), for status watchers."""
RUNNABLE = "runnable"
"""Wake-up key: a run became claimable."""
MYSQL_WAKE_POLL_S = 0.25
"""MySQL/MariaDB have no LISTEN/NOTIFY: an idle worker looks for claimable runs this often (one short
``SELECT ... FOR UPDATE SKIP LOCKED`` transaction), so a run started by another process waits at most this
long for a worker (PostgreSQL: a NOTIFY wakes workers at once; SQLite: the worker's poll interval)."""


class Waiters:
    """In-process wake-ups keyed by string ("runnable", "run:<id>", "any")."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._lock = threading.Lock()

    async def wait(self, keys: Sequence[str], timeout: float | None) -> bool:
        """Wait until one of ``keys`` is notified or ``timeout`` passes; True if notified."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            for k in keys:
                self._waiters.setdefault(k, set()).add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                for k in keys:
                    s = self._waiters.get(k)
                    if s is not None:
                        s.discard(fut)
                        if not s:
                            del self._waiters[k]

    def notify(self, keys: Collection[str]) -> None:
        """Wake everyone waiting on any of ``keys`` (thread-safe)."""
        with self._lock:
            futs = [f for k in keys for f in self._waiters.get(k, ())]
        for f in futs:
            try:
                f.get_loop().call_soon_threadsafe(_resolve, f)
            except RuntimeError:  # the waiter's loop is closed
                pass


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


StatusTest = Callable[[RunStatus], bool]
"""Whether a run status is one a waiter waits for."""


class StatusWatchers:
    """In-process waiters for a run to reach a status, told the status by the commit that made it.

    A commit of this process names the run's new status, so a waiter wakes only when that status is
    one it waits for (no database read per step). A change this process cannot see the status of (an
    operator action, a run resumed by its child, another process's commit) wakes it with ``None``:
    read the run again.
    """

    def __init__(self) -> None:
        self._watchers: dict[str, set[tuple[asyncio.Future[RunStatus | None], StatusTest]]] = {}
        self._seen: dict[str, float] = {}  # watched run -> when a commit of this process last named its status
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def watch(self, run_id: str, test: StatusTest) -> Iterator[asyncio.Future[RunStatus | None]]:
        """A future resolved with a status passing ``test``, or None on a change to read again."""
        fut: asyncio.Future[RunStatus | None] = asyncio.get_running_loop().create_future()
        entry = (fut, test)
        with self._lock:
            self._watchers.setdefault(run_id, set()).add(entry)
        try:
            yield fut
        finally:
            with self._lock:
                s = self._watchers.get(run_id)
                if s is not None:
                    s.discard(entry)
                    if not s:
                        del self._watchers[run_id]
                        self._seen.pop(run_id, None)

    def __len__(self) -> int:
        """How many runs are waited for."""
        return len(self._watchers)

    def quiet_run_ids(self, quiet_s: float) -> list[str]:
        """The runs waited for that no commit of this process has named a status of for ``quiet_s`` seconds.

        Those are the ones another process may be changing: a run this process drives commits often.
        """
        limit = time.monotonic() - quiet_s
        with self._lock:
            return [r for r in self._watchers if self._seen.get(r, 0.0) < limit]

    def changed(self, run_ids: Collection[str], statuses: Mapping[str, RunStatus] | None = None) -> None:
        """Runs changed; ``statuses`` has the new status of those whose commit this process made (thread-safe)."""
        if not self._watchers:
            return
        wake: list[tuple[asyncio.Future[RunStatus | None], RunStatus | None]] = []
        now = time.monotonic()
        with self._lock:
            for run_id in run_ids:
                entries = self._watchers.get(run_id)
                if not entries:
                    continue
                status = statuses.get(run_id) if statuses else None
                if status is not None:
                    self._seen[run_id] = now
                wake.extend((fut, status) for fut, test in entries if status is None or test(status))
        for fut, status in wake:
            try:
                fut.get_loop().call_soon_threadsafe(_deliver, fut, status)
            except RuntimeError:  # the waiter's loop is closed
                pass


def _deliver(fut: asyncio.Future[RunStatus | None], status: RunStatus | None) -> None:
    if not fut.done():
        fut.set_result(status)
