"""The user's path: runs started and awaited through the public SDK (``Orchestrator``), governed.

``sdk-seq``: ``--runs`` runs one after another with ``Orchestrator.run``; each run makes ``--turns``
model turns (``--turns - 1`` of them call the SAFE ``add`` tool, the last answers), so a run has
``2 * turns - 1`` durable steps. The model is a custom :class:`~agentmaestro.models.base.Model`
object (no script, no provider), priced as ``gpt-4.1-mini`` so every call has a real cost; the policy
is the README's ``StrictPolicy(max_steps=40, max_cost_usd=100, timeout_s=600)`` (``--no-budget``
drops ``max_cost_usd``, to show what governance costs).

``sdk-conc``: ``--runs`` runs started at once with ``start_async`` and awaited with ``wait_async``;
every model call waits ``--latency`` seconds (the ideal wall time is ``turns * latency``).

Both print one ``RESULT {json}`` line (see ``benchmarks.scenarios``) and check every run in the
database afterwards (COMPLETED, the expected answer, one ``steps`` row per step, gap-free events).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from benchmarks.scenarios import (
    BenchDatabase,
    GCTimer,
    Profiler,
    _libpq,
    _pg_sizes,
    _sqlite_sizes,
    current_rss_mb,
    peak_rss_mb,
    verify,
)

MODEL_NAME = "bench:gpt-4.1-mini"
"""Looked up in the price table by its bare name: every call costs what gpt-4.1-mini costs."""


class BenchModel:
    """A zero-dependency :class:`Model`: ``turns - 1`` turns calling ``add``, then an answer.

    The turn played is the number of assistant messages so far, so a resumed run continues where it
    left off. Usage: 120 input and 18 output tokens per call.
    """

    def __init__(self, turns: int, latency_s: float) -> None:
        self.turns = turns
        self.latency_s = latency_s

    @property
    def name(self) -> str:
        """The model string."""
        return MODEL_NAME

    async def complete(self, request: Any) -> Any:
        """Answer one chat completion."""
        from agentmaestro.core.messages import ModelResponse, ToolCall, Usage

        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        turn = sum(1 for m in request.messages if m.role == "assistant")
        usage = Usage(input_tokens=120, output_tokens=18)
        if turn < self.turns - 1:
            call = ToolCall(call_id=f"call_{turn}", name="add", arguments={"a": turn, "b": 1})
            return ModelResponse(tool_calls=(call,), usage=usage, model=MODEL_NAME, finish_reason="tool_calls")
        last = next((m.content for m in reversed(request.messages) if m.role == "tool"), "")
        task = next((m.content for m in request.messages if m.role == "user"), "")
        return ModelResponse(content=f"{task} -> {last}", usage=usage, model=MODEL_NAME, finish_reason="stop")


def expected(task: str, turns: int) -> str:
    """What :class:`BenchModel` answers for ``task``."""
    return f"{task} -> {turns - 1}" if turns > 1 else f"{task} -> "


def make_sdk_agent(turns: int, latency_s: float) -> Any:
    """The benchmark agent: the custom model and one SAFE, idempotent tool."""
    from agentmaestro import Agent, RiskLevel, tool

    @tool(risk=RiskLevel.SAFE, idempotent=True)
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return Agent(name="sdk-bench", model=BenchModel(turns, latency_s), instructions="Use the tools.", tools=[add])


def policy(budget: bool) -> Any:
    """The README's policy (with or without its USD budget)."""
    from agentmaestro import StrictPolicy

    if budget:
        return StrictPolicy(max_steps=40, max_cost_usd=100, timeout_s=600)
    return StrictPolicy(max_steps=40, timeout_s=600)


def _figures(steps: int, wall: float, cpu: float, gc: GCTimer) -> dict[str, Any]:
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "steps": steps,
        "steps_per_s": steps / wall if wall > 0 else 0.0,
        "cpu_ms_per_step": cpu * 1000.0 / steps if steps else 0.0,
        "gc_s": gc.seconds,
        "gc_collections": gc.collections,
    }


def database_bytes(db: BenchDatabase) -> dict[str, dict[str, int]]:
    """Bytes per table (allocated and live data): SQLite's ``dbstat``, PostgreSQL's relation sizes."""
    if db.sqlite_path is not None:
        return _sqlite_sizes(db.sqlite_path)
    import psycopg

    with psycopg.connect(_libpq(db.url), autocommit=True) as conn:
        return _pg_sizes(conn)


