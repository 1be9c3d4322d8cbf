"""Recovering a non-idempotent tool call that a crash left unrecorded: ask the tool, then record, run or ask a person.

The driver calls :func:`reconcile_call` when the decision table says RECOVER_UNCERTAIN. A tool with a ``reconcile``
function is asked whether the call happened (under the tool's timeout; an exception means "cannot tell"); the pure
rule :func:`agentmaestro.core.reconcile.recovery` turns the answer into a move; the move is recorded as a
STEP_RECONCILED event, so the log shows why no person was asked (or why one was).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from agentmaestro import telemetry
from agentmaestro.core.messages import ToolCall
from agentmaestro.core.reconcile import Outcome, Reconciled, Recovery, idempotency_key, recovery
from agentmaestro.core.states import EventType, StepKind
from agentmaestro.store.records import StepRow
from agentmaestro.tools.context import ToolContext


@dataclass(frozen=True, kw_only=True)
class Reconciliation:
    """What recovery decided for one uncertain call, with the events and steps row that record it."""

    move: Recovery
    """Record the tool's result, run the call, or ask a person."""
    events: list[dict[str, Any]]
    """STEP_RECONCILED (none when the tool cannot reconcile and is not keyed), then STEP_COMPLETED for RECORD."""
    steps: list[StepRow]
    """The recorded step's row (RECORD only)."""
    reason: str
    """Why (the tool's own words, or why it could not be asked)."""


def can_recover(tool: Any) -> bool:
    """Whether ``tool`` has anything to say about an interrupted call (a reconcile function or an idempotency key)."""
    return tool is not None and (
        bool(getattr(tool, "can_reconcile", False)) or bool(getattr(tool, "idempotency_key", False))
    )


async def reconcile_call(*, tool: Any, call: ToolCall, step: int, run_id: str, context: ToolContext) -> Reconciliation:
    """Ask ``tool`` whether ``call`` (step ``step`` of ``run_id``) happened, and decide what to do.

    ``context`` is the call's context (its ``idempotency_key`` is the one the interrupted call had).
    """
    key = idempotency_key(run_id, step)
    keyed = bool(getattr(tool, "idempotency_key", False))
    started = time.perf_counter()
    if tool is not None and getattr(tool, "can_reconcile", False):
        with telemetry.tool_call_span(
            run_id=run_id, step=step, tool_name=f"reconcile {call.name}", call_id=call.call_id
        ):
            answer: Reconciled = await tool.reconcile(dict(call.arguments), key, context)
    elif keyed:
        answer = Reconciled.cannot_tell(f"tool {call.name!r} has no reconcile function")
    else:
        return Reconciliation(move=Recovery.ASK, events=[], steps=[], reason="")
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    move = recovery(answer.outcome, keyed=keyed)
    reason = answer.reason or _default_reason(answer.outcome, move)
    decided = {
        "type": EventType.STEP_RECONCILED,
        "payload": {
            "call": call.to_json(),
            "idempotency_key": key,
            "outcome": answer.outcome.value,
            "decision": move.value,
            "reason": reason,
            "duration_ms": duration_ms,
        },
        "step": step,
    }
    if move is not Recovery.RECORD:
        return Reconciliation(move=move, events=[decided], steps=[], reason=reason)
    payload = {
        "kind": StepKind.TOOL_CALL.value,
        "name": call.name,
        "call_id": call.call_id,
        "arguments": call.arguments,
        "result": str(answer.result),
        "is_error": False,
        "reconciled": True,
        "duration_ms": duration_ms,
    }
    row = StepRow(
        step_index=step, kind=StepKind.TOOL_CALL, name=call.name, status="completed", seq=0, duration_ms=duration_ms
    )
    completed = {"type": EventType.STEP_COMPLETED, "payload": payload, "step": step}
    return Reconciliation(move=move, events=[decided, completed], steps=[row], reason=reason)


def _default_reason(outcome: Outcome, move: Recovery) -> str:
    if move is Recovery.RUN and outcome is Outcome.CANNOT_TELL:
        return "outcome unknown; the tool passes its idempotency key on, so the call is made again with the same key"
    return {
        Outcome.HAPPENED: "the tool reports that the call took effect",
        Outcome.DID_NOT_HAPPEN: "the tool reports that the call had no effect",
        Outcome.CANNOT_TELL: "the tool cannot tell whether the call took effect",
    }[outcome]
