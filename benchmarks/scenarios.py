"""One benchmark scenario per process: ``python -m benchmarks.scenarios KIND [options]``.

``benchmarks.run`` starts each scenario in a fresh interpreter (so peak RSS is per scenario) and
reads the last stdout line, ``RESULT {json}``. Every scenario can be run on its own with the
command ``benchmarks.run`` records next to each figure.

Databases: ``--db sqlite`` makes a file in a new temporary directory (WAL, ``synchronous=FULL``,
exactly as the store configures it) and deletes it afterwards; ``--db postgresql`` creates a fresh
database ``maestro_bench_<random>`` on the server at ``$MAESTRO_BENCH_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) and drops it afterwards; ``--db mysql`` does the same
on the MariaDB/MySQL server at ``$MAESTRO_BENCH_MYSQL_URL`` (default ``mysql://root@127.0.0.1:3306/test``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import secrets
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/test"
RESULT_PREFIX = "RESULT "

# --------------------------------------------------------------------------------- databases


def pg_admin_url() -> str:
    """The PostgreSQL server used for benchmarks (a maintenance database on it)."""
    return os.environ.get("MAESTRO_BENCH_PG_URL") or DEFAULT_PG_URL


def _libpq(url: str) -> str:
    from sqlalchemy.engine import make_url

    return str(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))


def pg_server_version(url: str | None = None, timeout_s: int = 3) -> str:
    """``SHOW server_version`` of the benchmark server; raises if it is unreachable."""
    import psycopg

    with psycopg.connect(_libpq(url or pg_admin_url()), connect_timeout=timeout_s, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        assert row is not None
        return str(row[0])


def mysql_admin_url() -> str:
    """The MariaDB/MySQL server used for benchmarks (any database on it; scenarios make their own)."""
    return os.environ.get("MAESTRO_BENCH_MYSQL_URL") or DEFAULT_MYSQL_URL


def mysql_connect(url: str | None = None, *, database: str | None = None, timeout_s: int = 5) -> Any:
    """A PyMySQL connection (autocommit) to the benchmark server, or to one ``database`` on it."""
    import pymysql
    from sqlalchemy.engine import make_url

    u = make_url(url or mysql_admin_url())
    return pymysql.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 3306,
        user=u.username or "root",
        password=u.password or "",
        database=database,
        autocommit=True,
        connect_timeout=timeout_s,
        ssl_disabled=u.host in ("localhost", "127.0.0.1", "::1"),  # (as the store does)
    )


def mysql_server_facts(timeout_s: int = 3) -> dict[str, str]:
    """Version and durability settings of the benchmark server; raises if it is unreachable."""
    with contextlib.closing(mysql_connect(timeout_s=timeout_s)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@sync_binlog, @@log_bin, @@innodb_buffer_pool_size"
        )
        version, flush, sync_binlog, log_bin, pool = cur.fetchone()
    return {
        "version": str(version),
        "settings": f"innodb_flush_log_at_trx_commit={flush}, sync_binlog={sync_binlog}, log_bin={log_bin}, "
        f"innodb_buffer_pool_size={int(pool) // 2**20}MiB",
    }


@dataclass
class BenchDatabase:
    """A throw-away database: its SQLAlchemy URL, backend, and how to measure it."""

    url: str
    backend: str
    label: str
    sqlite_path: str | None = None


@contextlib.contextmanager
def bench_database(backend: str) -> Iterator[BenchDatabase]:
    """Create a fresh database for one scenario and remove it afterwards."""
    if backend == "sqlite":
        tmp = tempfile.mkdtemp(prefix="maestro_bench_")
        path = os.path.join(tmp, "bench.db")
        try:
            yield BenchDatabase(url=f"sqlite:///{path}", backend="sqlite", label=path, sqlite_path=path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    if backend == "mysql":
        from sqlalchemy.engine import make_url

        name = f"maestro_bench_{secrets.token_hex(4)}"
        with contextlib.closing(mysql_connect()) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        from agentmaestro.store.dialects import normalize_url

        url = normalize_url(make_url(mysql_admin_url()).set(database=name).render_as_string(hide_password=False))
        try:
            yield BenchDatabase(url=url, backend="mysql", label=name)
        finally:
            with contextlib.closing(mysql_connect()) as conn, conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        return
    if backend != "postgresql":
        raise ValueError(f"unknown backend {backend!r}")
    import psycopg
    from sqlalchemy.engine import make_url

    admin = pg_admin_url()
    name = f"maestro_bench_{secrets.token_hex(4)}"
    with psycopg.connect(_libpq(admin), connect_timeout=5, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        yield BenchDatabase(url=url, backend="postgresql", label=name)
    finally:
        with psycopg.connect(_libpq(admin), connect_timeout=5, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ------------------------------------------------------------------------------------ agents


def tool_turns(calls_per_turn: list[int]) -> list[dict[str, Any]]:
    """Model turns calling ``add`` (the i-th call overall is ``add(a=i, b=1)``), then a final answer.

    Steps: ``len(calls_per_turn) + 1`` model calls plus ``sum(calls_per_turn)`` tool calls. The final
    answer is ``"<input> -> <last tool result>"``, i.e. ``"<input> -> <total calls + 1>"``.
    """
    turns: list[dict[str, Any]] = []
    i = 0
    for n in calls_per_turn:
        calls = []
        for _ in range(n):
            i += 1
            calls.append({"name": "add", "arguments": {"a": i, "b": 1}})
        turns.append({"tool_calls": calls})
    turns.append({"content": "{{input}} -> {{last_tool_result}}"})
    return turns


def turns_for_steps(steps: int) -> list[int]:
    """Tool calls per model turn giving exactly ``steps`` steps (one two-call turn when even)."""
    if steps < 1:
        raise ValueError("a run has at least one step")
    if steps % 2 == 1:
        return [1] * ((steps - 1) // 2)
    if steps < 4:
        raise ValueError("an even step count needs at least 4 steps")
    return [2] + [1] * ((steps - 4) // 2)


def expected_output(run_input: str, calls_per_turn: list[int]) -> str:
    """What :func:`tool_turns` answers for ``run_input``."""
    total = sum(calls_per_turn)
    return f"{run_input} -> {total + 1}" if total else f"{run_input} -> "


def make_agent(name: str, calls_per_turn: list[int], latency_s: float) -> Any:
    """A scripted agent with one SAFE, idempotent tool."""
    from agentmaestro import Agent, RiskLevel, ScriptedModel, tool

    @tool(risk=RiskLevel.SAFE, idempotent=True)
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    script = {"latency_s": latency_s, "turns": tool_turns(calls_per_turn)}
    return Agent(name=name, model=ScriptedModel(script, ref=f"bench-{name}"), tools=[add])


# --------------------------------------------------------------------------------- measuring


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Current resident set size of this process (MiB; Linux ``/proc``, else the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)
    except (OSError, ValueError):
        return peak_rss_mb()


class GCTimer:
    """Time spent in the cyclic garbage collector (all threads), by generation, while installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._t0 = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._t0
            self.collections[info["generation"]] += 1

    def __enter__(self) -> GCTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._callback)


