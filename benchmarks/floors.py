"""The raw floors beside the user's-path scenarios: the same durable writes with nothing else.

``floor-seq`` (beside ``sdk-seq``): ``--runs`` runs one after another, ``2 * turns - 1`` steps each; every
step is committed on its own, as the engine must (a step is durable before the next one starts): one
version-guarded UPDATE of the run, one JSON event row and one step row, then COMMIT.

``floor-conc`` (beside ``sdk-conc``): ``--runs`` coroutines at once, each making ``2 * turns - 1`` steps of
which the ``turns`` model steps first wait ``--latency`` seconds; the same three writes per step,
group-committed by one writer thread (one transaction for whatever is queued).

Both use the database driver directly (``sqlite3`` in WAL mode with ``synchronous=FULL``, as the store
configures SQLite; ``psycopg`` on PostgreSQL with its default ``synchronous_commit``): no SQLAlchemy, no
engine, no decisions, policy, gate or messages. What these take is out of reach for any engine that
records the same facts durably; the gap to the scenario beside it is what the engine adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.scenarios import BenchDatabase, _libpq

_SCHEMA = (
    "CREATE TABLE runs (run_id TEXT PRIMARY KEY, version INTEGER NOT NULL, state TEXT NOT NULL)",
    "CREATE TABLE events (run_id TEXT, seq INTEGER, payload TEXT, PRIMARY KEY (run_id, seq))",
    "CREATE TABLE steps (run_id TEXT, step INTEGER, kind TEXT, PRIMARY KEY (run_id, step))",
)


class _Conn:
    """One driver connection with the floor's three statements, for SQLite or PostgreSQL."""

    def __init__(self, db: BenchDatabase) -> None:
        self.pg = db.sqlite_path is None
        if self.pg:
            import psycopg

            self.conn: Any = psycopg.connect(_libpq(db.url))
            mark = "%s"
        else:
            self.conn = sqlite3.connect(db.sqlite_path, check_same_thread=False, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            mark = "?"
        self.update = (
            f"UPDATE runs SET version = version + 1, state = {mark} WHERE run_id = {mark} AND version = {mark}"
        )
        self.event = f"INSERT INTO events VALUES ({mark}, {mark}, {mark})"
        self.step = f"INSERT INTO steps VALUES ({mark}, {mark}, 'MODEL_CALL')"
        self.run = f"INSERT INTO runs VALUES ({mark}, 0, '{{}}')"
        for stmt in _SCHEMA:
            self.conn.execute(stmt)
        self.commit()

    def begin(self) -> None:
        if not self.pg:
            self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        if self.pg:
            self.conn.commit()
        else:
            self.conn.execute("COMMIT") if self.conn.in_transaction else None

    def write(self, batch: list[tuple[str, int, dict[str, Any]]]) -> int:
        """One transaction: the guarded updates, event rows and step rows of ``batch``; rows updated."""
        self.begin()
        cur = self.conn.cursor()
        cur.executemany(self.update, [(json.dumps({"steps": s + 1}), r, s) for r, s, _ in batch])
        matched = cur.rowcount
        cur.executemany(self.event, [(r, s, json.dumps(p)) for r, s, p in batch])
        cur.executemany(self.step, [(r, s) for r, s, _ in batch])
        self.commit()
        return int(matched)

    def create(self, run_ids: list[str]) -> None:
        self.begin()
        self.conn.cursor().executemany(self.run, [(r,) for r in run_ids])
        self.commit()

    def count(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM events").fetchone()
        self.commit()
        return int(row[0])

    def close(self) -> None:
        self.conn.close()


def _payload(step: int) -> dict[str, Any]:
    return {"kind": "MODEL_CALL", "content": "an answer " * 4, "step": step}


async def scenario_floor_seq(args: argparse.Namespace, db: BenchDatabase) -> dict[str, Any]:
    """Steps committed one at a time, runs one after another."""
    conn = _Conn(db)
    steps_per_run = 2 * args.turns - 1
    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i in range(args.runs):
            run_id = f"run-{i}"
            conn.create([run_id])
            for step in range(steps_per_run):
                assert conn.write([(run_id, step, _payload(step))]) == 1
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        events = conn.count()
    finally:
        conn.close()
    steps = args.runs * steps_per_run
    return {
        "runs": args.runs,
        "steps_per_run": steps_per_run,
        "wall_s": wall,
        "cpu_s": cpu,
        "steps": steps,
        "steps_per_s": steps / wall,
        "cpu_ms_per_step": cpu * 1000 / steps,
        "verify": {"ok": events == steps, "events": events},
    }


async def group_committed(
    db: BenchDatabase, runs: int, steps_per_run: int, waits: set[int], latency_s: float
) -> tuple[float, float, int]:
    """``runs`` coroutines of ``steps_per_run`` steps, waiting ``latency_s`` before the steps in ``waits``; every
    step's writes group-committed by one writer thread. Returns (wall s, CPU s, events stored)."""
    conn = _Conn(db)
    conn.create([f"run-{i}" for i in range(runs)])
    writer = ThreadPoolExecutor(max_workers=1)
    pending: list[tuple[tuple[str, int, dict[str, Any]], asyncio.Future[None]]] = []
    flushing: asyncio.Future[None] | None = None

    async def flush() -> None:
        loop = asyncio.get_running_loop()
        while pending:
            batch = pending[:]
            del pending[:]
            matched = await loop.run_in_executor(writer, conn.write, [row for row, _ in batch])
            assert matched == len(batch), "a guarded update matched no row"
            for _, fut in batch:
                fut.set_result(None)

    async def commit(row: tuple[str, int, dict[str, Any]]) -> None:
        nonlocal flushing
        fut = asyncio.get_running_loop().create_future()
        pending.append((row, fut))
        if flushing is None or flushing.done():
            flushing = asyncio.ensure_future(flush())
        await fut

    async def run(i: int) -> None:
        for step in range(steps_per_run):
            if step in waits:
                await asyncio.sleep(latency_s)
            await commit((f"run-{i}", step, _payload(step)))

    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(run(i) for i in range(runs)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        writer.shutdown()
        events = conn.count()
    finally:
        conn.close()
    return wall, cpu, events


async def scenario_floor_conc(args: argparse.Namespace, db: BenchDatabase) -> dict[str, Any]:
    """Concurrent runs whose model steps wait, every step group-committed by one writer thread."""
    steps_per_run = 2 * args.turns - 1
    model_steps = set(range(0, steps_per_run, 2))  # model, tool, model, ..., model
    wall, cpu, events = await group_committed(db, args.runs, steps_per_run, model_steps, args.latency)
    ideal = args.turns * args.latency
    steps = args.runs * steps_per_run
    return {
        "runs": args.runs,
        "steps_per_run": steps_per_run,
        "latency_s": args.latency,
        "wall_s": wall,
        "ideal_s": ideal,
        "ratio": wall / ideal if ideal else 0.0,
        "cpu_s": cpu,
        "steps": steps,
        "steps_per_s": steps / wall,
        "cpu_ms_per_step": cpu * 1000 / steps,
        "verify": {"ok": events == steps, "events": events},
    }
