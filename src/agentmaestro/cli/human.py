"""``maestro approvals ...``, ``maestro escalations ...`` and ``maestro gate ...``: the human side."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import typer
from rich.table import Table

from agentmaestro.cli._common import _age, _Ctx, _ctx, _print_json, _see_through, app, out, when
from agentmaestro.core.gate import GatePolicy
from agentmaestro.errors import ConfigError
from agentmaestro.service.plane import Plane

approvals_app = typer.Typer(help="Tool calls waiting for a human decision.", no_args_is_help=True)
escalations_app = typer.Typer(help="Runs waiting for a human after failures or uncertain steps.", no_args_is_help=True)
gate_app = typer.Typer(help="The workspace's risk gate rules.", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")
app.add_typer(escalations_app, name="escalations")
app.add_typer(gate_app, name="gate")

By = Annotated[
    str | None,
    typer.Option(
        "--by", envvar="MAESTRO_USER", help="Who decides (default: you, cli:LOGIN; with --server: the API key)."
    ),
]
Wait = Annotated[bool, typer.Option("--wait", help="Continue the run here and wait for it to stop again.")]


def _expires(ts: float | None) -> str:
    if ts is None:
        return "never"
    left = ts - time.time()
    return "expired" if left <= 0 else f"in {_age(left)} ({when(ts)})"


Limit = Annotated[int, typer.Option("--limit", min=1, max=500, help="Page size.")]
Before = Annotated[str | None, typer.Option("--before", help="Cursor: the last id of the previous page.")]


def _list_pending(
    ctx: typer.Context,
    all_: bool,
    page: tuple[str | None, int],
    fetch: Callable[[Plane, Sequence[str] | None, str | None, int], Awaitable[list[dict[str, Any]]]],
    what: tuple[str, str, str],
    columns: Sequence[str],
    cells: Callable[[dict[str, Any]], Sequence[str]],
) -> None:
    """Print one page of the pending rows (every row with ``--all``) as JSON or as a table of ``columns``.

    ``page`` is (before, limit); ``what`` is (JSON key, id column, command) for the JSON and the next-page hint.
    """
    c = _ctx(ctx)
    before, limit = page
    key, id_column, command = what
    statuses = None if all_ else ("pending",)
    rows = c.call(lambda b: fetch(b, statuses, before, limit))
    nxt = rows[-1][id_column] if len(rows) == limit else None
    if c.as_json:
        _print_json({key: rows, "next": nxt})
        return
    table = Table(*columns)
    for r in rows:
        table.add_row(*cells(r))
    out.print(table)
    if nxt is not None:
        flags = " --all" if all_ else ""
        out.print(f"next page: maestro {command} list{flags} --limit {limit} --before {nxt}", markup=False)


# ------------------------------------------------------------------------------------ approvals


@approvals_app.command("list")
def approvals_list(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Include decided and expired approvals.")] = False,
    limit: Limit = 100,
    before: Before = None,
) -> None:
    """List approvals (pending ones by default), newest first, a page at a time."""
    _list_pending(
        ctx,
        all_,
        (before, limit),
        lambda b, statuses, before, limit: b.list_approvals(statuses, before=before, limit=limit),
        ("approvals", "approval_id", "approvals"),
        ("approval_id", "run_id", "tool", "risk", "arguments", "reasons", "status", "expires"),
        lambda r: (
            r["approval_id"],
            r["run_id"],
            r["tool"],
            r["risk"],
            json.dumps(r["arguments"]),
            "; ".join(r["reasons"]),
            r["status"],
            _expires(r["expires_at"]) if r["status"] == "pending" else "",
        ),
    )


def _decide(
    ctx: typer.Context, approval_id: str, *, approve: bool, by: str | None, reason: str, args: str | None, wait: bool
) -> None:
    c = _ctx(ctx)
    arguments = None
    if args is not None:
        try:
            arguments = json.loads(args)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--args is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
        if not isinstance(arguments, dict):
            raise ConfigError("--args must be a JSON object")
    _act_then_wait(
        c,
        lambda b: b.decide_approval(approval_id, approve=approve, by=by or None, reason=reason, arguments=arguments),
        lambda row: f"{approval_id} {row['status']} by {row['decided_by']}; run {row['run_id']} continues",
        wait,
    )


def _act_then_wait(
    c: _Ctx,
    act: Callable[[Plane], Awaitable[dict[str, Any]]],
    describe: Callable[[dict[str, Any]], str],
    wait: bool,
) -> None:
    """Record a human decision, report it (one line, or its JSON), and with ``--wait`` see the run through."""

    async def go(b: Plane) -> int:
        row = await act(b)
        if c.as_json and not wait:
            _print_json(row)
        elif not c.as_json:
            out.print(describe(row), markup=False)
        return await _see_through(c, b, row["run_id"], follow=False) if wait else 0

    raise typer.Exit(c.call(go))


@approvals_app.command("approve")
def approvals_approve(
    ctx: typer.Context,
    approval_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Why.")] = "",
    args: Annotated[str | None, typer.Option("--args", help="Approve with these edited arguments (JSON).")] = None,
    by: By = None,
    wait: Wait = False,
) -> None:
    """Approve a held tool call (optionally with edited arguments)."""
    _decide(ctx, approval_id, approve=True, by=by, reason=reason, args=args, wait=wait)


@approvals_app.command("reject")
def approvals_reject(
    ctx: typer.Context,
    approval_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Why; the model is told.")] = "rejected",
    by: By = None,
    wait: Wait = False,
) -> None:
    """Reject a held tool call; the reason goes back to the model."""
    _decide(ctx, approval_id, approve=False, by=by, reason=reason, args=None, wait=wait)


# ---------------------------------------------------------------------------------- escalations


@escalations_app.command("list")
def escalations_list(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Include resolved requests.")] = False,
    limit: Limit = 100,
    before: Before = None,
) -> None:
    """List runs waiting for a human (pending requests by default), newest first, a page at a time."""
    _list_pending(
        ctx,
        all_,
        (before, limit),
        lambda b, statuses, before, limit: b.list_human_requests(statuses, before=before, limit=limit),
        ("human_requests", "request_id", "escalations"),
        ("request_id", "run_id", "kind", "question", "options", "status"),
        lambda r: (r["request_id"], r["run_id"], r["kind"], r["question"], ", ".join(r["options"]), r["status"]),
    )


def _resolve(
    ctx: typer.Context, request_id: str, action: str, by: str | None, wait: bool = False, **kw: str | None
) -> None:
    _act_then_wait(
        _ctx(ctx),
        lambda b: b.resolve_human_request(
            request_id, action=action, by=by or None, instructions=kw.get("instructions"), answer=kw.get("answer")
        ),
        lambda row: f"{request_id} resolved ({action}) by {row.get('resolved_by') or by}; run {row['run_id']}",
        wait,
    )


@escalations_app.command("retry")
def escalations_retry(
    ctx: typer.Context,
    request_id: str,
    instructions: Annotated[str | None, typer.Option("--instructions", help="New instructions for the model.")] = None,
    by: By = None,
    wait: Wait = False,
) -> None:
    """Retry the step (optionally with new instructions for the model)."""
    _resolve(ctx, request_id, "retry", by, wait, instructions=instructions)


@escalations_app.command("answer")
def escalations_answer(
    ctx: typer.Context,
    request_id: str,
    answer: Annotated[str, typer.Argument(help="What the step should have produced.")],
    by: By = None,
    wait: Wait = False,
) -> None:
    """Answer in place of the failed or uncertain step."""
    _resolve(ctx, request_id, "answer", by, wait, answer=answer)


@escalations_app.command("abandon")
def escalations_abandon(
    ctx: typer.Context,
    request_id: str,
    reason: Annotated[str | None, typer.Option("--reason", help="Why.")] = None,
    by: By = None,
) -> None:
    """Give up: the run FAILS with who abandoned it and why."""
    _resolve(ctx, request_id, "abandon", by, instructions=reason)


# ------------------------------------------------------------------------------------------ gate


@gate_app.command("show")
def gate_show(ctx: typer.Context) -> None:
    """Show the workspace's gate rules (defaults when never set)."""
    c = _ctx(ctx)
    _print_json(GatePolicy.from_json(c.call(lambda b: b.gate())).to_json())


