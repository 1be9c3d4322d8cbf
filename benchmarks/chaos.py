"""Chaos runs: ``make chaos`` (= ``python -m benchmarks.chaos --pg-restart``).

Several ``maestro worker`` processes share one database while runs flow through them, and faults
are injected in the middle of those runs, one scenario at a time, on SQLite and PostgreSQL:

- ``kill``: SIGKILL the worker holding the most runs (a new worker replaces it).
- ``fence``: SIGSTOP that worker past its lease, let the others take its runs over, then SIGCONT it:
  everything it tries to commit must be refused. On SQLite it is stopped outside a write transaction.
- ``fence-in-write``: the same, stopped while it holds a write transaction (caught from outside: see
  ``chaos_fleet.stop_inside_a_write``). PostgreSQL ends the frozen session after
  ``idle_in_transaction_session_timeout`` and its runs are taken over. SQLite has one writer at a
  time: every writer waits for the frozen one, which is resumed after two leases (the documented
  limit; its recovery is measured from the resume).
- ``db-fault``: a trigger makes one in-flight run's commit fail (a database error while the worker
  stays busy with others); on PostgreSQL every other trial also terminates all the workers' sessions
  (``pg_terminate_backend``).
- ``server-kill`` (PostgreSQL, only with ``--pg-restart``): restart the server with
  ``pg_ctlcluster --skip-systemctl-redirect VERSION main restart`` (fast and immediate shutdowns in
  turn); the server is started again if it is down afterwards.

For each scenario the table gives the trials, the runs, and what a fault must never cause: runs lost,
steps duplicated, stale commits accepted (plus the stale writes refused: commits and lease renewals
of a holder whose lease was taken over, the fencing at work), and the longest time any affected run
waited before it moved again (a killed or stopped worker's runs: until another worker took them
over; after a server restart: from when it answers again), against the bound of two leases.

Exit status 1 when a violation was found or a recovery exceeded the bound (the SQLite
``fence-in-write`` row excepted). PostgreSQL: ``$MAESTRO_BENCH_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``); each scenario uses a fresh database.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentmaestro.agents import Agent
from agentmaestro.core.policy import StrictPolicy
from agentmaestro.core.states import RunStatus
from agentmaestro.store.base import Store
from agentmaestro.store.records import NewRun, new_run_id
from benchmarks.chaos_fleet import (
    AGENT,
    AGENTS_DIR,
    Audit,
    Fault,
    Fleet,
    FleetConfig,
    WorkerProcess,
    audit,
    drop_commit_fault,
    install_commit_fault,
    stop_inside_a_write,
    terminate_sessions,
    wait_until,
)

SCENARIOS = ("kill", "fence", "fence-in-write", "db-fault", "server-kill")
SERVER_KILL_TRIALS = 4
"""At most this many server restarts per chaos run (the server may be shared)."""


@dataclass(frozen=True, kw_only=True)
class ChaosConfig:
    """One scenario's size."""

    trials: int = 10
    """Faults injected."""
    workers: int = 3
    """Worker processes alive at once."""
    runs_per_trial: int = 10
    """Runs created before each fault."""
    fleet: FleetConfig = field(default_factory=FleetConfig)
    """Lease, poll and concurrency of the workers."""
    drain_s: float = 180.0
    """How long the runs may take to finish after the last fault."""
    pg_restart: bool = False
    """Whether ``server-kill`` may restart the PostgreSQL server (never in the test suite)."""
    seed: int = 15
    """Seeds the delays between run creation and fault."""


