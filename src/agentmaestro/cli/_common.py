"""Shared pieces of the ``maestro`` CLI: the Typer apps, options, context and printing."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from agentmaestro.actor import local_actor
from agentmaestro.cli._lazy import app as app  # the command modules register on it
from agentmaestro.core.states import RunStatus
from agentmaestro.errors import ConfigError, LocalOnlyError

if TYPE_CHECKING:
    from rich.console import Console

    from agentmaestro.actor import Actor
    from agentmaestro.agents import Agent, AgentRegistry
    from agentmaestro.core.events import Event
    from agentmaestro.service.plane import Plane
    from agentmaestro.store.base import Store

T = TypeVar("T")

DEFAULT_WORKSPACE = "default"
"""The workspace commands use without ``--workspace`` (the store's ``DEFAULT_WORKSPACE``)."""


def cli_actor() -> str:
    """How a CLI user is named in runs and the audit log: ``cli:<login>``."""
    return local_actor("cli")


class _LazyConsole:
    """The Rich console commands print with, created (and Rich imported) on first use."""

    _console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
        return getattr(self._console, name)


out: Console = _LazyConsole()  # type: ignore[assignment]


class _Ctx:
    def __init__(
        self,
        database_url: str | None,
        workspace: str,
        agents_dir: Path | None,
        as_json: bool,
        server: str | None = None,
        api_key: str | None = None,
        tls: tuple[str | None, str | None, str | None] = (None, None, None),
    ) -> None:
        self._database_url = database_url
        self.workspace = workspace
        self.agents_dir = agents_dir
        self.as_json = as_json
        self.server = server.rstrip("/") if server else None
        self.api_key = api_key
        self.tls = tls

    @property
    def database_url(self) -> str:
        """``--database-url``, else the default one (worked out, with SQLAlchemy, only by commands that need it)."""
        if self._database_url is None:
            from agentmaestro.store.dialects import default_database_url

            self._database_url = default_database_url()
        return self._database_url

    def local_only(self, command: str) -> None:
        """Refuse ``--server`` for a command that works next to the database (exit code 2)."""
        if self.server:
            raise LocalOnlyError(
                f"`maestro {command}` works on a database, not through a server; drop --server (MAESTRO_SERVER)"
            )

    def open_store(self, *, migrate: bool | None = None) -> Store:
        if self.server:  # a command without an API equivalent
            import click

            current = click.get_current_context(silent=True)
            self.local_only(current.command_path.removeprefix("maestro ") if current else "this command")
        from agentmaestro.store.base import Store

        auto = self.database_url.startswith("sqlite") or "://" not in self.database_url
        return Store.open(self.database_url, migrate=auto if migrate is None else migrate)

    def plane(self) -> Plane:
        """The database (default) or, with ``--server``, the server's REST API."""
        if self.server:
            from agentmaestro.client import AsyncClient
            from agentmaestro.service.plane.remote import RemotePlane, tls_context

            if not self.server.startswith(("http://", "https://")):
                raise ConfigError(f"--server must be an http:// or https:// URL, not {self.server!r}")
            client = AsyncClient(self.server, self.api_key, verify=tls_context(*self.tls))
            return RemotePlane(client)
        from agentmaestro.service.plane.local import LocalPlane
        from agentmaestro.store.dialects import redact_url

        return LocalPlane(self.open_store, self.actor(), self.agents, where=redact_url(self.database_url))

    def actor(self) -> Actor:
        """The person at this machine, in ``--workspace``: ``cli:<login>``."""
        from agentmaestro.actor import Actor

        return Actor.local("cli", self.workspace)

    def call(self, fn: Callable[[Plane], Awaitable[T]]) -> T:
        """Run ``fn`` with a plane opened for it (and closed after)."""

        async def go() -> T:
            plane = self.plane()
            try:
                return await fn(plane)
            finally:
                await plane.close()

        return asyncio.run(go())

    def agents(self) -> AgentRegistry:
        from agentmaestro.service.plane.local import load_registry

        return load_registry(self.agents_dir, builtin_agents_dir())

    def resolve_agent(self, ref: str) -> Agent:
        from agentmaestro.service.plane.local import resolve_agent

        return resolve_agent(ref, self.agents)


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
    server: Annotated[
        str | None,
        typer.Option("--server", envvar="MAESTRO_SERVER", help="Work through this server (URL) instead of a database."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="MAESTRO_API_KEY", help="API key for --server.")
    ] = None,
    tls_ca: Annotated[
        str | None, typer.Option("--tls-ca", envvar="MAESTRO_TLS_CA", help="CA (PEM) to trust for an https server.")
    ] = None,
    tls_cert: Annotated[
        str | None,
        typer.Option("--tls-client-cert", envvar="MAESTRO_TLS_CLIENT_CERT", help="Client certificate (PEM), mTLS."),
    ] = None,
    tls_key: Annotated[
        str | None,
        typer.Option("--tls-client-key", envvar="MAESTRO_TLS_CLIENT_KEY", help="Client certificate key (PEM)."),
    ] = None,
    path: Annotated[
        list[Path] | None,
        typer.Option(
            "--path",
            help="A folder to import agents' tools from (repeatable), like PYTHONPATH. Without it, tools are "
            "looked up in the folders above the agent's YAML file.",
        ),
    ] = None,
) -> None:
    for folder in reversed(path or []):
        if not folder.is_dir():
            raise ConfigError(f"--path {str(folder)!r} is not a folder")
        sys.path.insert(0, str(folder.resolve()))
    ctx.obj = _Ctx(database_url, workspace, agents_dir, as_json, server or None, api_key, (tls_ca, tls_cert, tls_key))


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


