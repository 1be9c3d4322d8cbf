"""``maestro audit verify|checkpoint|seal|list``: check, anchor and read the keyed audit chain."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agentmaestro.cli._common import _ctx, _print_json, app, out, when
from agentmaestro.errors import ConfigError

audit_app = typer.Typer(help="The keyed, hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    workspace: Annotated[
        str | None, typer.Option("--workspace", "-w", help="Only this workspace's chain (default: every chain).")
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="A file from `maestro audit checkpoint`: each chain it names must still reach the head it saw.",
        ),
    ] = None,
) -> None:
    """Walk the audit chain(s); report the first edited, deleted, forged or reordered entry and exit 1.

    With --checkpoint, a chain cut below the checkpoint's head, or gone, is reported too.
    With --server (an admin key): the key's workspace's chain, walked by the server.
    """
    c = _ctx(ctx)
    saved = _read_checkpoint(checkpoint) if checkpoint is not None else None
    reports = c.call(lambda b: b.verify_audit(workspace, saved))
    broken = [r for r in reports if not r["ok"]]
    if c.as_json:
        _print_json({"ok": not broken, "chains": reports})
    else:
        for r in reports:
            if r["ok"]:
                notes = [f"{r['entries']} entries"]
                if r.get("legacy_entries"):
                    notes.append(f"{r['legacy_entries']} from before keying, sealed")
                if r.get("checkpoint_seq") is not None:
                    notes.append(f"checkpoint at {r['checkpoint_seq']}")
                out.print(f"{r['workspace_id']}: ok ({'; '.join(notes)})", markup=False)
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


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read checkpoint {str(path)!r}: {exc.strerror or exc}") from None
    except ValueError:
        raise ConfigError(f"checkpoint {str(path)!r} is not JSON") from None
    if not isinstance(data, dict):
        raise ConfigError(f"checkpoint {str(path)!r} is not an audit checkpoint")
    return data


@audit_app.command("checkpoint")
def audit_checkpoint(
    ctx: typer.Context,
    workspace: Annotated[
        str | None, typer.Option("--workspace", "-w", help="Only this workspace's chain (default: every chain).")
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the checkpoint here (default: print it).")
    ] = None,
) -> None:
    """Sign a checkpoint of the chain heads (workspace, head seq, head hash, time) with the keyring.

    Keep it outside the database (another machine, object storage with retention): `maestro audit verify
    --checkpoint FILE` then detects a chain cut below it or deleted. A broken chain gets no checkpoint.
    With --server (an admin key): the key's workspace, signed by the server.
    """
    c = _ctx(ctx)
    cp = c.call(lambda b: b.audit_checkpoint(workspace))
    text = json.dumps(cp, indent=2, sort_keys=True) + "\n"
    if out_file is None:
        sys.stdout.write(text)
        return
    try:
        out_file.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {str(out_file)!r}: {exc.strerror or exc}") from None
    if c.as_json:
        _print_json(cp)
        return
    for chain in cp["chains"]:
        out.print(f"{chain['workspace_id']}: head {chain['head_seq']} {chain['head_hash'][:16]}...", markup=False)
    out.print(f"checkpoint written to {out_file}", markup=False)


@audit_app.command("seal")
def audit_seal(ctx: typer.Context) -> None:
    """Append a keyed audit.seal entry to every chain that ends with unkeyed entries, vouching for them.

    Migration 0013 seals the chains written before keying; use this only for a chain you know was written
    then (e.g. migrated without the server's keyring). Run it with the keyring the server uses.
    """
    c = _ctx(ctx)
    sealed = c.call(lambda b: b.seal_audit())
    if c.as_json:
        _print_json(sealed)
        return
    for row in sealed:
        out.print(
            f"{row['workspace_id']}: sealed entries 1-{row['detail']['sealed_seq']} at {row['seq']}", markup=False
        )
    if not sealed:
        out.print("nothing to seal: every chain ends with a keyed entry", markup=False)


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
        table.add_row(str(r["seq"]), when(r["at"]), r["actor"], r["action"], r["target"] or "", json.dumps(r["detail"]))
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
