"""Live text deltas of model calls, for viewers: published as they stream in, never stored.

Model adapters hand each piece of answer text to the process-wide delta sink
(:func:`agentmaestro.models.base.set_delta_sink`). The :class:`DeltaBus` is that sink while
``maestro serve`` or ``maestro worker`` runs, and fans deltas out to subscribers of the run (the
SSE and WebSocket streams with ``?deltas=true``).

* SQLite (one process): deltas go straight from the model call to this process's subscribers.
* PostgreSQL (many processes): deltas are sent with ``NOTIFY maestro_deltas`` from one background
  thread, those that queued up while it was busy coalesced per run into one notification; every
  process that listens (the store's LISTEN connection) hands them to its own subscribers. So a
  viewer connected to any API server sees the deltas of a run executed by any worker process.

Deltas are best-effort by design: a viewer that connects mid-call sees the rest of that call, a slow
viewer may miss some (it is told so with ``lost``), and the complete text always arrives in the
run's MODEL_CALL event, which is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from agentmaestro.models.streaming import DeltaSink, set_delta_sink
from agentmaestro.store.base import DELTAS_CHANNEL

log = logging.getLogger("agentmaestro.deltas")

CHANNEL = DELTAS_CHANNEL
_PAYLOAD_MAX = 7000  # PostgreSQL caps a NOTIFY payload at 8000 bytes
SUBSCRIBER_BUFFER = 2000
"""Deltas buffered per subscriber before the oldest are dropped (and ``lost`` is set)."""


@dataclass(eq=False)
class Subscription:
    """One viewer of one run's deltas: read with :meth:`get`; close with :meth:`close`."""

    run_id: str
    loop: asyncio.AbstractEventLoop
    bus: DeltaBus
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(SUBSCRIBER_BUFFER))
    lost: bool = False
    """Some deltas were dropped because this viewer did not keep up."""

    def _push(self, text: str) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.lost = True
        self.queue.put_nowait(text)

    async def get(self) -> str:
        """The next delta (waits); consecutive queued deltas are joined into one."""
        parts = [await self.queue.get()]
        while not self.queue.empty():
            parts.append(self.queue.get_nowait())
        return "".join(parts)

    def close(self) -> None:
        """Stop receiving."""
        self.bus._unsubscribe(self)


class DeltaBus:
    """Process-wide fan-out of model text deltas to run subscribers (see the module docstring)."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._lock = threading.Lock()
        self._installs = 0
        self._previous: DeltaSink | None = None
        self._publisher: _PgPublisher | None = None

    # ------------------------------------------------------------------------ subscribers

    def subscribe(self, run_id: str) -> Subscription:
        """Start receiving the deltas of ``run_id`` on the running event loop."""
        sub = Subscription(run_id=run_id, loop=asyncio.get_running_loop(), bus=self)
        with self._lock:
            self._subs.setdefault(run_id, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.run_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.run_id]

    def dispatch(self, run_id: str, text: str) -> None:
        """Hand a delta to this process's subscribers of ``run_id`` (any thread)."""
        with self._lock:
            subs = list(self._subs.get(run_id, ()))
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub._push, text)
            except RuntimeError:  # that subscriber's loop is closed
                self._unsubscribe(sub)

    def subscribers(self, run_id: str) -> int:
        """How many viewers of ``run_id`` this process has."""
        with self._lock:
            return len(self._subs.get(run_id, ()))

    # ------------------------------------------------------------------------- the sink

    def install(self, *, pg_url: str | None = None) -> None:
        """Become the process's delta sink (counted: each install needs one :meth:`uninstall`).

        With ``pg_url`` (PostgreSQL), deltas are published with NOTIFY instead of dispatched
        directly; this process's subscribers then receive them through the store's LISTEN
        connection like everyone else's (see :meth:`on_notify`).
        """
        with self._lock:
            self._installs += 1
            if self._installs > 1:
                return
            if pg_url:
                self._publisher = _PgPublisher(pg_url)
                sink: DeltaSink = self._publisher.publish
            else:
                sink = self.dispatch
        self._previous = set_delta_sink(sink)

    def uninstall(self) -> None:
        """Undo one :meth:`install`; the last one restores the previous sink."""
        with self._lock:
            self._installs -= 1
            if self._installs > 0:
                return
            publisher, self._publisher = self._publisher, None
        set_delta_sink(self._previous)
        self._previous = None
        if publisher is not None:
            publisher.close()

    def on_notify(self, payload: str) -> None:
        """Dispatch a ``maestro_deltas`` NOTIFY payload (``{"r": run_id, "t": text}``)."""
        try:
            msg = json.loads(payload)
            run_id, text = str(msg["r"]), str(msg["t"])
        except (ValueError, KeyError, TypeError):
            log.debug("ignoring a malformed delta notification")
            return
        self.dispatch(run_id, text)


class _PgPublisher:
    """Coalesces deltas per run and sends them with ``pg_notify`` from one background thread."""

    def __init__(self, url: str) -> None:
        self._dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._queue: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="maestro-delta-notify", daemon=True)
        self._thread.start()

    def publish(self, run_id: str, text: str) -> None:
        self._queue.put((run_id, text))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=3)

    def _run(self) -> None:
        import psycopg

        conn: Any = None
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                break
            pending: dict[str, list[str]] = {item[0]: [item[1]]}
            while True:  # coalesce what queued up while the previous batch was being sent
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                pending.setdefault(more[0], []).append(more[1])
            try:
                if conn is None:
                    conn = psycopg.connect(self._dsn, autocommit=True)
                for run_id, parts in pending.items():
                    for payload in _payloads(run_id, "".join(parts)):
                        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            except Exception as exc:  # deltas are best-effort: drop this batch, reconnect next time
                log.warning("could not publish model deltas: %s", exc)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def _payloads(run_id: str, text: str) -> list[str]:
    """Split one run's text into NOTIFY payloads under the size cap (never inside a character)."""
    out: list[str] = []
    while text:
        size = len(text)
        while True:
            payload = json.dumps({"r": run_id, "t": text[:size]}, separators=(",", ":"))
            if len(payload.encode()) <= _PAYLOAD_MAX or size <= 1:
                break
            size = size // 2
        out.append(payload)
        text = text[size:]
    return out


BUS = DeltaBus()
"""The process's delta bus."""

__all__: list[str] = ["BUS", "CHANNEL", "DeltaBus", "Subscription"]
