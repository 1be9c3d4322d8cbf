"""Shared pieces of the ``maestro`` CLI: the Typer apps, options, context and printing."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from agentmaestro.agents import Agent, AgentRegistry, load_agents_dir
from agentmaestro.core.events import Event
from agentmaestro.core.states import RunStatus
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.errors import ConfigError
from agentmaestro.sdk import build_report
from agentmaestro.store.base import Store
from agentmaestro.store.dialects import default_database_url
from agentmaestro.store.records import RunRecord
from agentmaestro.store.schema import DEFAULT_WORKSPACE

T = TypeVar("T")

app = typer.Typer(
    name="maestro",
    help="AgentMaestro: run LLM agents as durable, deterministic, governed processes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

runs_app = typer.Typer(help="Inspect and control runs.", no_args_is_help=True)

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)

agents_app = typer.Typer(help="Agent definitions.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")
app.add_typer(agents_app, name="agents")

out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


class _Ctx:
    def __init__(self, database_url: str | None, workspace: str, agents_dir: Path | None, as_json: bool) -> None:
        self.database_url = database_url or default_database_url()
        self.workspace = workspace
        self.agents_dir = agents_dir
        self.as_json = as_json

    def open_store(self, *, migrate: bool | None = None) -> Store:
        auto = self.database_url.startswith("sqlite") or "://" not in self.database_url
        return Store.open(self.database_url, migrate=auto if migrate is None else migrate)

    def agents(self) -> AgentRegistry:
        registry = load_agents_dir(builtin_agents_dir())
        folder = self.agents_dir
        if folder is None and Path("agents").is_dir():
            folder = Path("agents")
        if folder is not None:
            for agent in load_agents_dir(folder):
                registry.register(agent)
        return registry

    def resolve_agent(self, ref: str) -> Agent:
        path = Path(ref)
        if ref.endswith((".yaml", ".yml")) or path.is_file():
            if not path.is_file():
                raise ConfigError(f"agent file {ref!r} does not exist")
            return Agent.from_yaml(path)
        return self.agents().get(ref)


def builtin_agents_dir() -> Path:
    """Folder of the built-in demo agents shipped with the package."""
    return Path(str(resources.files("agentmaestro.demo").joinpath("agents")))


def _ctx(ctx: typer.Context) -> _Ctx:
    obj = ctx.find_root().obj
    assert isinstance(obj, _Ctx)
    return obj


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.callback()
def _main(
    ctx: typer.Context,
    database_url: Annotated[
        str | None, typer.Option("--database-url", envvar="MAESTRO_DATABASE_URL", help="Database URL.")
    ] = None,
    workspace: Annotated[str, typer.Option(envvar="MAESTRO_WORKSPACE", help="Workspace.")] = DEFAULT_WORKSPACE,
    agents_dir: Annotated[
        Path | None,
        typer.Option("--agents-dir", envvar="MAESTRO_AGENTS_DIR", help="Folder of agent YAML files."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    ctx.obj = _Ctx(database_url, workspace, agents_dir, as_json)


def _policy_overrides(
    max_steps: int | None,
    max_tokens: int | None,
    max_tool_calls: int | None,
    max_cost: float | None,
    timeout: float | None,
) -> dict[str, Any]:
    values = {
        "max_steps": max_steps,
        "max_tokens": max_tokens,
        "max_tool_calls": max_tool_calls,
        "max_cost_usd": max_cost,
        "timeout_s": timeout,
    }
    return {k: v for k, v in values.items() if v is not None}


MaxSteps = Annotated[int | None, typer.Option("--max-steps", min=0, help="Policy: most steps.")]

MaxTokens = Annotated[int | None, typer.Option("--max-tokens", min=0, help="Policy: most tokens.")]

MaxToolCalls = Annotated[int | None, typer.Option("--max-tool-calls", min=0, help="Policy: most tool calls.")]

MaxCost = Annotated[float | None, typer.Option("--max-cost-usd", min=0, help="Policy: most USD.")]

Timeout = Annotated[float | None, typer.Option("--timeout-s", min=0, help="Policy: most wall seconds.")]


async def _drive_here(c: _Ctx, store: Store, agents: AgentRegistry, run_id: str, follow: bool) -> int:
    """Run a dedicated in-process worker for one run until it stops; print the outcome."""
    worker = Worker(store, agents, run_ids={run_id}, config=WorkerConfig(concurrency=1, poll_interval_s=0.2))
    task = asyncio.ensure_future(worker.run())
    seq = 0
    try:
        while True:
            rec = await store.get_run(run_id, c.workspace)
            if follow:
                for ev in await store.events(run_id, seq):
                    _print_event(ev, c.as_json)
                    seq = ev.seq
            if rec.status.terminal or rec.status.waiting:
                break
            if task.done():
                await task  # surface a crash
                break
            await store.wait_for_change(run_id, 0.5)
    finally:
        worker.stop()
        await task
    rec = await store.get_run(run_id, c.workspace)
    if follow:
        for ev in await store.events(run_id, seq):
            _print_event(ev, c.as_json)
    report = await build_report(store, rec)
    if c.as_json and not follow:
        _print_json(report.to_json())
    elif not c.as_json:
        _print_report_line(rec)
    return 0 if rec.status in (RunStatus.COMPLETED,) or rec.status.waiting else 1


def _print_report_line(rec: RunRecord) -> None:
    st = rec.state
    out.print(
        f"{rec.run_id} {rec.status.value} steps={st.steps} tool_calls={st.tool_calls} tokens={st.tokens} "
        f"cost_usd={st.cost_usd:.6f}",
        markup=False,
    )
    if st.output is not None:
        out.print(f"output: {st.output}", markup=False)
    if st.error:
        out.print(f"error: {st.error}", markup=False)
    if rec.status is RunStatus.WAITING_FOR_APPROVAL:
        out.print("waiting for approval: maestro approvals list", markup=False)
    elif rec.status is RunStatus.WAITING_FOR_HUMAN:
        out.print("waiting for a human: maestro escalations list", markup=False)


def _event_summary(ev: Event) -> str:
    p = ev.payload
    t = ev.type.value
    if t == "STEP_COMPLETED" and p.get("kind") == "MODEL_CALL":
        calls = ", ".join(f"{c['name']}({json.dumps(c.get('arguments'))})" for c in p.get("tool_calls") or [])
        return f"model {p.get('model')}: " + (f"calls {calls}" if calls else repr(p.get("content")))
    if t == "STEP_COMPLETED" and p.get("kind") == "TOOL_CALL":
        flag = " ERROR" if p.get("is_error") else ""
        return f"tool {p.get('name')}({json.dumps(p.get('arguments'))}) ->{flag} {p.get('result')!r}"
    if t == "PHASE_CHANGED":
        return f"{p.get('from')} -> {p.get('to')}"
    keys = ("output", "error", "reason", "worker", "source_run_id", "question")
    return " ".join(f"{k}={p[k]!r}" for k in keys if p.get(k) is not None)


def _print_event(ev: Event, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(ev.to_json(), default=str) + "\n")
        sys.stdout.flush()
        return
    step = f" step={ev.step}" if ev.step is not None else ""
    out.print(f"{ev.seq:>5} {ev.type.value:<22}{step} {_event_summary(ev)}", markup=False)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{int(seconds)}s"
    if seconds < 7200:
        return f"{int(seconds // 60)}m"
    if seconds < 172800:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"
