"""``maestro audit verify|list``: check and read the hash-chained audit log."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from agentmaestro.actor import local_actor
from agentmaestro.cli._common import _ctx, _print_json, app, out

audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def cli_actor() -> str:
    """How a CLI user is named in runs and the audit log: ``cli:<login>``."""
    return local_actor("cli")


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    workspace: Annotated[
        str | None, typer.Option("--workspace", "-w", help="Only this workspace's chain (default: every chain).")
    ] = None,
) -> None:
    """Walk the audit chain(s); report the first edited, deleted or reordered entry and exit 1.

    With --server (an admin key): the key's workspace's chain, walked by the server.
    """
    c = _ctx(ctx)
    reports = c.call(lambda b: b.verify_audit(workspace))
    broken = [r for r in reports if not r["ok"]]
    if c.as_json:
        _print_json({"ok": not broken, "chains": reports})
    else:
        for r in reports:
            if r["ok"]:
                out.print(f"{r['workspace_id']}: ok ({r['entries']} entries)", markup=False)
            else:
                out.print(f"{r['workspace_id']}: BROKEN at entry {r['broken_seq']}: {r['reason']}", markup=False)
        if not reports:
            out.print("no audit entries", markup=False)
    if broken:
        first = broken[0]
        sys.stderr.write(
            f"error: audit chain of workspace {first['workspace_id']!r} is broken at entry {first['broken_seq']}: "
            f"{first['reason']}\n"
        )
        raise typer.Exit(1)


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="How many entries.")] = 50,
    action: Annotated[str | None, typer.Option("--action", help="Only this action, e.g. key.create.")] = None,
) -> None:
    """The workspace's newest audit entries."""
    c = _ctx(ctx)
    rows = c.call(lambda b: b.audit_entries(limit=limit, action=action))
    if c.as_json:
        _print_json(rows)
        return
    table = Table("seq", "at", "actor", "action", "target", "detail")
    for r in rows:
        table.add_row(
            str(r["seq"]), f"{r['at']:.3f}", r["actor"], r["action"], r["target"] or "", json.dumps(r["detail"])
        )
    out.print(table)


secret_key_app = typer.Typer(help="The keyring that encrypts credentials and signs links.", no_args_is_help=True)
app.add_typer(secret_key_app, name="secret-key")


@secret_key_app.command("generate")
def secret_key_generate() -> None:
    """Print a new Fernet key for MAESTRO_SECRET_KEYS (put it first; keep old keys after it to rotate)."""
    from agentmaestro.crypto import generate_key

    sys.stdout.write(generate_key() + "\n")


def _when(value: str | None, option: str) -> float | None:
    """A CLI time: Unix seconds, or an ISO 8601 date/time (UTC when it has no offset)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO date/time or Unix seconds", param_hint=option) from None
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


@app.command("usage")
def usage(
    ctx: typer.Context,
    by: Annotated[
        str, typer.Option("--by", help="Group by agent, model, day or user (who started the run tree).")
    ] = "agent",
    since: Annotated[str | None, typer.Option("--since", help="Start (default: start of this month, UTC).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="End, exclusive (default: now).")] = None,
) -> None:
    """Tokens, calls and cost of the workspace, grouped by agent, model, day or user."""
    if by not in ("agent", "model", "day", "user"):
        raise typer.BadParameter(f"must be agent, model, day or user, not {by!r}", param_hint="--by")
    start, end = _when(since, "--since"), _when(until, "--until")
    c = _ctx(ctx)
    report = c.call(lambda b: b.usage(since=start, until=end, group_by=by))
    if c.as_json:
        _print_json(report)
        return
    table = Table(by, "runs", "model calls", "tool calls", "tokens", "cost (USD)")
    for g in [*report["groups"], {**report["total"], "key": "total"}]:
        table.add_row(
            g["key"] or "(not recorded)",
            str(g["runs"]),
            str(g["model_calls"]),
            str(g["tool_calls"]),
            str(g["tokens"]),
            f"{g['cost_usd']:.6f}",
        )
    out.print(table)