class Profiler:
    """Optional cProfile around the measured phase; prints the top functions to stderr."""

    def __init__(self, enabled: bool) -> None:
        self.prof = cProfile.Profile() if enabled else None

    def start(self) -> None:
        if self.prof is not None:
            self.prof.enable()

    def stop(self) -> None:
        if self.prof is not None:
            self.prof.disable()

    def report(self, top: int = 40) -> None:
        if self.prof is None:
            return
        for key in ("tottime", "cumulative"):
            buf = io.StringIO()
            pstats.Stats(self.prof, stream=buf).sort_stats(key).print_stats(top)
            print(f"---- profile by {key} ----\n{buf.getvalue()}", file=sys.stderr)


async def create_runs(store: Any, agent: Any, inputs: list[str], max_steps: int) -> tuple[list[str], float]:
    """Insert PENDING runs (in chunks of 2,000); returns (run ids, seconds)."""
    from agentmaestro import StrictPolicy
    from agentmaestro.store.records import new_run_id
    from agentmaestro.store.runs import NewRun

    await store.workspaces.ensure()
    policy = StrictPolicy(max_steps=max_steps).to_json()
    spec = agent.spec()
    ids: list[str] = []
    t0 = time.perf_counter()
    for i in range(0, len(inputs), 2000):
        recs = await store.runs.create(
            [
                NewRun(
                    run_id=new_run_id(),
                    workspace_id="default",
                    agent_name=agent.name,
                    input=text,
                    spec=spec,
                    policy=policy,
                )
                for text in inputs[i : i + 2000]
            ]
        )
        ids.extend(r.run_id for r in recs)
    return ids, time.perf_counter() - t0


