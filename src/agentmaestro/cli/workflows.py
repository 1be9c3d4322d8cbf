"""``maestro workflows list|validate|run|schema``: declarative workflows (docs/workflows.md).

Workflows come from ``--workflows-dir`` (or ``MAESTRO_WORKFLOWS_DIR``, default ``./workflows`` when it
exists); a folder's ``agents/`` subfolder holds the agents its workflows use. ``run`` and ``validate``
also take a file path.
"""

from __future__ import annotations

import asyncio
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agentmaestro.agents import AgentRegistry
from agentmaestro.cli._common import _ctx, _print_json, app, out
from agentmaestro.core.states import RunStatus
from agentmaestro.errors import ConfigError
from agentmaestro.store.base import Store
from agentmaestro.store.records import NewRun, RunRecord, new_run_id
from agentmaestro.workflows.spec import (
    Workflow,
    WorkflowRegistry,
    load_folder_agents,
    load_workflow,
    load_workflows_dir,
    schema_text,
    validate_text,
)

workflows_app = typer.Typer(help="Declarative workflows (YAML graphs of agent tasks).", no_args_is_help=True)
app.add_typer(workflows_app, name="workflows")

WorkflowsDir = Annotated[
    Path | None,
    typer.Option("--workflows-dir", envvar="MAESTRO_WORKFLOWS_DIR", help="Folder of workflow YAML files."),
]


def _no_server(ctx: typer.Context, command: str) -> None:
    if getattr(_ctx(ctx), "server", None):
        raise ConfigError(f"`maestro workflows {command}` works next to the database; drop --server (MAESTRO_SERVER)")


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


@workflows_app.command("list")
def workflows_list(ctx: typer.Context, workflows_dir: WorkflowsDir = None) -> None:
    """List the workflows found in the workflows folder."""
    _no_server(ctx, "list")
    c = _ctx(ctx)
    registry = discover(c.agents(), workflows_dir)
    rows: list[dict[str, Any]] = [
        {
            "name": wf.name,
            "nodes": len(wf.nodes),
            "agents": wf.agent_names(),
            "description": wf.description,
            "source": registry.source(wf.name),
        }
        for wf in registry
    ]
    if c.as_json:
        _print_json(rows)
        return
    table = Table("name", "nodes", "agents", "description")
    for r in rows:
        table.add_row(str(r["name"]), str(r["nodes"]), ", ".join(r["agents"]), str(r["description"]))
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
    """Start a workflow run (with --wait: execute it in this process until it ends or needs a person)."""
    _no_server(ctx, "run")
    c = _ctx(ctx)
    agents = c.agents()
    wf, registry = resolve(workflow, agents, workflows_dir)

    async def go() -> RunRecord:
        store = c.open_store()
        try:
            await store.ensure_workspace(c.workspace)
            [rec] = await store.create_runs(
                [
                    NewRun(
                        run_id=new_run_id(),
                        workspace_id=c.workspace,
                        agent_name=wf.name,
                        input=task,
                        spec=wf.to_spec(registry.source(wf.name)),
                        policy=(wf.policy.to_overrides() if wf.policy else {}),
                    )
                ]
            )
            if wait:
                rec = await drive(store, rec.run_id, agents, registry)
            return rec
        finally:
            await store.close()

    rec = asyncio.run(go())
    if c.as_json:
        _print_json(rec.to_json())
    else:
        st = rec.state
        out.print(f"{rec.run_id} {rec.status.value} workflow={wf.name}", markup=False)
        if st.output is not None:
            out.print(f"output: {st.output}", markup=False)
        if st.error:
            out.print(f"error: {st.error}", markup=False)
        if not wait:
            out.print("queued: a `maestro worker` that knows this workflow executes it", markup=False)
    if wait and rec.status is not RunStatus.COMPLETED and not rec.status.waiting:
        raise typer.Exit(1)


async def drive(store: Store, run_id: str, agents: AgentRegistry, workflows: WorkflowRegistry) -> RunRecord:
    """Execute a workflow run with an in-process worker until it ends or a node waits for a person."""
    from agentmaestro.engine.worker import Worker, WorkerConfig

    worker = Worker(store, agents, workflows=workflows, config=WorkerConfig(poll_interval_s=0.1))
    task = asyncio.ensure_future(worker.run())
    try:
        while True:
            rec = await store.get_run(run_id)
            if rec.status.terminal or task.done():
                break
            if rec.status is RunStatus.WAITING_FOR_CHILDREN:
                children = await store.list_runs(workspace_id=None, parent_run_id=run_id, limit=1000)
                if any(ch.status in (RunStatus.WAITING_FOR_APPROVAL, RunStatus.WAITING_FOR_HUMAN) for ch in children):
                    break
            await store.wait_for_change(None, 0.2)
    finally:
        worker.stop()
        await task
    return await store.get_run(run_id)
