"""A small USD budget shared by 20 concurrent sub-runs in two ``maestro worker`` processes is never exceeded.

Reservations ride in the workers' group-committed step transactions (``Commit.reserve``); this checks
that they stay correct when many runs of one run tree reserve on the same ledger at once from two
processes, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentmaestro.core.policy import StrictPolicy
from agentmaestro.core.states import EventType, RunStatus
from agentmaestro.store.base import Store
from agentmaestro.store.records import NewRun, new_run_id
from tests.e2e.test_crash_recovery import WorkerProcess
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.xdist_group("worker-processes")]

CHILDREN = 20
BUDGET_USD = 0.02
"""About 24 calls of 50 prompt and 500 completion tokens of gpt-4.1-mini (0.00082 USD each): far fewer
than the 20 sub-runs would make without a limit."""


def write_agents(folder: Path) -> Path:
    agents = folder / "agents"
    agents.mkdir()
    (agents / "boss.yaml").write_text(
        "name: boss\nmodel: openai:gpt-4.1-mini\nmax_output_tokens: 500\ndelegates: [helper]\n"
        "instructions: Split the work.\n",
        encoding="utf-8",
    )
    (agents / "helper.yaml").write_text(
        "name: helper\nmodel: openai:gpt-4.1-mini\nmax_output_tokens: 500\n"
        "tools:\n  - agentmaestro.demo.tools:add\ninstructions: Add forever.\npolicy:\n  max_steps: 200\n",
        encoding="utf-8",
    )
    return agents


async def test_twenty_sub_runs_in_two_processes_never_overspend(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeOpenAIServer(model="gpt-4.1-mini") as fake:
        calls = [("delegate", {"agent": "helper", "task": f"part {i}"}) for i in range(CHILDREN)]
        fake.reply_tool_calls(calls, usage=(50, 500))
        for _ in range(400):  # every sub-run adds until its budget runs out
            fake.reply_tool_calls([("add", {"a": 1, "b": 2})], usage=(50, 500))
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        agents = write_agents(tmp_path)
        store = Store.open(db_url)
        workers: list[WorkerProcess] = []
        try:
            await store.workspaces.ensure()
            from agentmaestro.agents import load_agents_dir

            boss = load_agents_dir(agents).get("boss")
            [root] = await store.runs.create(
                [
                    NewRun(
                        run_id=new_run_id(),
                        workspace_id="default",
                        agent_name="boss",
                        input="go",
                        spec=boss.spec(),
                        policy=StrictPolicy(max_cost_usd=BUDGET_USD).to_json(),
                    )
                ]
            )
            pycache = tmp_path / "pycache"
            for i in range(2):
                # long leases: a lease lost under load keeps its call's reservation (the call may have been
                # paid for), which would make the "nothing left reserved" check below depend on timing
                w = WorkerProcess(
                    db_url,
                    tmp_path / f"worker{i}.log",
                    pycache,
                    agents_dir=agents,
                    lease_ttl=60,
                    heartbeat=5,
                    concurrency=CHILDREN // 2,  # each process holds at most half of the sub-runs at once
                )
                workers.append(w)
            ids = {await w.ready() for w in workers}

            deadline = asyncio.get_running_loop().time() + 60

            async def settled() -> bool:  # every sub-run ended and the root no longer runs
                kids = await store.runs.page(parent_run_id=root.run_id, limit=100)
                rec = await store.runs.get(root.run_id)
                done = len(kids) == CHILDREN and all(c.status.terminal for c in kids)
                return done and (rec.status.terminal or rec.status.waiting)

            while not await settled():
                if asyncio.get_running_loop().time() > deadline:
                    kids = await store.runs.page(parent_run_id=root.run_id, limit=100)
                    raise AssertionError(
                        f"the run tree did not settle in 60 s: root {(await store.runs.get(root.run_id)).status}, "
                        f"children {[(c.status.value, c.state.steps, c.state.error) for c in kids][:3]}, "
                        f"replies left {fake.pending}\n" + "\n".join(w.stderr()[-3000:] for w in workers)
                    )
                await asyncio.sleep(0.2)

            children = await store.runs.page(parent_run_id=root.run_id, limit=100)
            assert len(children) == CHILDREN and all(c.status.terminal for c in children)
            root_rec = await store.runs.get(root.run_id)
            ledger = await store.budgets.ledger(f"run:{root.run_id}")
            assert ledger is not None
            spent = root_rec.state.cost_usd + sum(c.state.cost_usd for c in children)
            assert ledger["spent_usd"] == pytest.approx(spent, abs=1e-9)
            assert spent <= BUDGET_USD + 1e-9, f"spent {spent} of a {BUDGET_USD} budget"
            assert ledger["reserved_usd"] == pytest.approx(0.0, abs=1e-9), f"reservations left behind: {ledger}"
            assert spent > BUDGET_USD * 0.5, f"only {spent} spent: the budget was not the limit"
            # the budget, not something else, stopped the sub-runs: each ended on a budget violation
            for c in children:
                last = (await store.events.read(c.run_id))[-1]
                assert c.status is RunStatus.FAILED, (c.run_id, c.status, c.state.error)
                assert last.type is EventType.POLICY_VIOLATION and last.payload["limit"] == "budget_usd"
            # both processes worked on the tree at once
            starters = set()
            for c in children:
                started = next(e for e in await store.events.read(c.run_id) if e.type is EventType.RUN_STARTED)
                starters.add(started.payload["worker"])
            assert starters == ids, f"sub-runs started by {starters}, workers {ids}"
        finally:
            for w in workers:
                w.close()
            await store.close()