@dataclass
class Execution:
    """What happened between starting the worker and the last run finishing."""

    wall_s: float
    cpu_s: float
    main_cpu_s: float
    gc_s: float
    gc_collections: list[int]
    finished: int
    timed_out: bool
    peak_rss_mb: float
    stop_s: float
    loadavg_before: float
    loadavg_after: float


async def execute(
    store: Any,
    agent: Any,
    n_runs: int,
    concurrency: int,
    *,
    timeout_s: float,
    profiler: Profiler | None = None,
    on_events: Callable[[str, list[Any]], None] | None = None,
) -> Execution:
    """Start one in-process worker; time until ``n_runs`` runs reached a terminal status."""
    from agentmaestro.agents import AgentRegistry
    from agentmaestro.core.states import EventType
    from agentmaestro.engine.worker import Worker, WorkerConfig

    terminal = {EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELLED, EventType.POLICY_VIOLATION}
    done = asyncio.Event()
    finished = 0
    t_end = cpu_end = main_cpu_end = 0.0

    def listener(run_id: str, _agent: str, events: list[Any]) -> None:
        nonlocal finished, t_end, cpu_end, main_cpu_end
        if on_events is not None:
            on_events(run_id, events)
        if events and events[-1].type in terminal:  # a terminal event is always the last of its commit
            finished += 1
            if finished >= n_runs:
                t_end = time.perf_counter()
                cpu_end = time.process_time()
                main_cpu_end = time.thread_time()
                done.set()

    import agentmaestro.notify.webhooks  # noqa: F401  (imported once per process, not a per-step cost)

    worker = Worker(store, AgentRegistry([agent]), config=WorkerConfig(concurrency=concurrency), listeners=[listener])
    load_before = os.getloadavg()[0]
    if profiler is not None:
        profiler.start()
    gc_timer = GCTimer()
    with gc_timer:
        cpu0 = time.process_time()
        main_cpu0 = time.thread_time()
        t0 = time.perf_counter()
        task = asyncio.create_task(worker.run())
        timed_out = False
        try:
            await asyncio.wait_for(done.wait(), timeout_s)
        except TimeoutError:
            timed_out = True
            t_end = time.perf_counter()
            cpu_end = time.process_time()
            main_cpu_end = time.thread_time()
    if profiler is not None:
        profiler.stop()
    peak = peak_rss_mb()
    t_stop = time.perf_counter()
    worker.stop()
    await task
    return Execution(
        wall_s=t_end - t0,
        cpu_s=cpu_end - cpu0,
        main_cpu_s=main_cpu_end - main_cpu0,
        gc_s=gc_timer.seconds,
        gc_collections=gc_timer.collections,
        finished=finished,
        timed_out=timed_out,
        peak_rss_mb=peak,
        stop_s=time.perf_counter() - t_stop,
        loadavg_before=load_before,
        loadavg_after=os.getloadavg()[0],
    )


