"""One use case, one implementation: every door leaves the same audit entry (issue 17, the service layer).

The same scenario goes through each door: the REST API, the CLI on the database, the CLI with
``--server``, MCP (``/mcp`` of a live server) and the SDK. Start the demo ``janitor`` (its DANGEROUS
``purge_logs`` waits for a decision) and reject its call; fork that run at its first event and approve
the fork's call; start another run and cancel it; create an API key (the doors that offer it). A live
server's worker executes every run. Each door's audit entries must be the same, but for who acted
and the ids: same actions, same targets, same details.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from agentmaestro.agents import load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from agentmaestro.store.base import Store
from tests.e2e.test_server import make_key
from tests.fakes.server import LiveServer

MAESTRO = Path(sys.executable).parent / "maestro"
_PYCACHE = Path(tempfile.gettempdir()) / "agentmaestro-test-pycache"
DOORS = ["rest", "cli", "cli-server", "mcp", "sdk"]


class Door(Protocol):
    """What each door is asked to do."""

    actor: str

    def start(self, agent: str, task: str) -> str: ...
    def cancel(self, run_id: str, reason: str) -> None: ...
    def fork(self, run_id: str, at_seq: int) -> str: ...
    def decide(self, approval_id: str, approve: bool, reason: str) -> None: ...
    def create_key(self, name: str) -> bool: ...


class Rest:
    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        self.actor = "key:default-admin"

    def _post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self.http.post(path, json=body)
        assert r.status_code < 300, r.text
        data: dict[str, Any] = r.json()
        return data

    def start(self, agent: str, task: str) -> str:
        return str(self._post("/v1/runs", {"agent": agent, "input": task})["run_id"])

    def cancel(self, run_id: str, reason: str) -> None:
        self._post(f"/v1/runs/{run_id}/cancel", {"reason": reason})

    def fork(self, run_id: str, at_seq: int) -> str:
        return str(self._post(f"/v1/runs/{run_id}/fork", {"at_seq": at_seq})["run_id"])

    def decide(self, approval_id: str, approve: bool, reason: str) -> None:
        self._post(f"/v1/approvals/{approval_id}", {"decision": "approve" if approve else "reject", "reason": reason})

    def create_key(self, name: str) -> bool:
        self._post("/v1/keys", {"name": name, "role": "viewer"})
        return True


class Cli:
    """The ``maestro`` executable, on the database or (``server``) through the server."""

    def __init__(self, cwd: Path, db_url: str, server: tuple[str, str] | None) -> None:
        self.cwd = cwd
        self.prefix = ["--server", server[0], "--api-key", server[1]] if server else ["--database-url", db_url]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
        env["MAESTRO_HOME"] = os.environ["MAESTRO_HOME"]  # the same keyring as the server's audit chain
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(_PYCACHE)
        self.env = env
        self.actor = "key:default-admin" if server else f"cli:{_login()}"

    def __call__(self, *args: str) -> Any:
        proc = subprocess.run(
            [str(MAESTRO), *self.prefix, "--json", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"maestro {args}: {proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout)

    def start(self, agent: str, task: str) -> str:
        return str(self("run", agent, task)["run_id"])

    def cancel(self, run_id: str, reason: str) -> None:
        self("runs", "cancel", run_id, "--reason", reason)

    def fork(self, run_id: str, at_seq: int) -> str:
        return str(self("runs", "fork", run_id, "--at", str(at_seq))["run_id"])

    def decide(self, approval_id: str, approve: bool, reason: str) -> None:
        self("approvals", "approve" if approve else "reject", approval_id, "--reason", reason)

    def create_key(self, name: str) -> bool:
        self("keys", "create", "--name", name, "--role", "viewer")
        return True


class Mcp:
    """The MCP tools at ``/mcp`` of the live server (it offers no fork and no keys)."""

    def __init__(self, url: str, key: str) -> None:
        self.url = f"{url}/mcp"
        self.key = key
        self.actor = "key:default-admin"

    def _call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        from tests.e2e.test_mcp_server import call, http

        async def go() -> dict[str, Any]:
            async with http(self.url, self.key) as client:
                result: dict[str, Any] = await call(client, tool, **arguments)
                return result

        return asyncio.run(go())

    def start(self, agent: str, task: str) -> str:
        return str(self._call("start_run", target=agent, input=task, kind="agent")["run_id"])

    def cancel(self, run_id: str, reason: str) -> None:
        self._call("cancel_run", run_id=run_id, reason=reason)

    def fork(self, run_id: str, at_seq: int) -> str:
        raise NotImplementedError

    def decide(self, approval_id: str, approve: bool, reason: str) -> None:
        self._call(
            "resolve_approval", approval_id=approval_id, decision="approve" if approve else "reject", reason=reason
        )

    def create_key(self, name: str) -> bool:
        return False


class Sdk:
    """An Orchestrator without a worker of its own (the server's executes the runs)."""

    def __init__(self, db_url: str) -> None:
        from agentmaestro import Orchestrator

        self.orch = Orchestrator(db_url, worker=False, actor="sdk:tester")
        self.agents = load_agents_dir(builtin_agents_dir())
        self.actor = "sdk:tester"

    def start(self, agent: str, task: str) -> str:
        return self.orch.start(self.agents.get(agent), task)

    def cancel(self, run_id: str, reason: str) -> None:
        self.orch.cancel(run_id, reason=reason)

    def fork(self, run_id: str, at_seq: int) -> str:
        return self.orch.fork(run_id, at_seq=at_seq).run_id

    def decide(self, approval_id: str, approve: bool, reason: str) -> None:
        if approve:
            self.orch.approve(approval_id, reason=reason)
        else:
            self.orch.reject(approval_id, reason=reason)

    def create_key(self, name: str) -> bool:
        return False


def _login() -> str:
    from agentmaestro.actor import local_actor

    return local_actor("cli").removeprefix("cli:")


@contextlib.contextmanager
def door_for(name: str, db_url: str, url: str, key: str, cwd: Path) -> Iterator[Door]:
    if name == "rest":
        rest = Rest(url, key)
        try:
            yield rest
        finally:
            rest.http.close()
    elif name == "cli":
        yield Cli(cwd, db_url, None)
    elif name == "cli-server":
        yield Cli(cwd, db_url, (url, key))
    elif name == "mcp":
        yield Mcp(url, key)
    else:
        sdk = Sdk(db_url)
        try:
            yield sdk
        finally:
            sdk.orch.close()


def _wait(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _audit(db_url: str) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        store = Store.open(db_url)
        try:
            return await store.audit.page("default", limit=1000)
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.mark.parametrize("door_name", DOORS)
def test_every_door_leaves_the_same_audit_entries(door_name: str, db_url: str, tmp_path: Path) -> None:
    key = make_key(db_url, "default", "admin")  # named default-admin
    agents = load_agents_dir(builtin_agents_dir())
    with LiveServer(db_url, agents, rate_limit_per_min=0) as srv, httpx.Client(base_url=srv.url, timeout=30) as api:
        headers = {"Authorization": f"Bearer {key}"}

        def run(run_id: str) -> dict[str, Any]:
            data: dict[str, Any] = api.get(f"/v1/runs/{run_id}", headers=headers).json()
            return data

        def pending(run_id: str) -> str | None:
            page = api.get("/v1/approvals", params={"run_id": run_id}, headers=headers).json()
            return page["approvals"][0]["approval_id"] if page["approvals"] else None

        with door_for(door_name, db_url, srv.url, key, tmp_path) as door:
            first = door.start("janitor", "tidy")
            rejected = _wait(lambda: pending(first), "the first run's approval")
            door.decide(rejected, False, "not now")
            _wait(lambda: run(first)["status"] == "COMPLETED", "the first run to complete")
            forked = door.fork(first, 1) if door_name != "mcp" else None
            approved = None
            if forked is not None:
                approved = _wait(lambda: pending(forked), "the fork's approval")
                door.decide(approved, True, "go ahead")
            second = door.start("janitor", "tidy again")
            # cancelled once it waits: a cancel asked for while a step runs is lost if the step then waits
            # for a decision (the run stays WAITING_FOR_APPROVAL with cancel_requested); see the final report
            _wait(lambda: pending(second), "the second run's approval")
            door.cancel(second, "enough")
            _wait(lambda: run(second)["status"] == "CANCELLED", "the second run to be cancelled")
            keyed = door.create_key("made-by-a-door")

    entries = [e for e in _audit(db_url) if e["actor"] == door.actor and not e["action"].startswith("auth.")]
    got = [(e["action"], e["target"], e["detail"]) for e in entries]
    want: list[tuple[str, str | None, dict[str, Any]]] = [
        ("run.start", first, {"agent": "janitor", "kind": "agent"}),
        ("approval.reject", rejected, {"run_id": first, "tool": "purge_logs", "reason": "not now", "edited": False}),
    ]
    if forked is not None:
        want.append(("run.fork", forked, {"source_run_id": first, "at_seq": 1}))
        want.append(
            (
                "approval.approve",
                approved,
                {"run_id": forked, "tool": "purge_logs", "reason": "go ahead", "edited": False},
            )
        )
    want += [
        ("run.start", second, {"agent": "janitor", "kind": "agent"}),
        ("run.cancel", second, {"reason": "enough"}),
    ]
    if keyed:
        [key_entry] = [g for g in got if g[0] == "key.create"]
        want.append(("key.create", key_entry[1], {"name": "made-by-a-door", "role": "viewer"}))
    assert got == want
