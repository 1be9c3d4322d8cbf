"""Natural language -> workflow: a model writes the YAML, the validator checks it, the model repairs it.

The model (the ``planner`` role by default, see :mod:`agentmaestro.models.roles`) is given the goal,
the workflow JSON Schema and the agents it may use (with their tools). Its answer is validated like
any workflow file (schema, graph, expressions, line numbers) and checked for unknown agents, including
the common mistake of naming a *tool* where a node needs an *agent*. If anything is wrong, the model
gets the problems and repairs its document, at most ``max_repairs`` times (default 2). The result is
returned for review and never stored here; :func:`agentmaestro.workflows.stored.save` stores it when
asked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from string import Template
from typing import Any

from agentmaestro.agents import AgentRegistry
from agentmaestro.core.messages import Message, ModelRequest, Usage
from agentmaestro.errors import ConfigError
from agentmaestro.models.base import Model, resolve_model
from agentmaestro.models.roles import model_for_role
from agentmaestro.workflows.spec import Problem, Workflow, json_schema, validate_text

MAX_REPAIRS = 2
"""Repairs after the first attempt (so at most three model calls)."""
MAX_GOAL_CHARS = 20_000
"""Longest goal accepted."""
PLANNER_ROLE = "planner"
"""The role whose model writes workflows unless another model is given."""

EXAMPLE = """\
name: research-summary
description: Research a topic, then summarise the notes.
nodes:
  - id: research
    agent: researcher
    input: "Research this topic: {{ input }}"
  - id: summary
    agent: summarizer
    depends_on: [research]
    input: "Summarise these notes: {{ nodes.research.output }}"
output: "{{ nodes.summary.output }}"
"""

SYSTEM_PROMPT = """\
You design AgentMaestro workflows. A workflow is a YAML document: a graph of nodes, each an agent task
that runs when the nodes it depends on have finished. Strategies: sequential (depends_on a chain),
parallel fan-out / fan-in (several nodes depending on one, one node depending on several), conditional
routing (a node's `when` expression), iterative refinement (`refine: {draft, review, max_iterations,
accept_when}`; the review node depends on the draft node).

Templates (`input`, `output`) hold {{ expression }} holes. Expressions read only `input`, `context.KEY`,
`nodes.ID.output`, `nodes.ID.status` and `iteration`; functions: len lower upper strip contains
startswith endswith str int float bool. Node ids use letters, digits and '_'.

Use only these agents (a node's `agent` must be one of these names; tools are not agents):
$agents

The document must validate against this JSON Schema:
$schema

Example:
```yaml
$example```

Answer with the YAML document only, in one ```yaml block, no commentary."""

REPAIR_PROMPT = """\
That workflow is invalid:
$problems

