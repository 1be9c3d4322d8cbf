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
from tests.e2e.test_server import auth, make_key
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
