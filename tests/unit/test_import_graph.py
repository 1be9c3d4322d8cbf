"""The import graph of ``src/agentmaestro``: no cycle between files, and no import up the layer map.

The layer map (also drawn in docs/architecture.md) lists the package's parts from the bottom up. A part is a
package or module under ``agentmaestro`` ("store", "tools.builtin", "sdk"); a module belongs to the longest part
naming it or one of its packages. The rule:

* a module may import modules of its own part and of parts in *lower* layers;
* parts in the same layer do not import each other (they are siblings: ``engine`` and ``client``);
* no two files import each other, directly or through others, at run time (within a part and so across the whole
  package).

What counts as an import: every ``import`` and ``from ... import`` statement naming an ``agentmaestro`` module,
wherever it stands. At module level and inside a function alike: a lazy import, made for start-up time or for an
optional dependency, is still a dependency (it runs when the function does), so it counts for both rules. Under
``if TYPE_CHECKING:`` it counts for the layer rule (a type is a dependency too) but not for cycles: it never runs,
and a back-reference to the type of one's owner (a repository annotated with the ``Store`` that made it) is fine.
Names reached through ``importlib.import_module`` strings are not seen; two places use them on purpose, both above
everything they load: the package root's lazy re-exports (``agentmaestro/__init__.py``, PEP 562) and the CLI's
lazily imported command modules (``cli/_lazy.py``).

``from pkg import name`` is an import of the module ``pkg.name`` when there is one, else of ``pkg``. Importing
``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``; those are kept light (docstrings, or lazy
re-exports), which ``test_core_loads_no_io_library`` checks for the part that matters most.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = "agentmaestro"
SRC = Path(__file__).resolve().parents[2] / "src" / PACKAGE

LAYERS: list[tuple[str, ...]] = [
    ("_version", "errors", "actor"),  # names every layer shares
    ("core",),  # pure rules as data: states, decisions, events and their fold, policy, gate
    ("crypto", "telemetry", "ceilings"),  # process-wide utilities
    ("store",),  # database plumbing and queries
    ("models",),  # model protocol and providers
    ("knowledge",),  # RAG: chunking, embedders (built on models), the index
    ("tools",),  # the tool framework: @tool, registry, context, redaction, sandbox, MCP client
    ("credentials",),  # credentials handed to tools, OAuth
    ("tools.builtin",),  # built-in tools, built on credentials and knowledge
    ("agents", "demo"),  # Agent definitions (model + tools + policy); the demo's tools
    ("workflows", "objectives", "adapters"),  # graphs of agent tasks; objectives; other frameworks' agents
    ("notify",),  # outgoing webhooks
    ("engine", "client"),  # driver (decide -> act -> commit), worker (claims, leases); the REST API's HTTP client
    ("service",),  # one function per use case, called by every door (locally, or remotely through the client)
    ("sdk",),  # door: the Python API (in-process)
    ("server",),  # door: REST API, dashboard, chat endpoint, MCP server
    ("integrations",),  # what is left of integrations/: deprecated aliases, MCP planes until service replaces them
    ("cli",),  # door: the maestro command, over the database, the server or MCP
    ("",),  # the package root: lazy re-exports of the public names
]
"""The layer map, bottom first."""

UPWARD_FOR_NOW: dict[tuple[str, str], str] = {}
"""Imports against the map that are known and have a plan (module, imported module); each must still exist."""

CYCLES_FOR_NOW: dict[frozenset[str], str] = {}
"""File cycles that are known and have a plan; each must still exist."""


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        if "migrations" in parts:  # Alembic scripts, loaded by Alembic from the store
            continue
        found[".".join(parts)] = path
    return found


@cache
def _graph(*, runtime_only: bool = False) -> dict[str, set[str]]:
    """Module -> the modules it imports; ``runtime_only`` leaves out imports under ``if TYPE_CHECKING:``."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = graph.setdefault(name, set())
        for target, type_only in _imports(name, path, modules):
            if target != name and not (runtime_only and type_only):
                targets.add(target)
    return graph


