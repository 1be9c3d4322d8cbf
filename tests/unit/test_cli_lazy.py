"""The CLI and the package load lazily: ``maestro --help`` imports no database, HTTP or Rich library, ``core`` no
SQLAlchemy, and the lazy command table says exactly what the command modules register."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer

from agentmaestro.cli import _lazy
from agentmaestro.cli._common import app

HEAVY = (
    *("sqlalchemy", "alembic", "httpx", "rich", "pydantic", "openai", "anthropic", "fastapi", "yaml", "qdrant_client"),
)


def loaded_after(code: str) -> list[str]:
    """Top-level packages among HEAVY imported by ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return [m for m in json.loads(out.stdout.splitlines()[-1]) if m in HEAVY]


def test_help_and_core_import_no_heavy_library() -> None:
    assert loaded_after("import agentmaestro.core.decide, agentmaestro.core.events, agentmaestro") == []
    help_run = "from agentmaestro.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    assert loaded_after(help_run) == []
    states = "from agentmaestro.cli import main\ntry:\n    main(['states'])\nexcept SystemExit:\n    pass"
    assert "sqlalchemy" not in loaded_after(states)  # a command without a database opens none
    # The package's public names still import on first use.
    assert loaded_after("from agentmaestro import RunStatus, StrictPolicy, ConfigError") == []
    assert "sqlalchemy" in loaded_after("from agentmaestro import Orchestrator")


def test_listing_knowledge_does_not_load_qdrant(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    argv = ["--database-url", url, "knowledge", "list"]
    listing = f"from agentmaestro.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert "qdrant_client" not in loaded_after(listing)  # the vector index opens when a command needs it


def test_the_lazy_table_matches_the_registered_commands() -> None:
    _lazy.load_all()
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    registered = {name: cmd.get_short_help_str(limit=1000) for name, cmd in group.commands.items()}
    assert registered == {name: text for name, (_, text) in _lazy.COMMANDS.items()}
    for name, (module, _) in _lazy.COMMANDS.items():  # each command lives in the module the table names
        callback = group.commands[name].callback
        if callback is not None and not isinstance(group.commands[name], typer.core.TyperGroup):
            assert callback.__module__ == f"agentmaestro.cli.{module}", name


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from agentmaestro.cli import main; main(['--help'])"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": ""},
    )
    assert out.returncode == 0, out.stderr
    listed = [line.split()[0] for line in out.stdout.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == list(_lazy.COMMANDS)
