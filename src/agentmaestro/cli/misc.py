"""``maestro states``, ``maestro db ...`` and ``maestro agents ...``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from agentmaestro.cli._common import _ctx, _print_json, app, out
from agentmaestro.core.decide import render_decision_table
from agentmaestro.core.reconcile import render_recovery_table
from agentmaestro.core.states import render_table_mermaid, render_table_text

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
agents_app = typer.Typer(help="Agent definitions.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(agents_app, name="agents")


@app.command()
def states(
    mermaid: Annotated[bool, typer.Option("--mermaid", help="Print the status table as a Mermaid diagram.")] = False,
) -> None:
    """Print the run status transition table and the decision table."""
    if mermaid:
        out.print(render_table_mermaid(), markup=False)
        return
    out.print("Run status transitions (any other pair is rejected):\n", markup=False)
    out.print(render_table_text(), markup=False)
    out.print("\nDecision table for a RUNNING run (first match wins):\n", markup=False)
    out.print(render_decision_table(), markup=False)
    out.print(
        "\nA non-idempotent call left uncertain by a crash (RECOVER_UNCERTAIN): the tool's reconcile says, then\n",
        markup=False,
    )
    out.print(render_recovery_table(), markup=False)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the database schema to the latest revision."""
    c = _ctx(ctx)
    c.local_only("db upgrade")
    from agentmaestro.store.base import Store
    from agentmaestro.store.dialects import redact_url

    store = Store(c.database_url)
    try:
        rev = store.upgrade()
    finally:
        store.close_sync()
    out.print(f"database {redact_url(store.url)} is at revision {rev}", markup=False)


@agents_app.command("list")
def agents_list(ctx: typer.Context) -> None:
    """List the agents this CLI (and a worker started here) can run; with --server, the server's agents."""
    c = _ctx(ctx)
    specs = c.call(lambda b: b.list_agents())
    if c.as_json:
        _print_json(specs)
        return
    table = Table("name", "model", "tools", "description")
    for a in specs:
        table.add_row(a["name"], a["model"], ", ".join(t["name"] for t in a["tools"]), a["description"])
    out.print(table)


@agents_app.command("show")
def agents_show(ctx: typer.Context, name: str) -> None:
    """Show one agent's definition (a name, or locally a YAML file)."""
    c = _ctx(ctx)
    _print_json(c.call(lambda b: b.get_agent(name)))


tools_app = typer.Typer(help="Tools the agents can call.", no_args_is_help=True)
app.add_typer(tools_app, name="tools")


@tools_app.command("list")
def tools_list(ctx: typer.Context) -> None:
    """List every tool some agent can call, with its risk level (with --server, the server's)."""
    c = _ctx(ctx)
    specs = c.call(lambda b: b.list_agents())
    tools: dict[str, dict[str, Any]] = {}
    for a in specs:
        for t in a["tools"]:
            entry = tools.setdefault(t["name"], {**t, "agents": []})
            entry["agents"].append(a["name"])
    rows = sorted(tools.values(), key=lambda t: t["name"])
    if c.as_json:
        _print_json(rows)
        return
    table = Table("name", "risk", "idempotent", "agents")
    for t in rows:
        table.add_row(t["name"], str(t.get("risk", "")), "yes" if t.get("idempotent") else "no", ", ".join(t["agents"]))
    out.print(table)
