from __future__ import annotations

import dataclasses

import pytest

from agentmaestro.core.decide import ActionKind, Snapshot, decide, render_decision_table
from agentmaestro.core.events import (
    ApprovalState,
    Event,
    InFlightStep,
    RunState,
    apply_event,
    conversation,
    fold,
)
from agentmaestro.core.gate import GateDecision, Verdict, args_hash
from agentmaestro.core.messages import ToolCall
from agentmaestro.core.policy import StrictPolicy
from agentmaestro.core.risk import RiskLevel
from agentmaestro.core.states import EventType, Phase, RunStatus
from agentmaestro.errors import InvalidTransitionError

E = EventType


def ev(seq: int, type_: EventType, step: int | None = None, **payload: object) -> Event:
    return Event(run_id="r", seq=seq, type=type_, payload=dict(payload), created_at=1000.0 + seq, step=step)


ALLOW = Verdict(decision=GateDecision.ALLOW, risk=RiskLevel.SAFE)
APPROVE = Verdict(decision=GateDecision.REQUIRE_APPROVAL, risk=RiskLevel.DANGEROUS, reasons=("DANGEROUS",))
DENY = Verdict(decision=GateDecision.DENY, risk=RiskLevel.SAFE, reasons=("deny list",))


def running(**kw: object) -> RunState:
    base = RunState(status=RunStatus.RUNNING, phase=Phase.PLAN, started_at=1000.0, last_seq=2)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_decision_rules_in_order() -> None:
    call = ToolCall(call_id="c1", name="add", arguments={"a": 1})
    assert decide(Snapshot(state=running(), now=1001)).kind is ActionKind.CALL_MODEL
    a = decide(Snapshot(state=running(pending_tool_calls=(call,)), now=1001, verdict=ALLOW))
    assert a.kind is ActionKind.CALL_TOOL and a.tool_call == call and a.phase is Phase.EXECUTE
    assert decide(Snapshot(state=running(final_output="done"), now=1001)).kind is ActionKind.COMPLETE
    # cancel wins over everything
    assert decide(Snapshot(state=running(final_output="x"), now=1001, cancel_requested=True)).kind is ActionKind.CANCEL
    # uncertain step wins over pending calls
    st = running(pending_tool_calls=(call,), in_flight=InFlightStep(step=0, call=call))
    assert decide(Snapshot(state=st, now=1001, verdict=ALLOW)).kind is ActionKind.RECOVER_UNCERTAIN
    # a final answer completes even at the step limit; another step would not be allowed
    limited = running(policy=StrictPolicy(max_steps=1), steps=1)
    assert decide(Snapshot(state=dataclasses.replace(limited, final_output="ok"), now=1001)).kind is ActionKind.COMPLETE
    v = decide(Snapshot(state=limited, now=1001))
    assert v.kind is ActionKind.POLICY_VIOLATION and v.violation is not None and v.violation.limit == "max_steps"
    timed = running(policy=StrictPolicy(timeout_s=5))
    assert decide(Snapshot(state=timed, now=1006)).kind is ActionKind.POLICY_VIOLATION
    assert "CALL_MODEL" in render_decision_table()


def test_decide_rejects_non_running() -> None:
    with pytest.raises(InvalidTransitionError):
        decide(Snapshot(state=RunState(status=RunStatus.PENDING), now=0))


def test_fold_a_full_run_and_conversation() -> None:
    events = [
        ev(1, E.RUN_CREATED, policy={"max_steps": 10}),
        ev(2, E.RUN_STARTED),
        ev(3, E.PHASE_CHANGED, **{"from": "INIT", "to": "PLAN"}),
        ev(
            4,
            E.STEP_COMPLETED,
            step=0,
            kind="MODEL_CALL",
            content=None,
            tool_calls=[{"call_id": "c1", "name": "add", "arguments": {"a": 1, "b": 2}}],
            usage={"input_tokens": 10, "output_tokens": 5},
            cost_usd=0.001,
        ),
        ev(5, E.PHASE_CHANGED, **{"from": "PLAN", "to": "EXECUTE"}),
        ev(6, E.STEP_COMPLETED, step=1, kind="TOOL_CALL", name="add", call_id="c1", result="3"),
        ev(7, E.PHASE_CHANGED, **{"from": "EXECUTE", "to": "PLAN"}),
        ev(8, E.STEP_COMPLETED, step=2, kind="MODEL_CALL", content="3", tool_calls=[], usage={"input_tokens": 20}),
        ev(9, E.RUN_COMPLETED, output="3"),
    ]
    st = fold(events)
    assert st.status is RunStatus.COMPLETED and st.phase is Phase.TERMINATE
    assert (st.steps, st.model_calls, st.tool_calls, st.input_tokens, st.output_tokens) == (3, 2, 1, 30, 5)
    assert st.output == "3" and st.last_seq == 9 and st.started_at == 1002.0
    assert RunState.from_json(st.to_json()) == st
    msgs = conversation("sys", "add 1 and 2", events)
    assert [m.role for m in msgs] == ["system", "user", "assistant", "tool", "assistant"]
    assert msgs[3].tool_call_id == "c1" and msgs[3].content == "3"


