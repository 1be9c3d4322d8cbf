"""``maestro workflows list|validate|run|schema|save|rm|generate``: declarative workflows (docs/workflows.md).

Workflows come from ``--workflows-dir`` (or ``MAESTRO_WORKFLOWS_DIR``, default ``./workflows`` when it
exists), whose ``agents/`` subfolder holds the agents its workflows use, and from the workspace's stored
workflows (``save``/``rm``; a stored workflow shadows a folder one of the same name in its workspace).
``run`` and ``validate`` also take a file path. ``list``, ``run``, ``save``, ``rm`` and ``generate`` work
on the database or, with ``--server``, through the server's API.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from agentmaestro.agents import AgentRegistry, check_usable
from agentmaestro.cli._common import _Ctx, _ctx, _print_json, app, cli_actor, out, pickup
from agentmaestro.core.states import RunStatus
from agentmaestro.errors import ConfigError
from agentmaestro.service.plane.remote import RemotePlane
from agentmaestro.store.base import Store
from agentmaestro.store.records import RunRecord
from agentmaestro.workflows import generate as gen
from agentmaestro.workflows import stored
from agentmaestro.workflows.spec import (
    Workflow,
    WorkflowRegistry,
    load_folder_agents,
    load_workflow,
    load_workflows_dir,
    schema_text,
    validate_text,
)

if TYPE_CHECKING:
    from agentmaestro.client import AsyncClient

T = TypeVar("T")

workflows_app = typer.Typer(help="Declarative workflows (YAML graphs of agent tasks).", no_args_is_help=True)
app.add_typer(workflows_app, name="workflows")

WorkflowsDir = Annotated[
    Path | None,
    typer.Option("--workflows-dir", envvar="MAESTRO_WORKFLOWS_DIR", help="Folder of workflow YAML files."),
]


def builtin_workflows_dir() -> Path:
    """Folder of the built-in demo workflows shipped with the package."""
    return Path(str(resources.files("agentmaestro.demo").joinpath("workflows")))


def discover(agents: AgentRegistry, folder: Path | None) -> WorkflowRegistry:
    """The built-in demo workflows plus those of ``folder`` (or ``$MAESTRO_WORKFLOWS_DIR``, or ``./workflows``).

    Loads the folder's ``agents/`` into ``agents``; a workflow of the folder replaces a built-in one
    of the same name.
    """
    registry = load_workflows_dir(builtin_workflows_dir(), agents)
    if folder is None:
        env = os.environ.get("MAESTRO_WORKFLOWS_DIR")
        folder = Path(env) if env else (Path("workflows") if Path("workflows").is_dir() else None)
    if folder is None:
        return registry
    for wf in (user := load_workflows_dir(folder, agents)):
        registry.register(wf, user.source(wf.name))
    return registry


def resolve(ref: str, agents: AgentRegistry, folder: Path | None) -> tuple[Workflow, WorkflowRegistry]:
    """A workflow by file path or by name; returns it and the registry it is in."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        load_folder_agents(path.parent, agents)
        wf = load_workflow(path, agents=agents)
        registry = WorkflowRegistry()
        registry.register(wf, str(path))
        return wf, registry
    registry = discover(agents, folder)
    return registry.get(ref), registry


def _remote(c: _Ctx) -> AsyncClient | None:
    """The server's client with ``--server``; None to work on the database."""
    if not c.server:
        return None
    backend = c.plane()
    assert isinstance(backend, RemotePlane)
    return backend.client


async def _with_store(c: _Ctx, fn: Callable[[Store], Awaitable[T]]) -> T:
    store = c.open_store()
    try:
        await store.workspaces.ensure(c.workspace)
        return await fn(store)
    finally:
        await store.close()


async def _with_client(client: AsyncClient, fn: Callable[[AsyncClient], Awaitable[T]]) -> T:
    try:
        return await fn(client)
    finally:
        await client.aclose()


@workflows_app.command("list")
def workflows_list(ctx: typer.Context, workflows_dir: WorkflowsDir = None) -> None:
    """List the workflows of the workspace: the folder's and the stored ones (SOURCE says which)."""
    c = _ctx(ctx)
    client = _remote(c)
    if client is not None:
        rows: list[dict[str, Any]] = asyncio.run(_with_client(client, lambda cl: cl.list_workflows()))
    else:
        folder = discover(c.agents(), workflows_dir)
        entries = asyncio.run(_with_store(c, lambda st: stored.visible(st, c.workspace, folder)))
        rows = [e.summary() for e in entries]
    if c.as_json:
        _print_json(rows)
        return
    table = Table("name", "source", "version", "nodes", "agents", "description")
    for r in rows:
        version = "" if r.get("version") is None else str(r["version"])
        table.add_row(
            str(r["name"]),
            str(r["source"]),
            version,
            str(len(r["nodes"])),
            ", ".join(r["agents"]),
            str(r["description"]),
        )
    out.print(table)


