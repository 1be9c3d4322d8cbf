"""``maestro objective GOAL`` and ``maestro objectives list|show|deps|abandon|replan|restart``.

Locally (the default) the commands work on the database; with ``--server`` they go through the REST API
(``/v1/objectives``). ``maestro objective GOAL --wait`` executes the objective in this process (locally) or
follows it (on a server) until it ends or needs a person (``maestro escalations``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from agentmaestro.cli._common import _Ctx, _ctx, _print_json, app, out, pickup
from agentmaestro.core.states import RunStatus
from agentmaestro.service import objectives as service
from agentmaestro.service.objectives import ObjectiveConfig
from agentmaestro.store.base import Store

T = TypeVar("T")

objectives_app = typer.Typer(
    help="Objectives: goals planned into task graphs (docs/objectives.md).", no_args_is_help=True
)
app.add_typer(objectives_app, name="objectives")

_WAITING = (RunStatus.WAITING_FOR_HUMAN.value, RunStatus.WAITING_FOR_APPROVAL.value)


def _local(c: _Ctx, fn: Callable[[Store], Awaitable[T]]) -> T:
    async def go() -> T:
        store = c.open_store()
        try:
            await store.workspaces.ensure(c.workspace)
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _remote(c: _Ctx, fn: Callable[[Any], Awaitable[T]]) -> T:
    from agentmaestro.client import AsyncClient
    from agentmaestro.service.plane.remote import tls_context

    async def go() -> T:
        assert c.server is not None
        async with AsyncClient(c.server, c.api_key, verify=tls_context(*c.tls)) as client:
            return await fn(client)

    return asyncio.run(go())


def _print(c: _Ctx, obj: dict[str, Any]) -> None:
    if c.as_json:
        _print_json(obj)
        return
    out.print(f"{obj['run_id']} {obj['status']} objective: {obj['goal']}", markup=False)
    if obj["tasks"]:
        table = Table("task", "status", "worker", "after", "attempts", "title")
        for t in obj["tasks"]:
            table.add_row(
                t["task_id"], t["status"], t["worker"], ", ".join(t["depends_on"]), str(len(t["attempts"])), t["title"]
            )
        out.print(table)
    for t in obj["tasks"]:
        if t["status"] == "waiting_human" and t.get("escalation"):
            esc = t["escalation"]
            out.print(
                f"{t['task_id']} waits for a person ({esc['kind']}): see `maestro escalations list`", markup=False
            )
    if obj.get("output"):
        out.print(f"output: {obj['output']}", markup=False)
    if obj.get("error"):
        out.print(f"error: {obj['error']}", markup=False)


def _needs_person(obj: dict[str, Any], children: list[str]) -> bool:
    """Waiting, and every child run in flight waits for a person."""
    return (
        obj["status"] == RunStatus.WAITING_FOR_CHILDREN.value
        and bool(children)
        and all(s in _WAITING for s in children)
    )


async def drive_local(store: Store, c: _Ctx, run_id: str) -> dict[str, Any]:
    """Execute an objective with an in-process worker until it ends or needs a person."""
    from agentmaestro.engine.worker import Worker, WorkerConfig

    worker = Worker(store, c.agents(), config=WorkerConfig(poll_interval_s=0.1))
    task = asyncio.ensure_future(worker.run())
    try:
        while True:
            obj = await service.get_objective(store, run_id)
            if RunStatus(obj["status"]).terminal or task.done():
                break
            kids = await store.runs.page(workspace_id=None, parent_run_id=run_id, limit=1000)
            if _needs_person(obj, [k.status.value for k in kids if not k.status.terminal]):
                break
            await store.events.wait(None, 0.2)
    finally:
        worker.stop()
        await task
    return await service.get_objective(store, run_id)


async def _follow_remote(client: Any, run_id: str) -> dict[str, Any]:
    while True:
        obj: dict[str, Any] = await client.get_objective(run_id)
        if RunStatus(obj["status"]).terminal:
            return obj
        page = await client.list_runs(parent_run_id=run_id, limit=200)
        runs = page["runs"] if isinstance(page, dict) else page
        if _needs_person(obj, [r["status"] for r in runs if not RunStatus(r["status"]).terminal]):
            return obj
        await asyncio.sleep(0.5)


def _exit_code(obj: dict[str, Any], wait: bool) -> None:
    if wait and obj["status"] in (RunStatus.FAILED.value, RunStatus.CANCELLED.value):
        raise typer.Exit(1)


@app.command("objective")
def objective(
    ctx: typer.Context,
    goal: Annotated[str, typer.Argument(help="What to achieve.")],
    repo: Annotated[
        Path | None, typer.Option("--repo", help="A git repository: each task works in its own worktree and branch.")
    ] = None,
    planner: Annotated[str, typer.Option("--planner", help="The planning agent.")] = "planner",
    strategist: Annotated[str, typer.Option("--strategist", help="The reviewing (QA) agent.")] = "strategist",
    workers: Annotated[
        list[str] | None, typer.Option("--worker", help="A worker type the planner may use (repeatable).")
    ] = None,
    max_workers: Annotated[int, typer.Option("--max-workers", min=1, max=100, help="Worker runs at once.")] = 5,
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1, max=20, help="Attempts per task.")] = 4,
    wait: Annotated[
        bool, typer.Option("--wait", help="Execute (or follow) it until it ends or needs a person.")
    ] = False,
) -> None:
    """Hand a goal to a planner agent; its tasks run as child runs, reviewed by a strategist agent."""
    c = _ctx(ctx)
    if c.server:
        body = {
            "planner": planner,
            "strategist": strategist,
            "workers": workers,
            "max_concurrent_workers": max_workers,
            "max_attempts": max_attempts,
            "repo": str(repo) if repo else None,
        }

        async def remote(client: Any) -> dict[str, Any]:
            obj: dict[str, Any] = await client.create_objective(goal, **body)
            return await _follow_remote(client, obj["run_id"]) if wait else obj

        obj = _remote(c, remote)
    else:
        agents = c.agents()
        for name in [planner, strategist, *(workers or [])]:
            agents.get(name)  # ConfigError naming the known agents
        config = ObjectiveConfig(
            goal=goal,
            planner=planner,
            strategist=strategist,
            workers=tuple(workers or ()),
            max_concurrent_workers=max_workers,
            max_attempts=max_attempts,
            repo=str(repo) if repo else None,
        )

        async def local(store: Store) -> dict[str, Any]:
            if wait:  # executed here: refuse a model this process cannot use before anything is stored
                from agentmaestro.agents import check_usable

                await check_usable(agents.get(n) for n in [planner, strategist, *(workers or [])])
            rec = await service.start_objective(store, config, c.actor())
            if wait:
                return await drive_local(store, c, rec.run_id)
            alive.extend(await store.workers.alive())
            return await service.get_objective(store, rec.run_id)

        alive: list[dict[str, Any]] = []
        obj = _local(c, local)
    _print(c, obj)
    if not wait and not c.as_json:
        out.print(pickup(c, None if c.server else alive), markup=False)
    _exit_code(obj, wait)


@objectives_app.command("list")
def objectives_list(ctx: typer.Context) -> None:
    """The workspace's objectives, newest first."""
    c = _ctx(ctx)
    if c.server:
        rows: list[dict[str, Any]] = _remote(c, lambda client: client.list_objectives())
    else:

        async def go(store: Store) -> list[dict[str, Any]]:
            recs = await store.runs.page(workspace_id=c.workspace, agent="objective", limit=50)
            return [await service.get_objective(store, r.run_id, workspace_id=c.workspace) for r in recs]

        rows = _local(c, go)
    if c.as_json:
        _print_json(rows)
        return
    table = Table("objective", "status", "tasks", "goal")
    for o in rows:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(o["counts"].items()))
        table.add_row(o["run_id"], o["status"], counts, o["goal"][:80])
    out.print(table)