@dataclass
class Row:
    """One scenario's result on one backend."""

    scenario: str
    backend: str
    trials: int
    audit: Audit
    fenced: int
    bound_s: float
    limit: str = ""
    """Non-empty when the bound does not apply (a documented limit), saying why."""
    note: str = ""
    """How to read the row's recovery time, when it needs saying."""

    @property
    def max_recovery(self) -> float:
        """The longest wait of an affected run (0 when none was affected)."""
        return max(self.audit.recoveries, default=0.0)

    @property
    def violations(self) -> int:
        """Runs lost, steps duplicated, stale commits accepted."""
        return len(self.audit.lost) + self.audit.duplicated + self.audit.stale

    @property
    def ok(self) -> bool:
        """No violation, and every recovery within the bound (unless a limit applies)."""
        return self.violations == 0 and (bool(self.limit) or self.max_recovery <= self.bound_s)


class Scene:
    """The live state of one scenario: store, fleet, runs, faults."""

    def __init__(self, name: str, url: str, cfg: ChaosConfig, log_dir: Path, pycache: Path | None) -> None:
        self.name = name
        self.url = url
        self.cfg = cfg
        self.backend = "postgresql" if url.startswith("postgresql") else "sqlite"
        self.store = Store.open(url)
        self.fleet = Fleet(url, log_dir, cfg.fleet, pycache)
        self.slots: list[WorkerProcess] = []
        self.runs: dict[str, str] = {}
        self.faults: list[Fault] = []
        self.agent = Agent.from_yaml(AGENTS_DIR / f"{AGENT}.yaml")
        self.rng = random.Random(f"{cfg.seed}-{name}-{self.backend}")
        self.limit = ""
        self.outages: list[float] = []
        """server-kill: how long the server did not answer, per restart."""

    @property
    def lease(self) -> float:
        """The workers' lease."""
        return self.cfg.fleet.lease_s

    async def create_runs(self, trial: int) -> None:
        """A batch of PENDING runs."""
        recs = await self.store.runs.create(
            [
                NewRun(
                    run_id=new_run_id(),
                    workspace_id="default",
                    agent_name=self.agent.name,
                    input=f"t{trial}-r{j}",
                    spec=self.agent.spec(),
                    policy=(self.agent.policy or StrictPolicy()).to_json(),
                )
                for j in range(self.cfg.runs_per_trial)
            ]
        )
        self.runs.update({r.run_id: r.input for r in recs})

    async def held(self) -> Counter[str]:
        """RUNNING runs per lease owner."""
        recs = await self.store.runs.page(statuses=[RunStatus.RUNNING.value], limit=100_000)
        return Counter(r.lease_owner for r in recs if r.lease_owner)

    async def busiest(self) -> int:
        """The slot of the started worker holding the most runs."""
        await wait_until(lambda: sum(p.check_ready() for p in self.slots) >= 2, 120, "two started workers")
        held = await self.held()
        ready = [i for i, p in enumerate(self.slots) if p.check_ready()]
        return max(ready, key=lambda i: held[self.slots[i].worker_id or ""])

    async def wait_taken_over(self, worker_id: str, at_least_s: float, timeout_s: float) -> None:
        """Wait until no RUNNING run is leased to ``worker_id`` any more and ``at_least_s`` passed."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if time.monotonic() - start >= at_least_s and not (await self.held())[worker_id]:
                return
            await asyncio.sleep(0.05)

    async def drain(self) -> None:
        """Wait until no run is PENDING or RUNNING (or the drain time is up)."""
        deadline = time.monotonic() + self.cfg.drain_s
        while time.monotonic() < deadline:
            counts = await self.store.runs.count_by_status()
            if not counts.get("PENDING") and not counts.get("RUNNING"):
                return
            await asyncio.sleep(0.2)


# ---------------------------------------------------------------------------------- injectors


async def inject_kill(s: Scene, trial: int) -> None:
    slot = await s.busiest()
    victim = s.slots[slot]
    assert victim.worker_id is not None
    s.faults.append(Fault(at=time.time(), scope="holder", victim=victim.worker_id))
    victim.kill()
    s.slots[slot] = s.fleet.spawn()
    await asyncio.sleep(s.lease * 1.5)


async def _stop_outside_a_write(s: Scene, victim: WorkerProcess) -> float:
    """SIGSTOP; on SQLite retried until the stopped worker holds no write transaction."""
    from benchmarks.chaos_fleet import in_write_transaction

    for _ in range(100):
        at = time.time()
        victim.send(signal.SIGSTOP)
        if s.backend == "postgresql" or not await asyncio.to_thread(in_write_transaction, s.url, victim):
            return at
        victim.send(signal.SIGCONT)
        await asyncio.sleep(s.rng.uniform(0.01, 0.05))
    raise RuntimeError("the worker held the SQLite write lock at every one of 100 stops")


async def _fence(s: Scene, in_write: bool) -> None:
    victim = s.slots[await s.busiest()]
    assert victim.worker_id is not None
    if in_write:
        try:
            at = await stop_inside_a_write(s.url, victim)
        except RuntimeError as exc:
            print(f"{s.name}: {exc}; no fault this trial", file=sys.stderr)
            return
    else:
        at = await _stop_outside_a_write(s, victim)
    if in_write and s.backend == "sqlite":
        # One writer at a time: nobody can take anything over while the frozen writer holds the file.
        await asyncio.sleep(2 * s.lease)
        resumed = time.time()
        victim.send(signal.SIGCONT)
        s.faults.append(Fault(at=at, scope="all", resumed_at=resumed))
        s.limit = "SQLite: one writer at a time; a writer frozen mid-transaction blocks all until it resumes"
        await asyncio.sleep(s.lease)
        return
    await s.wait_taken_over(victim.worker_id, at_least_s=1.5 * s.lease, timeout_s=10 * s.lease)
    resumed = time.time()
    victim.send(signal.SIGCONT)
    s.faults.append(Fault(at=at, scope="holder", victim=victim.worker_id, resumed_at=resumed))
    await asyncio.sleep(0.5 * s.lease)


async def inject_fence(s: Scene, trial: int) -> None:
    await _fence(s, in_write=False)


async def inject_fence_in_write(s: Scene, trial: int) -> None:
    await _fence(s, in_write=True)


async def inject_db_fault(s: Scene, trial: int) -> None:
    if s.backend == "postgresql" and trial % 2 == 1:
        at = time.time()
        for _ in range(3):
            await asyncio.to_thread(terminate_sessions, s.url)
            await asyncio.sleep(0.1)
        s.faults.append(Fault(at=at, scope="all", resumed_at=time.time()))
        await asyncio.sleep(s.lease)
        return
    deadline = time.monotonic() + 5 * s.lease
    while True:  # a run some worker is in the middle of
        recs = await s.store.runs.page(statuses=[RunStatus.RUNNING.value], limit=100_000)
        candidates = [r for r in recs if r.lease_owner and 1 <= r.state.steps <= 6]
        if candidates or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    if not candidates:
        print(f"db-fault trial {trial}: no run in flight; no fault", file=sys.stderr)
        return
    rec = s.rng.choice(candidates)
    name = f"chaos_fault_{trial}"
    await asyncio.to_thread(install_commit_fault, s.url, rec.run_id, rec.lease_epoch, name)
    at = time.time()
    hit = f"run {rec.run_id}: database error"
    try:
        await wait_until(lambda: any(hit in p.stderr() for p in s.fleet.procs), 3 * s.lease, "the fault")
    except RuntimeError:
        print(f"db-fault trial {trial}: run {rec.run_id} finished before its next commit; no fault", file=sys.stderr)
        return
    finally:
        await asyncio.to_thread(drop_commit_fault, s.url, name)
    s.faults.append(Fault(at=at, scope="run", run_id=rec.run_id))
    await asyncio.sleep(s.lease)


async def inject_server_kill(s: Scene, trial: int) -> None:
    mode = "fast" if trial % 2 == 0 else "immediate"
    watch = OutageWatch(s.url)
    watcher = asyncio.create_task(asyncio.to_thread(watch.run))
    try:
        await asyncio.to_thread(restart_postgresql, mode)
    finally:
        watch.done = True
        await watcher
    if watch.down_at is None or watch.up_at is None:
        print(f"server-kill trial {trial}: no outage seen", file=sys.stderr)
        return
    s.outages.append(watch.up_at - watch.down_at)
    # Measured from the moment the server accepts connections again: how long runs take to move on.
    s.faults.append(Fault(at=watch.up_at, scope="all", resumed_at=watch.up_at))
    await asyncio.sleep(2 * s.lease)


class OutageWatch:
    """Connects to the database every 20 ms: when it stopped answering, and when it answered again."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.down_at: float | None = None
        self.up_at: float | None = None
        self.done = False

    def run(self) -> None:
        """Watch until the outage is over (or the restart returned without one)."""
        import psycopg

        from benchmarks.chaos_fleet import pg_dsn

        while self.up_at is None and not (self.done and self.down_at is None):
            t = time.time()
            try:
                with psycopg.connect(pg_dsn(self.url), connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                if self.down_at is not None:
                    self.up_at = t
            except Exception:
                if self.down_at is None:
                    self.down_at = t
            time.sleep(0.02)


INJECTORS: dict[str, Callable[[Scene, int], Awaitable[None]]] = {
    "kill": inject_kill,
    "fence": inject_fence,
    "fence-in-write": inject_fence_in_write,
    "db-fault": inject_db_fault,
    "server-kill": inject_server_kill,
}


def _cluster() -> list[str]:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]