@gate_app.command("set")
def gate_set(
    ctx: typer.Context,
    level: Annotated[
        list[str] | None, typer.Option("--level", help="LEVEL=DECISION, e.g. DANGEROUS=deny (repeatable).")
    ] = None,
    deny_tool: Annotated[list[str] | None, typer.Option("--deny-tool", help="Always deny this tool.")] = None,
    allow_tool: Annotated[
        list[str] | None, typer.Option("--allow-tool", help="Only these tools may run (repeatable).")
    ] = None,
    approval_ttl: Annotated[
        float | None, typer.Option("--approval-ttl", min=0.001, help="Seconds before a pending approval is denied.")
    ] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Start from the defaults.")] = False,
) -> None:
    """Change the workspace's gate rules (validated before anything is stored)."""
    c = _ctx(ctx)

    async def go(b: Plane) -> dict[str, Any]:
        data = {} if reset else GatePolicy.from_json(await b.gate()).to_json()
        levels = dict(data.get("levels") or {})
        for item in level or []:
            name, sep, decision = item.partition("=")
            if not sep:
                raise ConfigError(f"--level {item!r} must look like LEVEL=DECISION, e.g. DANGEROUS=deny")
            levels[name.strip().upper()] = decision.strip().lower()
        data["levels"] = levels
        if deny_tool:
            data["deny_tools"] = sorted(set(data.get("deny_tools") or []) | set(deny_tool))
        if allow_tool:
            data["allow_tools"] = sorted(set(allow_tool))
        if approval_ttl is not None:
            data["approval_ttl_s"] = approval_ttl
        policy = GatePolicy.from_json(data)  # raises before storing anything invalid
        return GatePolicy.from_json(await b.set_gate(policy.to_json())).to_json()

    _print_json(c.call(go))
