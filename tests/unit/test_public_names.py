"""Every import the README and docs show works: the root's lazy re-exports, and every ``agentmaestro.*`` path."""

from __future__ import annotations

import importlib
import re
import warnings
from pathlib import Path

import agentmaestro

ROOT = Path(__file__).resolve().parents[2]
IMPORT = re.compile(r"^\s*from (agentmaestro[\w.]*) import (?:\(([^)]*)\)|([^(\n]+))$", re.MULTILINE)


def _documented() -> dict[str, set[str]]:
    """Module -> the names the docs import from it (``from agentmaestro.x import a, b`` lines, in code blocks)."""
    found: dict[str, set[str]] = {}
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in IMPORT.finditer(doc.read_text(encoding="utf-8")):
            body = (match.group(2) or match.group(3)).split("#")[0]
            names = {n.split(" as ")[0].strip() for n in body.replace("\n", ",").split(",") if n.strip()}
            found.setdefault(match.group(1), set()).update(names)
    return found


def test_documented_root_imports_resolve() -> None:
    documented = _documented()["agentmaestro"]
    assert {"Orchestrator", "tool", "Reconciled"} <= documented  # the scan finds them
    missing = sorted(n for n in documented if not hasattr(agentmaestro, n))
    assert not missing, f"documented as `from agentmaestro import ...` but not exported: {missing}"


def test_documented_module_imports_resolve() -> None:
    documented = _documented()
    assert "agentmaestro.credentials.runtime" in documented  # the scan finds module paths too
    missing = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the docs name no deprecated path
        for module_name, names in sorted(documented.items()):
            module = importlib.import_module(module_name)
            missing += [f"{module_name}.{n}" for n in sorted(names) if not hasattr(module, n)]
    assert not missing, f"documented imports that fail: {missing}"


def test_every_export_is_listed_and_resolves() -> None:
    exports = set(agentmaestro.__all__) - {"__version__"}
    module = importlib.import_module("agentmaestro")
    assert exports == set(module._EXPORTS)
    for name in sorted(exports):
        assert getattr(module, name) is not None
