"""What the planner, the workers and the strategist are asked, and how their answers are read.

The planner answers with JSON tasks, the strategist with a JSON verdict. Answers may wrap the JSON
in prose or a Markdown code fence; the first JSON object or array found is used (``parse_json`` and
``parse_verdict`` live in :mod:`agentmaestro.core.objective`, whose pure decisions read the answers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentmaestro.core.objective import parse_json, parse_verdict
from agentmaestro.core.tasks import Graph, Task, TaskStatus

__all__ = ["parse_json", "parse_verdict", "planner_input", "qa_input", "worker_input"]

_OUT_LIMIT = 4000

PLAN_FORMAT = """Answer with JSON only: a list of tasks, each
{"id": "short_id", "title": "...", "instructions": "what to do", "worker": "<worker type>",
 "depends_on": ["other_id", ...], "acceptance": ["criterion", ...]}
Ids are unique (letters, digits, '_' or '-'); dependencies must not form a cycle."""


def _clip(text: str | None, limit: int = _OUT_LIMIT) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit] + " [...]"


def planner_input(
    goal: str,
    workers: Mapping[str, str],
    *,
    graph: Graph | None = None,
    replan: Sequence[Mapping[str, Any]] = (),
    errors: Sequence[str] = (),
    previous: str | None = None,
) -> str:
    """The planner's task: the goal, the worker types, and (re-planning) the current graph."""
    lines = [f"Objective: {goal}", "", "Worker types:"]
    lines += [f"- {name}: {desc or '(no description)'}" for name, desc in sorted(workers.items())]
    if graph is not None and graph.tasks:
        lines += ["", "Current tasks (keep their ids; new tasks may depend on tasks that are not abandoned):"]
        for t in sorted(graph.tasks.values(), key=lambda t: t.order):
            deps = f" after {', '.join(t.depends_on)}" if t.depends_on else ""
            lines.append(f"- {t.task_id} [{t.status.value}] {t.title}{deps}")
        lines += ["", "Re-plan the affected part: answer with the NEW tasks only (new ids)."]
        for r in replan:
            if r.get("tasks"):
                lines.append(f"- replace: {', '.join(r['tasks'])} ({r.get('reason') or 'no reason given'})")
            else:
                lines.append(f"- replan the remaining work ({r.get('reason') or 'requested'})")
    lines += ["", PLAN_FORMAT]
    if errors:
        lines += ["", "Your previous answer was not a valid plan:"]
        lines += [f"- {e}" for e in errors]
        if previous:
            lines += ["", "Previous answer:", _clip(previous, 2000)]
        lines.append("Answer again with a corrected plan.")
    return "\n".join(lines)


def worker_input(task: Task, graph: Graph, outputs: Mapping[str, str | None]) -> str:
    """A worker's task: instructions, criteria, dependencies' results, and every earlier attempt."""
    lines = [f"Task {task.task_id}: {task.title}", "", task.instructions]
    if task.acceptance:
        lines += ["", "Acceptance criteria:"] + [f"- {a}" for a in task.acceptance]
    if task.depends_on:
        lines += ["", "Results of the tasks this one depends on:"]
        for d in task.depends_on:
            dep = graph.tasks.get(d)
            lines.append(f"- {d} ({dep.title if dep else '?'}): {_clip(outputs.get(d), 1500)}")
    earlier = [a for a in task.attempts if a.get("status") in ("rejected", "failed", "conflict")]
    if earlier:
        lines += ["", "Earlier attempts (do better this time):"]
        for a in earlier:
            lines.append(f"- attempt {a['attempt']} ({a['status']}): output: {_clip(a.get('output'), 1500)}")
            if a.get("feedback"):
                lines.append(f"  reviewer feedback: {a['feedback']}")
            if a.get("error"):
                lines.append(f"  error: {a['error']}")
    if task.notes:
        lines += ["", "Instructions from a person:"] + [f"- {n}" for n in task.notes]
    return "\n".join(lines)


def qa_input(task: Task, output: str | None, diff: str | None = None) -> str:
    """The strategist's task: check one attempt against the acceptance criteria."""
    lines = [
        f"Review the result of task {task.task_id}: {task.title}",
        "",
        "Instructions given to the worker:",
        task.instructions,
        "",
        "Acceptance criteria:",
        *([f"- {a}" for a in task.acceptance] or ["- (none given: judge whether the instructions were followed)"]),
        "",
        "Result:",
        _clip(output, 8000),
    ]
    if diff:
        lines += ["", "Changes to the repository:", _clip(diff, 8000)]
    lines += ["", 'Answer with JSON only: {"accept": true or false, "feedback": "what to fix, or why it passes"}']
    return "\n".join(lines)


def task_outputs(graph: Graph) -> dict[str, str | None]:
    """The accepted output of each complete task."""
    out: dict[str, str | None] = {}
    for t in graph.tasks.values():
        if t.status is TaskStatus.COMPLETE and t.attempts:
            out[t.task_id] = t.attempts[-1].get("output")
    return out
