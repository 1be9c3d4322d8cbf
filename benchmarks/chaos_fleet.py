"""The pieces of the chaos runs (``benchmarks/chaos.py``): worker processes, faults, and the audit of the runs.

Workers are real ``maestro worker`` processes sharing one database. The runs are those of the crash
tests (``tests/e2e/crash_agents``: 9 steps, a scripted model that takes 0.3 s per call), so a fault
lands in the middle of many of them. :func:`audit` reads every run back and counts what a fault may
never cause: a run lost, a step recorded twice, a commit accepted from a holder whose lease had been
taken over; and how long each affected run waited before it moved again.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentmaestro.core.events import Event, fold
from agentmaestro.core.states import EventType, RunStatus

ROOT = Path(__file__).resolve().parent.parent
AGENTS_DIR = ROOT / "tests" / "e2e" / "crash_agents" / "agents"
AGENT = "crash_counter"
STEPS = 9
"""The agent makes 5 model calls and 4 ``add`` tool calls."""
OUTPUT_SUFFIX = " -> 4.0"
MAESTRO_SCRIPT = Path(sys.executable).with_name("maestro")

_STARTED = re.compile(r"worker (\S+) started")
FENCED = re.compile(r"run (\S+): (?:commit rejected, lease lost|lease lost to another worker)")
"""What a worker logs when it finds out that its lease was taken over (a stale commit refused)."""
_CLAIMS = (EventType.RUN_STARTED, EventType.LEASE_RECOVERED)
_TERMINAL = (EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELLED)


def maestro(*args: str) -> list[str]:
    """The command line of ``maestro ARGS`` (the venv's console script, or its equivalent)."""
    if MAESTRO_SCRIPT.is_file():
        return [str(MAESTRO_SCRIPT), *args]
    return [sys.executable, "-c", "import sys; from agentmaestro.cli import main; sys.exit(main())", *args]


def cli_env(pycache: Path | None = None) -> dict[str, str]:
    """Environment of the worker processes (bytecode cached outside the tree, so they start fast)."""
    env = {**os.environ, "MAESTRO_LOG_LEVEL": "WARNING"}
    if pycache is not None:
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("MAESTRO_DATABASE_URL", None)
    return env


@dataclass(frozen=True, kw_only=True)
class FleetConfig:
    """How the worker processes are started."""

    lease_s: float = 2.0
    """``--lease-ttl``; heartbeats every third of it."""
    poll_s: float = 0.1
    """``--poll-interval``."""
    concurrency: int = 500
    """``--concurrency``."""
    extra_args: tuple[str, ...] = ()
    """More ``maestro worker`` options (e.g. ``--lock-timeout 0``)."""


class WorkerProcess:
    """One ``maestro worker`` subprocess; its stderr goes to a file."""

    def __init__(self, url: str, log_path: Path, cfg: FleetConfig, pycache: Path | None) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        cmd = maestro(
            "--database-url",
            url,
            "--agents-dir",
            str(AGENTS_DIR),
            "worker",
            "--concurrency",
            str(cfg.concurrency),
            "--lease-ttl",
            str(cfg.lease_s),
            "--poll-interval",
            str(cfg.poll_s),
            *cfg.extra_args,
        )
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log, env=cli_env(pycache)
        )
        self.worker_id: str | None = None

    @property
    def pid(self) -> int:
        """The process id (also in its PostgreSQL sessions' ``application_name``)."""
        return self.proc.pid

    def stderr(self) -> str:
        """Everything the worker wrote on stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def check_ready(self) -> bool:
        """True once the worker printed ``worker <id> started``."""
        if self.worker_id is None:
            m = _STARTED.search(self.stderr())
            if m is not None:
                self.worker_id = m.group(1)
            elif self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode} before starting:\n{self.stderr()}")
        return self.worker_id is not None

    def send(self, sig: signal.Signals) -> None:
        """Send a signal to the process."""
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap."""
        self.send(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        """Make sure the process is gone."""
        if self.proc.poll() is None:
            self.send(signal.SIGCONT)
            self.kill()
        self._log.close()


class Fleet:
    """The worker processes of one scenario; :meth:`close` leaves none behind."""

    def __init__(self, url: str, log_dir: Path, cfg: FleetConfig, pycache: Path | None = None) -> None:
        self.url = url
        self.log_dir = log_dir
        self.cfg = cfg
        self.pycache = pycache
        self.procs: list[WorkerProcess] = []

    def spawn(self) -> WorkerProcess:
        """Start one more worker."""
        p = WorkerProcess(self.url, self.log_dir / f"worker-{len(self.procs)}.log", self.cfg, self.pycache)
        self.procs.append(p)
        return p

    async def start(self, n: int) -> list[WorkerProcess]:
        """Start ``n`` workers and wait until all of them claim runs."""
        procs = [self.spawn() for _ in range(n)]
        await wait_until(lambda: all(p.check_ready() for p in procs), 120, "workers to start")
        return procs

    def fenced(self) -> int:
        """How many stale commits (or renewals) the workers were refused, from their logs."""
        return sum(len(FENCED.findall(p.stderr())) for p in self.procs)

    def logs(self) -> str:
        """All worker stderr, for failure messages."""
        return "\n".join(f"--- {p.log_path.name} ({p.worker_id})\n{p.stderr()[-4000:]}" for p in self.procs)

    async def stop(self, procs: Sequence[WorkerProcess]) -> list[int]:
        """SIGTERM these workers (resuming stopped ones) and wait; their exit codes."""
        for p in procs:
            if p.proc.poll() is None:
                p.send(signal.SIGCONT)
                p.send(signal.SIGTERM)
        codes = []
        for p in procs:
            try:
                await asyncio.to_thread(p.proc.wait, 30)
            except subprocess.TimeoutExpired:
                p.kill()
            codes.append(p.proc.returncode)
        return codes

    def close(self) -> None:
        """Kill whatever is still running."""
        for p in self.procs:
            p.close()


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` until it holds; RuntimeError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------------ faults


def pg_dsn(url: str) -> str:
    """A libpq connection string for a SQLAlchemy PostgreSQL URL."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def in_write_transaction(url: str, worker: WorkerProcess) -> bool:
    """Whether ``worker`` holds a write transaction open right now.

    PostgreSQL: one of its sessions (``application_name`` ``maestro <pid>``) has a transaction id,
    which a transaction gets at its first write or row lock. SQLite: the file's write lock stays
    taken for 0.3 s (other workers hold it for milliseconds at a time; a stopped one holds it on).
    """
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(pg_dsn(url), autocommit=True, connect_timeout=5) as pg:
            row = pg.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND backend_xid IS NOT NULL",
                (f"maestro {worker.pid}",),
            ).fetchone()
            return bool(row and row[0])
    path = url.removeprefix("sqlite:///")
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        conn = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            time.sleep(0.02)
        finally:
            conn.close()
    return True


async def stop_inside_a_write(url: str, worker: WorkerProcess, attempts: int = 1000) -> float:
    """SIGSTOP ``worker`` at a moment it is inside a write transaction; the time it stopped.

    No hook in the worker: it is stopped, then asked from outside whether it holds a transaction
    that has written (or locked rows); if not, it is resumed and stopped again a little later.
    """
    for _ in range(attempts):
        at = time.time()
        worker.send(signal.SIGSTOP)
        if await asyncio.to_thread(in_write_transaction, url, worker):
            return at
        worker.send(signal.SIGCONT)
        await asyncio.sleep(0.001 + 0.01 * (time.monotonic() * 7 % 1))
    raise RuntimeError(f"never caught the worker inside a write transaction in {attempts} stops")


def install_commit_fault(url: str, run_id: str, epoch: int, name: str) -> None:
    """A trigger that fails the step commits of ``run_id`` under lease epoch ``epoch`` (a database error).

    It fires on UPDATEs that set ``steps`` (commits and claims), not on heartbeats or releases; a
    claim sets the next epoch, so the run's next holder commits normally.
    """
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(pg_dsn(url), autocommit=True, connect_timeout=5) as pg:
            pg.execute(
                "CREATE OR REPLACE FUNCTION chaos_fault() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'chaos: injected database fault'; END $$"
            )
            pg.execute(
                f"CREATE TRIGGER {name} BEFORE UPDATE OF steps ON runs FOR EACH ROW "
                f"WHEN (NEW.run_id = '{run_id}' AND NEW.lease_epoch = {int(epoch)}) EXECUTE FUNCTION chaos_fault()"
            )
        return
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
    try:
        conn.execute(
            f"CREATE TRIGGER {name} BEFORE UPDATE OF steps ON runs "
            f"WHEN NEW.run_id = '{run_id}' AND NEW.lease_epoch = {int(epoch)} "
            f"BEGIN SELECT RAISE(ABORT, 'chaos: injected database fault'); END"
        )
    finally:
        conn.close()


def drop_commit_fault(url: str, name: str) -> None:
    """Remove a trigger made by :func:`install_commit_fault`."""
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(pg_dsn(url), autocommit=True, connect_timeout=5) as pg:
            pg.execute(f"DROP TRIGGER IF EXISTS {name} ON runs")
        return
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
    try:
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    finally:
        conn.close()


def terminate_sessions(url: str) -> int:
    """PostgreSQL: end every maestro session on the scenario's database (as a failover or an admin would)."""
    import psycopg

    with psycopg.connect(pg_dsn(url), autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'maestro %' AND pid <> pg_backend_pid()"
        ).fetchone()
        return int(row[0]) if row else 0


# ------------------------------------------------------------------------------------- audit


@dataclass(frozen=True, kw_only=True)
class Fault:
    """One injected fault, and which runs it concerns."""

    at: float
    """When it was injected (wall clock)."""
    scope: Literal["holder", "run", "all"]
    """``holder``: the runs ``victim`` held at ``at``; ``run``: ``run_id``; ``all``: every run in flight."""
    victim: str | None = None
    """The worker id of a killed or stopped worker."""
    run_id: str | None = None
    """The run whose commit was made to fail."""
    resumed_at: float | None = None
    """When the fault ended (server back, process resumed). ``all``: a run's recovery is the longest
    it stood still from ``at`` until its first event after this; ``holder``: a run never taken over
    waited until the holder resumed."""


@dataclass
class Audit:
    """What the database says after a scenario."""

    runs: int = 0
    lost: list[str] = field(default_factory=list)
    """Runs not COMPLETED with the right output and all their steps."""
    duplicated: int = 0
    """Steps (or starts, or endings) recorded more than once."""
    stale: int = 0
    """Commits accepted from a superseded holder: a step already committed before a takeover
    completed again after it, a takeover that does not follow the previous holder, a replay that
    differs from the snapshot."""
    recoveries: list[float] = field(default_factory=list)
    """Per affected run and fault: seconds until the run moved again (a killed or stopped worker's
    runs: until another worker took them over; a fault on every run: the longest the run stood still
    from the fault until it moved again after the fault ended)."""
    unrecovered: int = 0
    """Affected runs that never moved again (also counted as lost)."""


def _holder_at(events: Sequence[Event], t: float) -> str | None:
    holder = None
    for e in events:
        if e.created_at > t:
            break
        if e.type in _CLAIMS:
            holder = e.payload.get("worker")
        elif e.type in _TERMINAL:
            return None
    return holder


def _in_flight(events: Sequence[Event], t: float) -> bool:
    started = any(e.type in _CLAIMS and e.created_at <= t for e in events)
    ended = any(e.type in _TERMINAL and e.created_at <= t for e in events)
    return started and not ended


def _recovery(events: Sequence[Event], fault: Fault) -> float | None:
    """Seconds from the fault (or its end) until the run moved again; None if it never did."""
    since = fault.resumed_at or fault.at
    if fault.scope == "all":
        # The longest the run stood still from the fault until it moved again after the fault ended.
        worst: float | None = None
        prev = fault.at
        for e in events:
            if e.created_at >= fault.at:
                worst = max(worst or 0.0, e.created_at - max(prev, fault.at))
                if e.created_at > since:
                    break
            prev = e.created_at
        return worst
    if fault.scope == "holder":
        claims = [
            e
            for e in events
            if e.type in _CLAIMS and e.created_at >= fault.at and e.payload.get("previous_worker") == fault.victim
        ]
        if not claims and fault.resumed_at is not None:
            # Never taken over: the stopped worker went on with it once resumed (it waited that long).
            later = [e for e in events if e.created_at >= fault.resumed_at]
            return later[0].created_at - fault.at if later else None
        return claims[0].created_at - fault.at if claims else None
    claims = [e for e in events if e.type in _CLAIMS and e.created_at >= since]
    return claims[0].created_at - since if claims else None


def check_run(rec: Any, events: Sequence[Event], steps: Sequence[Any], expected_input: str, out: Audit) -> None:
    """Count this run's violations into ``out``."""
    completed = [e for e in events if e.type is EventType.STEP_COMPLETED]
    done = sorted({e.step for e in completed if e.step is not None})
    out.duplicated += len(completed) - len(done)
    out.duplicated += max(0, sum(e.type is EventType.RUN_STARTED for e in events) - 1)
    out.duplicated += max(0, sum(e.type in _TERMINAL for e in events) - 1)
    out.duplicated += len(steps) - len({s.step_index for s in steps})
    if (
        rec.status is not RunStatus.COMPLETED
        or rec.state.output != expected_input + OUTPUT_SUFFIX
        or done != list(range(STEPS))
        or sorted({s.step_index for s in steps}) != list(range(STEPS))
    ):
        out.lost.append(rec.run_id)
    seqs = [e.seq for e in events]
    if seqs != list(range(1, len(seqs) + 1)) or fold(events) != rec.state:
        out.stale += 1
    holder: Event | None = None
    committed: set[int] = set()
    claimed_with: set[int] = set()
    for e in events:
        if e.type in _CLAIMS:
            if holder is not None and (
                e.type is not EventType.LEASE_RECOVERED
                or e.payload.get("previous_worker") != holder.payload.get("worker")
                or e.payload.get("epoch") != holder.payload.get("epoch", 0) + 1
            ):
                out.stale += 1  # a takeover that does not follow from the holder before it
            holder = e
            claimed_with = set(committed)
        elif e.type is EventType.STEP_COMPLETED and e.step is not None:
            if holder is not None and holder.type is EventType.LEASE_RECOVERED and e.step in claimed_with:
                out.stale += 1  # the new holder starts after the committed steps: only the old one could
            committed.add(e.step)


async def audit(store: Any, runs: dict[str, str], faults: Sequence[Fault]) -> Audit:
    """Read every run back; count violations and the recovery time of each run each fault concerned."""
    out = Audit(runs=len(runs))
    ids = list(runs)
    for i in range(0, len(ids), 25):
        chunk = ids[i : i + 25]
        loaded = await asyncio.gather(
            *(asyncio.gather(store.runs.get(r), store.events.read(r), store.steps.read(r)) for r in chunk)
        )
        for run_id, (rec, events, steps) in zip(chunk, loaded, strict=True):
            check_run(rec, events, steps, runs[run_id], out)
            for f in faults:
                if f.scope == "run" and f.run_id != run_id:
                    continue
                if f.scope != "run" and not _in_flight(events, f.at):
                    continue
                if f.scope == "holder" and _holder_at(events, f.at) != f.victim:
                    continue
                took = _recovery(events, f)
                if took is not None:
                    out.recoveries.append(took)
                elif f.scope == "run" or not any(e.type in _TERMINAL for e in events):
                    # A holder's last commit may still land after its kill or stop (sent just before):
                    # the run then finished without a takeover. Anything else never moved again.
                    out.unrecovered += 1
    return out