def restart_postgresql(mode: str) -> None:
    """Restart the local PostgreSQL cluster (``fast``: sessions ended, checkpoint; ``immediate``: like a crash)."""
    done = subprocess.run([*_cluster(), "restart", "-m", mode], capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        print(f"pg_ctlcluster restart -m {mode}: exit {done.returncode}: {done.stderr.strip()}", file=sys.stderr)
    ensure_postgresql_running()


def ensure_postgresql_running() -> None:
    """Start the local PostgreSQL cluster if it is not running, and wait until it accepts connections."""
    if subprocess.run([*_cluster(), "status"], capture_output=True, timeout=30).returncode != 0:
        subprocess.run([*_cluster(), "start"], check=True, capture_output=True, timeout=120)
    from benchmarks.scenarios import pg_server_version

    deadline = time.monotonic() + 60
    while True:
        try:
            pg_server_version()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# ---------------------------------------------------------------------------------- scenarios


async def run_scenario(name: str, url: str, cfg: ChaosConfig, log_dir: Path, pycache: Path | None = None) -> Row:
    """Run scenario ``name`` on the (migrated or empty) database at ``url``; its row of the table."""
    inject = INJECTORS[name]
    s = Scene(name, url, cfg, log_dir, pycache)
    try:
        await s.store.workspaces.ensure()
        await s.store.agents.put("default", s.agent.name, s.agent.spec())
        s.slots = await s.fleet.start(cfg.workers)
        trials = min(cfg.trials, SERVER_KILL_TRIALS) if name == "server-kill" else cfg.trials
        for trial in range(trials):
            await s.create_runs(trial)
            await asyncio.sleep(s.rng.uniform(0.3, 1.5))
            await inject(s, trial)
        await s.drain()
        await s.fleet.stop([p for p in s.slots if p.proc.poll() is None])
        result = await audit(s.store, s.runs, s.faults)
        fenced = s.fleet.fenced()
    finally:
        s.fleet.close()
        if name == "server-kill":
            await asyncio.to_thread(ensure_postgresql_running)
        await s.store.close()
    return Row(
        scenario=name,
        backend=s.backend,
        trials=len(s.faults),
        audit=result,
        fenced=fenced,
        bound_s=2 * cfg.fleet.lease_s,
        limit=s.limit,
        note=(
            f"server-kill: the server answered no connection for {min(s.outages):.1f} to {max(s.outages):.1f} s "
            "per restart; recovery is measured from when it answered again"
            if s.outages
            else ""
        ),
    )


def table(rows: list[Row]) -> str:
    """The results as a Markdown table."""
    head = (
        "| scenario | backend | trials | runs | lost | duplicated | stale commits accepted "
        "| stale writes refused | max time to recovery | bound (2 leases) |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in rows:
        verdict = "limit*" if r.limit else ("ok" if r.max_recovery <= r.bound_s else "**OVER**")
        lines.append(
            f"| {r.scenario} | {r.backend} | {r.trials} | {r.audit.runs} | {len(r.audit.lost)} "
            f"| {r.audit.duplicated} | {r.audit.stale} | {r.fenced} | {r.max_recovery:.2f} s "
            f"| {r.bound_s:.1f} s {verdict} |"
        )
    notes = sorted({f"\n\\* {r.limit}" for r in rows if r.limit}) + [f"\n{r.note}" for r in rows if r.note]
    return head + "\n".join(lines) + "\n" + "".join(notes) + "\n"


async def _main(args: argparse.Namespace) -> int:
    from benchmarks.scenarios import bench_database, pg_server_version

    cfg = ChaosConfig(
        trials=args.trials,
        workers=args.workers,
        runs_per_trial=args.runs,
        fleet=FleetConfig(lease_s=args.lease, poll_s=args.poll),
        pg_restart=args.pg_restart,
    )
    backends = [b for b in args.backends.split(",") if b]
    if "postgresql" in backends:
        try:
            pg_server_version()
        except Exception as exc:
            print(f"PostgreSQL unreachable ({exc}); SQLite only", file=sys.stderr)
            backends.remove("postgresql")
    names = [n for n in (args.only.split(",") if args.only else SCENARIOS) if n]
    rows: list[Row] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="maestro_chaos_") as tmp:
        pycache = Path(tmp) / "pycache"
        for backend in backends:
            for name in names:
                if name == "server-kill" and (backend != "postgresql" or not cfg.pg_restart):
                    continue
                log_dir = Path(tmp) / f"{backend}-{name}"
                log_dir.mkdir()
                t0 = time.monotonic()
                with bench_database(backend) as db:
                    row = await run_scenario(name, db.url, cfg, log_dir, pycache)
                rows.append(row)
                print(
                    f"{name} on {backend}: {row.trials} trials, {row.audit.runs} runs, "
                    f"{row.violations} violations, max recovery {row.max_recovery:.2f}s "
                    f"({time.monotonic() - t0:.0f}s)",
                    file=sys.stderr,
                    flush=True,
                )
    when = dt.datetime.fromtimestamp(started, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\n`{shlex.join(['python', '-m', 'benchmarks.chaos', *sys.argv[1:]])}` ({when}, {os.cpu_count()} cores, "
        f"load average at the end {load}; lease {cfg.fleet.lease_s:g} s, {cfg.workers} workers)\n"
    )
    print(table(rows))
    return 0 if all(r.ok for r in rows) else 1


def main() -> None:
    """Command line entry point."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    p.add_argument("--only", default="", help=f"comma-separated scenarios: {', '.join(SCENARIOS)}")
    p.add_argument("--trials", type=int, default=10, help="faults per scenario and backend")
    p.add_argument("--runs", type=int, default=10, help="runs created before each fault")
    p.add_argument("--workers", type=int, default=3, help="worker processes")
    p.add_argument("--lease", type=float, default=2.0, help="lease seconds")
    p.add_argument("--poll", type=float, default=0.1, help="worker poll interval seconds")
    p.add_argument("--pg-restart", action="store_true", help="run server-kill: restart the local PostgreSQL")
    sys.exit(asyncio.run(_main(p.parse_args())))


if __name__ == "__main__":
    main()
