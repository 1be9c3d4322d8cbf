"""Every name the README and docs import from the package root is there (the root re-exports them lazily)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import agentmaestro

ROOT = Path(__file__).resolve().parents[2]
IMPORT = re.compile(r"^\s*from agentmaestro import (?:\(([^)]*)\)|([^(\n]+))$", re.MULTILINE)


def _documented() -> set[str]:
    names: set[str] = set()
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in IMPORT.finditer(doc.read_text(encoding="utf-8")):
            body = (match.group(1) or match.group(2)).split("#")[0]
            names.update(n.split(" as ")[0].strip() for n in body.replace("\n", ",").split(",") if n.strip())
    return names


def test_documented_root_imports_resolve() -> None:
    documented = _documented()
    assert {"Orchestrator", "tool", "Reconciled"} <= documented  # the scan finds them
    missing = sorted(n for n in documented if not hasattr(agentmaestro, n))
    assert not missing, f"documented as `from agentmaestro import ...` but not exported: {missing}"


def test_every_export_is_listed_and_resolves() -> None:
    exports = set(agentmaestro.__all__) - {"__version__"}
    module = importlib.import_module("agentmaestro")
    assert exports == set(module._EXPORTS)
    for name in sorted(exports):
        assert getattr(module, name) is not None
