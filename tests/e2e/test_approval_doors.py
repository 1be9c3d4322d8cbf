"""One decision, one execution through the API's doors: restart and fork of an approved run ask again.

The janitor's DANGEROUS ``purge_logs`` is approved once and runs once; a restart of that run and a
fork at the grant each wait for a decision of their own and make no call of the tool until then.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentmaestro.agents import load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from tests.e2e.test_server import auth, make_key, wait_status
from tests.fakes.server import LiveServer

WAITING = {"WAITING_FOR_APPROVAL", "COMPLETED", "FAILED"}


@pytest.fixture
def live(db_url: str) -> Iterator[tuple[LiveServer, str]]:
    key = make_key(db_url, "default", "operator")
    with LiveServer(db_url, load_agents_dir(builtin_agents_dir()), rate_limit_per_min=0) as srv:
        yield srv, key


def events(c: httpx.Client, run_id: str, key: str) -> list[dict[str, Any]]:
    page = c.get(f"/v1/runs/{run_id}/events", params={"limit": 1000}, headers=auth(key)).json()
    return list(page["events"])


def tool_calls(c: httpx.Client, run_id: str, key: str) -> int:
    """Tool calls the run made (completed tool steps in its log)."""
    return sum(
        1 for e in events(c, run_id, key) if e["type"] == "STEP_COMPLETED" and e["payload"]["kind"] == "TOOL_CALL"
    )


def test_restart_and_fork_of_an_approved_run_ask_again(live: tuple[LiveServer, str]) -> None:
    srv, key = live
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        run_id = c.post("/v1/runs", json={"agent": "janitor", "input": "tidy"}, headers=auth(key)).json()["run_id"]
        wait_status(c, run_id, key, {"WAITING_FOR_APPROVAL"})
        [approval] = c.get("/v1/approvals", headers=auth(key)).json()["approvals"]
        r = c.post(f"/v1/approvals/{approval['approval_id']}", json={"decision": "approve"}, headers=auth(key))
        assert r.status_code == 200, r.text
        assert wait_status(c, run_id, key, {"COMPLETED", "FAILED"})["status"] == "COMPLETED"
        assert tool_calls(c, run_id, key) == 1
        granted = next(e["seq"] for e in events(c, run_id, key) if e["type"] == "APPROVAL_GRANTED")

        restarted = c.post(f"/v1/runs/{run_id}/restart", headers=auth(key)).json()["run_id"]
        forked = c.post(f"/v1/runs/{run_id}/fork", json={"at_seq": granted}, headers=auth(key)).json()["run_id"]
        for new in (restarted, forked):
            assert wait_status(c, new, key, WAITING)["status"] == "WAITING_FOR_APPROVAL"
        pending = c.get("/v1/approvals", headers=auth(key)).json()["approvals"]
        assert sorted(a["run_id"] for a in pending) == sorted([restarted, forked])
        assert approval["approval_id"] not in {a["approval_id"] for a in pending}
        # the fork's copied history shows the old grant; it made no call of its own
        assert tool_calls(c, forked, key) == 0 and tool_calls(c, restarted, key) == 0