@objectives_app.command("show")
def objectives_show(ctx: typer.Context, objective_id: str) -> None:
    """One objective and its task graph."""
    c = _ctx(ctx)
    if c.server:
        obj: dict[str, Any] = _remote(c, lambda client: client.get_objective(objective_id))
    else:
        obj = _local(c, lambda store: service.get_objective(store, objective_id, workspace_id=c.workspace))
    _print(c, obj)


@objectives_app.command("deps")
def objectives_deps(
    ctx: typer.Context,
    objective_id: str,
    task_id: str,
    add: Annotated[list[str] | None, typer.Option("--add", help="A task to depend on (repeatable).")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="A dependency to drop (repeatable).")] = None,
) -> None:
    """Add or remove dependencies of a task that has not started (a cycle is refused)."""
    c = _ctx(ctx)
    adds, removes = list(add or ()), list(remove or ())
    if c.server:
        obj: dict[str, Any] = _remote(
            c, lambda client: client.change_task_dependencies(objective_id, task_id, add=adds, remove=removes)
        )
    else:
        cmd = service.ChangeDependencies(run_id=objective_id, task_id=task_id, add=adds, remove=removes)
        obj = _local(c, lambda store: service.change_dependencies(store, cmd, c.actor()))
    _print(c, obj)


@objectives_app.command("abandon")
def objectives_abandon(
    ctx: typer.Context,
    objective_id: str,
    task_id: str,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (given to the planner).")] = None,
) -> None:
    """Abandon a task (its run is cancelled); the planner re-plans the tasks that depended on it."""
    c = _ctx(ctx)
    if c.server:
        obj: dict[str, Any] = _remote(c, lambda client: client.abandon_task(objective_id, task_id, reason=reason))
    else:
        abandon = service.AbandonTask(run_id=objective_id, task_id=task_id, reason=reason)
        obj = _local(c, lambda store: service.abandon_task(store, abandon, c.actor()))
    _print(c, obj)