def _worker_process(
    url: str, calls: list[int], latency_s: float, concurrency: int, messages: Any, start: Any, stop: Any
) -> None:
    """One worker process of a multi-process scenario (started with the ``spawn`` method).

    Reports ``("ready", 0)`` once set up, then ``("done", perf_counter)`` per finished run and finally
    ``("cpu", seconds, peak RSS MiB)``; ``perf_counter`` is CLOCK_MONOTONIC, comparable across processes.
    """
    import agentmaestro.notify.webhooks  # noqa: F401  (imported once per process, as in execute())
    from agentmaestro.agents import AgentRegistry
    from agentmaestro.core.states import EventType
    from agentmaestro.engine.worker import Worker, WorkerConfig
    from agentmaestro.store.base import Store

    terminal = {EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELLED, EventType.POLICY_VIOLATION}

    def listener(_run_id: str, _agent: str, events: list[Any]) -> None:
        if events and events[-1].type in terminal:
            messages.put(("done", time.perf_counter()))

    async def main() -> None:
        store = Store.open(url, migrate=False)
        agent = make_agent("throughput", calls, latency_s)
        worker = Worker(
            store, AgentRegistry([agent]), config=WorkerConfig(concurrency=concurrency), listeners=[listener]
        )
        loop = asyncio.get_running_loop()
        messages.put(("ready", 0.0))
        await loop.run_in_executor(None, start.wait)
        cpu0 = time.process_time()
        task = asyncio.create_task(worker.run())
        await loop.run_in_executor(None, stop.wait)
        messages.put(("cpu", time.process_time() - cpu0, peak_rss_mb()))
        worker.stop()
        await task
        await store.close()

    asyncio.run(main())


