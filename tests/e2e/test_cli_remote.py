"""The real ``maestro`` executable with ``--server`` against a live API server, on SQLite and PostgreSQL.

Each maestro process costs about a second of start-up, so independent commands run in parallel waves.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentmaestro.agents import load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from agentmaestro.store.base import Store
from tests.fakes.server import LiveServer, free_port

MAESTRO = Path(sys.executable).parent / "maestro"
_RUN_ID = re.compile(r"\b(run_[0-9a-f]{24})\b")
_PYCACHE = Path(tempfile.gettempdir()) / "agentmaestro-test-pycache"


@dataclass(frozen=True)
class Result:
    """What a maestro process did."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"maestro {' '.join(self.args)} -> {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"

    def json(self) -> Any:
        return json.loads(self.out)

    def run_id(self) -> str:
        m = _RUN_ID.search(self.out)
        assert m, str(self)
        return m.group(1)


class Remote:
    """Runs ``maestro --server URL --api-key KEY ...`` with no database configured at all."""

    def __init__(self, cwd: Path, url: str, key: str) -> None:
        self.cwd = cwd
        self.url = url
        self.key = key
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
        self.env.update(
            MAESTRO_HOME=str(cwd / ".maestro-home"),
            COLUMNS="200",
            PYTHONPYCACHEPREFIX=str(_PYCACHE),
            MAESTRO_DATABASE_URL="postgresql://nobody@127.0.0.1:1/never",  # proves nothing touches a database
        )

    def __call__(
        self, *args: str, key: str | None = None, env: dict[str, str] | None = None, ok: bool = True
    ) -> Result:
        api_key = self.key if key is None else key
        prefix = [] if env and "MAESTRO_SERVER" in env else ["--server", self.url, "--api-key", api_key]
        proc = subprocess.run(
            [str(MAESTRO), *prefix, *args],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )
        res = Result(tuple(args), proc.returncode, proc.stdout, proc.stderr)
        if ok:
            assert res.code == 0, str(res)
        return res

    def wave(self, *commands: Sequence[str] | Callable[[], Result], ok: bool = True) -> list[Result]:
        """Run commands (argument lists, or callables for other keys and environments) in parallel."""

        def one(cmd: Sequence[str] | Callable[[], Result]) -> Result:
            return cmd() if callable(cmd) else self(*cmd, ok=ok)

        with ThreadPoolExecutor(len(commands)) as pool:
            return list(pool.map(one, commands))


def make_keys(url: str) -> dict[str, str]:
    async def go() -> dict[str, str]:
        store = Store.open(url)
        try:
            await store.workspaces.ensure("default")
            out = {}
            for role in ("viewer", "operator", "admin"):
                _row, out[role] = await store.keys.create("default", name=f"cli-{role}", role=role)
            return out
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture
def remote(db_url: str, tmp_path: Path) -> Iterator[tuple[Remote, dict[str, str]]]:
    keys = make_keys(db_url)
    with LiveServer(db_url, load_agents_dir(builtin_agents_dir())) as srv:
        yield Remote(tmp_path, srv.url, keys["operator"]), keys


def test_cli_through_a_server(remote: tuple[Remote, dict[str, str]], tmp_path: Path) -> None:
    m, keys = remote
    waited, followed, held, queued = m.wave(
        ["run", "calculator", "What is (2 + 3) * 4?", "--wait"],
        ["run", "calculator", "What is (2 + 3) * 4?", "--follow"],
        ["run", "janitor", "tidy", "--wait"],
        ["--json", "run", "wordsmith", "durable agents", "--max-steps", "9"],
    )
    run_id = waited.run_id()
    assert f"{run_id} COMPLETED" in waited.out and "output: (2 + 3) * 4 = 20" in waited.out
    assert "RUN_COMPLETED" in followed.out and "STEP_COMPLETED" in followed.out and "COMPLETED steps=" in followed.out
    assert "WAITING_FOR_APPROVAL" in held.out and "maestro approvals list" in held.out
    assert queued.json()["status"] == "PENDING" and queued.json()["policy"]["max_steps"] == 9

    listing, as_json, show, events, replay, approvals, agents, agent = m.wave(
        ["runs", "list", "--limit", "10"],
        ["--json", "runs", "list", "--status", "completed", "--agent", "calculator"],
        ["runs", "show", run_id, "--steps"],
        ["runs", "events", run_id],
        ["runs", "replay", run_id],
        ["--json", "approvals", "list"],
        ["agents", "list"],
        ["agents", "show", "calculator"],
    )
    assert run_id in listing.out and held.run_id() in listing.out
    completed = as_json.json()["runs"]
    assert run_id in {r["run_id"] for r in completed} and {r["status"] for r in completed} == {"COMPLETED"}
    assert "status: COMPLETED" in show.out and "TOOL_CALL" in show.out and "MODEL_CALL" in show.out
    lines = events.out.splitlines()
    assert lines[0].split()[:2] == ["1", "RUN_CREATED"] and "RUN_COMPLETED" in lines[-1]
    assert "replay to the stored snapshot (status COMPLETED)" in replay.out
    [appr] = approvals.json()["approvals"]
    assert appr["run_id"] == held.run_id() and appr["tool"] == "purge_logs"
    assert "calculator" in agents.out and "janitor" in agents.out
    assert agent.json()["model"] == "scripted:calculator"

    # decisions through the API: recorded as the API key, the server's worker continues the run
    approved = m("approvals", "approve", appr["approval_id"], "--args", '{"older_than_days": 90}', "--wait")
    assert "approved by key:cli-operator" in approved.out and "COMPLETED" in approved.out
    assert "older than 90 days" in approved.out
    again = m("approvals", "approve", appr["approval_id"], ok=False)
    assert again.code == 1 and again.err.startswith("error: ") and "already approved" in again.err
    assert again.err.count("\n") == 1

    # follow, fork, cancel and resume
    forked, second = m.wave(["runs", "fork", run_id, "--at", "4", "--wait"], ["run", "janitor", "again", "--wait"])
    assert "forked from" in forked.out and "COMPLETED" in forked.out
    second_id = second.run_id()
    cancel, follow_done = m.wave(["runs", "cancel", second_id], ["runs", "events", run_id, "--follow", "--after", "3"])
    assert f"{second_id} CANCELLED" in cancel.out
    assert follow_done.out.split()[0] == "4" and "RUN_COMPLETED" in follow_done.out
    resumed = m("runs", "resume", second_id, "--wait")
    assert f"{second_id} WAITING_FOR_APPROVAL" in resumed.out
    escalations = m("--json", "escalations", "list")
    assert escalations.json() == {"human_requests": [], "next": None}

    # roles, keys, gate rules and the audit log with an admin key
    viewer_cancel = m("runs", "cancel", second_id, key=keys["viewer"], ok=False)
    assert viewer_cancel.code == 1 and "needs the operator role" in viewer_cancel.err
    refused = m("--json", "keys", "create", "--name", "ci", "--role", "viewer", ok=False)
    assert refused.code == 1 and "needs the admin role" in refused.err  # an operator key
    created, keys_list, gate, audit, workspaces = m.wave(
        lambda: m("--json", "keys", "create", "--name", "ci", "--role", "viewer", key=keys["admin"]),
        lambda: m("keys", "list", key=keys["admin"]),
        lambda: m("gate", "set", "--deny-tool", "purge_logs", key=keys["admin"]),
        lambda: m("audit", "verify", key=keys["admin"]),
        ["workspaces", "list"],
    )
    assert created.json()["key"].startswith("am_") and "cli-admin" in keys_list.out
    assert json.loads(gate.out)["deny_tools"] == ["purge_logs"]
    assert "default: ok" in audit.out and "default" in workspaces.out
    with_new_key = m("--json", "runs", "list", key=created.json()["key"])
    assert with_new_key.json()["runs"]

    # environment variables instead of options
    via_env = m("--json", "runs", "show", run_id, env={"MAESTRO_SERVER": m.url, "MAESTRO_API_KEY": keys["viewer"]})
    assert via_env.json()["run_id"] == run_id and "steps_detail" not in via_env.json()


def test_cli_remote_errors_are_one_line(remote: tuple[Remote, dict[str, str]], tmp_path: Path) -> None:
    m, _keys = remote
    (tmp_path / "mine.yaml").write_text("name: mine\nmodel: scripted:calculator\n")
    wrong, missing, nowhere, bad_url, worker, serve, upgrade, demo, workspace, yaml_agent, no_run = m.wave(
        lambda: m("runs", "list", key="am_wrong_secret", ok=False),
        lambda: m("runs", "list", key="", ok=False),
        lambda: m("runs", "list", env={"MAESTRO_SERVER": f"http://127.0.0.1:{free_port()}"}, ok=False),
        lambda: m("runs", "list", env={"MAESTRO_SERVER": "ftp://example"}, ok=False),
        ["worker"],
        ["serve"],
        ["db", "upgrade"],
        ["demo"],
        ["workspaces", "create", "team"],
        ["run", str(tmp_path / "mine.yaml"), "x"],
        ["runs", "show", "run_nope"],
        ok=False,
    )
    for res, code, text in (
        (wrong, 1, "error: invalid or revoked API key"),
        (missing, 1, "error: missing API key"),
        (nowhere, 1, "error: cannot reach http://127.0.0.1:"),
        (worker, 2, "error: `maestro worker` works on a database, not through a server"),
        (serve, 2, "error: `maestro serve` works on a database"),
        (upgrade, 2, "error: `maestro db upgrade` works on a database"),
        (demo, 2, "error: `maestro demo` works on a database"),
        (workspace, 2, "error: `maestro workspaces create` works on a database"),
        (yaml_agent, 1, "is a file; with --server, runs use the agents the server knows"),
        (no_run, 1, "error: run 'run_nope' not found"),
        (bad_url, 1, "error: --server must be an http:// or https:// URL"),
    ):
        assert res.code == code, str(res)
        assert res.err.count("\n") == 1 and text in res.err and "Traceback" not in res.err, str(res)
        assert res.out == "", str(res)
