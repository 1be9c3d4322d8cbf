"""Outside ``store/``, code uses the store's public modules only: never ``agentmaestro.store._*``.

The private modules hold the SQL; the repositories in the public modules (``store.runs``,
``store.approvals``, ...) are the store's interface. Checked on the source text, so imports inside
functions count too. And ``Store`` stays plumbing: any other public name on it is a repository,
``store.<name>`` from ``store/<name>.py``.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT / "src" / "agentmaestro" / "store"
TREES = ("src", "tests", "benchmarks", "examples")


def _private_store_imports(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["agentmaestro", "store"] and len(parts) > 2 and parts[2].startswith("_"):
                found.append(f"{where}:{node.lineno}: {name}")
                break
    return found


def test_no_module_outside_the_store_imports_a_private_store_module() -> None:
    offenders = [
        hit
        for tree in TREES
        if (ROOT / tree).is_dir()
        for path in sorted((ROOT / tree).rglob("*.py"))
        if STORE not in path.parents
        for hit in _private_store_imports(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert offenders == [], "\n".join(offenders)


def test_the_check_sees_both_import_forms_and_imports_inside_functions() -> None:
    source = (
        "from agentmaestro.store import _ops, runs\n"
        "import agentmaestro.store._audit\n"
        "from agentmaestro.store.runs import NewRun\n"
        "def f():\n    from agentmaestro.store._webhooks import claim\n"
    )
    assert [hit.split(": ")[1] for hit in _private_store_imports(source, "probe.py")] == [
        "agentmaestro.store._ops",
        "agentmaestro.store._audit",
        "agentmaestro.store._webhooks",
    ]


PLUMBING = {
    "open",
    "upgrade",
    "check_schema",
    "close",
    "close_sync",
    "closed",
    "session_timeouts",
    "set_session_timeouts",
    "listen_deltas",
}
"""What ``Store`` itself offers: the database's lifecycle, migrations and session settings."""


def test_the_store_keeps_plumbing_and_hands_out_one_repository_per_concern() -> None:
    from functools import cached_property

    from agentmaestro.store.base import Store

    public = {name: value for name, value in vars(Store).items() if not name.startswith("_")}
    repositories = {name for name, value in public.items() if isinstance(value, cached_property)}
    assert set(public) - repositories == PLUMBING, "a new concern belongs in a repository of its own"
    for name in repositories:
        cls = public[name].func.__annotations__["return"]  # a string: annotations are postponed
        module = importlib.import_module(f"agentmaestro.store.{name}")
        assert cls.endswith("Repository") and hasattr(module, cls), (name, cls)