def execute_processes(
    url: str, calls: list[int], latency_s: float, n_runs: int, workers: int, *, timeout_s: float
) -> Execution:
    """Like :func:`execute`, with ``workers`` separate worker processes sharing the database.

    The clock starts when every process is set up (imports done, store open) and is told to start;
    it stops at the last run's terminal commit, as seen by the process that committed it.
    """
    import multiprocessing
    import queue

    ctx = multiprocessing.get_context("spawn")
    messages, start, stop = ctx.Queue(), ctx.Event(), ctx.Event()
    per_process = -(-n_runs // workers)  # ceil: together the processes can hold every run at once
    procs = [
        ctx.Process(target=_worker_process, args=(url, calls, latency_s, per_process, messages, start, stop))
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + timeout_s
        ready = 0
        while ready < workers:
            kind, *_ = messages.get(timeout=max(0.1, deadline - time.monotonic()))
            ready += kind == "ready"
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        start.set()
        finished, t_end, timed_out = 0, t0, False
        while finished < n_runs:
            try:
                kind, at, *_ = messages.get(timeout=max(0.1, t0 + timeout_s - time.perf_counter()))
            except queue.Empty:
                timed_out = True
                t_end = time.perf_counter()
                break
            if kind == "done":
                finished += 1
                t_end = max(t_end, at)
        t_stop = time.perf_counter()
        stop.set()
        cpu, peak = 0.0, 0.0
        for _ in range(workers):
            kind, *rest = messages.get(timeout=60)
            while kind != "cpu":
                kind, *rest = messages.get(timeout=60)
            cpu += rest[0]
            peak = max(peak, rest[1])
        for p in procs:
            p.join(timeout=60)
    finally:
        stop.set()
        for p in procs:
            if p.is_alive():
                p.kill()
    return Execution(
        wall_s=t_end - t0,
        cpu_s=cpu,
        main_cpu_s=0.0,
        gc_s=0.0,
        gc_collections=[],
        finished=finished,
        timed_out=timed_out,
        peak_rss_mb=peak,
        stop_s=time.perf_counter() - t_stop,
        loadavg_before=load_before,
        loadavg_after=os.getloadavg()[0],
    )


def execution_fields(ex: Execution, steps: int) -> dict[str, Any]:
    """The common figures of an :class:`Execution` covering ``steps`` durable steps."""
    return {
        "wall_s": ex.wall_s,
        "cpu_s": ex.cpu_s,
        "main_thread_cpu_s": ex.main_cpu_s,
        "gc_s": ex.gc_s,
        "gc_collections": ex.gc_collections,
        "steps": steps,
        "steps_per_s": steps / ex.wall_s if ex.wall_s > 0 else 0.0,
        "ms_per_step": ex.wall_s * 1000.0 / steps if steps else 0.0,
        "cpu_ms_per_step": ex.cpu_s * 1000.0 / steps if steps else 0.0,
        "timed_out": ex.timed_out,
        "finished": ex.finished,
        "peak_rss_mb": ex.peak_rss_mb,
        "loadavg_before": ex.loadavg_before,
        "loadavg_after": ex.loadavg_after,
    }


def verify(url: str, expected: dict[str, str], steps_per_run: int) -> dict[str, Any]:
    """Check every run COMPLETED with the expected output, step rows and gap-free events."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            runs = {r[0]: r for r in conn.execute(text("SELECT run_id, status, output, steps FROM runs"))}
            step_rows: dict[str, int] = {
                str(r[0]): int(r[1]) for r in conn.execute(text("SELECT run_id, COUNT(*) FROM steps GROUP BY run_id"))
            }
            events = {
                r[0]: (r[1], r[2])
                for r in conn.execute(text("SELECT run_id, COUNT(*), MAX(seq) FROM run_events GROUP BY run_id"))
            }
    finally:
        engine.dispose()
    problems: list[str] = []
    for run_id, want in expected.items():
        row = runs.get(run_id)
        if row is None:
            problems.append(f"{run_id}: missing")
            continue
        if row[1] != "COMPLETED":
            problems.append(f"{run_id}: status {row[1]}")
        elif row[2] != want:
            problems.append(f"{run_id}: output {row[2]!r} != {want!r}")
        if row[3] != steps_per_run or step_rows.get(run_id, 0) != steps_per_run:
            problems.append(f"{run_id}: {row[3]} steps, {step_rows.get(run_id, 0)} step rows (want {steps_per_run})")
        count, max_seq = events.get(run_id, (0, 0))
        if count != max_seq:
            problems.append(f"{run_id}: {count} events but max seq {max_seq}")
    total_steps = sum(step_rows.get(r, 0) for r in expected)
    return {
        "ok": not problems,
        "completed": sum(1 for r in expected if r in runs and runs[r][1] == "COMPLETED"),
        "step_rows": total_steps,
        "events": sum(events.get(r, (0, 0))[0] for r in expected),
        "problems": problems[:5],
        "problem_count": len(problems),
    }


# --------------------------------------------------------------------------------- scenarios


async def scenario_throughput(args: argparse.Namespace, db: BenchDatabase) -> dict[str, Any]:
    """N runs of K zero-latency steps, one worker with concurrency N: durable steps per second."""
    from agentmaestro.store.base import Store

    calls = turns_for_steps(args.steps)
    agent = make_agent("throughput", calls, 0.0)
    store = Store.open(db.url)
    profiler = Profiler(args.profile)
    try:
        inputs = [f"run {i}" for i in range(args.runs)]
        ids, create_s = await create_runs(store, agent, inputs, max_steps=args.steps + 10)
        if args.workers > 1:
            await store.close()
            ex = await asyncio.to_thread(
                execute_processes, db.url, calls, 0.0, args.runs, args.workers, timeout_s=args.timeout
            )
        else:
            ex = await execute(store, agent, args.runs, args.concurrency, timeout_s=args.timeout, profiler=profiler)
    finally:
        await store.close()
    profiler.report()
    check = verify(db.url, {rid: expected_output(inp, calls) for rid, inp in zip(ids, inputs, strict=True)}, args.steps)
    steps = check["step_rows"]
    return {
        "runs": args.runs,
        "steps_per_run": args.steps,
        "model_calls_per_run": len(calls) + 1,
        "tool_calls_per_run": sum(calls),
        "concurrency": args.concurrency,
        "workers": args.workers,
        "create_s": create_s,
        **execution_fields(ex, steps),
        "verify": check,
    }


async def scenario_concurrency(args: argparse.Namespace, db: BenchDatabase) -> dict[str, Any]:
    """N concurrent runs whose model calls each wait ``latency`` seconds; worker concurrency N."""
    from agentmaestro.store.base import Store

    calls = turns_for_steps(args.steps)
    model_calls = len(calls) + 1
    agent = make_agent("concurrency", calls, args.latency)
    rss_start = current_rss_mb()
    store = Store.open(db.url)
    profiler = Profiler(args.profile)
    try:
        inputs = [f"run {i}" for i in range(args.runs)]
        ids, create_s = await create_runs(store, agent, inputs, max_steps=args.steps + 10)
        rss_created = current_rss_mb()
        ex = await execute(store, agent, args.runs, args.runs, timeout_s=args.timeout, profiler=profiler)
    finally:
        await store.close()
    profiler.report()
    check = verify(db.url, {rid: expected_output(inp, calls) for rid, inp in zip(ids, inputs, strict=True)}, args.steps)
    ideal = model_calls * args.latency
    return {
        "runs": args.runs,
        "steps_per_run": args.steps,
        "model_calls_per_run": model_calls,
        "tool_calls_per_run": sum(calls),
        "latency_s": args.latency,
        "concurrency": args.runs,
        "create_s": create_s,
        **execution_fields(ex, check["step_rows"]),
        "ideal_s": ideal,
        "ratio": ex.wall_s / ideal if ideal > 0 else 0.0,
        "rss_start_mb": rss_start,
        "rss_after_create_mb": rss_created,
        "verify": check,
    }


def _sqlite_sizes(path: str) -> dict[str, dict[str, int]]:
    """Per table/index: allocated bytes (pages) and payload bytes, from the ``dbstat`` table."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT COALESCE(m.tbl_name, d.name), SUM(d.pgsize), SUM(d.payload) "
            "FROM dbstat AS d LEFT JOIN sqlite_schema AS m ON m.name = d.name GROUP BY 1"
        ).fetchall()
    finally:
        conn.close()
    return {str(name): {"alloc": int(alloc or 0), "data": int(data or 0)} for name, alloc, data in rows}


_PG_TABLES = ("runs", "steps", "run_events", "budget_ledgers")


def _pg_sizes(conn: Any) -> dict[str, dict[str, int]]:
    """Per table: total relation size (with indexes and TOAST) and the live rows' bytes."""
    out: dict[str, dict[str, int]] = {}
    for table in _PG_TABLES:
        row = conn.execute(
            f"SELECT pg_total_relation_size('{table}'), (SELECT COALESCE(SUM(pg_column_size(t.*)), 0) FROM {table} t)"
        ).fetchone()
        out[table] = {"alloc": int(row[0]), "data": int(row[1])}
    return out


def _mysql_sizes(conn: Any) -> dict[str, dict[str, int]]:
    """Per table: InnoDB's data + index pages in use (after ``ANALYZE TABLE``) and the live rows' bytes.

    Row bytes: the sum of ``LENGTH()`` of every column (NULL as 0), the nearest to ``pg_column_size``
    MySQL offers.
    """
    out: dict[str, dict[str, int]] = {}
    with conn.cursor() as cur:
        for table in _PG_TABLES:
            cur.execute(f"ANALYZE TABLE `{table}`")
            cur.fetchall()
            cur.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND table_name = %s",
                (table,),
            )
            row_bytes = " + ".join(f"COALESCE(LENGTH(`{c}`), 0)" for (c,) in cur.fetchall())
            cur.execute(
                "SELECT data_length + index_length FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = %s",
                (table,),
            )
            alloc = int(cur.fetchone()[0])
            cur.execute(f"SELECT COALESCE(SUM({row_bytes}), 0) FROM `{table}`")
            out[table] = {"alloc": alloc, "data": int(cur.fetchone()[0])}
    return out


