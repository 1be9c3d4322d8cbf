"""``maestro run``, ``maestro runs ...``, ``maestro worker`` and ``maestro demo``."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.table import Table

from agentmaestro.cli._common import (
    MaxCost,
    MaxSteps,
    MaxTokens,
    MaxToolCalls,
    Timeout,
    _age,
    _Ctx,
    _ctx,
    _policy_overrides,
    _print_event,
    _print_json,
    _print_report_line,
    _run,
    _see_through,
    app,
    builtin_agents_dir,
    out,
    pickup,
)
from agentmaestro.core.events import Event, RunState, fold
from agentmaestro.core.states import RunStatus
from agentmaestro.errors import ConfigError
from agentmaestro.service.plane import Plane

if TYPE_CHECKING:
    from agentmaestro.store.records import RunRecord


runs_app = typer.Typer(help="Inspect and control runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


def _start_then_see_through(
    c: _Ctx,
    start: Callable[[Plane], Awaitable[dict[str, Any]]],
    *,
    queued: Callable[[dict[str, Any], str], str],
    started: Callable[[dict[str, Any]], str | None],
    wait: bool,
    follow: bool = False,
) -> NoReturn:
    """Start a run (new, resumed or forked), then report it queued or, with --wait/--follow, see it through here.

    Args:
        c: The CLI context.
        start: Creates the run; returns it.
        queued: The line reporting the run left to a worker, given who will pick it up (:func:`pickup`); with
            --json, the run's JSON instead.
        started: The line announcing the run before seeing it through, if any.
        wait: Drive or follow the run here until it stops or waits.
        follow: Also print its events as they happen.
    """

    async def go(b: Plane) -> int:
        run = await start(b)
        if not (wait or follow):
            if c.as_json:
                _print_json(run)
            else:
                out.print(queued(run, pickup(c, await b.live_workers())), markup=False)
            return 0
        line = started(run)
        if line is not None:
            out.print(line, markup=False)
        return await _see_through(c, b, run["run_id"], follow)

    raise typer.Exit(c.call(go))


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="Agent name (from the agents folder) or a YAML file.")],
    task: Annotated[str, typer.Argument(metavar="INPUT", help="The task for the agent.")],
    wait: Annotated[bool, typer.Option("--wait", help="Run it here and wait for the result.")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Run it here and print events as they happen.")] = False,
    max_steps: MaxSteps = None,
    max_tokens: MaxTokens = None,
    max_tool_calls: MaxToolCalls = None,
    max_cost_usd: MaxCost = None,
    timeout_s: Timeout = None,
) -> None:
    """Start a run. Without --wait/--follow it is queued for a worker (`maestro worker`).

    With --server the server's workers run it; --wait and --follow then follow its event stream.
    """
    c = _ctx(ctx)
    overrides = _policy_overrides(max_steps, max_tokens, max_tool_calls, max_cost_usd, timeout_s)
    _start_then_see_through(
        c,
        lambda b: b.start_run(agent, task, overrides, here=wait or follow),
        queued=lambda run, who: f"{run['run_id']} PENDING: {who}",
        started=lambda run: None if c.as_json or follow else f"{run['run_id']} started",
        wait=wait,
        follow=follow,
    )


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    status: Annotated[list[str] | None, typer.Option("--status", help="Filter by status (repeatable).")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Filter by agent.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Page size.")] = 20,
    before: Annotated[
        str | None, typer.Option("--before", help="Cursor: the last run id of the previous page.")
    ] = None,
    top_level: Annotated[
        bool, typer.Option("--top-level", help="Only runs that are not sub-runs (workflow nodes, objective tasks).")
    ] = False,
    kind: Annotated[
        str | None, typer.Option("--kind", help="Only runs of this kind: agent, workflow, objective, escalation.")
    ] = None,
) -> None:
    """List runs, newest first."""
    c = _ctx(ctx)
    statuses = [s.upper() for s in status or []]
    for s in statuses:
        if s not in RunStatus.__members__:
            raise ConfigError(f"unknown status {s!r}; expected one of {', '.join(RunStatus.__members__)}")
    kinds = ("agent", "workflow", "objective", "escalation")
    if kind is not None and kind not in kinds:
        raise ConfigError(f"unknown kind {kind!r}; expected one of {', '.join(kinds)}")

    runs = c.call(
        lambda b: b.list_runs(
            statuses=statuses, agent=agent, before=before, limit=limit, top_level=top_level, kind=kind
        )
    )
    if c.as_json:
        _print_json({"runs": runs, "next": runs[-1]["run_id"] if len(runs) == limit else None})
        return
    table = Table("run_id", "agent", "status", "phase", "steps", "tokens", "cost_usd", "age")
    now = time.time()
    for r in runs:
        table.add_row(
            r["run_id"],
            r["agent"],
            r["status"],
            r["phase"],
            str(r["steps"]),
            str(r["tokens"]),
            f"{r['cost_usd']:.6f}",
            _age(now - r["created_at"]),
        )
    out.print(table)
    if len(runs) == limit:
        more = (" --top-level" if top_level else "") + (f" --kind {kind}" if kind else "")
        out.print(f"next page: maestro runs list{more} --before {runs[-1]['run_id']}", markup=False)


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: str,
    steps: Annotated[bool, typer.Option("--steps", help="Also list the steps.")] = False,
    tree: Annotated[bool, typer.Option("--tree", help="Show the sub-run tree below the run.")] = False,
) -> None:
    """Show a run's snapshot (and its steps, and its tree of sub-runs)."""
    c = _ctx(ctx)
    data = c.call(lambda b: b.get_run(run_id))
    rows = data.pop("steps_detail", [])
    if steps:
        data["steps_detail"] = rows
    if tree:

        async def build(b: Plane, run: dict[str, Any], depth: int) -> dict[str, Any]:
            if depth > 20:
                return {**_brief(run), "children": []}
            kids = await b.children(run["run_id"])
            return {**_brief(run), "children": [await build(b, k, depth + 1) for k in kids]}

        data["tree"] = c.call(lambda b: build(b, data, 0))
    if c.as_json:
        _print_json(data)
        return
    if tree:
        _print_tree(data["tree"], "")
        return
    for key in ("run_id", "agent", "status", "phase", "input", "output", "error", "steps", "tool_calls", "tokens"):
        out.print(f"{key:>12}: {data[key]}", markup=False)
    out.print(f"{'cost_usd':>12}: {data['cost_usd']:.6f}", markup=False)
    out.print(f"{'policy':>12}: {json.dumps(data['policy'])}", markup=False)
    if steps:
        table = Table("step", "kind", "name", "status", "tokens", "cost_usd", "ms", "seq")
        for s in rows:
            table.add_row(
                str(s["step"]),
                s["kind"],
                s["name"] or "",
                s["status"],
                str(s["input_tokens"] + s["output_tokens"]),
                f"{s['cost_usd']:.6f}",
                f"{s['duration_ms']:.1f}",
                str(s["seq"]),
            )
        out.print(table)


