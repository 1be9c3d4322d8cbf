"""The decision table: from a run's state to the next action. Pure, no I/O.

The table is an ordered list of rules; the first rule whose condition holds gives the action.
``maestro states`` prints it next to the status transition table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from agentmaestro.core.events import RunState
from agentmaestro.core.gate import GateDecision, Verdict, args_hash
from agentmaestro.core.messages import ToolCall
from agentmaestro.core.policy import Violation
from agentmaestro.core.states import Phase, RunStatus
from agentmaestro.errors import InvalidTransitionError

DELEGATE_TOOL: Final = "delegate"
"""The built-in tool name through which an agent starts a sub-agent run."""


class ActionKind(StrEnum):
    """What the engine does next for a running run."""

    CANCEL = "CANCEL"
    RECOVER_UNCERTAIN = "RECOVER_UNCERTAIN"
    COMPLETE = "COMPLETE"
    ESCALATE_FAILED = "ESCALATE_FAILED"
    POLICY_VIOLATION = "POLICY_VIOLATION"
    DENY_TOOL = "DENY_TOOL"
    REQUEST_APPROVAL = "REQUEST_APPROVAL"
    SPAWN_CHILDREN = "SPAWN_CHILDREN"
    CALL_TOOL = "CALL_TOOL"
    CALL_MODEL = "CALL_MODEL"


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """What :func:`decide` looks at: the run's state plus facts from outside the event log."""

    state: RunState
    """The folded run state."""
    now: float
    """Current time (injected, never read from a clock here)."""
    cancel_requested: bool = False
    """An operator asked to cancel the run."""
    verdict: Verdict | None = None
    """The risk gate's verdict on the first pending tool call (required when calls are pending)."""
    run_id: str | None = None
    """The run being decided: a granted approval counts only in the run that asked for it."""


@dataclass(frozen=True, kw_only=True)
class Action:
    """The next thing to do."""

    kind: ActionKind
    """Which action."""
    phase: Phase
    """The lifecycle phase the run is in while doing it."""
    tool_call: ToolCall | None = None
    """For CALL_TOOL and RECOVER_UNCERTAIN: the call."""
    output: str | None = None
    """For COMPLETE: the run's output."""
    violation: Violation | None = None
    """For POLICY_VIOLATION: the limit."""
    verdict: Verdict | None = None
    """For DENY_TOOL, REQUEST_APPROVAL and CALL_TOOL: the gate's verdict."""
    rule: str = ""
    """Name of the rule that chose this action."""


