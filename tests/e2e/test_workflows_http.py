"""Workflows over the REST API and the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentmaestro.agents import load_agents_dir
from tests.e2e.test_server import auth, make_key, wait_status
from tests.fakes.server import LiveServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "workflows"


@pytest.fixture
def server(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    monkeypatch.setenv("MAESTRO_WORKFLOWS_DIR", str(EXAMPLES))
    keys = {role: make_key(db_url, "default", role) for role in ("viewer", "operator")}
    with LiveServer(db_url, load_agents_dir(EXAMPLES / "agents")) as srv:
        yield srv, keys


def test_workflow_routes(server: tuple[LiveServer, dict[str, str]]) -> None:
    srv, keys = server
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        names = [w["name"] for w in c.get("/v1/workflows", headers=auth(keys["viewer"])).json()]
        assert names == ["design-review", "refine-paragraph", "research-summary", "support-routing"]
        got = c.get("/v1/workflows/support-routing", headers=auth(keys["viewer"])).json()
        assert got["nodes"] == ["classify", "billing", "technical", "reply"]
        missing = c.get("/v1/workflows/nope", headers=auth(keys["viewer"]))
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

        bad = "name: x\nnodes:\n  - id: a\n    agent: ghost\n"
        res = c.post("/v1/workflows/validate", json={"yaml": bad}, headers=auth(keys["viewer"])).json()
        assert res["valid"] is False and res["problems"][0]["line"] == 4
        assert "unknown agent 'ghost'" in res["problems"][0]["message"]

        denied = c.post("/v1/workflows/research-summary/runs", json={"input": "x"}, headers=auth(keys["viewer"]))
        assert denied.status_code == 403
        created = c.post(
            "/v1/workflows/research-summary/runs", json={"input": "queues"}, headers=auth(keys["operator"])
        )
        assert created.status_code == 201, created.text
        run_id = created.json()["run_id"]
        deadline = time.monotonic() + 20
        while (run := c.get(f"/v1/runs/{run_id}", headers=auth(keys["viewer"])).json())["status"] != "COMPLETED":
            assert time.monotonic() < deadline, run
            time.sleep(0.05)
        assert run["output"].startswith("SUMMARY of [Summarise these notes: NOTES on [Research this topic: queues]")
        # restart: a new run of the workflow from the definition the first one started with
        again = c.post(f"/v1/runs/{run_id}/restart", headers=auth(keys["operator"]))
        assert again.status_code == 201, again.text
        assert again.json()["agent"] == "research-summary" and again.json()["run_id"] != run_id
        done = wait_status(c, again.json()["run_id"], keys["viewer"], {"COMPLETED", "FAILED"})
        assert done["status"] == "COMPLETED" and done["output"] == run["output"]


def test_cli_validate_and_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
    env.update(PYTHONPATH=str(ROOT), MAESTRO_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}")
    maestro = str(Path(sys.executable).parent / "maestro")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnodes:\n  - id: a\n    agent: ghost\n", encoding="utf-8")
    res = subprocess.run([maestro, "workflows", "validate", str(bad)], env=env, capture_output=True, text=True)
    assert res.returncode == 1 and f"{bad}:4: nodes[0].agent: unknown agent 'ghost'" in res.stderr
    wf = str(EXAMPLES / "refine.yaml")
    res = subprocess.run(
        [maestro, "workflows", "run", wf, "durable agents", "--wait"], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "COMPLETED workflow=refine-paragraph" in res.stdout and "(iteration 2)" in res.stdout


STORED = """\
name: research-summary
description: A workspace's own version of the folder workflow.
nodes:
  - id: only
    agent: summarizer
    input: "Stored: {{ input }}"