def _brief(run: dict[str, Any]) -> dict[str, Any]:
    return {k: run.get(k) for k in ("run_id", "agent", "status", "steps", "tokens", "cost_usd", "output", "error")}


def _print_tree(node: dict[str, Any], indent: str) -> None:
    out.print(
        f"{indent}{node['run_id']} {node['agent']} {node['status']} steps={node['steps']} "
        f"tokens={node['tokens']} cost_usd={node['cost_usd']:.6f}",
        markup=False,
    )
    for child in node["children"]:
        _print_tree(child, indent + "  ")


@runs_app.command("events")
def runs_events(
    ctx: typer.Context,
    run_id: str,
    after: Annotated[int, typer.Option("--after", min=0, help="Only events with seq greater than this.")] = 0,
    follow: Annotated[bool, typer.Option("--follow", help="Keep printing new events until the run stops.")] = False,
) -> None:
    """Print a run's event log."""
    c = _ctx(ctx)

    async def go(b: Plane) -> None:
        if not follow:
            for ev in await b.events(run_id, after):
                _print_event(ev, c.as_json)
            return
        async for ev in b.follow(run_id, after):
            _print_event(ev, c.as_json)

    c.call(go)


@runs_app.command("cancel")
def runs_cancel(
    ctx: typer.Context,
    run_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Why.")] = "cancelled from the CLI",
) -> None:
    """Cancel a run (at once if not running; at its next step if running)."""
    c = _ctx(ctx)
    run = c.call(lambda b: b.cancel_run(run_id, reason))
    if c.as_json:
        _print_json(run)
    elif run["status"] == RunStatus.CANCELLED.value:
        out.print(f"{run_id} CANCELLED", markup=False)
    else:
        out.print(f"{run_id} cancel requested; its worker stops it at the next step", markup=False)