def _imports(name: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, bool]]:
    """Each imported ``agentmaestro`` module, and whether the import is under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        for target in _targets(node, name, path.name == "__init__.py", modules):
            yield target, id(node) in type_only


def _targets(node: ast.AST, name: str, is_package: bool, modules: dict[str, Path]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == PACKAGE:
                yield _owner(alias.name, modules)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            here = name.split(".") if is_package else name.split(".")[:-1]
            here = here[: len(here) - (node.level - 1)]
            base = ".".join([*here, *([base] if base else [])])
        if base.split(".")[0] == PACKAGE:
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield full if full in modules else _owner(base, modules)


def _owner(dotted: str, modules: dict[str, Path]) -> str:
    while dotted not in modules:
        dotted = dotted.rpartition(".")[0]
    return dotted


def _part(module: str) -> str:
    """The layer-map part a module belongs to (the longest one naming it or a package above it)."""
    rel = module.removeprefix(PACKAGE).removeprefix(".")
    best = None
    for layer in LAYERS:
        for part in layer:
            if (part == "" and rel == "") or (part and (rel == part or rel.startswith(part + "."))):
                if best is None or len(part) > len(best):
                    best = part
    assert best is not None, f"{module} is in no part of LAYERS: place it in the layer map (and docs/architecture.md)"
    return best


def _layer(part: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if part in layer)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_module_has_a_place_in_the_layer_map() -> None:
    for module in _graph():
        _part(module)


def test_layer_map_names_no_part_twice() -> None:
    parts = [part for layer in LAYERS for part in layer]
    assert len(parts) == len(set(parts))


def _short(module: str) -> str:
    return module.removeprefix(PACKAGE + ".")


def _against_the_map() -> dict[tuple[str, str], str]:
    found = {}
    for module, targets in sorted(_graph().items()):
        part = _part(module)
        for target in sorted(targets):
            other = _part(target)
            if other != part and _layer(other) >= _layer(part):
                direction = "up" if _layer(other) > _layer(part) else "sideways"
                found[_short(module), _short(target)] = (
                    f"{module} ({part or 'root'}) imports {target} ({other}): {direction}"
                )
    return found


def test_no_import_goes_up_or_sideways() -> None:
    wrong = [line for pair, line in _against_the_map().items() if pair not in UPWARD_FOR_NOW]
    assert not wrong, "imports against the layer map (tests/unit/test_import_graph.py):\n" + "\n".join(wrong)


def test_no_import_cycle_between_files() -> None:
    cycles = [c for c in _cycles(_graph(runtime_only=True)) if frozenset(map(_short, c)) not in CYCLES_FOR_NOW]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_known_exceptions_still_exist() -> None:
    """An exception that no longer happens is taken off its list, so the lists only ever shrink."""
    gone = set(UPWARD_FOR_NOW) - set(_against_the_map())
    assert not gone, f"no longer imported against the map; remove from UPWARD_FOR_NOW: {sorted(gone)}"
    cycles = {frozenset(map(_short, c)) for c in _cycles(_graph(runtime_only=True))}
    ended = [sorted(c) for c in CYCLES_FOR_NOW if c not in cycles]
    assert not ended, f"no longer a cycle; remove from CYCLES_FOR_NOW: {ended}"


def test_the_checker_sees_cycles_and_lazy_imports() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    modules = _modules()
    runs_cli = _graph(runtime_only=True)[f"{PACKAGE}.cli.runs"]  # imports the engine inside its commands only
    assert f"{PACKAGE}.engine.worker" in runs_cli
    # the package root re-exports the SDK's names for type checkers only
    assert f"{PACKAGE}.sdk" in _graph()[PACKAGE] and f"{PACKAGE}.sdk" not in _graph(runtime_only=True)[PACKAGE]
    assert _owner(f"{PACKAGE}.store.base.Store", modules) == f"{PACKAGE}.store.base"


def test_core_loads_no_io_library() -> None:
    """``import agentmaestro.core.decide`` (or the package) loads neither SQLAlchemy, the store, nor the SDK."""
    code = (
        "import sys, agentmaestro, agentmaestro.core.decide, agentmaestro.core.events\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'sqlalchemy', 'httpx', 'fastapi', 'typer', 'anyio'}"
        " or m.startswith(('agentmaestro.store', 'agentmaestro.sdk', 'agentmaestro.engine')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