@objectives_app.command("replan")
def objectives_replan(
    ctx: typer.Context,
    objective_id: str,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (given to the planner).")] = None,
) -> None:
    """Ask the planner to re-plan every task that has not started."""
    c = _ctx(ctx)
    if c.server:
        obj: dict[str, Any] = _remote(c, lambda client: client.replan_objective(objective_id, reason=reason))
    else:
        replan = service.Replan(run_id=objective_id, reason=reason)
        obj = _local(c, lambda store: service.replan(store, replan, c.actor()))
    _print(c, obj)


@objectives_app.command("restart")
def objectives_restart(
    ctx: typer.Context,
    objective_id: str,
    wait: Annotated[bool, typer.Option("--wait", help="Execute it here until it ends or needs a person.")] = False,
) -> None:
    """Continue a FAILED or CANCELLED objective from its last checkpoint: complete tasks stay complete."""
    c = _ctx(ctx)
    if c.server:

        async def remote(client: Any) -> dict[str, Any]:
            obj: dict[str, Any] = await client.restart_objective(objective_id)
            return await _follow_remote(client, objective_id) if wait else obj

        obj = _remote(c, remote)
    else:

        async def local(store: Store) -> dict[str, Any]:
            restarted = await service.restart_objective(store, service.RestartObjective(run_id=objective_id), c.actor())
            if wait:
                return await drive_local(store, c, objective_id)
            return restarted

        obj = _local(c, local)
    _print(c, obj)
    _exit_code(obj, wait)


@objectives_app.command("cleanup")
def objectives_cleanup(ctx: typer.Context, objective_id: str) -> None:
    """Remove the git worktrees and task branches of an objective that ended (e.g. cancelled while waiting)."""
    c = _ctx(ctx)
    c.local_only("objectives cleanup")
    out_ = _local(c, lambda store: service.cleanup_worktrees(store, objective_id, workspace_id=c.workspace))
    if c.as_json:
        _print_json(out_)
    else:
        out.print(f"{objective_id}: worktrees and task branches removed from {out_['repo']}", markup=False)