@runs_app.command("resume")
def runs_resume(
    ctx: typer.Context,
    run_id: str,
    wait: Annotated[bool, typer.Option("--wait", help="Run it here and wait for the result.")] = False,
    max_steps: MaxSteps = None,
    max_tokens: MaxTokens = None,
    max_tool_calls: MaxToolCalls = None,
    max_cost_usd: MaxCost = None,
    timeout_s: Timeout = None,
) -> None:
    """Resume a FAILED or CANCELLED run from its last completed step (optionally with new limits)."""
    c = _ctx(ctx)
    overrides = _policy_overrides(max_steps, max_tokens, max_tool_calls, max_cost_usd, timeout_s)
    _start_then_see_through(
        c,
        lambda b: b.resume_run(run_id, overrides),  # the same run, continued
        queued=lambda run, who: f"{run['run_id']} {run['status']} (resumed): {who}",
        started=lambda run: None,
        wait=wait,
    )


@runs_app.command("fork")
def runs_fork(
    ctx: typer.Context,
    run_id: str,
    at: Annotated[int, typer.Option("--at", min=1, help="Copy the history up to and including this seq.")],
    wait: Annotated[bool, typer.Option("--wait", help="Run the fork here and wait for the result.")] = False,
    max_steps: MaxSteps = None,
    max_tokens: MaxTokens = None,
    max_tool_calls: MaxToolCalls = None,
    max_cost_usd: MaxCost = None,
    timeout_s: Timeout = None,
) -> None:
    """Fork a run at an event: a new run with the same history up to SEQ continues from there."""
    c = _ctx(ctx)
    overrides = _policy_overrides(max_steps, max_tokens, max_tool_calls, max_cost_usd, timeout_s)
    _start_then_see_through(
        c,
        lambda b: b.fork_run(run_id, at, overrides),
        queued=lambda run, who: f"{run['run_id']} PENDING (fork of {run_id} at seq {at}): {who}",
        started=lambda run: f"{run['run_id']} forked from {run_id} at seq {at}",
        wait=wait,
    )


def _comparable(value: Any) -> Any:
    return round(value, 8) if isinstance(value, float) else value


def _steps_table_differences(state: RunState, rows: list[dict[str, Any]]) -> dict[str, tuple[Any, Any]]:
    """Where the ``steps`` rows (what ``runs show --steps`` and usage read) disagree with the replayed steps."""
    recorded = {
        "steps table: rows": len(rows),
        "steps table: step indexes": sorted(int(r["step"]) for r in rows),
        "steps table: input_tokens": sum(int(r.get("input_tokens") or 0) for r in rows),
        "steps table: output_tokens": sum(int(r.get("output_tokens") or 0) for r in rows),
        "steps table: cost_usd": sum(float(r.get("cost_usd") or 0.0) for r in rows),
    }
    expected = {
        "steps table: rows": state.steps,
        "steps table: step indexes": list(range(state.steps)),
        "steps table: input_tokens": state.input_tokens,
        "steps table: output_tokens": state.output_tokens,
        "steps table: cost_usd": state.cost_usd,
    }
    return {k: (recorded[k], expected[k]) for k in recorded if _comparable(recorded[k]) != _comparable(expected[k])}