async def scenario_bytes(args: argparse.Namespace, db: BenchDatabase) -> dict[str, Any]:
    """Grow one run to ``--steps`` steps; database bytes added per step early and late in the run."""
    from agentmaestro.core.states import EventType
    from agentmaestro.store.base import Store

    total = args.steps
    window = args.window
    if total < 2 * window + 2:
        raise SystemExit(f"--steps must be at least {2 * window + 2} for a {window}-step window")
    calls = turns_for_steps(total)
    agent = make_agent("bytes", calls, 0.0)
    marks = sorted({1, 1 + window, total - window, total})
    samples: dict[int, dict[str, dict[str, int]]] = {}
    pg_conn: Any = None
    if db.backend == "postgresql":
        import psycopg

        pg_conn = psycopg.connect(_libpq(db.url), autocommit=True)
    elif db.backend == "mysql":
        pg_conn = mysql_connect(database=db.label)

    def measure() -> dict[str, dict[str, int]]:
        if db.sqlite_path is not None:
            return _sqlite_sizes(db.sqlite_path)
        return _mysql_sizes(pg_conn) if db.backend == "mysql" else _pg_sizes(pg_conn)

    def on_events(_run_id: str, events: list[Any]) -> None:
        done = [e.step for e in events if e.type is EventType.STEP_COMPLETED and e.step is not None]
        if done:
            completed = max(done) + 1
            if completed in marks and completed not in samples:
                samples[completed] = measure()  # blocking on purpose: nothing else runs meanwhile

    try:
        store = Store.open(db.url)
        try:
            ids, _create_s = await create_runs(store, agent, ["grow"], max_steps=total + 10)
            ex = await execute(store, agent, 1, 1, timeout_s=args.timeout, on_events=on_events)
        finally:
            await store.close()
        final = measure()
    finally:
        if pg_conn is not None:
            pg_conn.close()
    check = verify(db.url, {ids[0]: expected_output("grow", calls)}, total)
    missing = [m for m in marks if m not in samples]
    if missing:
        raise RuntimeError(f"no size sample at step(s) {missing}")

    def per_step(a: int, b: int, key: str, tables: tuple[str, ...] | None = None) -> float:
        def tot(s: dict[str, dict[str, int]]) -> int:
            return sum(v[key] for k, v in s.items() if tables is None or k in tables)

        return (tot(samples[b]) - tot(samples[a])) / (b - a)

    early = (1, 1 + window)
    late = (total - window, total)
    tables = sorted({k for s in samples.values() for k in s} | set(final))
    breakdown = {
        t: {
            "early_data": per_step(*early, "data", (t,)),
            "late_data": per_step(*late, "data", (t,)),
            "early_alloc": per_step(*early, "alloc", (t,)),
            "late_alloc": per_step(*late, "alloc", (t,)),
        }
        for t in tables
    }
    out = {
        "steps": total,
        "window": window,
        "early_window": list(early),
        "late_window": list(late),
        "early_data_per_step": per_step(*early, "data"),
        "late_data_per_step": per_step(*late, "data"),
        "early_alloc_per_step": per_step(*early, "alloc"),
        "late_alloc_per_step": per_step(*late, "alloc"),
        "final_alloc_bytes": sum(v["alloc"] for v in final.values()),
        "final_data_bytes": sum(v["data"] for v in final.values()),
        "wall_s": ex.wall_s,
        "breakdown": breakdown,
        "verify": check,
    }
    out["data_ratio"] = out["late_data_per_step"] / out["early_data_per_step"] if out["early_data_per_step"] else 0.0
    out["alloc_ratio"] = (
        out["late_alloc_per_step"] / out["early_alloc_per_step"] if out["early_alloc_per_step"] else 0.0
    )
    return out