Answer with the whole corrected YAML document only, in one ```yaml block."""

_FENCE = re.compile(r"```(?:ya?ml|json)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One answer of the model and what was wrong with it."""

    number: int
    """1 for the first answer, then 2, 3 for the repairs."""
    yaml: str
    """The YAML extracted from the answer."""
    problems: tuple[Problem, ...]
    """Validation problems (empty when the answer was valid)."""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "number": self.number,
            "yaml": self.yaml,
            "valid": not self.problems,
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass(frozen=True, kw_only=True)
class Generation:
    """The outcome of :func:`generate`: the last document, its validation report and every attempt."""

    goal: str
    """What the workflow should do."""
    model: str
    """The model that wrote it."""
    attempts: tuple[Attempt, ...]
    """Every answer, in order."""
    workflow: Workflow | None
    """The validated workflow (None when the last attempt was still invalid)."""
    usage: Usage = field(default_factory=Usage)
    """Tokens spent over all attempts."""

    @property
    def valid(self) -> bool:
        """True when the last attempt validated."""
        return self.workflow is not None

    @property
    def yaml(self) -> str:
        """The last document."""
        return self.attempts[-1].yaml

    @property
    def problems(self) -> tuple[Problem, ...]:
        """The last document's problems."""
        return self.attempts[-1].problems

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (the API's answer, without the ``saved`` part)."""
        return {
            "goal": self.goal,
            "model": self.model,
            "valid": self.valid,
            "name": self.workflow.name if self.workflow else None,
            "yaml": self.yaml,
            "problems": [p.to_json() for p in self.problems],
            "attempts": [a.to_json() for a in self.attempts],
            "usage": {"input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens},
        }


class GenerationError(ConfigError):
    """The model's workflow was still invalid after the repairs; ``generation`` holds every attempt."""

    code = "invalid_workflow"

    def __init__(self, generation: Generation) -> None:
        self.generation = generation
        problems = "; ".join(p.format("<generated>") for p in generation.problems)
        super().__init__(
            f"the generated workflow is still invalid after {len(generation.attempts) - 1} repair(s): {problems}"
        )


def extract_yaml(content: str | None) -> str:
    """The YAML of a model answer: the first fenced block if there is one, else the whole text."""
    text = content or ""
    m = _FENCE.search(text)
    body = m.group(1) if m else text
    return body.strip() + "\n"


def describe_agents(agents: AgentRegistry) -> str:
    """The agents (and their tools) as the model is shown them."""
    lines: list[str] = []
    for a in agents:
        line = f"- {a.name}: {a.description or a.instructions[:200] or '(no description)'}".rstrip()
        tools = [
            f"{t.name} ({t.description.splitlines()[0] if t.description else 'no description'})"
            for t in a.tool_map().values()
        ]
        if tools:
            line += "\n  tools: " + "; ".join(tools)
        lines.append(line)
    return "\n".join(lines) or "(no agents)"


def check(text: str, agents: AgentRegistry) -> tuple[Workflow | None, list[Problem]]:
    """Validate a generated document: schema, graph and expressions, agents, and tools used as agents."""
    wf, problems = validate_text(text, source="<generated>", agents=agents)
    tools: dict[str, list[str]] = {}
    for a in agents:
        for t in a.tool_map():
            tools.setdefault(t, []).append(a.name)
    out: list[Problem] = []
    for p in problems:
        m = re.match(r"unknown agent '([^']*)'", p.message)
        if m and m.group(1) in tools:
            name = m.group(1)
            message = (
                f"{name!r} is a tool, not an agent: a node runs an agent; "
                f"agents with the tool {name!r}: {', '.join(sorted(tools[name]))}"
            )
            out.append(Problem(path=p.path, message=message, line=p.line))
        else:
            out.append(p)
    return wf, out


def _format_problems(problems: Sequence[Problem]) -> str:
    return "\n".join(f"- {f'line {p.line}: ' if p.line else ''}{p.path or '(top)'}: {p.message}" for p in problems)


def resolve(model: str | Model | None) -> Model:
    """The model to use: ``model`` if given, else the planner role's (ConfigError saying how to set it)."""
    chosen = model_for_role(PLANNER_ROLE, model)
    return resolve_model(chosen)


async def generate(
    goal: str,
    *,
    agents: AgentRegistry,
    model: str | Model | None = None,
    max_repairs: int = MAX_REPAIRS,
    raise_on_invalid: bool = True,
) -> Generation:
    """Have a model write a workflow for ``goal``, validate it and let the model repair it.

    Args:
        goal: What the workflow should achieve, in natural language.
        agents: The agents the workflow may use (shown to the model, checked in the answer).
        model: A model string or Model; default: the ``planner`` role's model.
        max_repairs: How many times the model may repair an invalid document (default 2).
        raise_on_invalid: Raise :class:`GenerationError` when the last attempt is invalid (else return it).

    Raises:
        ConfigError: the goal is empty or too long, or no model is configured.
        GenerationError: still invalid after the repairs (when ``raise_on_invalid``).
        ModelAPIError: the model call failed.
    """
    goal = goal.strip()
    if not goal:
        raise ConfigError("the goal is empty: say what the workflow should do")
    if len(goal) > MAX_GOAL_CHARS:
        raise ConfigError(f"the goal is {len(goal)} characters; the limit is {MAX_GOAL_CHARS}")
    if not 0 <= max_repairs <= 5:
        raise ConfigError(f"max_repairs must be between 0 and 5, not {max_repairs}")
    llm = resolve(model)
    system = Template(SYSTEM_PROMPT).substitute(
        agents=describe_agents(agents),
        schema=json.dumps(json_schema(), separators=(",", ":"), sort_keys=True),
        example=EXAMPLE,
    )
    messages: list[Message] = [
        Message(role="system", content=system),
        Message(role="user", content=f"Goal: {goal}"),
    ]
    attempts: list[Attempt] = []
    usage = Usage()
    wf: Workflow | None = None
    for number in range(1, max_repairs + 2):
        response = await llm.complete(ModelRequest(model=llm.name, messages=tuple(messages)))
        usage = Usage(
            input_tokens=usage.input_tokens + response.usage.input_tokens,
            output_tokens=usage.output_tokens + response.usage.output_tokens,
        )
        text = extract_yaml(response.content)
        wf, problems = check(text, agents)
        attempts.append(Attempt(number=number, yaml=text, problems=tuple(problems)))
        if wf is not None:
            break
        messages.append(Message(role="assistant", content=response.content or ""))
        messages.append(
            Message(role="user", content=Template(REPAIR_PROMPT).substitute(problems=_format_problems(problems)))
        )
    result = Generation(goal=goal, model=llm.name, attempts=tuple(attempts), workflow=wf, usage=usage)
    if wf is None and raise_on_invalid:
        raise GenerationError(result)
    return result