@runs_app.command("replay")
def runs_replay(ctx: typer.Context, run_id: str) -> None:
    """Fold a run's events from scratch and check they reproduce its stored snapshot.

    Locally the whole stored state is compared; with --server, the fields the API shows.
    """
    c = _ctx(ctx)

    async def go(b: Plane) -> tuple[dict[str, Any], list[Event], list[dict[str, Any]]]:
        return await b.snapshot(run_id), await b.events(run_id), (await b.get_run(run_id)).get("steps_detail", [])

    stored, events, step_rows = c.call(go)
    state = fold(events)
    replayed = {**state.to_json(), "tokens": state.tokens}
    diffs = {
        k: (stored[k], replayed[k])
        for k in stored.keys() & replayed.keys()
        if _comparable(stored[k]) != _comparable(replayed[k])
    }
    diffs.update(_steps_table_differences(state, step_rows))
    status = stored["status"]
    if c.as_json:
        _print_json({"run_id": run_id, "events": len(events), "match": not diffs, "differences": diffs})
    elif not diffs:
        out.print(f"{run_id}: {len(events)} events replay to the stored snapshot (status {status})", markup=False)
    else:
        for k, (s, r) in sorted(diffs.items()):
            sys.stderr.write(f"{run_id}: {k}: stored {s!r} != replayed {r!r}\n")
    if diffs:
        raise typer.Exit(1)


@app.command()
def worker(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Most runs at once.")] = 100,
    lease_ttl: Annotated[float, typer.Option("--lease-ttl", min=0.1, help="Lease length in seconds.")] = 30.0,
    poll_interval: Annotated[float, typer.Option("--poll-interval", min=0.01, help="Idle poll in seconds.")] = 1.0,
    heartbeat_interval: Annotated[
        float | None, typer.Option("--heartbeat-interval", min=0.01, help="Heartbeat seconds (default ttl/3).")
    ] = None,
    workflows_dir: Annotated[
        Path | None,
        typer.Option("--workflows-dir", envvar="MAESTRO_WORKFLOWS_DIR", help="Folder of workflow YAML files."),
    ] = None,
    idle_in_transaction_timeout: Annotated[
        float | None,
        typer.Option(
            "--idle-in-transaction-timeout",
            min=0.0,
            help="PostgreSQL, MariaDB: end a session idle inside a transaction this long, freeing its locks; "
            "on PostgreSQL workers also end other processes' sessions frozen this long mid-batch (seconds; "
            "default the lease; 0 off).",
        ),
    ] = None,
    lock_timeout: Annotated[
        float | None,
        typer.Option(
            "--lock-timeout",
            min=0.0,
            help="PostgreSQL, MySQL: fail a write that waits this long for a lock (seconds, whole on MySQL; "
            "default a quarter lease; 0 off).",
        ),
    ] = None,
) -> None:
    """Run a worker process: claim and execute runs (agents and workflows) until SIGINT/SIGTERM."""
    from agentmaestro.cli.workflows import discover
    from agentmaestro.engine import deltas
    from agentmaestro.engine.worker import Worker, WorkerConfig
    from agentmaestro.store.dialects import redact_url

    c = _ctx(ctx)
    c.local_only("worker")
    agents = c.agents()
    workflows = discover(agents, workflows_dir)
    config = WorkerConfig(
        concurrency=concurrency,
        lease_ttl_s=lease_ttl,
        poll_interval_s=poll_interval,
        heartbeat_interval_s=heartbeat_interval,
        idle_in_transaction_timeout_s=idle_in_transaction_timeout,
        lock_timeout_s=lock_timeout,
    )

    async def go() -> None:
        store = c.open_store()
        w = Worker(store, agents, config=config, workflows=workflows)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, w.stop)
        sys.stderr.write(
            f"worker {w.owner} started: {len(agents)} agent(s), {len(workflows)} workflow(s), "
            f"concurrency {concurrency}, "
            f"database {redact_url(store.url)}\n"
        )
        sys.stderr.flush()
        # On PostgreSQL, model text deltas reach live viewers on any API server through NOTIFY.
        publish_deltas = store.dialect == "postgresql"
        if publish_deltas:
            deltas.BUS.install(pg_url=store.url)
        try:
            await w.run()
        finally:
            if publish_deltas:
                deltas.BUS.uninstall()
            await store.close()
            sys.stderr.write(f"worker {w.owner} stopped after {w.claimed_total} claim(s)\n")

    _run(go())