def test_reducer_rejects_gaps_duplicates_and_wrong_steps() -> None:
    st = fold([ev(1, E.RUN_CREATED), ev(2, E.RUN_STARTED)])
    with pytest.raises(InvalidTransitionError, match="does not follow"):
        apply_event(st, ev(4, E.PHASE_CHANGED, to="PLAN"))
    with pytest.raises(InvalidTransitionError, match="does not follow"):
        apply_event(st, ev(2, E.PHASE_CHANGED, to="PLAN"))
    with pytest.raises(InvalidTransitionError, match="step"):
        apply_event(st, ev(3, E.STEP_COMPLETED, step=5, kind="MODEL_CALL"))
    with pytest.raises(InvalidTransitionError):
        apply_event(st, ev(3, E.RUN_STARTED))
    with pytest.raises(InvalidTransitionError, match="phase"):
        apply_event(st, ev(3, E.PHASE_CHANGED, to="INIT"))


def test_resume_and_fork_events() -> None:
    failed = fold([ev(1, E.RUN_CREATED), ev(2, E.RUN_STARTED), ev(3, E.POLICY_VIOLATION, reason="too many")])
    assert failed.status is RunStatus.FAILED and failed.error == "too many"
    resumed = apply_event(failed, ev(4, E.RUN_RESUMED, policy={"max_steps": 99}))
    assert resumed.status is RunStatus.PENDING and resumed.error is None and resumed.policy.max_steps == 99
    done = fold([ev(1, E.RUN_CREATED), ev(2, E.RUN_STARTED), ev(3, E.RUN_COMPLETED, output="x")])
    with pytest.raises(InvalidTransitionError):
        apply_event(done, ev(4, E.RUN_RESUMED))


def test_gate_rules() -> None:
    call = ToolCall(call_id="c1", name="rm", arguments={"path": "x"})
    st = running(pending_tool_calls=(call,))
    with pytest.raises(InvalidTransitionError, match="verdict"):
        decide(Snapshot(state=st, now=1001))
    assert decide(Snapshot(state=st, now=1001, verdict=DENY)).kind is ActionKind.DENY_TOOL
    assert decide(Snapshot(state=st, now=1001, verdict=APPROVE)).kind is ActionKind.REQUEST_APPROVAL
    good = ApprovalState(approval_id="a", call_id="c1", args_hash=args_hash("rm", {"path": "x"}), status="approved")
    assert decide(Snapshot(state=dataclasses.replace(st, approval=good), now=1001, verdict=APPROVE)).kind is (
        ActionKind.CALL_TOOL
    )
    # an approval for other arguments, another call, or still pending does not count
    for bad in (
        dataclasses.replace(good, args_hash=args_hash("rm", {"path": "y"})),
        dataclasses.replace(good, call_id="c2"),
        dataclasses.replace(good, status="pending"),
    ):
        action = decide(Snapshot(state=dataclasses.replace(st, approval=bad), now=1001, verdict=APPROVE))
        assert action.kind is ActionKind.REQUEST_APPROVAL
    # a grant is bound to the run that asked: another run (a fork's copy) does not get it
    bound = dataclasses.replace(good, run_id="r1")
    snap = Snapshot(state=dataclasses.replace(st, approval=bound), now=1001, verdict=APPROVE, run_id="r1")
    assert decide(snap).kind is ActionKind.CALL_TOOL
    for other in ("r2", None):
        snap = dataclasses.replace(snap, run_id=other)
        assert decide(snap).kind is ActionKind.REQUEST_APPROVAL


def test_failures_escalate_after_max_attempts() -> None:
    st = running(failures=3, max_attempts=4)
    assert decide(Snapshot(state=st, now=1001)).kind is ActionKind.CALL_MODEL
    st = running(failures=4, max_attempts=4)
    assert decide(Snapshot(state=st, now=1001)).kind is ActionKind.ESCALATE_FAILED