"""


def test_stored_workflows_per_workspace(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAESTRO_WORKFLOWS_DIR", str(EXAMPLES))
    keys = {role: make_key(db_url, "default", role) for role in ("viewer", "operator")}
    other = make_key(db_url, "other", "admin")
    with LiveServer(db_url, load_agents_dir(EXAMPLES / "agents")) as srv, httpx.Client(base_url=srv.url) as c:
        viewer, operator = auth(keys["viewer"]), auth(keys["operator"])
        assert c.post("/v1/workflows", json={"yaml": STORED}, headers=viewer).status_code == 403
        bad = c.post("/v1/workflows", json={"yaml": STORED.replace("summarizer", "ghost")}, headers=operator)
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_workflow"
        assert "<workflow>:5: nodes[0].agent: unknown agent 'ghost'" in bad.json()["error"]["message"]

        saved = c.post("/v1/workflows", json={"yaml": STORED}, headers=operator).json()
        assert (saved["name"], saved["source"], saved["version"], saved["yaml"]) == (
            "research-summary",
            "stored",
            1,
            STORED,
        )
        assert c.post("/v1/workflows", json={"yaml": STORED}, headers=operator).json()["version"] == 2
        mine = {w["name"]: w["source"] for w in c.get("/v1/workflows", headers=viewer).json()}
        theirs = {w["name"]: w["source"] for w in c.get("/v1/workflows", headers=auth(other)).json()}
        assert mine["research-summary"] == "stored" and theirs["research-summary"] == "folder"  # shadowed here only

        run = c.post("/v1/workflows/research-summary/runs", json={"input": "x"}, headers=operator).json()
        done = wait_status(c, run["run_id"], keys["operator"], {"COMPLETED", "FAILED"})
        assert done["status"] == "COMPLETED" and done["output"].startswith("SUMMARY of [Stored: x]")
        # the other workspace runs the folder's version and cannot delete this one
        theirs_run = c.post("/v1/workflows/research-summary/runs", json={"input": "y"}, headers=auth(other)).json()
        assert wait_status(c, theirs_run["run_id"], other, {"COMPLETED"})["output"].startswith("SUMMARY of [Summarise")

        gone = c.delete("/v1/workflows/research-summary", headers=operator)
        assert gone.status_code == 200 and gone.json() == {"name": "research-summary", "version": 2, "deleted": True}
        folder_one = c.delete("/v1/workflows/research-summary", headers=operator)
        assert folder_one.status_code == 409  # what is left is the server's folder workflow
        assert c.delete("/v1/workflows/nope", headers=operator).status_code == 404
        assert c.get("/v1/workflows/research-summary", headers=viewer).json()["source"] == "folder"


def test_generate_over_http_and_cli_through_the_server(
    db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MAESTRO_WORKFLOWS_DIR", str(EXAMPLES))
    monkeypatch.setenv("MAESTRO_MODEL_PLANNER", f"scripted:{EXAMPLES / 'generate' / 'planner.yaml'}")
    keys = {role: make_key(db_url, "default", role) for role in ("viewer", "operator")}
    with LiveServer(db_url, load_agents_dir(EXAMPLES / "agents")) as srv, httpx.Client(base_url=srv.url) as c:
        operator = auth(keys["operator"])
        assert c.post("/v1/workflows/generate", json={"goal": "x"}, headers=auth(keys["viewer"])).status_code == 403
        named = c.post("/v1/workflows/generate", json={"goal": "x", "model": "scripted:/etc/passwd"}, headers=operator)
        assert named.status_code == 400 and named.json()["error"]["code"] == "invalid_model"

        review = c.post("/v1/workflows/generate", json={"goal": "triage tickets"}, headers=operator).json()
        assert review["valid"] and review["name"] == "ticket-triage" and review["saved"] is None
        assert [a["valid"] for a in review["attempts"]] == [False, True]
        first = {p["message"] for p in review["attempts"][0]["problems"]}
        assert any(m.startswith("'classify_ticket' is a tool, not an agent") for m in first), first
        assert "unknown node 'clasify'; nodes: classify, answer" in first
        assert c.get("/v1/workflows/ticket-triage", headers=operator).status_code == 404  # returned, not saved
        admin = auth(make_key(db_url, "default", "admin"))
        [audited] = c.get("/v1/audit", params={"action": "workflow.generate"}, headers=admin).json()["entries"]
        assert audited["target"] == "ticket-triage" and audited["detail"]["attempts"] == 2

        stuck = c.post("/v1/workflows/generate", json={"goal": "triage", "max_repairs": 0}, headers=operator)
        assert stuck.status_code == 422 and stuck.json()["error"]["code"] == "invalid_workflow"
        assert "still invalid after 0 repair(s)" in stuck.json()["error"]["message"]

        if not db_url.startswith("sqlite"):
            return  # the CLI part does not depend on the database: once is enough
        # the CLI through the server: generate --save, list, run --wait, rm
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
        env.update(PYTHONPATH=str(ROOT), MAESTRO_SERVER=srv.url, MAESTRO_API_KEY=keys["operator"])
        script = (
            "set -e; m=$0; $m workflows generate 'triage tickets' --save -o t.yaml; $m workflows list; "
            "$m workflows run ticket-triage 'refund my invoice' --wait; $m workflows rm ticket-triage; "
            "$m workflows rm ticket-triage"
        )
        maestro = str(Path(sys.executable).parent / "maestro")
        res = subprocess.run(["sh", "-c", script, maestro], env=env, capture_output=True, text=True, cwd=tmp_path)
        assert res.returncode == 1, res.stderr  # the second rm: not found
        assert f"saved as version 1 in {srv.url}; written to t.yaml" in res.stderr
        assert (tmp_path / "t.yaml").read_text().startswith("name: ticket-triage")
        assert "ticket-triage" in res.stdout and "stored" in res.stdout
        assert "COMPLETED workflow=ticket-triage" in res.stdout
        assert f"deleted workflow 'ticket-triage' (version 1) from {srv.url}" in res.stdout
        assert res.stderr.strip().endswith("error: workflow 'ticket-triage' not found")
