"""Prometheus metrics for ``/metrics``: one registry per app.

Run counts by status and the queue depth are read from the database at each scrape, so they cover
every worker on the database. Step, tool-call, token, cost and latency figures are counted from the
events the embedded worker commits (an engine event listener); ``maestro worker`` processes elsewhere
do not feed them.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agentmaestro.core.events import Event
from agentmaestro.core.states import EventType, RunStatus
from agentmaestro.store.base import Store

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

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
        counts: dict[str, Any] = await store.count_runs_by_status(None)
        for status in RunStatus:
            self.runs.labels(status=status.value).set(int(counts.get(status.value, 0)))
        self.queue_depth.set(int(counts.get(RunStatus.PENDING.value, 0)))
        return generate_latest(self.registry)