def test_failure_counting_and_human_resolution() -> None:
    events = [ev(1, E.RUN_CREATED, max_attempts=2), ev(2, E.RUN_STARTED)]
    events.append(ev(3, E.STEP_FAILED, step=0, kind="MODEL_CALL", error="boom"))
    events.append(ev(4, E.STEP_FAILED, step=1, kind="MODEL_CALL", error="boom"))
    st = fold(events)
    assert st.failures == 2 and st.max_attempts == 2 and st.last_failure == {"kind": "MODEL_CALL", "error": "boom"}
    events.append(ev(5, E.HUMAN_INPUT_REQUESTED, request_id="h1", kind="step_failed", step_kind="MODEL_CALL"))
    st = fold(events)
    assert st.status is RunStatus.WAITING_FOR_HUMAN and st.human_request is not None
    events.append(ev(6, E.HUMAN_INPUT_RECEIVED, request_id="h1", action="answer", answer="42", by="ann"))
    st = fold(events)
    assert st.status is RunStatus.RUNNING and st.failures == 0 and st.final_output == "42"
    msgs = conversation(None, "task", events)
    assert sum("previous attempt failed" in (m.content or "") for m in msgs) == 2


def test_approval_events_bind_edited_arguments() -> None:
    call = {"call_id": "c1", "name": "rm", "arguments": {"path": "a"}}
    events = [
        ev(1, E.RUN_CREATED),
        ev(2, E.RUN_STARTED),
        ev(3, E.STEP_COMPLETED, step=0, kind="MODEL_CALL", tool_calls=[call], usage={}),
        ev(4, E.APPROVAL_REQUESTED, approval_id="a1", call=call, args_hash=args_hash("rm", {"path": "a"})),
    ]
    st = fold(events)
    assert st.status is RunStatus.WAITING_FOR_APPROVAL and st.approval is not None
    with pytest.raises(InvalidTransitionError, match="not the run's pending approval"):
        apply_event(st, ev(5, E.APPROVAL_GRANTED, approval_id="zz", args_hash="x"))
    edited = {"path": "b"}
    st = apply_event(
        st, ev(5, E.APPROVAL_GRANTED, approval_id="a1", args_hash=args_hash("rm", edited), arguments=edited)
    )
    assert st.pending_tool_calls[0].arguments == edited and st.approval is not None
    assert st.approval.status == "approved" and st.approval.args_hash == args_hash("rm", edited)
    done = apply_event(st, ev(6, E.STEP_COMPLETED, step=1, kind="TOOL_CALL", call_id="c1", result="ok"))
    assert done.approval is None and not done.pending_tool_calls


def test_fold_changes_only_declared_fields() -> None:
    """apply_event copies fields without re-running ``__init__``: every key it sets must be a RunState field."""
    import inspect
    import re

    from agentmaestro.core import events as events_module

    source = inspect.getsource(events_module.apply_event)
    keys = set(re.findall(r'changes\["(\w+)"\]', source)) | set(
        re.findall(r'changes: dict\[str, Any\] = \{"(\w+)"', source)
    )
    fields = {f.name for f in dataclasses.fields(RunState)}
    assert keys and keys <= fields, keys - fields
    call = ToolCall(call_id="c1", name="add", arguments={"a": 1})
    st = fold([ev(1, E.RUN_CREATED), ev(2, E.RUN_STARTED)])
    st = apply_event(st, ev(3, E.PHASE_CHANGED, to="PLAN"))
    st = apply_event(
        st, ev(4, E.STEP_COMPLETED, step=0, kind="MODEL_CALL", content=None, tool_calls=[call.to_json()], usage={})
    )
    assert set(vars(st)) == fields
    assert st == dataclasses.replace(st) and st.pending_tool_calls == (call,)


def test_fork_drops_a_copied_grant() -> None:
    """RUN_FORKED clears a granted approval: the copy of a decision authorises nothing in the fork."""
    call = {"call_id": "c1", "name": "rm", "arguments": {"path": "x"}}
    digest = args_hash("rm", {"path": "x"})
    st = fold(
        [
            ev(1, E.RUN_CREATED),
            ev(2, E.RUN_STARTED),
            ev(3, E.STEP_COMPLETED, step=0, kind="MODEL_CALL", tool_calls=[call]),
            ev(4, E.APPROVAL_REQUESTED, approval_id="a", run_id="r", call=call, args_hash=digest),
            ev(5, E.APPROVAL_GRANTED, approval_id="a", args_hash=digest),
        ]
    )
    assert st.approval is not None and st.approval.status == "approved" and st.approval.run_id == "r"
    assert decide(Snapshot(state=st, now=1006, verdict=APPROVE, run_id="r")).kind is ActionKind.CALL_TOOL
    forked = apply_event(st, ev(6, E.RUN_FORKED, source_run_id="r", at_seq=5))
    assert forked.approval is None and forked.pending_tool_calls == st.pending_tool_calls
    assert RunState.from_json(st.to_json()) == st