def _outcome(run: dict[str, Any]) -> int:
    """Exit code of a command that saw a run through: 0 if it completed or waits for a person."""
    status = RunStatus(run["status"])
    return 0 if status is RunStatus.COMPLETED or status.waiting else 1


async def _see_through(c: _Ctx, b: Plane, run_id: str, follow: bool) -> int:
    """Drive (locally) or follow (remotely) a run until it stops or waits; print the outcome."""
    run = await b.drive(run_id, (lambda ev: _print_event(ev, c.as_json)) if follow else None)
    if c.as_json and not follow:
        _print_json(_report_json(run, await b.events(run_id)))
    elif not c.as_json:
        _print_report_line(run)
    return _outcome(run)


def _report_json(run: dict[str, Any], events: list[Event]) -> dict[str, Any]:
    """The RunReport of a run (as ``Orchestrator.run`` returns it), from its API form and events."""
    from agentmaestro.sdk import state_history

    end = run["finished_at"] or run["updated_at"]
    return {
        "run_id": run["run_id"],
        "agent": run["agent"],
        "status": run["status"],
        "output": run["output"],
        "error": run["error"],
        "steps": run["steps"],
        "tokens": run["tokens"],
        "tool_calls": run["tool_calls"],
        "cost_usd": round(run["cost_usd"], 8),
        "duration_s": round(max(0.0, end - run["created_at"]), 6),
        "state_history": state_history(events),
    }


def _print_report_line(run: dict[str, Any]) -> None:
    out.print(
        f"{run['run_id']} {run['status']} steps={run['steps']} tool_calls={run['tool_calls']} tokens={run['tokens']} "
        f"cost_usd={run['cost_usd']:.6f}",
        markup=False,
    )
    if run["output"] is not None:
        out.print(f"output: {run['output']}", markup=False)
    if run["error"]:
        out.print(f"error: {run['error']}", markup=False)
    if run["status"] == RunStatus.WAITING_FOR_APPROVAL.value:
        out.print("waiting for approval: maestro approvals list", markup=False)
    elif run["status"] == RunStatus.WAITING_FOR_HUMAN.value:
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
    if t == "STEP_RECONCILED":
        name = (p.get("call") or {}).get("name")
        return f"tool {name}: {p.get('outcome')} -> {p.get('decision')} ({p.get('reason')})"
    keys = ("output", "error", "reason", "worker", "source_run_id", "question")
    return " ".join(f"{k}={p[k]!r}" for k in keys if p.get(k) is not None)


def _print_event(ev: Event, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(ev.to_json(), default=str) + "\n")
        sys.stdout.flush()
        return
    step = f" step={ev.step}" if ev.step is not None else ""
    out.print(f"{ev.seq:>5} {ev.type.value:<22}{step} {_event_summary(ev)}", markup=False)


def pickup(c: _Ctx, workers: list[dict[str, Any]] | None) -> str:
    """Who will execute a queued run, from the workers' heartbeats (None: a server's workers, not known here)."""
    if workers is None:
        return f"queued on {c.server}; its workers run it"
    if not workers and c.server:
        return f"queued on {c.server}, but no worker is running there: start one with `maestro worker`"
    if not workers:
        return "no worker is running: start one with `maestro worker`, or run it here with --wait"
    where = ", ".join(f"{w['host']}:{w['pid']}" for w in workers[:3]) + (", ..." if len(workers) > 3 else "")
    queued = f"queued on {c.server}" if c.server else "queued"
    return f"{queued}; {len(workers)} worker(s) running will pick it up ({where})"


def when(ts: float | None) -> str:
    """A timestamp as people read it: ``2026-12-06 21:05:32Z`` (UTC); empty for None."""
    if ts is None:
        return ""
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{int(seconds)}s"
    if seconds < 7200:
        return f"{int(seconds // 60)}m"
    if seconds < 172800:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"