async def scenario_http(args: argparse.Namespace, db: BenchDatabase) -> dict[str, Any]:
    """Run creation and run reads over HTTP against a real ``maestro serve`` process (see ``http_load``)."""
    from benchmarks.http_load import scenario_http as run_http

    return await run_http(args, db)


async def scenario_floor(args: argparse.Namespace, db: BenchDatabase) -> dict[str, Any]:
    """The cost floor of the concurrency scenario: no engine, only its durable writes.

    ``--runs`` coroutines each make ``--steps`` steps; as in the concurrency scenario the first, the
    middle and the last (3 of 5) wait ``--latency`` seconds like a model call. Every step then commits
    what a step commits at least: one event row (JSON payload), one step row and one version-guarded
    update of its run, group-committed by a single writer thread using :mod:`sqlite3` directly (WAL,
    ``synchronous=FULL``), without SQLAlchemy, decisions, policy, gate or messages. Whatever this
    takes above the ideal is out of reach for any engine that records the same facts durably.
    """
    if db.sqlite_path is None:
        raise ValueError("the floor scenario measures SQLite only")
    from benchmarks.floors import group_committed

    waits = {0, args.steps // 2, args.steps - 1}
    wall, cpu, events = await group_committed(db, args.runs, args.steps, waits, args.latency)
    ideal = len(waits) * args.latency
    steps = args.runs * args.steps
    return {
        "runs": args.runs,
        "steps_per_run": args.steps,
        "latency_s": args.latency,
        "wall_s": wall,
        "ideal_s": ideal,
        "ratio": wall / ideal if ideal else 0.0,
        "cpu_s": cpu,
        "cpu_us_per_step": cpu * 1e6 / steps,
        "verify": {"ok": events == steps, "events": events},
    }


async def scenario_sdk_seq(args: argparse.Namespace, db: BenchDatabase) -> dict[str, Any]:
    """Runs one after another through the public SDK, governed (see ``sdk_path``)."""
    from benchmarks.sdk_path import scenario_sdk_seq as run

    return await run(args, db)


async def scenario_sdk_conc(args: argparse.Namespace, db: BenchDatabase) -> dict[str, Any]:
    """Runs started at once through the public SDK, governed (see ``sdk_path``)."""
    from benchmarks.sdk_path import scenario_sdk_conc as run

    return await run(args, db)


async def scenario_http_conc(args: argparse.Namespace, db: BenchDatabase) -> dict[str, Any]:
    """Runs created over HTTP and followed over SSE (see ``http_conc``)."""
    from benchmarks.http_conc import scenario_http_conc as run

    return await run(args, db)


async def scenario_floor_seq(args: argparse.Namespace, db: BenchDatabase) -> dict[str, Any]:
    """The raw floor beside ``sdk-seq`` (see ``floors``)."""
    from benchmarks.floors import scenario_floor_seq as run

    return await run(args, db)


async def scenario_floor_conc(args: argparse.Namespace, db: BenchDatabase) -> dict[str, Any]:
    """The raw floor beside ``sdk-conc`` (see ``floors``)."""
    from benchmarks.floors import scenario_floor_conc as run

    return await run(args, db)


SCENARIOS = {
    "floor-seq": scenario_floor_seq,
    "floor-conc": scenario_floor_conc,
    "sdk-seq": scenario_sdk_seq,
    "sdk-conc": scenario_sdk_conc,
    "http-conc": scenario_http_conc,
    "floor": scenario_floor,
    "throughput": scenario_throughput,
    "concurrency": scenario_concurrency,
    "bytes": scenario_bytes,
    "http": scenario_http,
}
HTTP_CONCURRENCY = 32
"""Default number of concurrent connections of the ``http`` scenario."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scenarios", description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=sorted(SCENARIOS))
    p.add_argument("--db", choices=["sqlite", "postgresql", "mysql"], default="sqlite")
    p.add_argument("--runs", type=int, default=200, help="number of runs")
    p.add_argument("--steps", type=int, default=10, help="steps per run")
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help=f"worker concurrency (default: --runs); http: concurrent connections (default {HTTP_CONCURRENCY})",
    )
    p.add_argument("--latency", type=float, default=0.0, help="seconds each model call waits")
    p.add_argument(
        "--workers", type=int, default=1, help="throughput: worker processes (1: one in-process worker, as embedded)"
    )
    p.add_argument("--turns", type=int, default=10, help="sdk-seq/sdk-conc: model turns per run")
    p.add_argument("--no-budget", action="store_true", help="sdk-seq/sdk-conc: no max_cost_usd in the policy")
    p.add_argument("--window", type=int, default=20, help="bytes: steps per measuring window")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    p.add_argument("--profile", action="store_true", help="print a cProfile of the measured phase to stderr")
    p.add_argument("--creates", type=int, default=2000, help="http: measured POST /v1/runs requests")
    p.add_argument("--reads", type=int, default=5000, help="http: measured GET /v1/runs/{id} requests")
    p.add_argument("--warmup", type=int, default=100, help="http: unmeasured requests before each operation")
    args = p.parse_args(argv)
    if args.concurrency is None:
        args.concurrency = HTTP_CONCURRENCY if args.kind == "http" else args.runs
    return args


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise SystemExit(143)  # unwinds through the finally blocks that drop the database


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.perf_counter()
    with bench_database(args.db) as db:
        result = asyncio.run(SCENARIOS[args.kind](args, db))
    result.update(
        kind=args.kind,
        db=args.db,
        process_s=time.perf_counter() - started,
        peak_rss_mb_process=peak_rss_mb(),
    )
    print(RESULT_PREFIX + json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
