"""Prometheus metrics for ``/metrics``: one registry per app.

Run counts by status and the queue depth are read from the database at each scrape, so they cover
every worker on the database. Step, tool-call, token, cost and latency figures are counted from the
events the embedded worker commits (an engine event listener); ``maestro worker`` processes elsewhere
do not feed them. HTTP requests are counted and timed by :class:`HTTPMetricsMiddleware`, by method, route
template (``/v1/runs/{run_id}``, never the raw path) and status; the process collectors add CPU, memory,
open file descriptors and garbage collection. Counters expose no ``*_created`` series.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentmaestro.core.events import Event
from agentmaestro.core.states import EventType, RunStatus
from agentmaestro.store.base import Store

__all__ = ["CONTENT_TYPE_LATEST", "HTTPMetricsMiddleware", "Metrics"]

disable_created_metrics()  # type: ignore[no-untyped-call]  # a counter's start time as a second series doubles every counter for nothing

_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED_ROUTE = "unmatched"
"""The route label of a request no route matched (a 404 for an unknown path), so raw paths never become labels."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_FINISHED = {
    EventType.RUN_COMPLETED: "COMPLETED",
    EventType.RUN_FAILED: "FAILED",
    EventType.RUN_CANCELLED: "CANCELLED",
}


class Metrics:
    """The app's metrics and the engine listener that feeds them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Gauge("maestro_runs", "Runs by status (all workspaces, read at scrape).", ["status"], registry=r)
        self.queue_depth = Gauge("maestro_queue_depth", "PENDING runs waiting for a worker.", registry=r)
        self.steps = Counter("maestro_steps", "Steps finished by the embedded worker.", ["kind", "status"], registry=r)
        self.tool_calls = Counter(
            "maestro_tool_calls", "Tool calls by the embedded worker: ok, error, denied.", ["status"], registry=r
        )
        self.step_latency = Histogram(
            "maestro_step_duration_seconds", "Step latency by kind.", ["kind"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.tokens = Counter("maestro_tokens", "Model tokens used, by direction.", ["direction"], registry=r)
        self.cost = Counter("maestro_cost_usd", "Model cost in USD.", registry=r)
        self.runs_finished = Counter(
            "maestro_runs_finished", "Runs finished by the embedded worker, by final status.", ["status"], registry=r
        )
        for status in _FINISHED.values():
            self.runs_finished.labels(status=status)
        for direction in ("input", "output"):
            self.tokens.labels(direction=direction)
        for outcome in ("ok", "error", "denied"):
            self.tool_calls.labels(status=outcome)
        self.http_requests = Counter(
            "maestro_http_requests",
            "HTTP requests answered, by method, route template and status code (errors: status 5xx; 500 also "
            "when no response was started).",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "maestro_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by method and route template.",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge("maestro_http_requests_in_flight", "HTTP requests being answered.", registry=r)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            # the process's CPU seconds, resident memory, open fds, start time; Python version; GC counts
            r.register(collector)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request."""
        self.http_requests.labels(method=method, route=route, status=str(status)).inc()
        self.http_latency.labels(method=method, route=route).observe(seconds)

    def on_events(self, run_id: str, agent: str, events: list[Event]) -> None:
        """Engine event listener: count steps, tool calls, tokens, cost and latency."""
        for ev in events:
            p = ev.payload
            if ev.type is EventType.STEP_COMPLETED:
                kind = str(p.get("kind") or "UNKNOWN")
                if kind == "TOOL_CALL":
                    outcome = "denied" if p.get("denied") else "error" if p.get("is_error") else "ok"
                    self.tool_calls.labels(status=outcome).inc()
                    self.steps.labels(kind=kind, status=outcome).inc()
                else:
                    self.steps.labels(kind=kind, status="ok").inc()
                duration = p.get("duration_ms")
                if isinstance(duration, int | float) and not isinstance(duration, bool) and duration >= 0:
                    self.step_latency.labels(kind=kind).observe(duration / 1000.0)
                usage = p.get("usage")
                if isinstance(usage, dict):
                    for direction in ("input", "output"):
                        n = usage.get(f"{direction}_tokens")
                        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                            self.tokens.labels(direction=direction).inc(n)
                cost = p.get("cost_usd")
                if isinstance(cost, int | float) and not isinstance(cost, bool) and cost > 0:
                    self.cost.inc(cost)
            elif ev.type is EventType.STEP_FAILED:
                self.steps.labels(kind=str(p.get("kind") or "UNKNOWN"), status="failed").inc()
            elif ev.type in _FINISHED:
                self.runs_finished.labels(status=_FINISHED[ev.type]).inc()

    async def render(self, store: Store) -> bytes:
        """Refresh the database gauges and return the exposition text."""
        counts: dict[str, Any] = await store.runs.count_by_status(None)
        for status in RunStatus:
            self.runs.labels(status=status.value).set(int(counts.get(status.value, 0)))
        self.queue_depth.set(int(counts.get(RunStatus.PENDING.value, 0)))
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/v1/runs/{run_id}``), a mount's prefix, or :data:`UNMATCHED_ROUTE`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path
    mounted = scope.get("app_root_path") or scope.get("root_path")
    if isinstance(mounted, str) and mounted:
        return mounted
    return UNMATCHED_ROUTE


class HTTPMetricsMiddleware:
    """Counts and times every HTTP request (not WebSocket sessions) into :class:`Metrics`."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; record its route, status and duration when the response has been sent."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped every handler

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.http_in_flight.inc()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.http_in_flight.dec()
            method = str(scope.get("method", "GET"))
            self.metrics.observe_http(method, route_template(scope), status, time.perf_counter() - started)
