"""Objectives over the REST API (and the Python client), on SQLite and PostgreSQL: start, read the task
graph, edit dependencies (cycles and started tasks refused with 400), abandon (dependants re-planned),
re-plan, cancel and restart from the last checkpoint."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from agentmaestro import Agent
from agentmaestro.agents import AgentRegistry, load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from agentmaestro.client import Client
from agentmaestro.core.messages import ModelRequest, ModelResponse, Usage
from agentmaestro.errors import MaestroError
from tests.e2e.test_server import auth, make_key
from tests.fakes.server import LiveServer

PLAN = [
    {"id": "approve", "title": "Purge logs", "instructions": "purge", "worker": "janitor"},
    {"id": "quick", "title": "Add numbers", "instructions": "2+3", "worker": "calculator"},
    {"id": "sum", "title": "Sum", "instructions": "2+3", "worker": "calculator", "depends_on": ["approve"]},
    {"id": "report", "title": "Report", "instructions": "2+3", "worker": "calculator", "depends_on": ["sum"]},
    {"id": "extra", "title": "Extra", "instructions": "2+3", "worker": "calculator", "depends_on": ["approve"]},
]
REPLAN = [{"id": "sum2", "title": "Sum again", "instructions": "2+3", "worker": "calculator", "depends_on": ["quick"]}]


class PlanModel:
    """Plans ``PLAN``; re-plans with ``REPLAN``; as strategist, accepts everything."""

    def __init__(self, answer: Callable[[str], str]) -> None:
        self.answer = answer

    @property
    def name(self) -> str:
        return "fn:plan"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        task = next(m.content or "" for m in request.messages if m.role == "user")
        return ModelResponse(content=self.answer(task), usage=Usage(input_tokens=1, output_tokens=1))


def objective_agents() -> AgentRegistry:
    """The built-in demo agents, plus a planner and a strategist."""
    agents = load_agents_dir(builtin_agents_dir())
    planner = PlanModel(lambda t: json.dumps(REPLAN if "Re-plan" in t else PLAN))
    agents.register(Agent(name="planner", model=planner, instructions="Plan."))
    accept = PlanModel(lambda t: json.dumps({"accept": True, "feedback": "ok"}))
    agents.register(Agent(name="strategist", model=accept, instructions="Review."))
    return agents


def wait_for(c: httpx.Client, objective_id: str, key: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = c.get(f"/v1/objectives/{objective_id}", headers=auth(key)).json()
        if check(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def statuses(body: dict[str, Any]) -> dict[str, str]:
    return {t["task_id"]: t["status"] for t in body["tasks"]}


def settled(body: dict[str, Any]) -> bool:
    """Waiting for children and the approval-bound task active: the graph is stable."""
    s = statuses(body)
    return body["status"] == "WAITING_FOR_CHILDREN" and s.get("approve") == "active" and s.get("quick") == "complete"


@pytest.fixture
def server(db_url: str) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    keys = {role: make_key(db_url, "default", role) for role in ("viewer", "operator")}
    keys["other"] = make_key(db_url, "other", "operator")
    with LiveServer(db_url, objective_agents(), rate_limit_per_min=0) as srv:
        yield srv, keys


def test_objective_routes(server: tuple[LiveServer, dict[str, str]]) -> None:
    srv, keys = server
    viewer, op = auth(keys["viewer"]), auth(keys["operator"])
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        assert c.post("/v1/objectives", json={"goal": "x"}, headers=viewer).status_code == 403
        bad = c.post("/v1/objectives", json={"goal": "x", "planner": "ghost"}, headers=op)
        assert bad.status_code == 400 and "unknown agent 'ghost'" in bad.json()["error"]["message"]
        repo = c.post("/v1/objectives", json={"goal": "x", "repo": "/etc"}, headers=op)
        assert repo.status_code == 400 and "MAESTRO_OBJECTIVE_REPOS" in repo.json()["error"]["message"]
        assert c.post("/v1/objectives", json={"goal": ""}, headers=op).status_code == 422

        created = c.post("/v1/objectives", json={"goal": "tidy up and add", "max_concurrent_workers": 2}, headers=op)
        assert created.status_code == 201, created.text
        oid = created.json()["run_id"]
        assert c.get(f"/v1/runs/{oid}", headers=viewer).json()["created_by"] == "key:default-operator"
        body = wait_for(c, oid, keys["viewer"], settled)
        assert statuses(body) == {
            "approve": "active",
            "quick": "complete",
            "sum": "planned",
            "report": "planned",
            "extra": "planned",
        }
        assert [o["run_id"] for o in c.get("/v1/objectives", headers=viewer).json()] == [oid]
        assert c.get(f"/v1/objectives/{oid}", headers=auth(keys["other"])).status_code == 404

        deps = f"/v1/objectives/{oid}/tasks"
        cycle = c.post(f"{deps}/sum/dependencies", json={"add": ["report"]}, headers=op)
        assert cycle.status_code == 400, cycle.text
        assert cycle.json()["error"]["message"] == "dependency cycle: sum -> report -> sum"
        started = c.post(f"{deps}/approve/dependencies", json={"add": ["quick"]}, headers=op)
        assert started.status_code == 400 and "only planned or ready" in started.json()["error"]["message"]
        unknown = c.post(f"{deps}/report/dependencies", json={"add": ["nope"]}, headers=op)
        assert unknown.status_code == 400 and "unknown task 'nope'" in unknown.json()["error"]["message"]
        assert c.post(f"{deps}/report/dependencies", json={}, headers=op).status_code == 400
        assert c.post(f"{deps}/report/dependencies", json={"add": ["x"]}, headers=viewer).status_code == 403

        ok = c.post(f"{deps}/report/dependencies", json={"add": ["quick"]}, headers=op)
        assert ok.status_code == 200, ok.text
        assert {t["task_id"]: t for t in ok.json()["tasks"]}["report"]["depends_on"] == ["sum", "quick"]
        wait_for(c, oid, keys["viewer"], settled)
        ok = c.post(f"{deps}/report/dependencies", json={"remove": ["quick"]}, headers=op)
        assert ok.status_code == 200, ok.text

        # Abandon the task everything waits for: its dependants are re-planned into sum2 (after quick).
        wait_for(c, oid, keys["viewer"], settled)
        ab = c.post(f"{deps}/approve/abandon", json={"reason": "not today"}, headers=op)
        assert ab.status_code == 200, ab.text
        assert statuses(ab.json())["approve"] == "abandoned"
        done = wait_for(c, oid, keys["viewer"], lambda b: b["status"] == "COMPLETED")
        assert statuses(done) == {
            "approve": "abandoned",
            "quick": "complete",
            "sum": "abandoned",
            "report": "abandoned",
            "extra": "abandoned",
            "sum2": "complete",
        }
        again = c.post(f"{deps}/sum2/abandon", json={}, headers=op)
        assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"


def test_replan_cancel_and_restart_with_the_client(server: tuple[LiveServer, dict[str, str]]) -> None:
    srv, keys = server
    with Client(srv.url, api_key=keys["operator"]) as client:
        obj = client.create_objective("tidy up", max_concurrent_workers=2)
        oid = obj["run_id"]
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            wait_for(c, oid, keys["viewer"], settled)
            body = client.replan_objective(oid, reason="simpler")
            assert body["status"] in ("RUNNING", "WAITING_FOR_CHILDREN")
            body = wait_for(c, oid, keys["viewer"], lambda b: statuses(b).get("sum2") == "complete")
            assert statuses(body)["sum"] == "abandoned" and statuses(body)["approve"] == "active"
            with pytest.raises(MaestroError, match="only planned or ready"):
                client.change_task_dependencies(oid, "approve", add=["quick"])
            client.cancel_run(oid, reason="stop")
            wait_for(c, oid, keys["viewer"], lambda b: b["status"] == "CANCELLED")
            restarted = client.restart_objective(oid)
            assert restarted["status"] in ("PENDING", "RUNNING", "WAITING_FOR_CHILDREN")
            # From the checkpoint: complete tasks stay complete; the cancelled task's attempt is retried.
            body = wait_for(
                c,
                oid,
                keys["viewer"],
                lambda b: b["status"] == "WAITING_FOR_CHILDREN" and statuses(b)["approve"] == "active",
            )
            assert statuses(body)["quick"] == "complete" and statuses(body)["sum2"] == "complete"
            approve = {t["task_id"]: t for t in body["tasks"]}["approve"]
            assert len(approve["attempts"]) == 2 and approve["attempts"][0]["status"] == "failed"
            assert client.get_objective(oid)["run_id"] == oid


def test_cli_through_the_server(server: tuple[LiveServer, dict[str, str]], db_url: str) -> None:
    """`maestro --server URL objectives ...` goes through the REST API; errors are one line on stderr."""
    if not db_url.startswith("sqlite"):
        pytest.skip("the CLI talks HTTP here; the database side runs on both in test_objective_routes")
    import os
    import subprocess
    import sys
    from pathlib import Path

    srv, keys = server
    maestro = str(Path(sys.executable).parent / "maestro")
    env = {**os.environ, "MAESTRO_SERVER": srv.url, "MAESTRO_API_KEY": keys["operator"]}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([maestro, *args], capture_output=True, text=True, env=env, timeout=60)

    started = cli("--json", "objective", "tidy up", "--max-workers", "2")
    assert started.returncode == 0, started.stderr
    oid = json.loads(started.stdout)["run_id"]
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        wait_for(c, oid, keys["viewer"], settled)
    shown = cli("objectives", "show", oid)
    assert shown.returncode == 0 and "approve" in shown.stdout and "active" in shown.stdout
    cycle = cli("objectives", "deps", oid, "sum", "--add", "report")
    assert cycle.returncode == 1
    assert cycle.stderr.strip() == "error: dependency cycle: sum -> report -> sum"
    listed = cli("--json", "objectives", "list")
    assert [o["run_id"] for o in json.loads(listed.stdout)] == [oid]
