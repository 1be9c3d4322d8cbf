"""Listing runs as a tree: top-level runs only, by kind, and each run's child-run counts (store and HTTP)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import httpx
import pytest

from agentmaestro.agents import AgentRegistry
from agentmaestro.store.base import Store
from agentmaestro.store.records import NewRun, new_run_id
from tests.fakes.server import LiveServer

pytestmark = pytest.mark.anyio

SPECS: dict[str, dict[str, Any]] = {
    "agent": {"name": "calc", "model": "scripted:x.yaml"},
    "workflow": {"kind": "workflow", "name": "release"},
    "objective": {"kind": "objective", "goal": "ship it"},
    "escalation": {"kind": "objective_escalation", "task": "t1"},
}


async def seed(store: Store) -> dict[str, str]:
    """A workflow with two task runs (one finished), an objective with an escalation, a plain agent run,
    and a run in another workspace."""
    await store.workspaces.ensure("default")
    await store.workspaces.ensure("other")

    async def make(kind: str, parent: str | None = None, workspace: str = "default") -> str:
        run_id = new_run_id()
        spec = SPECS[kind]
        await store.runs.create(
            [
                NewRun(
                    run_id=run_id,
                    workspace_id=workspace,
                    agent_name=str(spec.get("name", kind)),
                    input=kind,
                    spec=spec,
                    policy={},
                    parent_run_id=parent,
                )
            ]
        )
        return run_id

    ids = {"workflow": await make("workflow")}
    ids["task1"] = await make("agent", ids["workflow"])
    ids["task2"] = await make("agent", ids["workflow"])
    ids["objective"] = await make("objective")
    ids["escalation"] = await make("escalation", ids["objective"])
    ids["agent"] = await make("agent")
    ids["elsewhere"] = await make("agent", workspace="other")
    await store.runs.cancel(ids["task1"], workspace_id="default", reason="done with it", by="test")
    return ids


async def test_store_lists_top_level_runs_by_kind_with_child_counts(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        ids = await seed(store)

        async def listed(**kw: Any) -> list[str]:
            return [r.run_id for r in await store.runs.page(workspace_id="default", **kw)]

        everything = await listed()
        assert len(everything) == 6  # unchanged without the new filters
        assert await listed(top_level=True) == [ids["agent"], ids["objective"], ids["workflow"]]
        assert await listed(kind="workflow") == [ids["workflow"]]
        assert await listed(kind="objective") == [ids["objective"]]
        assert await listed(kind="escalation") == [ids["escalation"]]
        assert await listed(kind="agent") == [ids["agent"], ids["task2"], ids["task1"]]
        assert await listed(kind="agent", top_level=True) == [ids["agent"]]
        assert await listed(top_level=True, limit=2) == [ids["agent"], ids["objective"]]
        assert await listed(top_level=True, before=ids["objective"]) == [ids["workflow"]]

        counts = await store.runs.count_children([ids["workflow"], ids["objective"], ids["agent"]])
        assert counts == {ids["workflow"]: (2, 1), ids["objective"]: (1, 0)}
        assert await store.runs.count_children([]) == {}
        assert (await store.runs.get(ids["escalation"])).to_json()["kind"] == "escalation"
    finally:
        await store.close()


def test_http_top_level_kind_and_children(db_url: str) -> None:
    async def prepare() -> tuple[dict[str, str], str]:
        store = Store.open(db_url)
        try:
            ids = await seed(store)
            _row, key = await store.keys.create("default", name="lister", role="viewer")
            return ids, key
        finally:
            await store.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        ids, key = pool.submit(asyncio.run, prepare()).result()
    with (
        LiveServer(db_url, AgentRegistry(), worker=False) as srv,
        httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as c,
    ):

        def runs(**params: Any) -> list[dict[str, Any]]:
            response = c.get("/v1/runs", params=params)
            assert response.status_code == 200, response.text
            body: list[dict[str, Any]] = response.json()["runs"]
            return body

        assert len(runs()) == 6  # existing callers see every run, as before
        top = runs(top_level="true")
        assert [r["run_id"] for r in top] == [ids["agent"], ids["objective"], ids["workflow"]]
        assert [r["kind"] for r in top] == ["agent", "objective", "workflow"]
        assert [r["children"] for r in top] == [None, {"total": 1, "finished": 0}, {"total": 2, "finished": 1}]
        assert [r["run_id"] for r in runs(parent_run_id=ids["workflow"])] == [ids["task2"], ids["task1"]]
        assert [r["run_id"] for r in runs(kind="workflow")] == [ids["workflow"]]
        assert [r["run_id"] for r in runs(kind="agent", top_level="true")] == [ids["agent"]]
        one = c.get(f"/v1/runs/{ids['workflow']}").json()
        assert one["kind"] == "workflow" and one["children"] == {"total": 2, "finished": 1}
        assert c.get(f"/v1/runs/{ids['agent']}").json()["children"] is None

        bad_kind = c.get("/v1/runs", params={"kind": "robot"})
        assert bad_kind.status_code == 422 and "error" in bad_kind.json()
        both = c.get("/v1/runs", params={"top_level": "true", "parent_run_id": ids["workflow"]})
        assert both.status_code == 400
        assert both.json()["error"]["code"] == "invalid"