def bytes_per_step(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], steps: int) -> dict[str, Any]:
    """Database growth over the measured runs, per durable step: total and by table."""
    tables = sorted(set(before) | set(after))
    by_table = {
        t: (after.get(t, {}).get("alloc", 0) - before.get(t, {}).get("alloc", 0)) / steps
        for t in tables
        if steps and after.get(t, {}).get("alloc", 0) != before.get(t, {}).get("alloc", 0)
    }
    data = sum(after.get(t, {}).get("data", 0) - before.get(t, {}).get("data", 0) for t in tables)
    return {
        "alloc_per_step": sum(by_table.values()),
        "data_per_step": data / steps if steps else 0.0,
        "tables": by_table,
    }


async def scenario_sdk_seq(args: argparse.Namespace, db: BenchDatabase) -> dict[str, Any]:
    """``--runs`` runs one after another through ``Orchestrator.run`` (blocking, as a script would)."""
    from agentmaestro import Orchestrator

    agent = make_sdk_agent(args.turns, 0.0)
    pol = policy(not args.no_budget)
    profiler = Profiler(args.profile)

    sizes: list[dict[str, dict[str, int]]] = []

    def body() -> tuple[dict[str, str], float, float, GCTimer]:
        with Orchestrator(database_url=db.url) as orch:
            orch.run(agent, "warm-up", policy=pol)  # imports, agent registration, first-run set-up
            sizes.append(database_bytes(db))
            ids: dict[str, str] = {}
            gc_timer = GCTimer()
            with gc_timer:
                profiler.start()
                cpu0, t0 = time.process_time(), time.perf_counter()
                for i in range(args.runs):
                    task = f"run {i}"
                    report = orch.run(agent, task, policy=pol)
                    ids[report.run_id] = task
                wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                profiler.stop()
        return ids, wall, cpu, gc_timer

    ids, wall, cpu, gc_timer = await asyncio.to_thread(body)
    sizes.append(database_bytes(db))
    profiler.report()
    steps_per_run = 2 * args.turns - 1
    check = verify(db.url, {rid: expected(t, args.turns) for rid, t in ids.items()}, steps_per_run)
    return {
        "runs": args.runs,
        "turns": args.turns,
        "steps_per_run": steps_per_run,
        "budget": not args.no_budget,
        **_figures(check["step_rows"], wall, cpu, gc_timer),
        "peak_rss_mb": peak_rss_mb(),
        "bytes": bytes_per_step(sizes[0], sizes[1], check["step_rows"]),
        "verify": check,
    }


async def scenario_sdk_conc(args: argparse.Namespace, db: BenchDatabase) -> dict[str, Any]:
    """``--runs`` runs started at once with ``start_async``, each awaited with ``wait_async``."""
    from agentmaestro import Orchestrator
    from agentmaestro.engine.worker import WorkerConfig

    agent = make_sdk_agent(args.turns, args.latency)
    pol = policy(not args.no_budget)
    profiler = Profiler(args.profile)
    rss_start = current_rss_mb()
    orch = Orchestrator(database_url=db.url, config=WorkerConfig(concurrency=args.runs))
    try:
        await orch.run_async(agent, "warm-up", policy=pol)
        tasks = [f"run {i}" for i in range(args.runs)]

        async def one(task: str) -> tuple[str, str]:
            run_id = await orch.start_async(agent, task, policy=pol)
            report = await orch.wait_async(run_id, timeout=args.timeout)
            return report.run_id, task

        gc_timer = GCTimer()
        with gc_timer:
            profiler.start()
            cpu0, t0 = time.process_time(), time.perf_counter()
            done = await asyncio.gather(*(one(t) for t in tasks))
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            profiler.stop()
        peak = peak_rss_mb()
    finally:
        await asyncio.to_thread(orch.close)
    profiler.report()
    steps_per_run = 2 * args.turns - 1
    check = verify(db.url, {rid: expected(t, args.turns) for rid, t in done}, steps_per_run)
    ideal = args.turns * args.latency
    return {
        "runs": args.runs,
        "turns": args.turns,
        "steps_per_run": steps_per_run,
        "latency_s": args.latency,
        "budget": not args.no_budget,
        **_figures(check["step_rows"], wall, cpu, gc_timer),
        "ideal_s": ideal,
        "ratio": wall / ideal if ideal > 0 else 0.0,
        "rss_start_mb": rss_start,
        "peak_rss_mb": peak,
        "verify": check,
    }
