"""Live event streams over a real HTTP server, on SQLite and PostgreSQL.

* 100 concurrent SSE and WebSocket subscribers to a busy run, a third of them dropping the connection
  mid-stream and resuming (``Last-Event-ID`` / ``after``): every subscriber's seq list equals the
  stored log (0 missed, 0 duplicated, 0 out of order).
* Events committed by a ``maestro worker`` in another process reach subscribers of an API-only server
  (on PostgreSQL through NOTIFY, within a second of their commit; on SQLite by polling).
* The workspace firehose: two runs, every event once, per-run order, resumable from a cursor.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from agentmaestro.agents import AgentRegistry, load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from agentmaestro.server import streams
from agentmaestro.store.base import Store
from tests.fakes.server import LiveServer

MAESTRO = Path(sys.executable).parent / "maestro"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def make_key(url: str, workspace: str, role: str) -> str:
    async def go() -> str:
        store = Store.open(url)
        try:
            await store.workspaces.ensure(workspace)
            _row, key = await store.keys.create(workspace, name=f"{workspace}-{role}", role=role)
            return key
        finally:
            await store.close()

    return asyncio.run(go())


def write_busy_agent(folder: Path, *, turns: int = 26, latency_s: float = 0.07, name: str = "busy") -> Path:
    """An agent whose scripted model makes ``turns`` tool calls with ``latency_s`` each: 2 events per turn."""
    script = {
        "latency_s": latency_s,
        "turns": [{"tool_calls": [{"name": "add", "arguments": {"a": i, "b": 1}}]} for i in range(turns)]
        + [{"content": "counted to {{last_tool_result}}"}],
    }
    folder.mkdir(parents=True, exist_ok=True)
    script_path = folder / f"{name}.script.json"
    script_path.write_text(json.dumps(script))
    (folder / f"{name}.yaml").write_text(
        f"name: {name}\nmodel: scripted:{script_path}\ninstructions: Count.\n"
        "tools:\n  - agentmaestro.demo.tools:add\npolicy:\n  max_steps: 200\n  timeout_s: 120\n"
    )
    return folder


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    folder = write_busy_agent(tmp_path / "agents")
    write_busy_agent(folder, turns=8, latency_s=0.08, name="brisk")
    return folder


def registry(folder: Path) -> AgentRegistry:
    reg = load_agents_dir(builtin_agents_dir())
    for a in load_agents_dir(folder):
        reg.register(a)
    return reg


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ws_url(srv: LiveServer) -> str:
    return srv.url.replace("http://", "ws://", 1)


async def stored_log(client: httpx.AsyncClient, run_id: str) -> list[int]:
    seqs: list[int] = []
    while True:
        page = (await client.get(f"/v1/runs/{run_id}/events", params={"after": seqs[-1] if seqs else 0})).json()
        if not page["events"]:
            return seqs
        seqs += [e["seq"] for e in page["events"]]


async def wait_status(
    client: httpx.AsyncClient, run_id: str, statuses: set[str], timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = (await client.get(f"/v1/runs/{run_id}")).json()
        if body["status"] in statuses:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {statuses}")


# ----------------------------------------------------------------------------------- subscribers


async def sse_subscriber(
    client: httpx.AsyncClient, run_id: str, drops: list[int], received: list[tuple[int, float]] | None = None
) -> list[int]:
    """Follow a run over SSE; after each count in ``drops`` events, hang up and resume with Last-Event-ID."""
    seqs: list[int] = []
    drops = sorted(drops)
    while True:
        headers = {"Accept": "text/event-stream"}
        if seqs:
            headers["Last-Event-ID"] = str(seqs[-1])
        async with client.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            fields: dict[str, str] = {}
            hung_up = False
            async for line in resp.aiter_lines():
                if line:
                    if not line.startswith(":"):
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
                    continue
                if fields.get("event") == "end":
                    assert json.loads(fields["data"])["last_seq"] == (seqs[-1] if seqs else 0)
                    return seqs
                if "id" in fields:
                    data = json.loads(fields["data"])
                    assert data["seq"] == int(fields["id"]) and data["type"] == fields["event"]
                    seqs.append(data["seq"])
                    if received is not None:
                        received.append((data["seq"], time.time()))
                fields = {}
                if drops and len(seqs) >= drops[0]:
                    drops.pop(0)
                    hung_up = True
                    break
            assert hung_up, "the stream ended without an end message"


# max_queue=None: a subscriber that hangs up with messages still queued must not wait for the close
# timeout (with a full queue the client stops reading and never sees the server's close reply).


async def ws_subscriber(
    srv: LiveServer, key: str, run_id: str, drops: list[int], *, query_key: bool = False
) -> list[int]:
    """Follow a run over its WebSocket; after each count in ``drops`` events, hang up and resume with after=."""
    seqs: list[int] = []
    drops = sorted(drops)
    while True:
        after = seqs[-1] if seqs else 0
        url = f"{ws_url(srv)}/v1/runs/{run_id}/ws?after={after}"
        headers = {} if query_key else auth(key)
        if query_key:
            url += f"&key={key}"
        async with connect(url, additional_headers=headers, open_timeout=20, max_queue=None) as ws:
            async for raw in ws:
                msg = json.loads(raw)
                if msg["kind"] == "end":
                    assert msg["last_seq"] == (seqs[-1] if seqs else 0)
                    return seqs
                assert msg["kind"] == "event"
                seqs.append(msg["event"]["seq"])
                if drops and len(seqs) >= drops[0]:
                    drops.pop(0)
                    break
            else:
                raise AssertionError("the socket closed without an end message")


# ----------------------------------------------------------------------------------------- tests


def test_100_subscribers_with_disconnects_get_every_event_once(db_url: str, agents_dir: Path) -> None:
    key = make_key(db_url, "default", "operator")
    rng = random.Random(5)

    async def scenario(srv: LiveServer) -> None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(base_url=srv.url, headers=auth(key), timeout=60, limits=limits) as client:
            created = await client.post("/v1/runs", json={"agent": "busy", "input": "count"})
            assert created.status_code == 201, created.text
            run_id = created.json()["run_id"]
            jobs = []
            kinds = []
            for i in range(100):
                drops = sorted(rng.sample(range(2, 50), k=(i % 3))) if i % 3 else []
                if i % 2:
                    jobs.append(sse_subscriber(client, run_id, drops))
                    kinds.append(f"{i}:sse{drops}")
                else:
                    jobs.append(ws_subscriber(srv, key, run_id, drops, query_key=i % 4 == 0))
                    kinds.append(f"{i}:ws{drops}")
            started = time.monotonic()
            results = await asyncio.wait_for(asyncio.gather(*jobs), timeout=60)
            elapsed = time.monotonic() - started
            run = (await client.get(f"/v1/runs/{run_id}")).json()
            assert run["status"] == "COMPLETED", run
            expected = await stored_log(client, run_id)
            assert expected == list(range(1, run["last_seq"] + 1)) and len(expected) >= 50
            bad = {kinds[i]: got for i, got in enumerate(results) if got != expected}
            assert not bad, f"{len(bad)} subscribers diverged from the log of {len(expected)} events: {bad}"
            assert elapsed < 30, elapsed

    with LiveServer(db_url, registry(agents_dir)) as srv:
        asyncio.run(scenario(srv))


def test_stream_edges_auth_keepalive_and_follow_modes(
    db_url: str, agents_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = {role: make_key(db_url, "default", role) for role in ("viewer", "operator")}
    other = make_key(db_url, "other", "admin")
    monkeypatch.setattr(streams, "KEEPALIVE_S", 0.3)

    async def close_code(url: str, headers: dict[str, str] | None = None) -> int:
        async with connect(url, additional_headers=headers or {}, open_timeout=20) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
        assert info.value.rcvd is not None
        return info.value.rcvd.code

    async def scenario(srv: LiveServer) -> None:
        base = ws_url(srv)
        async with httpx.AsyncClient(base_url=srv.url, headers=auth(keys["viewer"]), timeout=30) as client:
            run_id = (
                await client.post(
                    "/v1/runs", json={"agent": "janitor", "input": "tidy"}, headers=auth(keys["operator"])
                )
            ).json()["run_id"]
            await wait_status(client, run_id, {"WAITING_FOR_APPROVAL"})
            # WebSocket auth: 1008 without a key or with a wrong one; another workspace's run is not found
            assert await close_code(f"{base}/v1/runs/{run_id}/ws") == 1008
            assert await close_code(f"{base}/v1/runs/{run_id}/ws?key=am_nope_nope") == 1008
            assert await close_code(f"{base}/v1/ws", auth("am_nope_nope")) == 1008
            assert await close_code(f"{base}/v1/runs/{run_id}/ws", auth(other)) == 4404
            assert await close_code(f"{base}/v1/ws?after=garbage", auth(keys["viewer"])) == 4400
            # SSE: a waiting run keeps the stream open with keep-alives; follow=waiting ends it there
            heard: list[str] = []
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1.5):
                    async with client.stream(
                        "GET", f"/v1/runs/{run_id}/events", headers={"Accept": "text/event-stream"}
                    ) as resp:
                        async for line in resp.aiter_lines():
                            heard.append(line)
            assert ": keep-alive" in heard and any(line.startswith("id: ") for line in heard)
            lines: list[str] = []
            async with client.stream(
                "GET",
                f"/v1/runs/{run_id}/events",
                params={"follow": "waiting", "after": 3},
                headers={"Accept": "text/event-stream"},
            ) as resp:
                lines = [line async for line in resp.aiter_lines()]
            ids = [int(x[4:]) for x in lines if x.startswith("id: ")]
            assert ids[0] == 4 and "event: end" in lines
            end = json.loads(lines[lines.index("event: end") + 1].removeprefix("data: "))
            assert end["status"] == "WAITING_FOR_APPROVAL" and end["last_seq"] == ids[-1]
            bad = await client.get(
                f"/v1/runs/{run_id}/events", headers={"Accept": "text/event-stream", "Last-Event-ID": "x"}
            )
            assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
            missing = await client.get("/v1/runs/run_nope/events", headers={"Accept": "text/event-stream"})
            assert missing.status_code == 404
            unauth = await client.get(
                f"/v1/runs/{run_id}/events", headers={"Accept": "text/event-stream", "Authorization": ""}
            )
            assert unauth.status_code == 401
            # the JSON form is unchanged
            page = (await client.get(f"/v1/runs/{run_id}/events", params={"limit": 2})).json()
            assert [e["seq"] for e in page["events"]] == [1, 2] and page["next_after"] == 2
            # a completed run's stream replays and ends at once; follow=always stays open
            [appr] = (await client.get("/v1/approvals")).json()["approvals"]
            await client.post(
                f"/v1/approvals/{appr['approval_id']}", json={"decision": "reject"}, headers=auth(keys["operator"])
            )
            done = await wait_status(client, run_id, TERMINAL)
            async with connect(f"{base}/v1/runs/{run_id}/ws", additional_headers=auth(keys["viewer"])) as ws:
                msgs = [json.loads(m) async for m in ws]
            assert [m["event"]["seq"] for m in msgs[:-1]] == list(range(1, done["last_seq"] + 1))
            assert msgs[-1] == {"kind": "end", "run_id": run_id, "status": done["status"], "last_seq": done["last_seq"]}
            async with connect(
                f"{base}/v1/runs/{run_id}/ws?follow=always&after={done['last_seq'] - 1}",
                additional_headers=auth(keys["viewer"]),
            ) as ws:
                assert json.loads(await ws.recv())["event"]["seq"] == done["last_seq"]
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.5)

    with LiveServer(db_url, registry(agents_dir)) as srv:
        asyncio.run(scenario(srv))


@pytest.fixture
def api_only(db_url: str, agents_dir: Path, tmp_path: Path) -> Iterator[tuple[LiveServer, str, subprocess.Popen[str]]]:
    """An API server without a worker, and a ``maestro worker`` process on the same database."""
    key = make_key(db_url, "default", "operator")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
    proc = subprocess.Popen(
        [str(MAESTRO), "--database-url", db_url, "--agents-dir", str(agents_dir), "worker", "--poll-interval", "0.05"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with LiveServer(db_url, registry(agents_dir), worker=False) as srv:
            yield srv, key, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_events_from_a_separate_worker_process_arrive(
    api_only: tuple[LiveServer, str, subprocess.Popen[str]], db_url: str
) -> None:
    srv, key, proc = api_only

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=srv.url, headers=auth(key), timeout=60) as client:
            run_id = (await client.post("/v1/runs", json={"agent": "busy", "input": "count"})).json()["run_id"]
            received: list[tuple[int, float]] = []
            sse, ws = await asyncio.wait_for(
                asyncio.gather(sse_subscriber(client, run_id, [], received), ws_subscriber(srv, key, run_id, [5])),
                timeout=60,
            )
            run = (await client.get(f"/v1/runs/{run_id}")).json()
            assert run["status"] == "COMPLETED" and run["lease_owner"] is None
            events = (await client.get(f"/v1/runs/{run_id}/events", params={"limit": 1000})).json()["events"]
            expected = [e["seq"] for e in events]
            assert sse == expected and ws == expected and len(expected) >= 50
            claimed = next(e for e in events if e["type"] == "RUN_STARTED")
            assert claimed["payload"].get("worker", "").split(":")[1] == str(proc.pid), claimed
            # latency from commit (created_at, written by the worker just before its commit) to arrival
            committed = {e["seq"]: e["created_at"] for e in events}
            lags = sorted(t - committed[s] for s, t in received if s > 2)
            worst = lags[-1]
            if db_url.startswith("postgresql"):
                assert worst < 1.0, f"NOTIFY latency too high: worst {worst:.3f}s, median {lags[len(lags) // 2]:.3f}s"
            else:
                assert worst < 3.0, worst

    asyncio.run(scenario())


def test_firehose_two_runs_every_event_once_and_resumable(db_url: str, agents_dir: Path) -> None:
    key = make_key(db_url, "default", "operator")
    other = make_key(db_url, "other", "admin")

    async def collect(
        srv: LiveServer, cursor: str | None, *, stop_after: int | None, done: set[str], run_ids: set[str]
    ) -> tuple[list[dict[str, Any]], str]:
        """Firehose messages until ``stop_after`` events, or until every run in ``run_ids`` ended."""
        url = f"{ws_url(srv)}/v1/ws" + (f"?after={cursor}" if cursor else "")
        got: list[dict[str, Any]] = []
        async with connect(url, additional_headers=auth(key), open_timeout=20, max_queue=None) as ws:
            hello = json.loads(await ws.recv())
            assert hello["kind"] == "hello" and hello["workspace_id"] == "default"
            last = hello["cursor"]
            async for raw in ws:
                msg = json.loads(raw)
                got.append(msg["event"])
                last = msg["cursor"]
                if msg["event"]["type"] in ("RUN_COMPLETED", "RUN_FAILED", "RUN_CANCELLED"):
                    done.add(msg["event"]["run_id"])
                if stop_after is not None and len(got) >= stop_after:
                    break
                if run_ids and run_ids <= done:
                    break
        return got, last

    async def scenario(srv: LiveServer) -> None:
        async with httpx.AsyncClient(base_url=srv.url, headers=auth(key), timeout=30) as client:
            url = f"{ws_url(srv)}/v1/ws"
            async with connect(url, additional_headers=auth(key)) as ws:
                start_cursor = json.loads(await ws.recv())["cursor"]
            run_ids = set()
            for agent in ("brisk", "brisk"):
                run_ids.add((await client.post("/v1/runs", json={"agent": agent, "input": "go"})).json()["run_id"])
            # another workspace's run must never show up
            await client.post("/v1/runs", json={"agent": "brisk", "input": "x"}, headers=auth(other))
            done: set[str] = set()
            seen: list[dict[str, Any]] = []
            cursor: str | None = start_cursor
            hops = 0
            while not run_ids <= done:
                got, cursor = await asyncio.wait_for(
                    collect(srv, cursor, stop_after=7, done=done, run_ids=run_ids), timeout=30
                )
                seen += got
                hops += 1
            assert hops >= 3
            # every event of both runs exactly once, each run in seq order
            logs = {r: await stored_log(client, r) for r in run_ids}
            assert {e["run_id"] for e in seen} == run_ids
            for r, log in logs.items():
                assert [e["seq"] for e in seen if e["run_id"] == r] == log
            assert len(seen) == sum(len(v) for v in logs.values())
            first_done = min(i for i, e in enumerate(seen) if e["type"] == "RUN_COMPLETED")
            assert len({e["run_id"] for e in seen[:first_done]}) == 2  # the runs interleave
            # resuming from the very first cursor replays the same events, once each
            again, _ = await asyncio.wait_for(
                collect(srv, start_cursor, stop_after=len(seen), done=set(), run_ids=set()), timeout=30
            )
            assert sorted((e["run_id"], e["seq"]) for e in again) == sorted((e["run_id"], e["seq"]) for e in seen)
            for r, log in logs.items():
                assert [e["seq"] for e in again if e["run_id"] == r] == log
            # the final cursor: nothing new until something happens
            async with connect(f"{url}?after={cursor}", additional_headers=auth(key)) as ws:
                json.loads(await ws.recv())
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.6)

    with LiveServer(db_url, registry(agents_dir)) as srv:
        asyncio.run(scenario(srv))
