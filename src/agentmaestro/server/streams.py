"""Live event streams: Server-Sent Events, a WebSocket per run, and a workspace-wide WebSocket firehose.

Every subscriber reads the events from the database by ``seq``; notifications (in-process waiters,
PostgreSQL NOTIFY on ``maestro_events``, or polling on SQLite) only tell it when to read again.
So a wake-up can be lost, late or duplicated without an event being lost or duplicated. See
docs/streams.md for the protocol and the firehose cursor.

Endpoints:

* ``GET /v1/runs/{run_id}/events`` with ``Accept: text/event-stream`` (the JSON route in
  ``routes/runs.py`` hands over to :func:`sse_response`): ``id: <seq>``, ``event: <TYPE>``,
  ``data: <event JSON>``; resumes after ``Last-Event-ID`` (or ``?after=``).
* ``WS /v1/runs/{run_id}/ws?after=SEQ``: ``{"kind": "event", "event": {...}}`` messages.
* ``WS /v1/ws?after=CURSOR``: every event of the caller's workspace, each with a ``cursor``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import heapq
import json
import logging
import math
import time
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, Query, Request, WebSocket
from fastapi.responses import StreamingResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from agentmaestro.core.events import Event
from agentmaestro.core.states import EventType, RunStatus
from agentmaestro.engine.deltas import BUS as DELTA_BUS
from agentmaestro.errors import MaestroError, NotFoundError, one_line
from agentmaestro.server.auth import Principal
from agentmaestro.server.errors import APIError
from agentmaestro.store.base import Store
from agentmaestro.store.events import EventFetch

log = logging.getLogger("agentmaestro.server.streams")

router = APIRouter(tags=["events"])

KEEPALIVE_S = 15.0
"""Seconds between SSE keep-alive comments while no event flows."""
POLL_S: dict[str, float] = {"sqlite": 0.2, "postgresql": 2.0, "mysql": 0.25}
"""Re-read at least this often: on SQLite and MySQL/MariaDB, the only way to see another process's commits;
on PostgreSQL a safety net behind NOTIFY."""
BATCH = 500
"""Most events read per query."""
FIREHOSE_LAG_S = 5.0
"""Upper bound assumed for (commit latency + clock skew between writers) in the firehose cursor."""
FIREHOSE_MIN_INTERVAL_S = 0.05
"""Shortest time between two reads of one firehose subscriber (a workspace wakes it on every commit)."""

Follow = Literal["terminal", "waiting", "always"]
"""When a per-run stream ends: at a terminal status (default); also when the run waits for an
approval or a person (not for sub-runs, which continue by themselves); or never."""

WS_POLICY_VIOLATION = 1008
WS_NOT_FOUND = 4404
WS_BAD_REQUEST = 4400
WS_TRY_AGAIN = 1013
WS_INTERNAL_ERROR = 1011


@dataclass(frozen=True, kw_only=True)
class End:
    """The stream is over: the run reached the status the subscriber follows it to."""

    run_id: str
    """The run."""
    status: str
    """Its status."""
    last_seq: int
    """Its last event."""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {"run_id": self.run_id, "status": self.status, "last_seq": self.last_seq}


@dataclass(frozen=True, kw_only=True)
class Delta:
    """Live text of a model answer as it streams in (``?deltas=true``); never stored, best-effort."""

    run_id: str
    """The run."""
    text: str
    """The next piece of the answer."""
    lost: bool = False
    """Earlier pieces were dropped because this subscriber fell behind."""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {"run_id": self.run_id, "text": self.text, **({"lost": True} if self.lost else {})}


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_DONE = object()


async def with_deltas(
    stream: AsyncGenerator[Event | End | None], run_id: str
) -> AsyncGenerator[Event | End | Delta | None]:
    """``stream`` (a :func:`follow_run`) interleaved with the run's live model text deltas.

    Events keep their order and exactly-once delivery; deltas go in between as they arrive and stop
    with the stream. Closing this generator closes ``stream``.
    """
    sub = DELTA_BUS.subscribe(run_id)
    out: asyncio.Queue[Any] = asyncio.Queue()

    async def pump_events() -> None:
        try:
            async for item in stream:
                await out.put(item)
        except Exception as exc:
            await out.put(_Failed(exc))
        await out.put(_DONE)

    async def pump_deltas() -> None:
        while True:
            text = await sub.get()
            lost, sub.lost = sub.lost, False
            await out.put(Delta(run_id=run_id, text=text, lost=lost))

    tasks = [asyncio.create_task(pump_events()), asyncio.create_task(pump_deltas())]
    try:
        while True:
            item = await out.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        sub.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await stream.aclose()


_NEEDS_A_PERSON = frozenset({RunStatus.WAITING_FOR_APPROVAL, RunStatus.WAITING_FOR_HUMAN})
_KEEPS_STATUS = frozenset(
    {
        EventType.RUN_STARTED,
        EventType.LEASE_RECOVERED,
        EventType.PHASE_CHANGED,
        EventType.STEP_STARTED,
        EventType.STEP_RECONCILED,
        EventType.STEP_COMPLETED,
        EventType.STEP_FAILED,
        EventType.CANCEL_REQUESTED,
    }
)
"""Events after which a running run is still running (the stream need not read its status again)."""


def _finished(status: RunStatus, follow: Follow) -> bool:
    if follow == "always":
        return False
    return status.terminal or (follow == "waiting" and status in _NEEDS_A_PERSON)


async def _next_wakeup(store: Store, key: str | None, timeout: float) -> asyncio.Task[bool]:
    """Arm a wake-up *before* reading, so that a commit between the read and the wait is not missed."""
    task = asyncio.ensure_future(store.events.wait(key, timeout))
    await asyncio.sleep(0)  # let the task register its waiter
    return task


def _timeout(poll: float, tick_s: float | None, last_yield: float) -> float:
    """How long to wait for a wake-up: the poll interval, or less if a keep-alive tick is due sooner."""
    if tick_s is None:
        return poll
    return max(0.01, min(poll, tick_s - (time.monotonic() - last_yield)))


async def _settle(task: asyncio.Task[bool]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# ------------------------------------------------------------------------------------ one run


async def follow_run(
    store: Store,
    run_id: str,
    workspace_id: str,
    *,
    after: int = 0,
    follow: Follow = "terminal",
    tick_s: float | None = None,
) -> AsyncGenerator[Event | End | None]:
    """A run's events after ``after`` in order, as they are committed.

    Yields each :class:`Event`, ``None`` every ``tick_s`` seconds without events (for keep-alives),
    and finally :class:`End` once the run reached the status ``follow`` asks for and every event up to
    then was yielded. Raises NotFoundError for an unknown run (or another workspace's).
    """
    poll = POLL_S.get(store.dialect, 0.5)
    last_yield = time.monotonic()
    rec = None
    while True:
        wake = await _next_wakeup(store, run_id, _timeout(poll, tick_s, last_yield))
        try:
            if rec is None:  # read the status first: its last_seq <= what follows
                rec = await store.runs.get(run_id, workspace_id)
            events = await store.events.read(run_id, after, BATCH)
            for ev in events:
                yield ev
                after = ev.seq
            # Steps and phase changes leave a run running: the status is read again only when an event
            # may have ended or parked the run, or when nothing came (one read per commit, not two).
            stale = rec
            if not events or any(ev.type not in _KEEPS_STATUS for ev in events):
                rec = None
            if events:
                last_yield = time.monotonic()
                if len(events) == BATCH or rec is None:
                    continue
            if stale is not None and after >= stale.state.last_seq and _finished(stale.status, follow):
                rec = stale
                yield End(run_id=run_id, status=rec.status.value, last_seq=after)
                return
            if tick_s is not None and time.monotonic() - last_yield >= tick_s:
                yield None
                last_yield = time.monotonic()
            await wake
        finally:
            await _settle(wake)


# ------------------------------------------------------------------------------- the firehose


@dataclass(kw_only=True)
class FirehoseCursor:
    """Where a workspace subscriber is: resumable, so that it gets every event exactly once.

    ``watermark``: every event with ``created_at <= watermark`` has been delivered. ``runs``: for the
    runs with events delivered after the watermark, the last delivered ``(seq, created_at)``. A run
    not in ``runs`` has had exactly its events up to the watermark delivered.
    """

    watermark: float
    """Unix time up to which everything was delivered."""
    runs: dict[str, tuple[int, float]] = field(default_factory=dict)
    """run_id -> (last delivered seq, its created_at), for runs active after the watermark."""

    def encode(self) -> str:
        """Opaque, URL-safe token."""
        body = {"w": self.watermark, "r": [[r, s, t] for r, (s, t) in sorted(self.runs.items())]}
        raw = zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 6)
        return "c1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> FirehoseCursor:
        """Inverse of :meth:`encode`; ValueError if the token is not one."""
        if not token.startswith("c1.") or len(token) > 200_000:
            raise ValueError("not a firehose cursor")
        try:
            raw = base64.urlsafe_b64decode(token[3:] + "=" * (-len(token[3:]) % 4))
            body = json.loads(zlib.decompress(raw, bufsize=1 << 16))
            watermark = float(body["w"])
            entries = {str(r): (int(s), float(t)) for r, s, t in body["r"]}
        except Exception as exc:
            raise ValueError("not a firehose cursor") from exc
        if not math.isfinite(watermark):
            raise ValueError("not a firehose cursor")
        return cls(watermark=watermark, runs=entries)


async def firehose_batch(store: Store, workspace_id: str, cursor: FirehoseCursor) -> tuple[list[Event], float | None]:
    """The events after ``cursor`` visible now, in delivery order, and where the watermark may move.

    Per run, events come in ``seq`` order starting right after what the cursor delivered; across runs,
    by ``(created_at, run_id)``. The caller records each delivered event with :func:`advance` and then,
    if the second value is not None (the read was complete), calls :func:`settle` with it.
    """
    started = time.time()
    candidates = await store.events.changed_runs(workspace_id, cursor.watermark - FIREHOSE_LAG_S)
    fetches = []
    for run_id, created_at in candidates:
        if run_id in cursor.runs:
            fetches.append(EventFetch(run_id=run_id, after_seq=cursor.runs[run_id][0], after_time=None))
        elif created_at > cursor.watermark:  # a run new since the watermark: all of it
            fetches.append(EventFetch(run_id=run_id, after_seq=0, after_time=None))
        else:  # its events up to the watermark were delivered
            fetches.append(EventFetch(run_id=run_id, after_seq=0, after_time=cursor.watermark))
    lists = await store.events.read_many(fetches, BATCH)
    complete = all(len(lst) < BATCH for lst in lists)
    heap = [(lst[0].created_at, lst[0].run_id, i, 0) for i, lst in enumerate(lists) if lst]
    heapq.heapify(heap)
    ordered: list[Event] = []
    while heap:
        _t, _r, i, j = heapq.heappop(heap)
        ordered.append(lists[i][j])
        if j + 1 < len(lists[i]):
            nxt = lists[i][j + 1]
            heapq.heappush(heap, (nxt.created_at, nxt.run_id, i, j + 1))
    return ordered, (started - FIREHOSE_LAG_S if complete else None)


def advance(cursor: FirehoseCursor, ev: Event) -> None:
    """Record that ``ev`` was delivered."""
    cursor.runs[ev.run_id] = (ev.seq, ev.created_at)


def settle(cursor: FirehoseCursor, upto: float) -> None:
    """After a complete read: everything up to ``upto`` is delivered; forget runs settled well before it."""
    if upto <= cursor.watermark:
        return
    cursor.watermark = upto
    cutoff = upto - FIREHOSE_LAG_S  # a margin for created_at going backwards within a run (clock skew)
    for run_id in [r for r, (_s, t) in cursor.runs.items() if t <= cutoff]:
        del cursor.runs[run_id]


async def follow_workspace(
    store: Store, workspace_id: str, cursor: FirehoseCursor, *, tick_s: float | None = None
) -> AsyncGenerator[tuple[Event, str] | None]:
    """Every event of the workspace after ``cursor``, each with the cursor that resumes right after it.

    Yields ``None`` every ``tick_s`` seconds without events. Never ends by itself.
    """
    poll = POLL_S.get(store.dialect, 0.5)
    last_yield = time.monotonic()
    while True:
        wake = await _next_wakeup(store, None, _timeout(poll, tick_s, last_yield))
        try:
            events, settled = await firehose_batch(store, workspace_id, cursor)
            for ev in events:
                advance(cursor, ev)
                yield ev, cursor.encode()
            if settled is not None:
                settle(cursor, settled)
            if events:
                last_yield = time.monotonic()
                if settled is None:
                    continue
            elif tick_s is not None and time.monotonic() - last_yield >= tick_s:
                yield None
                last_yield = time.monotonic()
            await wake
            await asyncio.sleep(FIREHOSE_MIN_INTERVAL_S)  # coalesce the wake-ups of a busy workspace
        finally:
            await _settle(wake)


# ----------------------------------------------------------------------------- Server-Sent Events


@dataclass(frozen=True, kw_only=True)
class SSEOptions:
    """Options of the SSE form of ``GET /v1/runs/{run_id}/events`` (None when JSON was asked for)."""

    last_event_id: int | None
    """The ``Last-Event-ID`` header: resume after this seq."""
    follow: Follow
    """When the stream ends."""
    deltas: bool = False
    """Also send live model text deltas (``event: delta`` messages without an id)."""


def wants_sse(request: Request) -> bool:
    """True if the client asked for ``text/event-stream``."""
    return "text/event-stream" in request.headers.get("accept", "").lower()


async def sse_options(
    request: Request,
    follow: Annotated[
        Follow,
        Query(
            description="Event stream only: end at a terminal status (`terminal`), also when the run waits "
            "for an approval or a person (`waiting`), or never (`always`)."
        ),
    ] = "terminal",
    deltas: Annotated[
        bool,
        Query(
            description="Event stream only: also send the live text of model answers as they stream in "
            "(`event: delta` messages without an id; best-effort, never stored)."
        ),
    ] = False,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="Event stream only: resume after this seq (sent by EventSource on reconnect).",
        ),
    ] = None,
) -> SSEOptions | None:
    """Dependency: the SSE options, or None for a JSON request."""
    if not wants_sse(request):
        return None
    seq = None
    if last_event_id is not None and last_event_id.strip():
        try:
            seq = int(last_event_id.strip())
        except ValueError:
            raise APIError(422, "invalid_request", "Last-Event-ID must be an event seq (an integer)") from None
        if seq < 0:
            raise APIError(422, "invalid_request", "Last-Event-ID must not be negative")
    return SSEOptions(last_event_id=seq, follow=follow, deltas=deltas)


SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "example": 'id: 1\nevent: RUN_CREATED\ndata: {"run_id": "run_...", "seq": 1, ...}\n\n',
            }
        },
        "description": "A page of events (JSON), or with `Accept: text/event-stream` a live stream: one "
        "`id: <seq>` / `event: <TYPE>` / `data: <event JSON>` message per event, `: keep-alive` comments, "
        "and a final `event: end` message.",
    }
}
"""OpenAPI addition for the events route: its event-stream form."""


def _sse_message(ev: Event) -> bytes:
    data = json.dumps(ev.to_json(), separators=(",", ":"), default=str)
    return f"id: {ev.seq}\nevent: {ev.type.value}\ndata: {data}\n\n".encode()


def sse_response(store: Store, run_id: str, principal: Principal, after: int, options: SSEOptions) -> StreamingResponse:
    """The event-stream response for a run (the caller has checked the run exists in the workspace)."""
    start = max(after, options.last_event_id or 0)

    async def body() -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        events = follow_run(
            store, run_id, principal.workspace_id, after=start, follow=options.follow, tick_s=KEEPALIVE_S
        )
        stream = with_deltas(events, run_id) if options.deltas else events
        try:
            async for item in stream:
                if item is None:
                    yield b": keep-alive\n\n"
                elif isinstance(item, Delta):
                    yield f"event: delta\ndata: {json.dumps(item.to_json(), separators=(',', ':'))}\n\n".encode()
                elif isinstance(item, End):
                    yield f"event: end\ndata: {json.dumps(item.to_json())}\n\n".encode()
                else:
                    yield _sse_message(item)
        except MaestroError as exc:  # e.g. the run was deleted: end the stream with an error message
            yield f"event: error\ndata: {json.dumps({'code': exc.code, 'message': str(exc)})}\n\n".encode()
        finally:
            await stream.aclose()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# -------------------------------------------------------------------------------------- WebSockets


def _ws_token(websocket: WebSocket) -> str:
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return (websocket.headers.get("x-api-key") or websocket.query_params.get("key") or "").strip()


async def _ws_principal(websocket: WebSocket) -> Principal | None:
    """Authenticate a WebSocket (header, or ``?key=`` for browsers); close it with 1008 if that fails."""
    token = _ws_token(websocket)
    store: Store = websocket.app.state.store
    row = await store.keys.authenticate(token) if token else None
    if row is None:
        await websocket.close(WS_POLICY_VIOLATION, "missing API key" if not token else "invalid or revoked API key")
        return None
    principal = Principal.from_key(row)
    limiter = getattr(websocket.app.state, "rate_limiter", None)
    if limiter is not None and limiter.take(principal.key_id) is not None:
        await websocket.close(WS_TRY_AGAIN, "rate limit exceeded for this API key")
        return None
    return principal


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.client_state is WebSocketState.CONNECTED:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.close(code, reason)


async def _pump(websocket: WebSocket, produce: Callable[[], AsyncIterator[dict[str, Any]]]) -> None:
    """Send the producer's messages until it ends or the client goes away (whichever comes first)."""
    async with anyio.create_task_group() as tg:

        async def watch_disconnect() -> None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                while True:
                    msg = await websocket.receive()
                    if msg["type"] == "websocket.disconnect":
                        break
            tg.cancel_scope.cancel()

        async def send_all() -> None:
            try:
                async for message in produce():
                    await websocket.send_text(json.dumps(message, separators=(",", ":"), default=str))
                await _close(websocket, 1000, "")
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass  # the client went away
            except MaestroError as exc:  # e.g. the run disappeared
                await _close(websocket, WS_INTERNAL_ERROR, one_line(exc)[:120])
            except Exception:
                log.exception("event stream %s failed", websocket.url.path)
                await _close(websocket, WS_INTERNAL_ERROR, "internal error")
            tg.cancel_scope.cancel()

        tg.start_soon(watch_disconnect)
        tg.start_soon(send_all)


@router.websocket("/v1/runs/{run_id}/ws")
async def run_ws(
    websocket: WebSocket,
    run_id: str,
    after: Annotated[int, Query(ge=0)] = 0,
    follow: Follow = "terminal",
    deltas: bool = False,
) -> None:
    """A run's events as WebSocket messages: ``{"kind": "event", "event": {...}}`` then ``{"kind": "end", ...}``.

    With ``?deltas=true`` also ``{"kind": "delta", "run_id", "text"}`` messages: the live text of model
    answers as it streams in (best-effort, never stored; the MODEL_CALL event carries the whole answer).
    """
    await websocket.accept()
    principal = await _ws_principal(websocket)
    if principal is None:
        return
    store: Store = websocket.app.state.store
    try:
        await store.runs.get(run_id, principal.workspace_id)
    except NotFoundError as exc:
        await websocket.close(WS_NOT_FOUND, str(exc)[:120])
        return

    async def produce() -> AsyncIterator[dict[str, Any]]:
        events = follow_run(store, run_id, principal.workspace_id, after=after, follow=follow)
        stream = with_deltas(events, run_id) if deltas else events
        try:
            async for item in stream:
                if isinstance(item, Delta):
                    yield {"kind": "delta", **item.to_json()}
                elif isinstance(item, End):
                    yield {"kind": "end", **item.to_json()}
                elif item is not None:
                    yield {"kind": "event", "event": item.to_json()}
        finally:
            await stream.aclose()

    await _pump(websocket, produce)


@router.websocket("/v1/ws")
async def workspace_ws(
    websocket: WebSocket,
    after: Annotated[str | None, Query(max_length=200_000)] = None,
) -> None:
    """Every event of the caller's workspace, resumable.

    A ``hello`` message with the starting cursor, then ``{"kind": "event", "cursor": ..., "event": {...}}``
    per event. Reconnect with ``?after=<cursor>`` to continue right after that event.
    """
    await websocket.accept()
    principal = await _ws_principal(websocket)
    if principal is None:
        return
    try:
        cursor = FirehoseCursor.decode(after) if after else FirehoseCursor(watermark=time.time())
    except ValueError:
        await websocket.close(WS_BAD_REQUEST, "after must be a cursor from an earlier message")
        return
    store: Store = websocket.app.state.store

    async def produce() -> AsyncIterator[dict[str, Any]]:
        yield {"kind": "hello", "workspace_id": principal.workspace_id, "cursor": cursor.encode()}
        stream = follow_workspace(store, principal.workspace_id, cursor)
        try:
            async for item in stream:
                if item is not None:
                    ev, token = item
                    yield {"kind": "event", "cursor": token, "event": ev.to_json()}
        finally:
            await stream.aclose()

    await _pump(websocket, produce)
