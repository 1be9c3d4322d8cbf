"""The ``maestro`` command group, which imports a command's module only when that command runs.

``maestro --help`` and ``maestro runs list`` should start in a fraction of a second: the group knows every
top-level command's name, module and one-line help (:data:`COMMANDS`), lists them from that table, and imports
a module (which registers its commands on the shared Typer app) the first time one of its commands is asked
for. ``tests/unit/test_cli_lazy.py`` checks the table against the commands the modules really register.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
import typer.core
from typer import _click as click

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("runs", "Start a run."),
    "runs": ("runs", "Inspect and control runs."),
    "worker": ("runs", "Run a worker process: claim and execute runs (agents and workflows) until SIGINT/SIGTERM."),
    "demo": ("runs", "Run the offline demo agents (scripted models) and show what to do next."),
    "serve": ("server", "Serve the REST API (and an embedded worker) until SIGINT/SIGTERM."),
    "keys": ("server", "API keys (shown once, stored hashed)."),
    "workspaces": ("server", "Workspaces (tenants)."),
    "states": ("misc", "Print the run status transition table and the decision table."),
    "db": ("misc", "Database schema."),
    "agents": ("misc", "Agent definitions."),
    "tools": ("misc", "Tools the agents can call."),
    "approvals": ("human", "Tool calls waiting for a human decision."),
    "escalations": ("human", "Runs waiting for a human after failures or uncertain steps."),
    "gate": ("human", "The workspace's risk gate rules."),
    "workflows": ("workflows", "Declarative workflows (YAML graphs of agent tasks)."),
    "objective": (
        "objectives",
        "Hand a goal to a planner agent; its tasks run as child runs, reviewed by a strategist agent.",
    ),
    "objectives": ("objectives", "Objectives: goals planned into task graphs (docs/objectives.md)."),
    "usage": ("admin", "Tokens, calls and cost of the workspace, grouped by agent, model, day or user."),
    "audit": ("admin", "The keyed, hash-chained audit log."),
    "secret-key": ("admin", "The keyring that encrypts credentials and signs links."),
    "mcp": ("mcp", "Serve the control plane over MCP (stdio): runs, events and approvals as tools (docs/mcp.md)."),
    "knowledge": (
        "knowledge",
        "Knowledge collections (RAG): ingest text files, search them with citations (docs/knowledge.md).",
    ),
    "credentials": ("credentials", "Named credentials for tools, encrypted at rest."),
    "oauth": ("credentials", "OAuth 2.0 authorizations (PKCE) that store tokens as credentials."),
    "webhooks": ("webhooks", "Outgoing webhooks: notifications to JSON endpoints, Slack and Telegram."),
}
"""Top-level command -> (module under ``agentmaestro.cli``, one-line help shown by ``maestro --help``)."""

_loaded: set[str] = set()


def load(module: str) -> None:
    """Import ``agentmaestro.cli.<module>`` (its commands register themselves on the app)."""
    if module not in _loaded:
        importlib.import_module(f"agentmaestro.cli.{module}")
        _loaded.add(module)


def load_all() -> None:
    """Import every command module (for tests and tools that want the whole command tree)."""
    for module in sorted({m for m, _ in COMMANDS.values()}):
        load(module)


def _build(name: str) -> click.Command | None:
    """The click command for one top-level name, built from its Typer registration alone.

    Building the whole app would work out the parameters of every command of the loaded modules (their type
    hints are evaluated: about 0.1 s for ``runs.py`` alone); a command needs only its own.
    """
    for info in app.registered_commands:
        if info.callback is not None and (info.name or typer.main.get_command_name(info.callback.__name__)) == name:
            return typer.main.get_command_from_info(
                info, pretty_exceptions_short=app.pretty_exceptions_short, rich_markup_mode=app.rich_markup_mode
            )
    for group in app.registered_groups:
        if group.name == name:
            return typer.main.get_group_from_info(
                group,
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
                suggest_commands=app.suggest_commands,
            )
    return None


class LazyGroup(typer.core.TyperGroup):
    """A Typer group whose commands come from :data:`COMMANDS`, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command, in the order of :data:`COMMANDS` (then any registered outside it)."""
        return [*COMMANDS, *(n for n in self.commands if n not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, importing its module (and rebuilding it from the Typer app) the first time."""
        entry = COMMANDS.get(cmd_name)
        if entry is not None and entry[0] not in _loaded:
            load(entry[0])
            self.commands.pop(cmd_name, None)
        if cmd_name not in self.commands and entry is not None:
            command = _build(cmd_name)
            if command is not None:
                self.commands[cmd_name] = command
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: Any) -> None:
        """The command list from :data:`COMMANDS`, without importing any command module."""
        width = max(len(name) for name in COMMANDS)
        limit = formatter.width - 6 - width
        rows = [(name, click.utils.make_default_short_help(text, limit)) for name, (_, text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(
    name="maestro",
    help="AgentMaestro: run LLM agents as durable, deterministic, governed processes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=LazyGroup,
)
"""The ``maestro`` app; every command module registers its commands on it (through ``cli._common``)."""
