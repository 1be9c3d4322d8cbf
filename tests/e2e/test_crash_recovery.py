"""Crash and stall recovery with real ``maestro worker`` processes, on SQLite and PostgreSQL.

Workers run as separate processes sharing one database. The tests SIGKILL them at many different
points in their runs (nothing may be lost or done twice, and the runs they held must be taken over
within a lease plus one poll), and SIGSTOP one past its lease (when it wakes up, none of its stale
commits may land).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentmaestro.agents import Agent
from agentmaestro.core.events import Event, fold
from agentmaestro.core.policy import StrictPolicy
from agentmaestro.core.states import EventType, RunStatus
from agentmaestro.store.base import Store
from agentmaestro.store.records import RunRecord, new_run_id
from agentmaestro.store.runs import NewRun

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.xdist_group("worker-processes")]
"""Under pytest-xdist these tests share one worker: two fleets of worker processes never run at once."""

AGENTS_DIR = Path(__file__).parent / "crash_agents" / "agents"
MAESTRO_SCRIPT = Path(sys.executable).with_name("maestro")

LEASE_TTL = 1.0
HEARTBEAT = 0.2
POLL = 0.1
SLACK = 1.0
"""Scheduling slack allowed on top of lease + one poll (a busy 2-core machine)."""
RECOVERY_BOUND = LEASE_TTL + POLL + SLACK

STEPS = 9
"""Both test agents make 5 model calls and 4 ``add`` tool calls."""
OUTPUT_SUFFIX = " -> 4.0"

TRIALS = 20
"""Kills per backend."""
RUNS_PER_TRIAL = 20
WORKERS = 5
"""Worker processes alive at once (a killed one is replaced at once)."""

_STARTED = re.compile(r"worker (\S+) started")


# ----------------------------------------------------------------------------------- processes


def maestro(*args: str) -> list[str]:
    """The command line of ``maestro ARGS`` (the venv's console script, or its equivalent)."""
    if MAESTRO_SCRIPT.is_file():
        return [str(MAESTRO_SCRIPT), *args]
    return [sys.executable, "-c", "import sys; from agentmaestro.cli import main; sys.exit(main())", *args]


def cli_env(pycache: Path) -> dict[str, str]:
    """Environment of the ``maestro`` subprocesses.

    Bytecode is cached outside the source tree: with PYTHONDONTWRITEBYTECODE (set on some
    machines) every process would compile all its modules again and take seconds to start.
    """
    env = {**os.environ, "MAESTRO_LOG_LEVEL": "WARNING", "PYTHONPYCACHEPREFIX": str(pycache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("MAESTRO_DATABASE_URL", None)
    return env


class WorkerProcess:
    """One ``maestro worker`` subprocess; its stderr goes to a file."""

    def __init__(
        self,
        url: str,
        log_path: Path,
        pycache: Path,
        *,
        agents_dir: Path = AGENTS_DIR,
        lease_ttl: float = LEASE_TTL,
        heartbeat: float = HEARTBEAT,
        concurrency: int = 500,
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        env = cli_env(pycache)
        cmd = maestro(
            "--database-url",
            url,
            "--agents-dir",
            str(agents_dir),
            "worker",
            "--concurrency",
            str(concurrency),
            "--lease-ttl",
            str(lease_ttl),
            "--heartbeat-interval",
            str(heartbeat),
            "--poll-interval",
            str(POLL),
        )
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log, env=env
        )
        self.worker_id: str | None = None

    def stderr(self) -> str:
        """Everything the worker wrote on stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def check_ready(self) -> bool:
        """True once the worker printed ``worker <id> started`` (it is then claiming runs)."""
        if self.worker_id is None:
            m = _STARTED.search(self.stderr())
            if m is not None:
                self.worker_id = m.group(1)
            elif self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode} before starting:\n{self.stderr()}")
        return self.worker_id is not None

    async def ready(self, timeout: float = 60.0) -> str:
        """Wait for the worker to start; its id."""
        await wait_until(self.check_ready, timeout, "worker start")
        assert self.worker_id is not None
        return self.worker_id

    def send(self, sig: signal.Signals) -> None:
        """Send a signal to the process."""
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap."""
        self.send(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def request_stop(self) -> None:
        """Ask for a graceful stop (SIGTERM), as an operator would."""
        if self.proc.poll() is None:
            self.send(signal.SIGCONT)
            self.send(signal.SIGTERM)

    def wait_stopped(self, timeout: float = 20.0) -> int:
        """Wait for the exit after :meth:`request_stop` (SIGKILL if it takes too long); the exit code."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        return self.proc.returncode

    def close(self) -> None:
        """Make sure the process is gone (used in ``finally``)."""
        if self.proc.poll() is None:
            self.send(signal.SIGCONT)
            self.kill()
        self._log.close()


class Fleet:
    """All worker processes of one test; :meth:`close` leaves none behind."""

    def __init__(self, url: str, log_dir: Path, pycache: Path) -> None:
        self.url = url
        self.log_dir = log_dir
        self.pycache = pycache
        self.procs: list[WorkerProcess] = []

    def spawn(self) -> WorkerProcess:
        """Start one more worker."""
        p = WorkerProcess(self.url, self.log_dir / f"worker-{len(self.procs)}.log", self.pycache)
        self.procs.append(p)
        return p

    def logs(self) -> str:
        """All worker stderr, for failure messages."""
        return "\n".join(f"--- {p.log_path.name} ({p.worker_id})\n{p.stderr()}" for p in self.procs)

    async def stop(self, procs: Sequence[WorkerProcess]) -> list[int]:
        """Stop these workers gracefully, all at once; their exit codes."""
        for p in procs:
            await p.ready()  # a worker stopped before it installed its signal handlers exits -15
        for p in procs:
            p.request_stop()
        return [p.wait_stopped() for p in procs]

    def close(self) -> None:
        """Kill whatever is still running."""
        for p in self.procs:
            p.close()


# -------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def pycache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bytecode cache shared by the worker processes of this module (the suite's one, if ``make test`` set it)."""
    shared = os.environ.get("PYTHONPYCACHEPREFIX")
    return Path(shared) if shared else tmp_path_factory.mktemp("pycache")


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` until it holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


def migrate(url: str, pycache: Path) -> None:
    """``maestro db upgrade`` (PostgreSQL; SQLite migrates when a worker opens it)."""
    if url.startswith("postgresql"):
        cmd = maestro("--database-url", url, "db", "upgrade")
        subprocess.run(cmd, check=True, timeout=120, capture_output=True, env=cli_env(pycache))


async def create_runs(store: Store, agent: Agent, inputs: Sequence[str]) -> dict[str, str]:
    """Create PENDING runs of ``agent``; run id -> input."""
    recs = await store.runs.create(
        [
            NewRun(
                run_id=new_run_id(),
                workspace_id="default",
                agent_name=agent.name,
                input=text,
                spec=agent.spec(),
                policy=(agent.policy or StrictPolicy()).to_json(),
            )
            for text in inputs
        ]
    )
    return {r.run_id: r.input for r in recs}


async def running(store: Store) -> list[RunRecord]:
    """Runs currently RUNNING (leased or with an expired lease)."""
    return await store.runs.page(statuses=[RunStatus.RUNNING.value], limit=100_000)


async def wait_finished(store: Store, timeout: float, fleet: Fleet) -> None:
    """Wait until no run is PENDING or RUNNING."""
    deadline = time.monotonic() + timeout
    while True:
        counts = await store.runs.count_by_status()
        if not counts.get("PENDING") and not counts.get("RUNNING"):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"runs did not finish in {timeout:.0f}s: {counts}\n{fleet.logs()}")
        await asyncio.sleep(0.1)


def claim_events(events: Sequence[Event]) -> list[Event]:
    """RUN_STARTED and LEASE_RECOVERED events: who held the run, from when."""
    return [e for e in events if e.type in (EventType.RUN_STARTED, EventType.LEASE_RECOVERED)]


@dataclass
class RunHistory:
    """What the database says about one finished run."""

    run_id: str
    events: list[Event]


async def load_and_verify(store: Store, runs: dict[str, str]) -> list[RunHistory]:
    """Check every run: COMPLETED with the right output, no lost or duplicated step, replay == snapshot."""
    out: list[RunHistory] = []
    ids = list(runs)
    for i in range(0, len(ids), 25):
        chunk = ids[i : i + 25]
        loaded = await asyncio.gather(
            *(asyncio.gather(store.runs.get(r), store.events.read(r), store.steps.read(r)) for r in chunk)
        )
        for run_id, (rec, events, steps) in zip(chunk, loaded, strict=True):
            where = f"run {run_id}"
            assert rec.status is RunStatus.COMPLETED, (where, rec.status, rec.state.error)
            assert rec.state.output == runs[run_id] + OUTPUT_SUFFIX, (where, rec.state.output)
            assert rec.state.steps == STEPS, (where, rec.state.steps)
            assert [e.seq for e in events] == list(range(1, len(events) + 1)), (where, "seq gap or duplicate")
            completed = [e for e in events if e.type is EventType.STEP_COMPLETED]
            assert [e.step for e in completed] == list(range(STEPS)), (where, [e.step for e in completed])
            assert [s.step_index for s in steps] == list(range(STEPS)), (where, [s.step_index for s in steps])
            assert [s.seq for s in steps] == [e.seq for e in completed], (where, "step rows point at other events")
            assert fold(events) == rec.state, (where, "replay differs from the snapshot")
            claims = claim_events(events)
            assert claims[0].type is EventType.RUN_STARTED, where
            assert sum(e.type is EventType.RUN_STARTED for e in events) == 1, where
            for before, after in zip(claims, claims[1:], strict=False):
                # The chain of custody: each takeover names the holder it took the run from.
                assert after.type is EventType.LEASE_RECOVERED, where
                assert after.payload["previous_worker"] == before.payload["worker"], where
                assert after.payload["epoch"] == before.payload["epoch"] + 1, where
            out.append(RunHistory(run_id=run_id, events=events))
    return out


# --------------------------------------------------------------------------------- SIGKILL test


@dataclass
class Kill:
    """One SIGKILL of a worker."""

    trial: int
    delay: float
    victim: str
    at: float
    held: int
    recoveries: list[float] = field(default_factory=list)
    progress: list[int] = field(default_factory=list)


async def pick_victim(store: Store, slots: list[WorkerProcess], trial: int) -> tuple[int, int]:
    """A started worker to kill, rotating over the slots, preferring one that holds runs.

    Returns its slot and how many runs it holds.
    """
    ready = [i for i, p in enumerate(slots) if p.check_ready()]
    start = trial % len(slots)
    order = sorted(ready, key=lambda i: (i - start) % len(slots))
    held = Counter(r.lease_owner for r in await running(store))
    holders = [i for i in order if held[slots[i].worker_id] > 0]
    slot = (holders or order)[0]
    return slot, held[slots[slot].worker_id]


async def test_sigkill_mid_run_loses_nothing(db_url: str, tmp_path: Path, pycache: Path) -> None:
    """SIGKILL a worker 20 times, at 0.05 to 1.5 s into a batch of 20 runs, with others working.

    Five workers share the database (a killed one is replaced at once); before each kill at least
    two have started, so a live one is always there to take over. Afterwards every run completed,
    each step exactly once, and the runs the killed worker held were recovered within lease + one
    poll (+ slack) of the kill.
    """
    migrate(db_url, pycache)
    store = Store.open(db_url)
    fleet = Fleet(db_url, tmp_path, pycache)
    agent = Agent.from_yaml(AGENTS_DIR / "crash_counter.yaml")
    rng = random.Random(f"sigkill-{db_url.partition(':')[0]}")
    delays = [0.05 + 1.45 * k / (TRIALS - 1) for k in range(TRIALS)]
    rng.shuffle(delays)
    runs: dict[str, str] = {}
    kills: list[Kill] = []
    gated = 0.0
    t_trials = t_drained = 0.0
    started = time.monotonic()
    try:
        await store.workspaces.ensure()
        slots = [fleet.spawn() for _ in range(WORKERS)]
        for p in slots:
            await p.ready()
        for trial, delay in enumerate(delays):
            t_gate = time.monotonic()
            await wait_until(lambda: sum(p.check_ready() for p in slots) >= 2, 60, "two started workers")
            gated += time.monotonic() - t_gate
            created = time.time()
            runs.update(await create_runs(store, agent, [f"t{trial}-r{j}" for j in range(RUNS_PER_TRIAL)]))
            await asyncio.sleep(max(0.0, created + delay - time.time()))
            slot, held = await pick_victim(store, slots, trial)
            victim = slots[slot]
            assert victim.worker_id is not None
            at = time.time()
            victim.kill()
            kills.append(Kill(trial=trial, delay=delay, victim=victim.worker_id, at=at, held=held))
            slots[slot] = fleet.spawn()
        t_trials = time.monotonic() - started
        await wait_finished(store, 120, fleet)
        assert await fleet.stop(slots) == [0] * len(slots), fleet.logs()
        t_drained = time.monotonic() - started
        histories = await load_and_verify(store, runs)
    finally:
        fleet.close()
        await store.close()
    elapsed = time.monotonic() - started

    by_victim = {k.victim: k for k in kills}
    early = 0
    for h in histories:
        steps_done = 0
        for e in h.events:
            if e.type is EventType.STEP_COMPLETED:
                steps_done += 1
            elif e.type is EventType.LEASE_RECOVERED:
                kill = by_victim.get(e.payload["previous_worker"])
                if kill is None or e.created_at < kill.at:
                    # A live worker whose heartbeat came late (a starved process on a loaded
                    # machine) lost this lease; fencing made that safe, the checks above prove it.
                    early += 1
                    continue
                kill.recoveries.append(e.created_at - kill.at)
                kill.progress.append(steps_done)
    delays_s = [d for k in kills for d in k.recoveries]
    hits = [k for k in kills if k.recoveries]
    print(
        f"\n[{db_url.partition(':')[0]}] {len(kills)} kills, {len(hits)} with runs in flight, "
        f"{len(delays_s)} runs recovered after a kill, {early} leases lost by live workers; "
        f"{len(runs)} runs in {elapsed:.1f}s (trials {t_trials:.1f}s, waiting for started workers "
        f"{gated:.1f}s, drained {t_drained:.1f}s); recovery after kill min {min(delays_s, default=0):.3f}s "
        f"median {statistics.median(delays_s or [0]):.3f}s max {max(delays_s, default=0):.3f}s; "
        f"steps done when taken over: {sorted(Counter(p for k in kills for p in k.progress).items())}"
    )
    assert len(kills) == TRIALS
    assert len(hits) >= TRIALS // 2, [(k.trial, k.delay, k.held) for k in kills]
    for k in kills:
        # The runs the killed worker held were taken over within its lease plus one poll.
        assert all(d <= RECOVERY_BOUND for d in k.recoveries), (k.trial, k.delay, k.recoveries)
    assert len({p for k in kills for p in k.progress}) >= 3, "kills all landed at the same step"


# --------------------------------------------------------------------------------- SIGSTOP test


async def stop_outside_a_write(worker: Any, db_url: str) -> float:
    """SIGSTOP ``worker``; on SQLite, at a moment it holds no write transaction; the time it stopped.

    A process frozen inside an SQLite write transaction keeps the file's write lock, and every other
    writer waits for it (SQLite has one writer at a time, whatever the engine does). That is not the
    stall this test is about, so on SQLite the worker is resumed and stopped again until the lock is
    free. PostgreSQL locks rows, not the database, so the first stop is kept.
    """
    for _ in range(50):
        stopped_at = time.time()
        worker.send(signal.SIGSTOP)
        if not db_url.startswith("sqlite"):
            return stopped_at
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=0.3, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return stopped_at
        except sqlite3.OperationalError:
            worker.send(signal.SIGCONT)
            await asyncio.sleep(random.uniform(0.01, 0.05))
        finally:
            conn.close()
    raise AssertionError("the worker held the SQLite write lock at every one of 50 stops")


async def test_stalled_worker_cannot_commit(db_url: str, tmp_path: Path, pycache: Path) -> None:
    """SIGSTOP the worker holding the runs past its lease, let another take over, then SIGCONT it.

    The stalled worker wakes up mid-step with stale leases: each of its runs must be refused (a
    rejected commit, or the heartbeat noticing the lost lease), nothing it does may land, and the
    runs finish once, on the other worker.
    """
    migrate(db_url, pycache)
    store = Store.open(db_url)
    fleet = Fleet(db_url, tmp_path, pycache)
    agent = Agent.from_yaml(AGENTS_DIR / "stall_counter.yaml")
    try:
        await store.workspaces.ensure()
        first, second = fleet.spawn(), fleet.spawn()
        await first.ready()
        await second.ready()
        runs = await create_runs(store, agent, [f"s-r{j}" for j in range(10)])

        async def all_claimed() -> list[RunRecord]:
            while True:
                recs = await running(store)
                if len(recs) == len(runs) and all(r.lease_owner for r in recs):
                    return recs
                await asyncio.sleep(0.02)

        claimed = await asyncio.wait_for(all_claimed(), 30)
        owners = Counter(r.lease_owner for r in claimed)
        stalled, other = (first, second) if owners[first.worker_id] >= owners[second.worker_id] else (second, first)
        stopped_at = await stop_outside_a_write(stalled, db_url)
        await asyncio.sleep(0.2)  # let a commit it had already sent to PostgreSQL finish
        held = {r.run_id: r for r in await running(store) if r.lease_owner == stalled.worker_id}
        assert held, "the stalled worker holds no run"
        assert all(r.state.steps < STEPS for r in held.values()), "runs must be mid-way when the worker stalls"

        async def taken_over() -> bool:
            for run_id in held:
                rec = await store.runs.get(run_id)
                if rec.lease_owner == stalled.worker_id and rec.status is RunStatus.RUNNING:
                    return False
            return True

        deadline = time.monotonic() + 30
        while not await taken_over() or time.time() < stopped_at + 2.5 * LEASE_TTL:
            assert time.monotonic() < deadline, fleet.logs()
            await asyncio.sleep(0.05)
        stalled.send(signal.SIGCONT)

        await wait_finished(store, 60, fleet)
        # Noticed: a commit rejected, a heartbeat finding the lease gone, or (PostgreSQL) its session ended by a
        # peer while it was stopped (store/_stalled.py), so the commit fails as a database error and is not written.
        rejected = re.compile(
            r"run (\S+): (?:commit rejected, lease lost|lease lost to another worker|database error; releasing)"
        )
        await wait_until(
            lambda: set(held) <= set(rejected.findall(stalled.stderr())), 30, "the stalled worker to notice"
        )
        assert await fleet.stop([stalled, other]) == [0, 0], fleet.logs()
        histories = await load_and_verify(store, runs)
    finally:
        fleet.close()
        await store.close()

    for h in histories:
        if h.run_id not in held:
            continue
        # The first claim after the stall is the other worker taking the run over from the
        # stalled one, within its lease plus one poll; the run then finished on the other worker
        # (its steps are unique and replay matches, checked above).
        takeover = next(e for e in claim_events(h.events) if e.created_at >= stopped_at)
        assert takeover.type is EventType.LEASE_RECOVERED, h.run_id
        assert takeover.payload["previous_worker"] == stalled.worker_id, h.run_id
        assert takeover.payload["worker"] == other.worker_id, h.run_id
        assert takeover.payload["epoch"] > held[h.run_id].lease_epoch, h.run_id
        assert takeover.created_at - stopped_at <= RECOVERY_BOUND, (h.run_id, takeover.created_at - stopped_at)
        steps_after = [e.step for e in h.events if e.seq > takeover.seq and e.type is EventType.STEP_COMPLETED]
        assert steps_after == list(range(held[h.run_id].state.steps, STEPS)), (h.run_id, steps_after)
