"""Outside ``store/``, code uses the store's public modules only: never ``agentmaestro.store._*``.

The private modules hold the SQL; the repositories in the public modules (``store.runs``,
``store.approvals``, ...) are the store's interface. Checked on the source text, so imports inside
functions count too.
"""

from __future__ import annotations

import ast
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
