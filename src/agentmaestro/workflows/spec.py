"""Workflow definitions: YAML -> a validated graph (pydantic), with line-numbered errors.

A workflow is a list of nodes (an agent, an input template, dependencies, a condition) plus an
optional refinement loop. :func:`validate_text` reports every problem with the YAML line it is on;
:func:`load_workflow` raises :class:`WorkflowError` listing them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from agentmaestro.agents import AgentRegistry, load_agents_dir
from agentmaestro.errors import ConfigError, one_line
from agentmaestro.workflows import expr

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,200}$"
NODE_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"
ENV_NAMES = frozenset({"input", "context", "nodes", "iteration"})
"""Names an expression may read (plus ``true``, ``false``, ``null``)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyOverrides(_Strict):
    """Limits for a node's child run (or, on the workflow, budgets shared by all its nodes)."""

    max_steps: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    max_tool_calls: int | None = Field(default=None, ge=0)
    max_cost_usd: float | None = Field(default=None, ge=0)
    timeout_s: float | None = Field(default=None, ge=0)

    def to_overrides(self) -> dict[str, Any]:
        """The limits that are set."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class RetrySpec(_Strict):
    """Failed attempts in a row (model or tool errors) before the node's run asks a human."""

    max_attempts: int = Field(ge=1, le=20)


class Node(_Strict):
    """One agent task of the workflow; it runs as a child run of the workflow run."""

    id: str = Field(pattern=NODE_ID_PATTERN, description="Unique id; letters, digits and '_' (used as nodes.ID).")
    agent: str = Field(pattern=NAME_PATTERN, description="The agent that performs the task.")
    input: str = Field(default="{{ input }}", description="Template of the task: text with {{ expression }} holes.")
    depends_on: list[str] = Field(default_factory=list, description="Nodes that must finish first.")
    when: str | None = Field(default=None, description="Condition; the node is skipped when it is false.")
    on_failure: Literal["fail", "continue"] = Field(
        default="fail", description="'fail' fails the workflow; 'continue' lets dependants run."
    )
    retry: RetrySpec | None = None
    policy: PolicyOverrides | None = None
    description: str = ""


class Refine(_Strict):
    """Iterative refinement: draft -> review -> revise until ``accept_when`` or ``max_iterations``."""

    draft: str = Field(description="Node that writes (and revises) the draft.")
    review: str = Field(description="Node that reviews it; must depend on the draft node.")
    max_iterations: int = Field(default=3, ge=1, le=20)
    accept_when: str = Field(description="Condition over the context after each review.")


class Workflow(_Strict):
    """A workflow definition (the YAML file's top level)."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    input: str | dict[str, Any] | None = Field(default=None, description="What the input should be (a note).")
    context: dict[str, Any] = Field(default_factory=dict, description="Initial values, read as context.KEY.")
    nodes: list[Node] = Field(min_length=1, max_length=1000)
    refine: Refine | None = None
    output: str | None = Field(default=None, description="Template of the result; default: the last node's output.")
    max_concurrent_nodes: int = Field(default=5, ge=1, le=100, description="Most nodes running at once.")
    policy: PolicyOverrides | None = Field(default=None, description="Budgets shared by every node's run.")

    def node(self, node_id: str) -> Node:
        """The node called ``node_id``."""
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise ConfigError(f"workflow {self.name!r} has no node {node_id!r}")

    def agent_names(self) -> list[str]:
        """Agents the nodes use."""
        return sorted({n.agent for n in self.nodes})

    def to_spec(self, source: str | None = None) -> dict[str, Any]:
        """The run spec stored with each workflow run (``kind: workflow`` plus the definition)."""
        return {
            "kind": "workflow",
            "name": self.name,
            "description": self.description,
            "workflow": self.model_dump(mode="json", exclude_none=True),
            "source": source,
        }


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of workflow files."""
    schema = Workflow.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "AgentMaestro workflow"
    return schema


# ------------------------------------------------------------------------------------ validation


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One validation error."""

    path: str
    """Where in the document, e.g. ``nodes[2].depends_on[0]``."""
    message: str
    """What is wrong."""
    line: int | None = None
    """1-based YAML line, when known."""

    def format(self, source: str) -> str:
        """``SOURCE:LINE: PATH: MESSAGE``."""
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {self.path or '(top)'}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {"path": self.path, "line": self.line, "message": self.message}


class WorkflowError(ConfigError):
    """A workflow file is invalid; ``problems`` lists every error with its line."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = [p.format(source) for p in self.problems]
        super().__init__(f"invalid workflow ({len(lines)} problem(s)): " + "; ".join(lines))