@workflows_app.command("validate")
def workflows_validate(ctx: typer.Context, file: Path) -> None:
    """Check a workflow file; every problem is printed with its line number (exit 1 if any)."""
    c = _ctx(ctx)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read workflow file {str(file)!r}: {exc.strerror}") from None
    agents = load_folder_agents(file.parent, c.agents())
    wf, problems = validate_text(text, source=str(file), agents=agents)
    if c.as_json:
        _print_json({"valid": wf is not None, "problems": [p.to_json() for p in problems]})
    elif wf is not None:
        out.print(f"{file}: valid workflow {wf.name!r} ({len(wf.nodes)} nodes)", markup=False)
    else:
        for p in problems:
            sys.stderr.write(p.format(str(file)) + "\n")
    if wf is None:
        raise typer.Exit(1)


@workflows_app.command("schema")
def workflows_schema() -> None:
    """Print the JSON Schema of workflow files (also docs/workflow.schema.json)."""
    sys.stdout.write(schema_text())


@workflows_app.command("run")
def workflows_run(
    ctx: typer.Context,
    workflow: Annotated[str, typer.Argument(help="A workflow name or a YAML file.")],
    task: Annotated[str, typer.Argument(metavar="INPUT", help="The workflow's input.")],
    wait: Annotated[bool, typer.Option("--wait", help="Execute it here and wait for the result.")] = False,
    workflows_dir: WorkflowsDir = None,
) -> None:
    """Start a workflow run (with --wait: execute it here, or with --server wait for it, until it ends or waits)."""
    c = _ctx(ctx)
    client = _remote(c)
    if client is not None:

        async def remote(cl: AsyncClient) -> dict[str, Any]:
            run: dict[str, Any] = await cl.run_workflow(workflow, task)
            if wait:
                run = await cl.wait(run["run_id"], until="waiting")
            return run

        run = asyncio.run(_with_client(client, remote))
    else:
        rec, workers = _run_local(c, workflow, task, wait, workflows_dir)
        run = rec.to_json()
    status = RunStatus(run["status"])
    if c.as_json:
        _print_json(run)
    else:
        out.print(f"{run['run_id']} {status.value} workflow={run['agent']}", markup=False)
        if run.get("output") is not None:
            out.print(f"output: {run['output']}", markup=False)
        if run.get("error"):
            out.print(f"error: {run['error']}", markup=False)
        if not wait:
            out.print(pickup(c, None if client is not None else workers), markup=False)
    if wait and status is not RunStatus.COMPLETED and not status.waiting:
        raise typer.Exit(1)


def _run_local(
    c: _Ctx, ref: str, task: str, wait: bool, workflows_dir: Path | None
) -> tuple[RunRecord, list[dict[str, Any]]]:
    """Start (and with ``wait`` execute here) a workflow run; the run and the workers alive to pick it up."""
    agents = c.agents()
    path = Path(ref)
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        wf, registry = resolve(ref, agents, workflows_dir)
        entry = stored.WorkflowEntry(workflow=wf, source="folder", location=registry.source(wf.name))
    else:
        registry = discover(agents, workflows_dir)
        entry = None

    async def go(store: Store) -> tuple[RunRecord, list[dict[str, Any]]]:
        found = entry or await stored.find(store, c.workspace, ref, registry)
        if wait:  # executed here: refuse a model this process cannot use before anything is stored
            await check_usable(agents.get(n) for n in found.workflow.agent_names() if n in agents)
        from agentmaestro.service.workflows import StartWorkflow, start_workflow

        rec = await start_workflow(store, StartWorkflow(entry=found, input=task), c.actor())
        if wait:
            return await drive(store, rec.run_id, agents, registry), []
        return rec, await store.workers.alive()

    return asyncio.run(_with_store(c, go))


async def drive(store: Store, run_id: str, agents: AgentRegistry, workflows: WorkflowRegistry) -> RunRecord:
    """Execute a workflow run with an in-process worker until it ends or a node waits for a person."""
    from agentmaestro.engine.worker import Worker, WorkerConfig

    worker = Worker(store, agents, workflows=workflows, config=WorkerConfig(poll_interval_s=0.1))
    task = asyncio.ensure_future(worker.run())
    try:
        while True:
            rec = await store.runs.get(run_id)
            if rec.status.terminal or task.done():
                break
            if rec.status is RunStatus.WAITING_FOR_CHILDREN:
                children = await store.runs.page(workspace_id=None, parent_run_id=run_id, limit=1000)
                if any(ch.status in (RunStatus.WAITING_FOR_APPROVAL, RunStatus.WAITING_FOR_HUMAN) for ch in children):
                    break
            await store.events.wait(None, 0.2)
    finally:
        worker.stop()
        await task
    return await store.runs.get(run_id)


