"""Run statuses, lifecycle phases, step kinds, event types and the one transition table.

Everything here is data. The engine never changes a run's status except through
:func:`next_status`, which looks the pair up in :data:`TRANSITIONS` and raises
:class:`~agentmaestro.errors.InvalidTransitionError` for any pair not in the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from agentmaestro.errors import InvalidTransitionError


class RunStatus(StrEnum):
    """Where a run is in its life. Terminal statuses are COMPLETED, FAILED and CANCELLED."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING_FOR_APPROVAL = "WAITING_FOR_APPROVAL"
    WAITING_FOR_HUMAN = "WAITING_FOR_HUMAN"
    WAITING_FOR_CHILDREN = "WAITING_FOR_CHILDREN"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """True for COMPLETED, FAILED and CANCELLED."""
        return self in TERMINAL_STATUSES

    @property
    def waiting(self) -> bool:
        """True for the statuses in which a run waits without holding a worker."""
        return self in WAITING_STATUSES


TERMINAL_STATUSES: Final = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
WAITING_STATUSES: Final = frozenset(
    {RunStatus.WAITING_FOR_APPROVAL, RunStatus.WAITING_FOR_HUMAN, RunStatus.WAITING_FOR_CHILDREN}
)


class Phase(StrEnum):
    """The lifecycle phase a run reports; it tells which kind of work comes next."""

    INIT = "INIT"
    PLAN = "PLAN"
    EXECUTE = "EXECUTE"
    REVIEW = "REVIEW"
    TERMINATE = "TERMINATE"


class StepKind(StrEnum):
    """The kinds of unit of work inside a run."""

    MODEL_CALL = "MODEL_CALL"
    TOOL_CALL = "TOOL_CALL"
    OBSERVATION = "OBSERVATION"
    REVIEW = "REVIEW"
    MESSAGE = "MESSAGE"


class EventType(StrEnum):
    """Every kind of record in a run's append-only event log."""

    RUN_CREATED = "RUN_CREATED"
    RUN_STARTED = "RUN_STARTED"
    LEASE_RECOVERED = "LEASE_RECOVERED"
    PHASE_CHANGED = "PHASE_CHANGED"
    STEP_STARTED = "STEP_STARTED"
    STEP_RECONCILED = "STEP_RECONCILED"
    STEP_COMPLETED = "STEP_COMPLETED"
    STEP_FAILED = "STEP_FAILED"
    APPROVAL_REQUESTED = "APPROVAL_REQUESTED"
    APPROVAL_GRANTED = "APPROVAL_GRANTED"
    APPROVAL_REJECTED = "APPROVAL_REJECTED"
    HUMAN_INPUT_REQUESTED = "HUMAN_INPUT_REQUESTED"
    HUMAN_INPUT_RECEIVED = "HUMAN_INPUT_RECEIVED"
    CHILDREN_SPAWNED = "CHILDREN_SPAWNED"
    CHILDREN_FINISHED = "CHILDREN_FINISHED"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    POLICY_VIOLATION = "POLICY_VIOLATION"
    RUN_COMPLETED = "RUN_COMPLETED"
    RUN_FAILED = "RUN_FAILED"
    RUN_CANCELLED = "RUN_CANCELLED"
    RUN_RESUMED = "RUN_RESUMED"
    RUN_FORKED = "RUN_FORKED"


_P = RunStatus.PENDING
_R = RunStatus.RUNNING
_WA = RunStatus.WAITING_FOR_APPROVAL
_WH = RunStatus.WAITING_FOR_HUMAN
_WC = RunStatus.WAITING_FOR_CHILDREN
_C = RunStatus.COMPLETED
_F = RunStatus.FAILED
_X = RunStatus.CANCELLED
E = EventType