def _path_str(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(root: yaml.Node | None, path: Sequence[str | int]) -> int | None:
    """1-based line of the deepest YAML node on ``path``."""
    node = root
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in path:
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    nxt = v
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            nxt = node.value[part]
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


def _graph_problems(wf: Workflow, agents: AgentRegistry | None) -> Iterator[tuple[tuple[str | int, ...], str]]:
    ids = [n.id for n in wf.nodes]
    seen: set[str] = set()
    for i, n in enumerate(wf.nodes):
        if n.id in seen:
            yield ("nodes", i, "id"), f"duplicate node id {n.id!r}"
        seen.add(n.id)
        for j, dep in enumerate(n.depends_on):
            if dep not in ids:
                yield ("nodes", i, "depends_on", j), f"unknown node {dep!r}; nodes: {', '.join(ids)}"
            elif dep == n.id:
                yield ("nodes", i, "depends_on", j), "a node cannot depend on itself"
        if agents is not None and n.agent not in agents:
            yield ("nodes", i, "agent"), f"unknown agent {n.agent!r}; known agents: {', '.join(agents.names())}"
        yield from _expr_problems(n.input, ("nodes", i, "input"), ids, template=True)
        if n.when is not None:
            yield from _expr_problems(n.when, ("nodes", i, "when"), ids, template=False)
    cycle = _find_cycle(wf)
    if cycle:
        i = ids.index(cycle[0])
        yield ("nodes", i, "depends_on"), f"dependency cycle: {' -> '.join(cycle)}"
    if wf.refine is not None:
        r = wf.refine
        for field in ("draft", "review"):
            if getattr(r, field) not in ids:
                yield ("refine", field), f"unknown node {getattr(r, field)!r}"
        if r.draft in ids and r.review in ids:
            if r.draft == r.review:
                yield ("refine", "review"), "draft and review must be different nodes"
            elif r.draft not in wf.node(r.review).depends_on:
                yield ("refine", "review"), f"node {r.review!r} must depend on the draft node {r.draft!r}"
        yield from _expr_problems(r.accept_when, ("refine", "accept_when"), ids, template=False)
    if wf.output is not None:
        yield from _expr_problems(wf.output, ("output",), ids, template=True)


def _expr_problems(
    text: str, path: tuple[str | int, ...], ids: list[str], *, template: bool
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    sources = expr.template_expressions(text) if template else [text]
    reported: set[str] = set()
    for src in sources:
        try:
            tree = expr.parse(src)
        except expr.ExpressionError as exc:
            yield path, str(exc)
            continue
        for names in expr.names_used(tree):
            head, message = names[0], ""
            if head not in ENV_NAMES and head.lower() not in expr.CONSTANT_NAMES:
                message = f"unknown name {head!r}; expressions read {', '.join(sorted(ENV_NAMES))}"
            elif head == "nodes" and len(names) > 1 and names[1] not in ids:
                message = f"unknown node {names[1]!r} in {src.strip()!r}"
            if message and message not in reported:
                reported.add(message)
                yield path, message


def _find_cycle(wf: Workflow) -> list[str] | None:
    deps = {n.id: [d for d in n.depends_on if d != n.id] for n in wf.nodes}
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = 1
        stack.append(node)
        for d in deps.get(node, []):
            if d not in deps:
                continue
            if color.get(d) == 1:
                return [*stack[stack.index(d) :], d]
            if d not in color:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        color[node] = 2
        return None

    for n in deps:
        if n not in color:
            found = visit(n)
            if found:
                return found
    return None


def validate_data(
    data: Any, *, agents: AgentRegistry | None = None, root: yaml.Node | None = None
) -> tuple[Workflow | None, list[Problem]]:
    """Validate decoded YAML/JSON; returns the workflow (when valid) and the problems with lines."""
    problems: list[Problem] = []
    if not isinstance(data, dict):
        return None, [Problem(path="", message="a workflow is a mapping", line=_line_of(root, ()))]
    try:
        wf = Workflow.model_validate(data)
    except PydanticValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown field {loc[-1]!r}"
            problems.append(Problem(path=_path_str(loc), message=msg, line=_line_of(root, loc)))
        return None, problems
    for path, msg in _graph_problems(wf, agents):
        problems.append(Problem(path=_path_str(path), message=msg, line=_line_of(root, path)))
    return (wf if not problems else None), problems


MAX_NESTING = 64
"""Deepest ``[``/``{`` nesting a workflow document may have (a real one has fewer than ten levels)."""

_FLOW_TOKENS = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^']|'')*'|#[^\n]*|[\[\]{}]", re.DOTALL)


def _flow_nesting_exceeds(text: str, limit: int) -> bool:
    """Whether brackets and braces outside quoted scalars and comments nest deeper than ``limit`` (one pass)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _FLOW_TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def validate_text(
    text: str, *, source: str = "<workflow>", agents: AgentRegistry | None = None
) -> tuple[Workflow | None, list[Problem]]:
    """Parse YAML (or JSON) text and validate it; problems carry YAML line numbers.

    A document nested more than :data:`MAX_NESTING` levels deep (or deeper than the recursive YAML parser can
    build) is one problem, found before parsing where it can be: PyYAML would spend seconds on it, then fail.
    """
    too_deep = [Problem(path="", message=f"nested more than {MAX_NESTING} levels deep", line=None)]
    if _flow_nesting_exceeds(text, MAX_NESTING):
        return None, too_deep
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        return None, [Problem(path="", message=f"not valid YAML: {one_line(exc)}", line=line)]
    except RecursionError:
        return None, too_deep
    return validate_data(data, agents=agents, root=root)


def load_workflow(path: str | Path, *, agents: AgentRegistry | None = None) -> Workflow:
    """Load and validate a workflow file; WorkflowError lists every problem with its line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read workflow file {str(p)!r}: {exc.strerror}") from None
    wf, problems = validate_text(text, source=str(p), agents=agents)
    if wf is None:
        raise WorkflowError(str(p), problems)
    return wf


def from_spec(spec: dict[str, Any]) -> Workflow:
    """The definition stored in a workflow run's spec."""
    return Workflow.model_validate(spec["workflow"])


# -------------------------------------------------------------------------------------- registry


class WorkflowRegistry:
    """Workflows a worker (or the CLI, SDK and server) knows, by name."""

    def __init__(self, workflows: Sequence[Workflow] = ()) -> None:
        self._workflows: dict[str, Workflow] = {}
        self._sources: dict[str, str | None] = {}
        for wf in workflows:
            self.register(wf)

    def register(self, wf: Workflow, source: str | None = None) -> Workflow:
        """Add (or replace) a workflow."""
        self._workflows[wf.name] = wf
        self._sources[wf.name] = source
        return wf

    def get(self, name: str) -> Workflow:
        """The workflow called ``name``; ConfigError listing known ones if absent."""
        try:
            return self._workflows[name]
        except KeyError:
            known = ", ".join(sorted(self._workflows)) or "(none)"
            raise ConfigError(f"unknown workflow {name!r}; known workflows: {known}") from None

    def source(self, name: str) -> str | None:
        """Where a workflow was loaded from."""
        return self._sources.get(name)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._workflows)

    def __contains__(self, name: object) -> bool:
        return name in self._workflows

    def __iter__(self) -> Iterator[Workflow]:
        return iter(self._workflows.values())

    def __len__(self) -> int:
        return len(self._workflows)


AGENTS_SUBDIR = "agents"
"""A workflows folder may hold the agents its workflows use in this subfolder."""


def load_folder_agents(folder: Path, agents: AgentRegistry) -> AgentRegistry:
    """``agents`` plus the agents of ``folder/agents/`` (when it exists)."""
    sub = folder / AGENTS_SUBDIR
    if sub.is_dir():
        for a in load_agents_dir(sub):
            agents.register(a)
    return agents


def load_workflows_dir(folder: str | Path, agents: AgentRegistry) -> WorkflowRegistry:
    """Load every ``*.yaml``/``*.yml``/``*.json`` workflow of a folder, checked against ``agents``.

    The folder's ``agents/`` subfolder, if any, is loaded into ``agents`` first.
    """
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"workflows folder {str(path)!r} does not exist")
    load_folder_agents(path, agents)
    registry = WorkflowRegistry()
    for file in sorted([*path.glob("*.yaml"), *path.glob("*.yml"), *path.glob("*.json")]):
        wf = load_workflow(file, agents=agents)
        if wf.name in registry:
            raise ConfigError(f"{file}: workflow name {wf.name!r} is defined twice in {path}")
        registry.register(wf, str(file))
    return registry


def schema_text() -> str:
    """The JSON Schema as formatted text (``docs/workflow.schema.json``)."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