@workflows_app.command("save")
def workflows_save(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The workflow YAML file to store.")],
    workflows_dir: WorkflowsDir = None,
) -> None:
    """Validate a workflow file and store it in the workspace (a new version when the name exists)."""
    c = _ctx(ctx)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read workflow file {str(file)!r}: {exc.strerror}") from None
    client = _remote(c)
    if client is not None:
        saved: dict[str, Any] = asyncio.run(_with_client(client, lambda cl: cl.save_workflow(text)))
    else:
        agents = load_folder_agents(file.parent, _agents(c, workflows_dir))
        wf = stored.check_for_save(text, agents, source=str(file))
        entry = asyncio.run(
            _with_store(c, lambda st: stored.save(st, c.workspace, text, agents=agents, actor=cli_actor()))
        )
        assert entry.name == wf.name
        saved = entry.detail()
    if c.as_json:
        _print_json(saved)
    else:
        out.print(f"saved workflow {saved['name']!r} version {saved['version']} in {_where(c)}", markup=False)


@workflows_app.command("rm")
def workflows_rm(ctx: typer.Context, name: Annotated[str, typer.Argument(help="A stored workflow's name.")]) -> None:
    """Delete a stored workflow of the workspace (runs already started go on)."""
    c = _ctx(ctx)
    client = _remote(c)
    if client is not None:
        gone: dict[str, Any] = asyncio.run(_with_client(client, lambda cl: cl.delete_workflow(name)))
    else:
        row = asyncio.run(_with_store(c, lambda st: st.workflows.delete(c.workspace, name, actor=cli_actor())))
        gone = {"name": row["name"], "version": row["version"], "deleted": True}
    if c.as_json:
        _print_json(gone)
    else:
        out.print(f"deleted workflow {gone['name']!r} (version {gone['version']}) from {_where(c)}", markup=False)


@workflows_app.command("generate")
def workflows_generate(
    ctx: typer.Context,
    goal: Annotated[str, typer.Argument(help="What the workflow should do, in natural language.")],
    save: Annotated[bool, typer.Option("--save", help="Store the workflow in the workspace when valid.")] = False,
    model: Annotated[
        str | None, typer.Option("--model", help="Model string (default: the planner role's model).")
    ] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the YAML to this file.")] = None,
    max_repairs: Annotated[
        int, typer.Option("--max-repairs", min=0, max=gen.MAX_REPAIRS, help="Repairs the model may make.")
    ] = gen.MAX_REPAIRS,
    workflows_dir: WorkflowsDir = None,
) -> None:
    """Have a model write a workflow for GOAL; it is validated and repaired at most twice, then shown for review.

    The YAML goes to stdout (or to -o FILE); the report (model, attempts) to stderr. Stored only with --save.
    """
    c = _ctx(ctx)
    client = _remote(c)
    if client is not None:
        result: dict[str, Any] = asyncio.run(
            _with_client(client, lambda cl: cl.generate_workflow(goal, model=model, save=save, max_repairs=max_repairs))
        )
    else:
        agents = _agents(c, workflows_dir)
        generation = asyncio.run(gen.generate(goal, agents=agents, model=model, max_repairs=max_repairs))
        result = {**generation.to_json(), "saved": None}
        if save:
            text = generation.yaml
            entry = asyncio.run(
                _with_store(c, lambda st: stored.save(st, c.workspace, text, agents=agents, actor=cli_actor()))
            )
            result["saved"] = entry.detail()
    if output is not None:
        try:
            output.write_text(result["yaml"], encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {str(output)!r}: {exc.strerror}") from None
    if c.as_json:
        _print_json(result)
        return
    repairs = len(result["attempts"]) - 1
    note = f"valid workflow {result['name']!r} from {result['model']} after {repairs} repair(s)"
    if result.get("saved"):
        note += f"; saved as version {result['saved']['version']} in {_where(c)}"
    elif not save:
        note += "; not saved (review it, then `maestro workflows save FILE` or use --save)"
    if output is not None:
        note += f"; written to {output}"
    else:
        sys.stdout.write(result["yaml"])
    sys.stderr.write(note + "\n")


def _agents(c: _Ctx, workflows_dir: Path | None) -> AgentRegistry:
    """The CLI's agents plus those of the workflows folder's ``agents/`` (what a local worker can run)."""
    agents = c.agents()
    discover(agents, workflows_dir)
    return agents


def _where(c: _Ctx) -> str:
    return f"workspace {c.workspace!r}" if not c.server else c.server
