"""What a workflow run does next, from its definition and folded state. Pure, no I/O.

Rules (documented in docs/workflows.md):

- A node is *settled* when it completed, was skipped, or failed with ``on_failure: continue``.
  The draft and review nodes of a refinement loop are settled for their dependants only once the
  loop is done (accepted, or ``max_iterations`` reached).
- A node whose dependencies are all settled is decided: if it has dependencies and every one of
  them was skipped, it is skipped too; otherwise, if its ``when`` is false, it is skipped;
  otherwise it is ready.
- Ready nodes start in file order, at most ``max_concurrent_nodes`` at a time (one *wave*); the
  next wave starts when the current one has finished.
- A node that failed without ``on_failure: continue`` fails the workflow.
- After the review node completes, ``accept_when`` is evaluated: true (or the last iteration)
  ends the loop; false resets the draft and review nodes, and the draft runs again.
- When nothing is running and nothing is ready, the workflow completes with its ``output``
  template, or else the output of the last node (file order) that completed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agentmaestro.workflows import expr
from agentmaestro.workflows.spec import Node, Workflow

SETTLED = frozenset({"completed", "skipped"})


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The next move of a workflow run; exactly one of start, output or error is set."""

    start: list[tuple[Node, str]] = field(default_factory=list)
    """Nodes to start now, with their rendered input."""
    output: str | None = None
    """The workflow's result, when it is finished."""
    error: str | None = None
    """Why the workflow fails."""
    skipped: list[str] = field(default_factory=list)
    """Nodes decided as skipped by this move."""
    reset: list[str] = field(default_factory=list)
    """Refinement: nodes set back to pending for another iteration."""
    refine_done: bool = False
    """Refinement: the loop ended with this move."""
    iteration: int | None = None
    """Refinement: the iteration the started draft belongs to."""

    def section(self) -> dict[str, Any]:
        """The ``workflow`` section recorded in the event payload."""
        out: dict[str, Any] = {}
        if self.skipped:
            out["skipped"] = list(self.skipped)
        if self.reset:
            out["reset"] = list(self.reset)
        if self.refine_done:
            out["refine_done"] = True
        if self.iteration is not None:
            out["iteration"] = self.iteration
        return out


def environment(wf: Workflow, state: dict[str, Any] | None, task: str) -> dict[str, Any]:
    """The names expressions read: ``input``, ``context``, ``nodes``, ``iteration``."""
    folded = (state or {}).get("nodes") or {}
    nodes: dict[str, Any] = {}
    for n in wf.nodes:
        entry = folded.get(n.id) or {}
        output = entry.get("output")
        nodes[n.id] = {
            "status": entry.get("status", "pending"),
            "output": output,
            "data": _json_or_none(output),
            "error": entry.get("error"),
            "run_id": entry.get("run_id"),
        }
    return {
        "input": task,
        "context": dict(wf.context),
        "nodes": nodes,
        "iteration": int((state or {}).get("iteration", 0)),
    }


def _json_or_none(text: Any) -> Any:
    if not isinstance(text, str) or not text.strip().startswith(("{", "[")):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def plan(wf: Workflow, state: dict[str, Any] | None, task: str) -> Plan:
    """Decide the next move of a workflow run whose current wave (if any) has finished.

    Raises:
        ExpressionError: a condition or template failed to evaluate (the workflow fails with it).
    """
    st = state or {"nodes": {}, "iteration": 0, "refine_done": False}
    status = {n.id: (st["nodes"].get(n.id) or {}).get("status", "pending") for n in wf.nodes}
    outputs = {n.id: (st["nodes"].get(n.id) or {}).get("output") for n in wf.nodes}
    iteration = int(st.get("iteration", 0))
    refine_done = bool(st.get("refine_done"))
    for n in wf.nodes:
        if status[n.id] == "failed" and n.on_failure != "continue":
            err = (st["nodes"].get(n.id) or {}).get("error")
            return Plan(error=f"node {n.id!r} ({n.agent}) failed: {err}")

    reset: list[str] = []
    ended = False
    r = wf.refine
    if r is not None and not refine_done and status[r.review] in ("completed", "failed"):
        accepted = expr.truthy(expr.evaluate(r.accept_when, environment(wf, st, task)))
        if accepted or iteration >= r.max_iterations:
            refine_done = ended = True
        else:
            reset = [r.draft, r.review]
            for node_id in reset:
                status[node_id] = "pending"

    def settled(dep: str, of: Node) -> bool:
        node = wf.node(dep)
        ok = status[dep] in SETTLED or (status[dep] == "failed" and node.on_failure == "continue")
        if ok and r is not None and dep in (r.draft, r.review) and not (dep == r.draft and of.id == r.review):
            return refine_done
        return ok

    skipped: list[str] = []
    view = {**st, "nodes": {**st["nodes"], **{k: {**(st["nodes"].get(k) or {}), "status": "pending"} for k in reset}}}
    changed = True
    while changed:
        changed = False
        for n in wf.nodes:
            if status[n.id] != "pending" or not all(settled(d, n) for d in n.depends_on):
                continue
            skip = bool(n.depends_on) and all(status[d] == "skipped" for d in n.depends_on)
            if not skip and n.when is not None:
                env = environment(wf, _with(view, status), task)
                skip = not expr.truthy(expr.evaluate(n.when, env))
            if skip:
                status[n.id] = "skipped"
                skipped.append(n.id)
                changed = True

    ready = [n for n in wf.nodes if status[n.id] == "pending" and all(settled(d, n) for d in n.depends_on)][
        : wf.max_concurrent_nodes
    ]
    if ready:
        next_iteration = iteration + 1 if r is not None and any(n.id == r.draft for n in ready) else None
        env = environment(wf, _with(view, status), task)
        if next_iteration is not None:
            env["iteration"] = next_iteration
        start = [(n, expr.render(n.input, env)) for n in ready]
        return Plan(start=start, skipped=skipped, reset=reset, refine_done=ended, iteration=next_iteration)
    blocked = [n.id for n in wf.nodes if status[n.id] in ("pending", "running")]
    if blocked:
        return Plan(error=f"nodes {', '.join(blocked)} can never run", skipped=skipped, refine_done=ended)
    if wf.output is not None:
        output = expr.render(wf.output, environment(wf, _with(view, status), task))
    else:
        done = [n.id for n in wf.nodes if status[n.id] == "completed"]
        output = (outputs[done[-1]] or "") if done else ""
    return Plan(output=output, skipped=skipped, refine_done=ended)


def _with(state: dict[str, Any], status: dict[str, str]) -> dict[str, Any]:
    nodes = {k: {**(state["nodes"].get(k) or {}), "status": v} for k, v in status.items()}
    return {**state, "nodes": nodes}


def topological_order(wf: Workflow) -> list[str]:
    """Node ids so that every node comes after its dependencies (file order among equals)."""
    order: list[str] = []
    placed: set[str] = set()
    remaining = list(wf.nodes)
    while remaining:
        progress = [n for n in remaining if all(d in placed for d in n.depends_on)]
        if not progress:
            raise ValueError("the workflow has a dependency cycle")
        for n in progress:
            order.append(n.id)
            placed.add(n.id)
        remaining = [n for n in remaining if n.id not in placed]
    return order
