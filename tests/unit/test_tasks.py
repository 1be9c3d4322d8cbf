"""The objective task status table, plan validation and the task graph reducer (pure)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from agentmaestro.core.tasks import (
    TASK_TRANSITIONS,
    Graph,
    TaskStatus,
    apply_change,
    apply_changes,
    find_cycle,
    fold_graph,
    next_task_status,
    ready_tasks,
    validate_dependency_change,
    validate_plan,
)
from agentmaestro.errors import InvalidTransitionError

S = TaskStatus
ALLOWED = {
    (S.PLANNED, S.READY),
    (S.PLANNED, S.ABANDONED),
    (S.READY, S.ACTIVE),
    (S.READY, S.PLANNED),
    (S.READY, S.ABANDONED),
    (S.ACTIVE, S.AWAITING_QA),
    (S.ACTIVE, S.FAILED),
    (S.ACTIVE, S.ABANDONED),
    (S.AWAITING_QA, S.COMPLETE),
    (S.AWAITING_QA, S.FAILED),
    (S.AWAITING_QA, S.WAITING_HUMAN),
    (S.AWAITING_QA, S.ABANDONED),
    (S.FAILED, S.READY),
    (S.FAILED, S.WAITING_HUMAN),
    (S.FAILED, S.ABANDONED),
    (S.WAITING_HUMAN, S.READY),
    (S.WAITING_HUMAN, S.ABANDONED),
}


def test_every_pair_of_the_table() -> None:
    assert set(TASK_TRANSITIONS) == set(S)
    for a, b in itertools.product(S, S):
        if (a, b) in ALLOWED:
            assert next_task_status(a, b) is b
        else:
            with pytest.raises(InvalidTransitionError):
                next_task_status(a, b)
    assert not TASK_TRANSITIONS[S.COMPLETE] and not TASK_TRANSITIONS[S.ABANDONED]


def plan(*tasks: tuple[str, list[str]]) -> list[dict[str, object]]:
    return [{"id": t, "title": t, "instructions": "do " + t, "worker": "coder", "depends_on": d} for t, d in tasks]


def test_validate_plan_reports_every_problem() -> None:
    tasks, problems = validate_plan(plan(("a", []), ("b", ["a"])), {"coder"})
    assert problems == [] and [t["id"] for t in tasks] == ["a", "b"]
    _, problems = validate_plan({"tasks": plan(("a", ["b"]), ("b", ["a"]))}, {"coder"})
    assert problems == ["dependency cycle: a -> b -> a"]
    bad = [
        {"id": "a", "title": "", "instructions": "x", "worker": "ghost", "extra": 1},
        {"id": "a", "title": "t", "instructions": "x", "worker": "coder", "depends_on": ["zz", "a"]},
        {"id": "no spaces!", "title": "t"},
        "text",
    ]
    _, problems = validate_plan(bad, {"coder"})
    text = "\n".join(problems)
    for needle in (
        "unknown field(s) extra",
        "task 'a'.title: must be a non-empty string",
        "unknown worker type 'ghost'; known: coder",
        "task 'a': duplicate id",
        "unknown task 'zz'",
        "cannot depend on itself",
        "tasks[2].id",
        "tasks[3]: must be an object",
    ):
        assert needle in text
    assert validate_plan("nope", {"coder"})[1] == [
        'the plan must be a non-empty JSON list of tasks (or {"tasks": [...]})'
    ]


def test_replan_tasks_may_depend_on_live_existing_tasks_only() -> None:
    g = apply_changes(graph(("a", []), ("b", ["a"])), [{"op": "status", "task": "b", "to": "abandoned"}])
    new = [{"id": "c", "title": "c", "instructions": "x", "worker": "coder", "depends_on": ["a"]}]
    assert validate_plan(new, {"coder"}, existing=g.tasks)[1] == []
    new[0]["depends_on"] = ["b"]
    assert validate_plan(new, {"coder"}, existing=g.tasks)[1] == ["task 'c'.depends_on: task 'b' is abandoned"]
    assert "duplicate id" in validate_plan(plan(("a", [])), {"coder"}, existing=g.tasks)[1][0]


def test_find_cycle() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]


def graph(*tasks: tuple[str, list[str]]) -> Graph:
    return apply_change(Graph(), {"op": "add", "tasks": plan(*tasks)})


def test_reducer_statuses_attempts_and_ready_set() -> None:
    g = graph(("a", []), ("b", ["a"]))
    assert [t.task_id for t in ready_tasks(g)] == ["a"]
    g = apply_changes(
        g,
        [
            {"op": "status", "task": "a", "to": "ready"},
            {"op": "status", "task": "a", "to": "active", "run_id": "r1"},
            {"op": "status", "task": "a", "to": "awaiting_qa", "output": "v1", "run_id": "q1"},
            {"op": "status", "task": "a", "to": "failed", "feedback": "more"},
            {"op": "status", "task": "a", "to": "ready"},
            {"op": "status", "task": "a", "to": "active", "run_id": "r2"},
            {"op": "status", "task": "a", "to": "awaiting_qa", "output": "v2", "run_id": "q2"},
            {"op": "status", "task": "a", "to": "complete", "feedback": "good"},
        ],
    )
    a = g.tasks["a"]
    assert a.status is S.COMPLETE and [x["status"] for x in a.attempts] == ["rejected", "accepted"]
    assert a.attempts[0]["feedback"] == "more" and a.attempts[1]["output"] == "v2"
    assert [t.task_id for t in ready_tasks(g)] == ["b"]
    with pytest.raises(InvalidTransitionError, match="'complete' -> 'ready'"):
        apply_change(g, {"op": "status", "task": "a", "to": "ready"})
    with pytest.raises(InvalidTransitionError, match="unknown task"):
        apply_change(g, {"op": "status", "task": "zz", "to": "ready"})


def test_human_retry_resets_the_attempt_count() -> None:
    g = graph(("a", []))
    g = apply_changes(
        g,
        [
            {"op": "status", "task": "a", "to": "ready"},
            {"op": "status", "task": "a", "to": "active", "run_id": "r1"},
            {"op": "status", "task": "a", "to": "failed", "error": "boom"},
            {"op": "status", "task": "a", "to": "waiting_human", "run_id": "h1", "kind": "task_rejected"},
        ],
    )
    assert g.tasks["a"].escalation == {"kind": "task_rejected", "run_id": "h1", "reason": None}
    g = apply_change(g, {"op": "status", "task": "a", "to": "ready", "note": "try harder"})
    assert g.tasks["a"].attempt_base == 1 and g.tasks["a"].notes == ("try harder",)
    assert g.tasks["a"].escalation is None


def test_dependency_changes_are_validated() -> None:
    g = graph(("a", []), ("b", ["a"]), ("c", ["b"]))
    assert validate_dependency_change(g, "a", ["c"], []) == ["dependency cycle: a -> c -> b -> a"]
    assert validate_dependency_change(g, "c", ["a"], ["b"]) == []
    assert "does not depend on 'a'" in validate_dependency_change(g, "c", [], ["a"])[0]
    g2 = apply_change(g, {"op": "deps", "task": "c", "add": ["a"], "remove": ["b"]})
    assert g2.tasks["c"].depends_on == ("a",)
    started = apply_changes(
        g, [{"op": "status", "task": "a", "to": "ready"}, {"op": "status", "task": "a", "to": "active", "run_id": "r"}]
    )
    assert "only planned or ready" in validate_dependency_change(started, "a", [], [])[0]
    with pytest.raises(InvalidTransitionError, match="cycle"):
        apply_change(g, {"op": "deps", "task": "a", "add": ["c"]})


def test_fold_from_events_and_inbox() -> None:
    ev = [
        SimpleNamespace(
            type="STEP_COMPLETED", payload={"objective": {"changes": [{"op": "add", "tasks": plan(("a", []))}]}}
        ),
        SimpleNamespace(type="CHILDREN_FINISHED", payload={"results": [{"run_id": "r1", "status": "COMPLETED"}]}),
    ]
    g = fold_graph(ev)
    assert list(g.tasks) == ["a"] and g.inbox == ({"run_id": "r1", "status": "COMPLETED"},)
    g = apply_change(g, {"op": "processed", "run_ids": ["r1"]})
    assert g.inbox == () and "r1" in g.done
    with pytest.raises(InvalidTransitionError, match="unknown task graph change"):
        apply_change(g, {"op": "nope"})