TRANSITIONS: Final[Mapping[tuple[RunStatus | None, EventType], RunStatus]] = MappingProxyType(
    {
        # Birth. A fork is born PENDING from a copy of another run's history.
        (None, E.RUN_CREATED): _P,
        (_P, E.RUN_FORKED): _P,
        (_R, E.RUN_FORKED): _P,
        (_WH, E.RUN_FORKED): _P,
        # A worker claims a pending run; a worker whose lease expired is replaced.
        (_P, E.RUN_STARTED): _R,
        (_R, E.LEASE_RECOVERED): _R,
        # Work inside a running run.
        (_R, E.PHASE_CHANGED): _R,
        (_R, E.STEP_STARTED): _R,
        (_R, E.STEP_RECONCILED): _R,
        (_R, E.STEP_COMPLETED): _R,
        (_R, E.STEP_FAILED): _R,
        # Waiting without holding a worker, and coming back.
        (_R, E.APPROVAL_REQUESTED): _WA,
        (_WA, E.APPROVAL_GRANTED): _R,
        (_WA, E.APPROVAL_REJECTED): _R,
        (_R, E.HUMAN_INPUT_REQUESTED): _WH,
        (_WH, E.HUMAN_INPUT_RECEIVED): _R,
        (_R, E.CHILDREN_SPAWNED): _WC,
        (_WC, E.CHILDREN_FINISHED): _R,
        # Cooperative cancellation: a running run is asked, the worker stops it at the next step.
        (_R, E.CANCEL_REQUESTED): _R,
        (_P, E.RUN_CANCELLED): _X,
        (_R, E.RUN_CANCELLED): _X,
        (_WA, E.RUN_CANCELLED): _X,
        (_WH, E.RUN_CANCELLED): _X,
        (_WC, E.RUN_CANCELLED): _X,
        # Endings.
        (_R, E.POLICY_VIOLATION): _F,
        (_R, E.RUN_COMPLETED): _C,
        (_R, E.RUN_FAILED): _F,
        # An operator may resume a failed or cancelled run from its last completed step.
        # COMPLETED is final: nothing leaves it.
        (_F, E.RUN_RESUMED): _P,
        (_X, E.RUN_RESUMED): _P,
    }
)
"""The one run-status transition table: (status before, event) -> status after.

``None`` as the status before stands for "the run does not exist yet". Any pair not listed is
an invalid transition.
"""

PHASE_TRANSITIONS: Final[frozenset[tuple[Phase, Phase]]] = frozenset(
    {
        (Phase.INIT, Phase.PLAN),
        (Phase.INIT, Phase.EXECUTE),
        (Phase.INIT, Phase.TERMINATE),
        (Phase.PLAN, Phase.EXECUTE),
        (Phase.PLAN, Phase.REVIEW),
        (Phase.PLAN, Phase.TERMINATE),
        (Phase.EXECUTE, Phase.PLAN),
        (Phase.EXECUTE, Phase.REVIEW),
        (Phase.EXECUTE, Phase.TERMINATE),
        (Phase.REVIEW, Phase.PLAN),
        (Phase.REVIEW, Phase.EXECUTE),
        (Phase.REVIEW, Phase.TERMINATE),
        # Resuming a failed or cancelled run re-enters planning or execution.
        (Phase.TERMINATE, Phase.PLAN),
        (Phase.TERMINATE, Phase.EXECUTE),
    }
)
"""Allowed lifecycle phase changes (reported on PHASE_CHANGED events)."""


def next_status(current: RunStatus | None, event: EventType) -> RunStatus:
    """Return the status a run has after ``event``; raise if the table has no such row.

    Raises:
        InvalidTransitionError: when ``(current, event)`` is not in :data:`TRANSITIONS`.
    """
    try:
        return TRANSITIONS[(current, event)]
    except KeyError:
        raise InvalidTransitionError(
            f"event {event.value!r} is not allowed in status {current.value if current else None!r}"
        ) from None


def check_phase_change(current: Phase, new: Phase) -> None:
    """Raise InvalidTransitionError unless ``current -> new`` is an allowed phase change."""
    if (current, new) not in PHASE_TRANSITIONS:
        raise InvalidTransitionError(f"phase change {current.value!r} -> {new.value!r} is not allowed")


def render_table_text() -> str:
    """The transition table as aligned plain text, one row per transition."""
    rows = [
        (before.value if before else "(none)", event.value, after.value)
        for (before, event), after in TRANSITIONS.items()
    ]
    w0 = max(len(r[0]) for r in rows + [("FROM", "", "")])
    w1 = max(len(r[1]) for r in rows + [("", "EVENT", "")])
    lines = [f"{'FROM':<{w0}}  {'EVENT':<{w1}}  TO"]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def render_table_mermaid() -> str:
    """The transition table as a Mermaid state diagram."""
    lines = ["stateDiagram-v2"]
    for (before, event), after in TRANSITIONS.items():
        src = "[*]" if before is None else before.value
        lines.append(f"    {src} --> {after.value}: {event.value}")
    for status in sorted(TERMINAL_STATUSES):
        lines.append(f"    {status.value} --> [*]")
    return "\n".join(lines)
