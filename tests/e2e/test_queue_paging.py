"""The human queue pages with a cursor wherever it is listed: store, API, client, CLI and MCP."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from mcp.types import CallToolResult
from sqlalchemy import create_engine, insert

from agentmaestro.agents import load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from agentmaestro.client import AsyncClient
from agentmaestro.server.mcp.server import build_server
from agentmaestro.service.plane.remote import RemotePlane
from agentmaestro.store.base import Store
from agentmaestro.store.dialects import normalize_url
from agentmaestro.store.records import NewRun, new_run_id
from agentmaestro.store.schema import approvals, human_requests
from tests.fakes.server import LiveServer

MAESTRO = str(Path(sys.executable).parent / "maestro")
N = 7
"""Pending approvals and pending human requests seeded in the workspace (more than a page of 3)."""


def seed(url: str) -> tuple[list[str], list[str], list[str], str]:
    """Two runs with N approvals and N human requests between them, plus one of each in another workspace.

    Returns (approval ids newest first, request ids newest first, run ids, an operator key).
    """

    async def runs_and_key() -> tuple[list[str], str]:
        store = Store.open(url)
        try:
            ids = []
            for ws in ("default", "default", "other"):
                await store.workspaces.ensure(ws)
                new = NewRun(run_id=new_run_id(), workspace_id=ws, agent_name="a", input="x", spec={}, policy={})
                ids += [r.run_id for r in await store.runs.create([new])]
            _row, key = await store.keys.create("default", name="op", role="operator")
            return ids, key
        finally:
            await store.close()

    run_ids, key = asyncio.run(runs_and_key())  # default, default, other
    now = time.time()
    appr_ids = [f"apr_{int(now * 1000) + i:012x}{i:012x}" for i in range(N + 1)]
    req_ids = [f"hum_{int(now * 1000) + i:012x}{i:012x}" for i in range(N + 1)]
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        for i in range(N + 1):
            ws, run = ("other", run_ids[2]) if i == N else ("default", run_ids[i % 2])
            conn.execute(
                insert(approvals).values(
                    approval_id=appr_ids[i],
                    workspace_id=ws,
                    run_id=run,
                    step_index=0,
                    call_id=f"c{i}",
                    tool="wipe",
                    arguments={"i": i},
                    args_hash="h",
                    risk="DANGEROUS",
                    reasons=[],
                    status="pending",
                    requested_at=now + i,
                )
            )
            conn.execute(
                insert(human_requests).values(
                    request_id=req_ids[i],
                    workspace_id=ws,
                    run_id=run,
                    kind="step_failed",
                    question=f"q{i}",
                    detail={},
                    options=["retry"],
                    status="pending",
                    created_at=now + i,
                )
            )
    engine.dispose()
    return appr_ids[:N][::-1], req_ids[:N][::-1], run_ids[:2], key


def walk(fetch: Any, key: str) -> tuple[list[str], list[int]]:
    """Every page of a listing: the ids in order and each page's size."""
    ids: list[str] = []
    sizes: list[int] = []
    cursor = None
    while True:
        page = fetch(cursor)
        sizes.append(len(page[key]))
        ids += [r.get("approval_id") or r["request_id"] for r in page[key]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids, sizes


def test_every_door_pages_the_human_queue(db_url: str, tmp_path: Path) -> None:
    appr_ids, req_ids, run_ids, key = seed(db_url)

    async def store_pages() -> None:
        store = Store.open(db_url)
        try:
            first = await store.approvals.page(limit=3)
            rest = await store.approvals.page(limit=10, before=first[-1]["approval_id"])
            assert [a["approval_id"] for a in first + rest] == appr_ids
            mine = await store.escalations.page(run_ids=[run_ids[1]], limit=10)
            assert [r["request_id"] for r in mine] == req_ids[1::2]  # newest first, only that run's
        finally:
            await store.close()

    asyncio.run(store_pages())

    with LiveServer(db_url, load_agents_dir(builtin_agents_dir())) as srv, httpx.Client(base_url=srv.url) as c:
        auth = {"Authorization": f"Bearer {key}"}

        def http(path: str, **params: Any) -> Any:
            r = c.get(path, params={k: v for k, v in params.items() if v is not None}, headers=auth)
            assert r.status_code == 200, r.text
            return r.json()

        ids, sizes = walk(lambda cur: http("/v1/approvals", limit=3, cursor=cur), "approvals")
        assert ids == appr_ids and sizes == [3, 3, 1]
        ids, sizes = walk(lambda cur: http("/v1/human-requests", limit=3, cursor=cur), "human_requests")
        assert ids == req_ids and sizes == [3, 3, 1]
        by_run = http("/v1/approvals", run_id=run_ids[0], limit=100)
        assert [a["approval_id"] for a in by_run["approvals"]] == appr_ids[0::2] and by_run["next_cursor"] is None
        bad = c.get("/v1/approvals", params={"limit": 0}, headers=auth)
        assert bad.status_code == 422 and "error" in bad.json()

        async def client_and_mcp() -> None:
            async with AsyncClient(srv.url, key) as api:
                page = await api.list_human_requests(limit=4)
                assert len(page["human_requests"]) == 4 and page["next_cursor"] == req_ids[3]
                server = build_server(RemotePlane(api))
                pages: list[list[str]] = []
                cursor = None
                while True:
                    args: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
                    result = await server.call_tool("list_approvals", args)
                    assert isinstance(result, CallToolResult) and result.structured_content is not None
                    body = result.structured_content
                    pages.append([a["approval_id"] for a in body["approvals"]])
                    cursor = body["next_cursor"]
                    if cursor is None:
                        break
                assert [len(p) for p in pages] == [3, 3, 1] and sum(pages, []) == appr_ids

        asyncio.run(client_and_mcp())

        def cli(*args: str) -> Any:
            proc = subprocess.run(
                [MAESTRO, "--server", srv.url, "--api-key", key, *args],
                cwd=tmp_path,
                env={**os.environ, "COLUMNS": "250"},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == 0, proc.stderr
            return proc.stdout

        page = json.loads(cli("--json", "escalations", "list", "--limit", "5"))
        assert [r["request_id"] for r in page["human_requests"]] == req_ids[:5] and page["next"] == req_ids[4]
        table = cli("approvals", "list", "--limit", "3", "--before", appr_ids[2])
        assert [i for i in appr_ids if i in table] == appr_ids[3:6]
        assert table.rstrip().splitlines()[-1] == f"next page: maestro approvals list --limit 3 --before {appr_ids[5]}"
