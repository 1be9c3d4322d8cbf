"""``maestro runs list --top-level / --kind``: the runs tree's filters from the CLI, as in the API and dashboard."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agentmaestro.store.base import Store
from agentmaestro.store.records import NewRun, new_run_id
from tests.e2e.test_cli import Maestro, ok


def seed(db_url: str) -> tuple[str, str, str]:
    """A workflow run with one sub-run, and an agent run of its own: (workflow, node, agent) run ids."""

    async def go() -> tuple[str, str, str]:
        store = Store.open(db_url)
        try:
            await store.workspaces.ensure()

            def new(agent: str, spec: dict[str, object], parent: str | None = None) -> NewRun:
                return NewRun(
                    run_id=new_run_id(),
                    workspace_id="default",
                    agent_name=agent,
                    input="x",
                    spec=spec,
                    policy={},
                    parent_run_id=parent,
                )

            wf = new("triage", {"kind": "workflow", "name": "triage", "workflow": {}})
            solo = new("calculator", {})
            await store.runs.create([wf, solo])
            node = new("calculator", {}, parent=wf.run_id)
            await store.runs.create([node])
            return wf.run_id, node.run_id, solo.run_id
        finally:
            await store.close()

    return asyncio.run(go())


def listed(m: Maestro, *args: str) -> set[str]:
    r = ok(m("--json", "runs", "list", *args))
    return {run["run_id"] for run in json.loads(r.out)["runs"]}


def test_runs_list_filters_top_level_runs_and_kinds(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'maestro.db'}"
    m = Maestro(tmp_path, db)
    ok(m("db", "upgrade"))
    wf, node, solo = seed(db)

    assert listed(m) == {wf, node, solo}
    assert listed(m, "--top-level") == {wf, solo}
    assert listed(m, "--kind", "workflow") == {wf}
    assert listed(m, "--kind", "agent") == {node, solo}
    assert listed(m, "--top-level", "--kind", "agent") == {solo}

    bad = m("runs", "list", "--kind", "robot")
    assert bad.code != 0 and "Traceback" not in bad.err
    expected = "error: unknown kind 'robot'; expected one of agent, workflow, objective, escalation"
    assert bad.err.strip().splitlines() == [expected]
