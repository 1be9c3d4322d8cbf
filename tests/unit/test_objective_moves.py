"""Objective moves as pure decisions (core/objective.py): from a task graph and child results to the
changes recorded, the actions taken and the ending. No database, no git, no model."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmaestro.core.events import RunState
from agentmaestro.core.objective import (
    GUARDS,
    Action,
    Cancel,
    CheckChildren,
    ChildResult,
    Complete,
    Fail,
    MergeOutcome,
    MergeTask,
    ObjectiveMove,
    ObjectiveSettings,
    ObjectiveSnapshot,
    RemoveWorktree,
    StartEscalation,
    StartPlanner,
    StartReview,
    StartWorker,
    StopOnViolation,
    decide_move,
    parse_json,
    parse_verdict,
)
from agentmaestro.core.policy import StrictPolicy
from agentmaestro.core.states import Phase, RunStatus
from agentmaestro.core.task_changes import (
    AddTasks,
    Change,
    ChangeDeps,
    HelperDone,
    HelperStarted,
    PlanAttempts,
    Processed,
    ReplanRequested,
    ReplanStarted,
    SetStatus,
    apply,
)
from agentmaestro.core.tasks import Graph, TaskStatus, apply_changes, fold_event

# ------------------------------------------------------------------------------------ fixtures

A = {"id": "a", "title": "Write A", "instructions": "write a", "worker": "coder", "acceptance": ["has a"]}
B = {"id": "b", "title": "Write B", "instructions": "write b", "worker": "coder", "depends_on": ["a"]}
PLAN_AB = json.dumps([A, B])


def graph(*changes: dict[str, Any]) -> Graph:
    return apply_changes(Graph(), changes)


PLANNING = graph({"op": "plan_attempts", "n": 1}, {"op": "helper", "call_id": "plan:1", "run_id": "p1", "kind": "plan"})
A_ACTIVE = graph(
    {"op": "add", "tasks": [A, B]},
    {"op": "status", "task": "a", "to": "ready"},
    {"op": "status", "task": "a", "to": "active", "run_id": "w1"},
)
A_IN_QA = apply_changes(A_ACTIVE, [{"op": "status", "task": "a", "to": "awaiting_qa", "output": "A!", "run_id": "q1"}])
A_WITH_PERSON = apply_changes(
    A_IN_QA,
    [{"op": "status", "task": "a", "to": "waiting_human", "run_id": "h1", "kind": "task_rejected", "reason": "r"}],
)


def done(run_id: str, output: Any = None, *, status: RunStatus = RunStatus.COMPLETED, error: str | None = None) -> Any:
    text = output if output is None or isinstance(output, str) else json.dumps(output)
    return {"call_id": f"c:{run_id}", "run_id": run_id, "status": status.value, "output": text, "error": error}


def with_results(g: Graph, *results: dict[str, Any]) -> Graph:
    return dataclasses.replace(g, inbox=tuple(results))


def snapshot(g: Graph, **kw: Any) -> ObjectiveSnapshot:
    counter = itertools.count(1)
    settings = ObjectiveSettings(goal="ship it", **kw.pop("settings", {}))
    base = ObjectiveSnapshot(
        run_id="obj",
        state=RunState(status=RunStatus.RUNNING, phase=Phase.EXECUTE, started_at=1000.0),
        now=1001.0,
        graph=g,
        settings=settings,
        agents=frozenset({"planner", "strategist", "coder"}),
        workers={"coder": "writes code"},
        depth=0,
        max_depth=3,
        new_run_id=lambda: f"run{next(counter)}",
    )
    return dataclasses.replace(base, **kw)


def show(action: Action) -> str:
    """One action in a line, for the table."""
    if isinstance(action, StartPlanner):
        return f"plan{' (re-plan)' if action.replan is not None else ''} {action.run_id}"
    if isinstance(action, StartWorker):
        return f"work {action.task.task_id}#{action.attempt} {action.run_id}"
    if isinstance(action, StartReview):
        return f"review {action.task.task_id}#{action.attempt} {action.run_id}"
    if isinstance(action, StartEscalation):
        return f"ask {action.task_id} ({action.kind}) {action.run_id}"
    return f"remove worktree {action.task_id}#{action.attempt}"


def move_of(s: ObjectiveSnapshot) -> ObjectiveMove:
    out = decide_move(s)
    assert isinstance(out, ObjectiveMove), out
    return out


def ops(move: ObjectiveMove) -> list[str]:
    """The changes in a line each: op, task and new status."""
    out = []
    for c in move.changes:
        j = c.to_json()
        out.append(" ".join(str(x) for x in (j["op"], j.get("task", ""), j.get("to", "")) if x != ""))
    return out


# -------------------------------------------------------------------------------- the guards


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"cancel_requested": True, "agents": frozenset()}, Cancel()),
        (
            {"state": RunState(status=RunStatus.RUNNING, policy=StrictPolicy(max_steps=2), steps=2)},
            "max_steps",
        ),
        (
            {"agents": frozenset({"coder"})},
            Fail(error="agent(s) planner, strategist not available on this worker", cleanup=False),
        ),
        ({"depth": 3}, Fail(error="depth limit 3 reached", cleanup=False)),
    ],
    ids=[g.name for g in GUARDS],
)
def test_guards_end_the_run_before_any_move(kw: dict[str, Any], expected: Any) -> None:
    out = decide_move(snapshot(A_ACTIVE, **kw))
    if expected == "max_steps":
        assert isinstance(out, StopOnViolation) and out.violation.limit == "max_steps"
    else:
        assert out == expected


# ------------------------------------------------------------------------- the decision table

Case = tuple[str, ObjectiveSnapshot, list[str], list[str], Callable[[ObjectiveMove], bool]]


def _no_end(m: ObjectiveMove) -> bool:
    return m.end is None


CASES: list[Case] = [
    (
        "the first move starts the planner",
        snapshot(Graph()),
        ["plan_attempts", "helper"],
        ["plan run1"],
        _no_end,
    ),
    (
        "a valid plan adds tasks and starts the ready ones",
        snapshot(with_results(PLANNING, done("p1", [A, B]))),
        ["processed", "helper_done", "add", "plan_attempts", "status a ready", "status a active"],
        ["work a#1 run1"],
        lambda m: m.notes == ("plan: 2 task(s)",) and m.end is None,
    ),
    (
        "an invalid plan asks the planner again with the errors",
        snapshot(with_results(PLANNING, done("p1", "no json here"))),
        ["processed", "helper_done", "plan_attempts", "helper"],
        ["plan run1"],
        lambda m: m.notes[0].startswith("plan rejected: the answer contains no JSON"),
    ),
    (
        "the last invalid plan fails the objective",
        snapshot(with_results(PLANNING, done("p1", "no json here")), settings={"max_plan_attempts": 1}),
        ["processed", "helper_done"],
        [],
        lambda m: isinstance(m.end, Fail) and "no valid plan after 1 attempt(s)" in m.end.error and m.end.cleanup,
    ),
    (
        "a finished worker goes to review",
        snapshot(with_results(A_ACTIVE, done("w1", "A!"))),
        ["processed", "status a awaiting_qa"],
        ["review a#1 run1"],
        _no_end,
    ),
    (
        "a failed worker is retried",
        snapshot(with_results(A_ACTIVE, done("w1", status=RunStatus.FAILED, error="boom"))),
        ["processed", "status a failed", "status a ready", "status a active"],
        ["work a#2 run1"],
        _no_end,
    ),
    (
        "accepted work completes the task and starts its dependant",
        snapshot(with_results(A_IN_QA, done("q1", {"accept": True, "feedback": "ok"}))),
        ["processed", "status a complete", "status b ready", "status b active"],
        ["work b#1 run1"],
        lambda m: m.notes == ("a complete",),
    ),
    (
        "rejected work is retried",
        snapshot(with_results(A_IN_QA, done("q1", {"accept": False, "feedback": "more"}))),
        ["processed", "status a failed", "status a ready", "status a active"],
        ["work a#2 run1"],
        _no_end,
    ),
    (
        "an unreadable verdict counts as a rejection",
        snapshot(with_results(A_IN_QA, done("q1", {"verdict": "yes"}))),
        ["processed", "status a failed", "status a ready", "status a active"],
        ["work a#2 run1"],
        _no_end,
    ),
    (
        "the last rejection asks a person",
        snapshot(with_results(A_IN_QA, done("q1", {"accept": False, "feedback": "no"})), settings={"max_attempts": 1}),
        ["processed", "status a failed", "status a waiting_human"],
        ["ask a (task_rejected) run1"],
        lambda m: m.notes == ("a waits for a person (task_rejected)",),
    ),
    (
        "accepted and merged work removes its worktree",
        snapshot(
            with_results(A_IN_QA, done("q1", {"accept": True})),
            settings={"has_repo": True},
            merges={("a", 1): MergeOutcome(merged=True)},
        ),
        ["processed", "status a complete", "status b ready", "status b active"],
        ["remove worktree a#1", "work b#1 run1"],
        _no_end,
    ),
    (
        "a merge conflict asks a person",
        snapshot(
            with_results(A_IN_QA, done("q1", {"accept": True})),
            settings={"has_repo": True},
            merges={("a", 1): MergeOutcome(merged=False, conflicts=("x.py",), diff="<<<")},
        ),
        ["processed", "status a waiting_human"],
        ["ask a (merge_conflict) run1"],
        _no_end,
    ),
    (
        "a person's retry makes the task ready again, with the note",
        snapshot(with_results(A_WITH_PERSON, done("h1", {"action": "retry", "instructions": "smaller", "by": "ann"}))),
        ["processed", "status a ready", "status a active"],
        ["work a#2 run1"],
        lambda m: m.notes == ("a: retry by ann",) and m.graph.tasks["a"].notes == ("smaller",),
    ),
    (
        "a person's answer replaces the task with a new one",
        snapshot(with_results(A_WITH_PERSON, done("h1", {"action": "answer", "answer": "do x", "by": "ann"}))),
        ["processed", "status a abandoned", "add", "deps b", "status a-h1 ready", "status a-h1 active"],
        ["work a-h1#1 run1"],
        lambda m: m.graph.tasks["b"].depends_on == ("a-h1",),
    ),
    (
        "a person's abandon re-plans the dependants",
        snapshot(with_results(A_WITH_PERSON, done("h1", {"action": "abandon", "by": "ann"}))),
        ["processed", "status a abandoned", "replan", "status b abandoned", "replan_started", "plan_attempts"]
        + ["plan_attempts", "helper"],
        ["plan (re-plan) run1"],
        lambda m: m.notes == ("a abandoned",),
    ),
    (
        "a withdrawn question makes the task ready again",
        snapshot(with_results(A_WITH_PERSON, done("h1", status=RunStatus.CANCELLED))),
        ["processed", "status a ready", "status a active"],
        ["work a#2 run1"],
        _no_end,
    ),
    (
        "a worker type missing on this worker abandons the task",
        snapshot(graph({"op": "add", "tasks": [A]}), agents=frozenset({"planner", "strategist"})),
        ["status a ready", "status a abandoned", "replan"],
        [],
        lambda m: isinstance(m.end, Fail) and "cannot progress" in m.end.error,
    ),
    (
        "the worker cap holds the rest back",
        snapshot(graph({"op": "add", "tasks": [{**A, "id": f"t{i}"} for i in range(4)]}), settings={"max_workers": 2}),
        [
            "status t0 ready",
            "status t1 ready",
            "status t2 ready",
            "status t3 ready",
            "status t0 active",
            "status t1 active",
        ],
        ["work t0#1 run1", "work t1#1 run2"],
        _no_end,
    ),
    (
        "the last task complete completes the objective",
        snapshot(
            with_results(
                apply_changes(
                    A_IN_QA,
                    [{"op": "status", "task": "b", "to": "abandoned", "reason": "not needed"}],
                ),
                done("q1", {"accept": True, "feedback": "ok"}),
            )
        ),
        ["processed", "status a complete"],
        [],
        lambda m: (
            isinstance(m.end, Complete)
            and m.end.output.splitlines()[:2] == ["Objective: ship it", "1 of 2 task(s) complete."]
        ),
    ),
]


@pytest.mark.parametrize(("name", "s", "changes", "actions", "check"), CASES, ids=[c[0] for c in CASES])
def test_moves(
    name: str, s: ObjectiveSnapshot, changes: list[str], actions: list[str], check: Callable[[ObjectiveMove], bool]
) -> None:
    m = move_of(s)
    assert ops(m) == changes
    assert [show(a) for a in m.actions] == actions
    assert check(m)
    # the move's graph is the fold of its recorded changes
    assert apply_changes(s.graph, [c.to_json() for c in m.changes]).tasks == m.graph.tasks
    assert apply(s.graph, m.changes).tasks == m.graph.tasks


# ------------------------------------------------------------------------- questions first


def test_a_merge_is_asked_for_before_the_move_goes_on() -> None:
    s = snapshot(with_results(A_IN_QA, done("q1", {"accept": True})), settings={"has_repo": True})
    assert decide_move(s) == MergeTask(task_id="a", attempt=1, message="Merge task a: Write A")
    without_repo = move_of(dataclasses.replace(s, settings=ObjectiveSettings(goal="ship it")))
    assert "status a complete" in ops(without_repo) and not any(
        isinstance(a, RemoveWorktree) for a in without_repo.actions
    )


def test_after_a_claim_children_that_ended_unseen_are_looked_up() -> None:
    s = snapshot(with_results(A_IN_QA), reconcile=True)
    assert decide_move(s) == CheckChildren(children=(("awaiting_qa:a:1", "q1"),))
    nothing_ended = move_of(dataclasses.replace(s, reconciled=()))
    assert nothing_ended.changes == () and nothing_ended.actions == ()
    ended = ChildResult(call_id="awaiting_qa:a:1", run_id="q1", status=RunStatus.COMPLETED, output='{"accept": true}')
    m = move_of(dataclasses.replace(s, reconciled=(ended,)))
    assert ops(m)[:2] == ["processed", "status a complete"]
    # a result already in the inbox is not looked up again
    inboxed = snapshot(with_results(A_IN_QA, done("q1", {"accept": True})), reconcile=True)
    assert isinstance(decide_move(inboxed), ObjectiveMove)


def test_escalation_and_review_carry_what_the_engine_needs() -> None:
    m = move_of(
        snapshot(with_results(A_IN_QA, done("q1", {"accept": False, "feedback": "no"})), settings={"max_attempts": 1})
    )
    (ask,) = m.actions
    assert isinstance(ask, StartEscalation)
    assert ask.question.startswith("Objective obj, task a (Write A): task a failed 1 attempt(s); last: no.")
    assert ask.detail["objective_run_id"] == "obj" and ask.detail["task_id"] == "a" and len(ask.detail["attempts"]) == 1
    m = move_of(snapshot(with_results(A_ACTIVE, done("w1", "A!"))))
    (review,) = m.actions
    assert isinstance(review, StartReview) and review.output == "A!" and review.task.status is TaskStatus.ACTIVE


def test_a_move_that_ends_the_run_starts_nothing() -> None:
    # the planner gives up while a worker result arrives in the same move
    g = apply_changes(
        A_ACTIVE,
        [{"op": "plan_attempts", "n": 1}, {"op": "helper", "call_id": "replan:1", "run_id": "p2", "kind": "replan"}],
    )
    s = snapshot(with_results(g, done("p2", "nope"), done("w1", "A!")), settings={"max_plan_attempts": 1})
    m = move_of(s)
    assert isinstance(m.end, Fail) and m.actions == ()
    assert "status a awaiting_qa" in ops(m)


# ---------------------------------------------------------------------- the recorded changes

RECORDED: list[tuple[Change, Mapping[str, Any]]] = [
    (Processed(run_ids=("r1", "r2")), {"op": "processed", "run_ids": ["r1", "r2"]}),
    (PlanAttempts(n=2), {"op": "plan_attempts", "n": 2}),
    (AddTasks(tasks=(A,)), {"op": "add", "tasks": [A]}),
    (SetStatus(task_id="a", to=TaskStatus.READY), {"op": "status", "task": "a", "to": "ready"}),
    (
        SetStatus(task_id="a", to=TaskStatus.ACTIVE, run_id="w"),
        {"op": "status", "task": "a", "to": "active", "run_id": "w"},
    ),
    (
        SetStatus(task_id="a", to=TaskStatus.WAITING_HUMAN, run_id="h", kind="merge_conflict", reason="x"),
        {"op": "status", "task": "a", "to": "waiting_human", "run_id": "h", "kind": "merge_conflict", "reason": "x"},
    ),
    (ChangeDeps(task_id="b", add=("c",), remove=("a",)), {"op": "deps", "task": "b", "add": ["c"], "remove": ["a"]}),
    (
        HelperStarted(call_id="plan:1", run_id="p", kind="plan"),
        {"op": "helper", "call_id": "plan:1", "run_id": "p", "kind": "plan"},
    ),
    (
        HelperStarted(call_id="replan:1", run_id="p", kind="replan", context=()),
        {"op": "helper", "call_id": "replan:1", "run_id": "p", "kind": "replan", "context": []},
    ),
    (HelperDone(call_id="plan:1"), {"op": "helper_done", "call_id": "plan:1"}),
    (ReplanRequested(reason="why", tasks=("a",)), {"op": "replan", "reason": "why", "tasks": ["a"]}),
    (ReplanStarted(), {"op": "replan_started"}),
]


@pytest.mark.parametrize(
    ("change", "recorded"), RECORDED, ids=[type(c).__name__ + ":" + str(i) for i, (c, _) in enumerate(RECORDED)]
)
def test_recorded_form_of_each_change(change: Change, recorded: Mapping[str, Any]) -> None:
    assert change.to_json() == recorded


def test_settings_from_the_spec() -> None:
    spec = {"planner": "p", "max_concurrent_workers": "2", "max_attempts": 1, "repo": "/r"}
    s = ObjectiveSettings.from_spec(spec, task="the input")
    assert (s.goal, s.planner, s.strategist, s.max_workers, s.max_attempts, s.has_repo) == (
        "the input",
        "p",
        "strategist",
        2,
        1,
        True,
    )
    assert ObjectiveSettings.from_spec({"goal": "g"}, task="t") == ObjectiveSettings(goal="g")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('```json\n[{"id": "a"}]\n```', [{"id": "a"}]),
        ('Here you go: {"accept": true} thanks', {"accept": True}),
        ('[broken {"x": 1}', {"x": 1}),
    ],
)
def test_parse_json_finds_the_first_json_value(text: str, value: Any) -> None:
    assert parse_json(text) == value


def test_parse_verdict() -> None:
    assert parse_verdict('{"accept": false, "feedback": "more"}') == (False, "more")
    for bad in ("nothing", '{"accept": "yes"}', "[true]"):
        with pytest.raises(ValueError):
            parse_verdict(bad)


# ---------------------------------------------------------------------- a whole objective, pure


@given(st.data())
@settings(max_examples=80, deadline=None)
def test_any_sequence_of_child_outcomes_ends_the_objective(data: st.DataObject) -> None:
    """Drive decide_move alone (no engine) with drawn child outcomes: every change is legal, every
    started child is in flight, and the objective always ends, completed only when every task is."""
    has_repo = data.draw(st.booleans(), label="repo")
    base = snapshot(Graph(), settings={"max_attempts": 2, "max_plan_attempts": 2, "has_repo": has_repo})
    g, kinds, escalations, fresh = Graph(), {}, 0, itertools.count(1)
    for _ in range(300):
        s = dataclasses.replace(base, graph=g)
        out = decide_move(s)
        while isinstance(out, MergeTask):
            merged = data.draw(st.booleans(), label="merged")
            s = dataclasses.replace(s, merges={**s.merges, (out.task_id, out.attempt): MergeOutcome(merged=merged)})
            out = decide_move(s)
        assert isinstance(out, ObjectiveMove), out
        g = fold_event(g, "STEP_COMPLETED", {"objective": {"changes": [c.to_json() for c in out.changes]}})
        assert g.tasks == out.graph.tasks
        if out.end is not None:
            if isinstance(out.end, Complete):
                assert g.tasks and all(t.status.terminal for t in g.tasks.values())
            return
        in_flight = dict((r, c) for c, r in g.active_children())
        for a in out.actions:
            if not isinstance(a, RemoveWorktree):
                assert a.run_id in in_flight
                kinds[a.run_id] = a
        assert in_flight, "a move that does not end the run leaves a child to wait for"
        run_id = data.draw(st.sampled_from(sorted(in_flight)), label="finishes")
        started = kinds[run_id]
        status, output = RunStatus.COMPLETED, None
        if isinstance(started, StartPlanner):
            n = next(fresh)
            output = data.draw(
                st.sampled_from(
                    ["not a plan", json.dumps([{**A, "id": f"x{n}"}, {**B, "id": f"y{n}", "depends_on": [f"x{n}"]}])]
                ),
                label="plan",
            )
        elif isinstance(started, StartWorker):
            status = data.draw(st.sampled_from([RunStatus.COMPLETED, RunStatus.FAILED]), label="worker")
            output = "work"
        elif isinstance(started, StartReview):
            output = json.dumps({"accept": data.draw(st.booleans(), label="accept"), "feedback": "f"})
        else:
            escalations += 1
            action = (
                "abandon"
                if escalations > 3
                else data.draw(st.sampled_from(["retry", "answer", "abandon"]), label="person")
            )
            output = json.dumps({"action": action, "answer": "do it differently", "by": "ann"})
        result = {
            "call_id": in_flight[run_id],
            "run_id": run_id,
            "status": status.value,
            "output": output,
            "error": None,
        }
        g = fold_event(g, "CHILDREN_FINISHED", {"results": [result]})
    raise AssertionError("the objective did not end in 300 moves")