@app.command()
def demo(ctx: typer.Context) -> None:
    """Run the offline demo agents (scripted models) and show what to do next."""
    c = _ctx(ctx)
    c.local_only("demo")
    from agentmaestro.agents import load_agents_dir
    from agentmaestro.cli.workflows import builtin_workflows_dir
    from agentmaestro.engine.worker import Worker, WorkerConfig
    from agentmaestro.service import runs
    from agentmaestro.store.dialects import redact_url
    from agentmaestro.workflows.spec import load_workflows_dir

    agents = load_agents_dir(builtin_agents_dir())
    workflows = load_workflows_dir(builtin_workflows_dir(), agents)
    tasks = [
        ("calculator", "What is (2 + 3) * 4?"),
        ("wordsmith", "Durable agents survive crashes and resume"),
        ("janitor", "Free some disk space"),
    ]

    actor = c.actor()

    async def go() -> list[RunRecord]:
        store = c.open_store()
        try:
            await store.workspaces.ensure(c.workspace)
            starts = []
            for name, text in tasks:
                a = agents.get(name)
                await store.agents.put(c.workspace, a.name, a.spec())
                starts.append(runs.StartRun.of_agent(a, text))
            wf = workflows.get("tidy-and-report")
            source = workflows.source(wf.name)
            starts.append(runs.StartRun.of_workflow(wf, "Durable agents survive crashes", source=source))
            records = list(await asyncio.gather(*(runs.start_run(store, s, actor) for s in starts)))
            ids = {r.run_id for r in records}
            w = Worker(
                store,
                agents,
                workflows=workflows,
                run_ids=ids,
                follow_children=True,
                config=WorkerConfig(concurrency=8, poll_interval_s=0.1),
            )
            task = asyncio.ensure_future(w.run())
            wf_id = records[-1].run_id

            async def settled() -> bool:
                for i in ids:
                    r = await store.runs.get(i, c.workspace)
                    if i == wf_id and r.status is RunStatus.WAITING_FOR_CHILDREN:
                        kids = await store.runs.page(workspace_id=c.workspace, parent_run_id=i, limit=100)
                        if not any(k.status.waiting and k.status is not RunStatus.WAITING_FOR_CHILDREN for k in kids):
                            return False
                    elif not (r.status.terminal or r.status.waiting):
                        return False
                return True

            while not await settled():
                await store.events.wait(None, 0.5)
            w.stop()
            await task
            return [await store.runs.get(r.run_id, c.workspace) for r in records]
        finally:
            await store.close()

    finished = _run(go())
    if c.as_json:
        _print_json([r.to_json() for r in finished])
        return
    out.print(f"AgentMaestro demo (database {redact_url(c.database_url)}):\n", markup=False)
    for r in finished:
        _print_report_line(r.to_json())
    first = finished[0].run_id
    out.print(
        "\nNext:\n"
        f"  maestro runs events {first}        # the durable event log\n"
        f"  maestro runs replay {first}        # fold the log, compare with the snapshot\n"
        f"  maestro runs fork {first} --at 4 --wait\n"
        "  maestro approvals list             # the janitor's DANGEROUS calls wait for you (one in the workflow)\n"
        "  maestro approvals approve APPROVAL_ID --wait\n"
        "  maestro run calculator 'What is (2 + 3) * 4?' --follow\n"
        "  maestro states                     # the transition and decision tables\n"
        "(the CLI lives in .venv/bin: activate it with 'source .venv/bin/activate')",
        markup=False,
    )
