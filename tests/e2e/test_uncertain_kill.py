"""SIGKILL a worker in the middle of a non-idempotent tool call: the call is never re-run; a human decides."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentmaestro.agents import Agent
from agentmaestro.core.states import EventType, RunStatus
from agentmaestro.store.base import Store
from agentmaestro.store.records import NewRun, new_run_id

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.xdist_group("worker-processes")]

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "tests" / "e2e" / "uncertain_agents" / "charger.yaml"
MAESTRO = str(Path(sys.executable).with_name("maestro"))


def worker(url: str, env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            MAESTRO,
            "--database-url",
            url,
            "--agents-dir",
            str(AGENT.parent),
            "worker",
            "--lease-ttl",
            "1",
            "--heartbeat-interval",
            "0.2",
            "--poll-interval",
            "0.1",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_sigkill_during_non_idempotent_call_escalates_to_a_human(db_url: str, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {**os.environ, "CHARGE_MARKER_DIR": str(markers), "PYTHONPATH": str(ROOT)}
    store = Store.open(db_url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        agent = Agent.from_yaml(AGENT)
        await store.workspaces.ensure()
        [rec] = await store.runs.create(
            [
                NewRun(
                    run_id=new_run_id(),
                    workspace_id="default",
                    agent_name="charger",
                    input="pay",
                    spec=agent.spec(),
                    policy={},
                )
            ]
        )
        first = worker(db_url, env)
        procs.append(first)
        deadline = time.monotonic() + 30
        while not list(markers.iterdir()):
            assert time.monotonic() < deadline, "the tool never started"
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = worker(db_url, {**env, "CHARGE_SLEEP_S": "0"})
        procs.append(second)
        async with asyncio.timeout(30):
            while (await store.runs.get(rec.run_id)).status is not RunStatus.WAITING_FOR_HUMAN:
                await asyncio.sleep(0.1)
        assert len(list(markers.iterdir())) == 1, "the non-idempotent call ran twice"
        [req] = await store.escalations.page()
        assert req["kind"] == "uncertain_tool_call" and req["detail"]["call"]["name"] == "charge_card"
        events = await store.events.read(rec.run_id)
        assert [e.type for e in events].count(EventType.STEP_STARTED) == 1
        assert any(e.type is EventType.LEASE_RECOVERED for e in events)
        # the human says it did go through: the run completes with that answer, still one charge
        await store.escalations.resolve(req["request_id"], action="answer", answer="charged 42 (confirmed)", by="ops")
        async with asyncio.timeout(30):
            while (await store.runs.get(rec.run_id)).status is not RunStatus.COMPLETED:
                await asyncio.sleep(0.1)
        assert (await store.runs.get(rec.run_id)).state.output == "charged: charged 42 (confirmed)"
        assert len(list(markers.iterdir())) == 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        await store.close()


LEDGER_AGENT = ROOT / "tests" / "e2e" / "uncertain_agents" / "ledger.yaml"
LEDGER_RUNS = 10
"""Runs of the ledger agent; each makes three non-idempotent ``ledger_charge`` calls."""
WORKERS = 6
KILLS = 4
"""SIGKILLs, each of a worker in the middle of a charge (started up front: no restart delays the runs)."""
SMALL = ("--concurrency", "4")
"""Runs a worker drives at once: the runs spread over the fleet, and a kill interrupts a few of them."""


async def test_sigkill_during_reconcilable_calls_needs_no_human(db_url: str, tmp_path: Path) -> None:
    """Kill -9 workers again and again mid-call: every uncertain call is reconciled, each charge happens once."""
    ledger = tmp_path / "ledger.txt"
    env = {**os.environ, "LEDGER_FILE": str(ledger), "PYTHONPATH": str(ROOT), "CHARGE_MARKER_DIR": str(tmp_path)}
    store = Store.open(db_url)
    procs: list[subprocess.Popen[bytes]] = []
    rng = random.Random(15)
    try:
        agent = Agent.from_yaml(LEDGER_AGENT)
        await store.workspaces.ensure()
        recs = await store.runs.create(
            [
                NewRun(
                    run_id=new_run_id(),
                    workspace_id="default",
                    agent_name="ledger",
                    input=f"customer {i}",
                    spec=agent.spec(),
                    policy={},
                )
                for i in range(LEDGER_RUNS)
            ]
        )
        run_ids = [r.run_id for r in recs]
        fleet = {p.pid: p for p in (worker(db_url, env, *SMALL) for _ in range(WORKERS))}
        procs.extend(fleet.values())
        kills = 0
        async with asyncio.timeout(180):
            while True:
                runs = [await store.runs.get(r) for r in run_ids]
                if all(r.status.terminal or r.status.waiting for r in runs):
                    break
                # kill -9 a worker that is in the middle of a charge (its lease owner id holds its pid)
                busy = {int(r.lease_owner.split(":")[1]) for r in runs if r.state.in_flight and r.lease_owner}
                victims = sorted(busy & set(fleet))
                if kills < KILLS and victims:
                    await asyncio.sleep(rng.uniform(0.0, 0.3))
                    victim = fleet.pop(rng.choice(victims))
                    victim.send_signal(signal.SIGKILL)
                    victim.wait(10)
                    kills += 1
                await asyncio.sleep(0.05)
        assert [r.status for r in runs] == [RunStatus.COMPLETED] * LEDGER_RUNS
        assert await store.escalations.page(statuses=None) == []
        lines = ledger.read_text().splitlines()
        keys = [line.split(" ")[0] for line in lines]
        expected = {f"maestro-{r}-{step}" for r in run_ids for step in (1, 3, 5)}
        assert sorted(keys) == sorted(expected), "a charge was made twice or not at all"
        decisions: list[str] = []
        for run_id in run_ids:
            events = await store.events.read(run_id)
            decisions += [e.payload["decision"] for e in events if e.type is EventType.STEP_RECONCILED]
            steps = await store.steps.read(run_id)
            assert len(steps) == (await store.runs.get(run_id)).state.steps == 7
        assert "record" in decisions, f"no kill landed after a charge ({kills} kills, decisions {decisions})"
        assert "ask" not in decisions
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        await store.close()