Condition = Callable[[Snapshot], bool]
Build = Callable[[Snapshot], Action]


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One row of the decision table."""

    name: str
    """Human-readable condition."""
    action: ActionKind
    """The action the row yields."""
    when: Condition
    """The condition."""
    build: Build
    """Builds the concrete action."""


def _violation(s: Snapshot) -> Violation | None:
    st = s.state
    return st.policy.check(st.usage(s.now), next_step_is_tool=bool(st.pending_tool_calls))


def _first_call(s: Snapshot) -> ToolCall:
    return s.state.pending_tool_calls[0]


def _gate(s: Snapshot) -> GateDecision | None:
    if not s.state.pending_tool_calls:
        return None
    if s.verdict is None:
        raise InvalidTransitionError("a gate verdict is required to decide on a pending tool call")
    return s.verdict.decision


def _approved(s: Snapshot) -> bool:
    """A granted approval exists for exactly this call and these arguments, asked by this run."""
    call, approval = _first_call(s), s.state.approval
    return (
        approval is not None
        and approval.status == "approved"
        and (approval.run_id is None or approval.run_id == s.run_id)
        and approval.call_id == call.call_id
        and approval.args_hash == args_hash(call.name, call.arguments)
    )


DECISION_TABLE: Final[tuple[Rule, ...]] = (
    Rule(
        name="cancel requested",
        action=ActionKind.CANCEL,
        when=lambda s: s.cancel_requested,
        build=lambda s: Action(kind=ActionKind.CANCEL, phase=Phase.TERMINATE),
    ),
    Rule(
        name="non-idempotent tool call started, outcome unknown",
        action=ActionKind.RECOVER_UNCERTAIN,
        when=lambda s: s.state.in_flight is not None,
        build=lambda s: Action(
            kind=ActionKind.RECOVER_UNCERTAIN,
            phase=s.state.phase,
            tool_call=s.state.in_flight.call if s.state.in_flight else None,
        ),
    ),
    Rule(
        name="final answer given, no tool calls pending",
        action=ActionKind.COMPLETE,
        when=lambda s: s.state.final_output is not None and not s.state.pending_tool_calls,
        build=lambda s: Action(kind=ActionKind.COMPLETE, phase=Phase.TERMINATE, output=s.state.final_output),
    ),
    Rule(
        name="the step failed max_attempts times in a row",
        action=ActionKind.ESCALATE_FAILED,
        when=lambda s: s.state.failures >= s.state.max_attempts,
        build=lambda s: Action(kind=ActionKind.ESCALATE_FAILED, phase=s.state.phase),
    ),
    Rule(
        name="a policy limit would be broken by the next step",
        action=ActionKind.POLICY_VIOLATION,
        when=lambda s: _violation(s) is not None,
        build=lambda s: Action(kind=ActionKind.POLICY_VIOLATION, phase=Phase.TERMINATE, violation=_violation(s)),
    ),
    Rule(
        name="the gate denies the pending tool call",
        action=ActionKind.DENY_TOOL,
        when=lambda s: _gate(s) is GateDecision.DENY,
        build=lambda s: Action(
            kind=ActionKind.DENY_TOOL, phase=Phase.EXECUTE, tool_call=_first_call(s), verdict=s.verdict
        ),
    ),
    Rule(
        name="the pending tool call needs approval for exactly these arguments",
        action=ActionKind.REQUEST_APPROVAL,
        when=lambda s: _gate(s) is GateDecision.REQUIRE_APPROVAL and not _approved(s),
        build=lambda s: Action(
            kind=ActionKind.REQUEST_APPROVAL, phase=Phase.EXECUTE, tool_call=_first_call(s), verdict=s.verdict
        ),
    ),
    Rule(
        name="the pending tool call delegates to a sub-agent",
        action=ActionKind.SPAWN_CHILDREN,
        when=lambda s: bool(s.state.pending_tool_calls) and _first_call(s).name == DELEGATE_TOOL,
        build=lambda s: Action(
            kind=ActionKind.SPAWN_CHILDREN, phase=Phase.EXECUTE, tool_call=_first_call(s), verdict=s.verdict
        ),
    ),
    Rule(
        name="tool calls pending",
        action=ActionKind.CALL_TOOL,
        when=lambda s: bool(s.state.pending_tool_calls),
        build=lambda s: Action(
            kind=ActionKind.CALL_TOOL, phase=Phase.EXECUTE, tool_call=_first_call(s), verdict=s.verdict
        ),
    ),
    Rule(
        name="otherwise",
        action=ActionKind.CALL_MODEL,
        when=lambda s: True,
        build=lambda s: Action(kind=ActionKind.CALL_MODEL, phase=Phase.PLAN),
    ),
)
"""Ordered rules; the first match wins."""


def decide(snapshot: Snapshot) -> Action:
    """Map a running run's snapshot to its next action.

    Raises:
        InvalidTransitionError: the run is not RUNNING (only running runs take steps).
    """
    if snapshot.state.status is not RunStatus.RUNNING:
        status = snapshot.state.status.value if snapshot.state.status else None
        raise InvalidTransitionError(f"cannot decide a step for a run in status {status!r}")
    for rule in DECISION_TABLE:
        if rule.when(snapshot):
            action = rule.build(snapshot)
            return Action(
                kind=action.kind,
                phase=action.phase,
                tool_call=action.tool_call,
                output=action.output,
                violation=action.violation,
                verdict=action.verdict,
                rule=rule.name,
            )
    raise AssertionError("the decision table ends with a catch-all rule")  # pragma: no cover


def render_decision_table() -> str:
    """The decision table as text, first match wins."""
    width = max(len(r.name) for r in DECISION_TABLE)
    lines = [f"{'#':>2}  {'WHEN':<{width}}  DO"]
    lines += [f"{i:>2}  {r.name:<{width}}  {r.action.value}" for i, r in enumerate(DECISION_TABLE, 1)]
    return "\n".join(lines)
