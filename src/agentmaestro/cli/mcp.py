"""``maestro mcp``: serve AgentMaestro to an MCP client (Claude Desktop, an IDE, an agent) over stdio.

On a database (the default) the tools act on ``--workspace`` as its administrator, and an in-process
worker runs the runs they start (``--no-worker`` leaves them to ``maestro worker`` processes). With
``--server URL --api-key KEY`` they go through the server's REST API instead: the key's workspace and
role apply and the server's workers run the runs. See docs/mcp.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agentmaestro.cli._common import _Ctx, _ctx, app
from agentmaestro.errors import ConfigError
from agentmaestro.service.plane.remote import RemotePlane

if TYPE_CHECKING:
    from agentmaestro.service.plane import Plane


@app.command("mcp")
def mcp_cmd(
    ctx: typer.Context,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Run the started runs in this process (database only).")
    ] = True,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="In-process worker concurrency.")] = 10,
    workflows_dir: Annotated[
        Path | None,
        typer.Option("--workflows-dir", envvar="MAESTRO_WORKFLOWS_DIR", help="Folder of workflow YAML files."),
    ] = None,
) -> None:
    """Serve the control plane over MCP (stdio): runs, events and approvals as tools (docs/mcp.md)."""
    try:
        from agentmaestro.server.mcp.server import build_server
    except ImportError:
        raise ConfigError("maestro mcp needs the official MCP SDK: pip install 'agentmaestro[mcp]'") from None
    c = _ctx(ctx)

    async def go() -> None:
        async with _plane(c, worker=worker, concurrency=concurrency, workflows_dir=workflows_dir) as plane:
            await build_server(plane).run_stdio_async()

    asyncio.run(go())


@contextlib.asynccontextmanager
async def _plane(c: _Ctx, *, worker: bool, concurrency: int, workflows_dir: Path | None) -> AsyncIterator[Plane]:
    """The control plane the tools act on, for as long as the MCP session lasts."""
    if c.server:
        plane = c.plane()
        assert isinstance(plane, RemotePlane)
        try:
            await plane.client.list_agents()  # a wrong key or an unreachable server: one line on stderr, exit 1
            yield plane
        finally:
            await plane.close()
        return

    from agentmaestro.cli.workflows import discover
    from agentmaestro.engine.worker import Worker, WorkerConfig
    from agentmaestro.service.plane.local import LocalPlane

    agents = c.agents()
    workflows = discover(agents, workflows_dir)
    store = c.open_store()
    task: asyncio.Task[None] | None = None
    w: Worker | None = None
    try:
        await store.workspaces.ensure(c.workspace)
        if worker:
            w = Worker(store, agents, workflows=workflows, config=WorkerConfig(concurrency=concurrency))
            task = asyncio.create_task(w.run())
        yield LocalPlane(lambda: store, c.actor(), lambda: agents, lambda: workflows, owns_store=False)
    finally:
        if w is not None and task is not None:
            w.stop()
            await task
        await store.close()
