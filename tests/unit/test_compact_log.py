"""What a step stores: phase changes a step implies are not stored, and the snapshot omits defaults."""

from __future__ import annotations

from agentmaestro.core.events import (
    Event,
    RunState,
    apply_event,
    drop_implied_phase_changes,
    fold,
    implied_phase,
)
from agentmaestro.core.policy import StrictPolicy
from agentmaestro.core.states import EventType, Phase, RunStatus

E = EventType


def _events(specs: list[dict[str, object]]) -> list[Event]:
    return [
        Event(
            run_id="r",
            seq=i + 1,
            type=s["type"],
            payload=dict(s.get("payload") or {}),
            created_at=1000.0 + i,  # type: ignore[arg-type]
            step=s.get("step"),
        )  # type: ignore[arg-type]
        for i, s in enumerate(specs)
    ]


MODEL = {"kind": "MODEL_CALL", "model": "m", "tool_calls": [{"call_id": "c", "name": "add", "arguments": {}}]}
TOOL = {"kind": "TOOL_CALL", "name": "add", "call_id": "c", "arguments": {}, "result": "1", "is_error": False}
ANSWER = {"kind": "MODEL_CALL", "model": "m", "content": "done", "tool_calls": []}

FULL = [
    {"type": E.RUN_CREATED, "payload": {"policy": {"max_steps": 10}}},
    {"type": E.RUN_STARTED},
    {"type": E.PHASE_CHANGED, "payload": {"from": "INIT", "to": "PLAN"}},
    {"type": E.STEP_COMPLETED, "payload": MODEL, "step": 0},
    {"type": E.PHASE_CHANGED, "payload": {"from": "PLAN", "to": "EXECUTE"}},
    {"type": E.STEP_STARTED, "payload": {"call": {"call_id": "c", "name": "add", "arguments": {}}}, "step": 1},
    {"type": E.STEP_COMPLETED, "payload": TOOL, "step": 1},
    {"type": E.PHASE_CHANGED, "payload": {"from": "EXECUTE", "to": "PLAN"}},
    {"type": E.STEP_FAILED, "payload": {"kind": "MODEL_CALL", "error": "boom"}, "step": 2},
    {"type": E.STEP_COMPLETED, "payload": ANSWER, "step": 3},
    {"type": E.RUN_COMPLETED, "payload": {"output": "done"}},
]


def test_a_step_implies_its_phase() -> None:
    assert implied_phase(E.STEP_COMPLETED, MODEL) is Phase.PLAN
    assert implied_phase(E.STEP_COMPLETED, TOOL) is Phase.EXECUTE
    assert implied_phase(E.STEP_FAILED, {"kind": "TOOL_CALL"}) is Phase.EXECUTE
    assert implied_phase(E.STEP_STARTED, {"call": {}}) is Phase.EXECUTE
    assert implied_phase(E.STEP_COMPLETED, {"kind": "MESSAGE"}) is None
    assert implied_phase(E.RUN_STARTED, {}) is None


def test_dropping_implied_phase_changes_folds_to_the_same_states() -> None:
    """Every prefix of the compact log folds to the state the full log has after the same step event."""
    compact = drop_implied_phase_changes(FULL)
    assert [s["type"] for s in compact].count(E.PHASE_CHANGED) == 0
    assert len(compact) == len(FULL) - 3
    full_states = _states(_events(FULL))
    compact_states = _states(_events(compact))
    # Compare after each non-phase event: same phase, status and counters (sequence numbers differ).
    by_key = {k: s for k, s in full_states if k is not None}
    for key, state in compact_states:
        if key is None:
            continue
        want = by_key[key]
        assert (state.phase, state.status, state.steps, state.pending_tool_calls, state.final_output) == (
            want.phase,
            want.status,
            want.steps,
            want.pending_tool_calls,
            want.final_output,
        )
    assert fold(_events(compact)).phase is Phase.TERMINATE


def _states(events: list[Event]) -> list[tuple[tuple[object, object] | None, RunState]]:
    state, out = RunState(), []
    for e in events:
        state = apply_event(state, e)
        out.append((None if e.type is E.PHASE_CHANGED else (e.type, e.step), state))
    return out


def test_a_phase_change_the_next_event_does_not_imply_is_kept() -> None:
    specs = [
        {"type": E.PHASE_CHANGED, "payload": {"from": "PLAN", "to": "EXECUTE"}},
        {"type": E.CHILDREN_SPAWNED, "payload": {"children": []}},
        {"type": E.PHASE_CHANGED, "payload": {"from": "EXECUTE", "to": "REVIEW"}},
        {"type": E.STEP_COMPLETED, "payload": MODEL},  # implies PLAN, not REVIEW
        {"type": E.PHASE_CHANGED, "payload": {"from": "PLAN", "to": "EXECUTE"}},  # last: nothing implies it
    ]
    assert drop_implied_phase_changes(specs) == specs


def test_an_old_log_with_explicit_phase_changes_still_folds() -> None:
    """Logs written before phase changes were implied fold exactly as before."""
    state = fold(_events(FULL))
    assert state.status is RunStatus.COMPLETED and state.phase is Phase.TERMINATE and state.steps == 4


def test_the_snapshot_omits_defaults_and_round_trips() -> None:
    bare = RunState(status=RunStatus.RUNNING)
    assert bare.to_snapshot() == {"status": "RUNNING"}
    assert RunState.from_json(bare.to_snapshot()) == bare
    busy = fold(_events(FULL[:7]))
    assert RunState.from_json(busy.to_snapshot()) == busy
    assert busy.to_snapshot()["policy"] == {"max_steps": 10}
    # A limit set to what happens to be another field's default is kept: only equal-to-default values go.
    odd = RunState(status=RunStatus.RUNNING, max_attempts=0, policy=StrictPolicy(max_steps=0))
    assert RunState.from_json(odd.to_snapshot()) == odd
    assert len(str(busy.to_snapshot())) < len(str(busy.to_json()))
