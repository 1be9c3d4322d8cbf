"""Run events, the run state they fold into, and the reducer that applies one to the other.

A run's state is a fold of its events: ``fold(events) == snapshot``. The engine computes every new
snapshot by applying the events it is about to commit with :func:`apply_event`, so a replay of the
log reproduces the stored snapshot exactly. Pure, no I/O.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agentmaestro.core.messages import Message, ToolCall
from agentmaestro.core.policy import StrictPolicy, Usage
from agentmaestro.core.reconcile import Recovery
from agentmaestro.core.states import (
    PHASE_TRANSITIONS,
    EventType,
    Phase,
    RunStatus,
    StepKind,
    check_phase_change,
    next_status,
)
from agentmaestro.errors import InvalidTransitionError


@dataclass(frozen=True, kw_only=True)
class Event:
    """One record of a run's append-only log."""

    run_id: str
    """The run."""
    seq: int
    """Per-run sequence number: 1, 2, 3, ... with no gaps."""
    type: EventType
    """What happened."""
    payload: dict[str, Any] = field(default_factory=dict)
    """The event's data: one step's worth at most, never the whole history."""
    created_at: float = 0.0
    """Unix time (seconds) when the event was committed."""
    step: int | None = None
    """Index of the step the event belongs to, if any."""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form, as served by the API and printed by the CLI."""
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "type": self.type.value,
            "step": self.step,
            "created_at": self.created_at,
            "payload": self.payload,
        }


@dataclass(frozen=True, kw_only=True)
class InFlightStep:
    """A non-idempotent tool call recorded as started but not yet finished."""

    step: int
    """Step index."""
    call: ToolCall
    """The call that was being made."""


@dataclass(frozen=True, kw_only=True)
class ApprovalState:
    """The approval attached to the first pending tool call, if any."""

    approval_id: str
    """The approval request."""
    call_id: str
    """The tool call it is about."""
    args_hash: str
    """Hash of the exact tool name and arguments approved (or asked about)."""
    status: str
    """``pending`` or ``approved``."""
    run_id: str | None = None
    """The run that asked; a grant authorises a call in that run only (None in requests recorded before
    requests named their run: those are bound by the fork rule alone, see ``RUN_FORKED``)."""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        out = {
            "approval_id": self.approval_id,
            "call_id": self.call_id,
            "args_hash": self.args_hash,
            "status": self.status,
        }
        if self.run_id is not None:
            out["run_id"] = self.run_id
        return out


@dataclass(frozen=True, kw_only=True)
class HumanRequestState:
    """An open escalation to a person."""

    request_id: str
    """The request."""
    kind: str
    """``step_failed`` or ``uncertain_tool_call``."""
    step_kind: str | None = None
    """For ``step_failed``: MODEL_CALL or TOOL_CALL."""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {"request_id": self.request_id, "kind": self.kind, "step_kind": self.step_kind}


@dataclass(frozen=True, kw_only=True)
class RunState:
    """The logical state of a run: what the snapshot row holds and what a replay must rebuild."""

    status: RunStatus | None = None
    """Current status (None before RUN_CREATED)."""
    phase: Phase = Phase.INIT
    """Current lifecycle phase."""
    policy: StrictPolicy = field(default_factory=StrictPolicy)
    """Limits in force."""
    steps: int = 0
    """Completed (or failed) steps; also the index of the next step."""
    model_calls: int = 0
    """Completed model calls."""
    tool_calls: int = 0
    """Completed tool calls."""
    input_tokens: int = 0
    """Prompt tokens over all model calls."""
    output_tokens: int = 0
    """Completion tokens over all model calls."""
    cost_usd: float = 0.0
    """Model spend in US dollars."""
    pending_tool_calls: tuple[ToolCall, ...] = ()
    """Tool calls proposed by the last model response and not yet made."""
    final_output: str | None = None
    """The model's final answer, once it gave one."""
    in_flight: InFlightStep | None = None
    """A non-idempotent tool call that was started and not recorded as finished."""
    output: str | None = None
    """The run's result once COMPLETED."""
    error: str | None = None
    """Why the run FAILED (or was CANCELLED)."""
    started_at: float | None = None
    """When a worker last started the run (for the policy's wall-time limit)."""
    last_seq: int = 0
    """Sequence number of the latest event."""
    approval: ApprovalState | None = None
    """Approval of the first pending tool call (pending or granted)."""
    failures: int = 0
    """Failed attempts in a row (model errors, tool errors); reset by a success or a human."""
    max_attempts: int = 4
    """Attempts before a failing step is escalated to a human."""
    last_failure: dict[str, Any] | None = None
    """Kind and error of the latest failed attempt."""
    human_request: HumanRequestState | None = None
    """An open escalation, while WAITING_FOR_HUMAN."""
    children: tuple[tuple[str, str], ...] = ()
    """(delegate call id, child run id) pairs the run waits for, while WAITING_FOR_CHILDREN."""
    workflow: dict[str, Any] | None = None
    """For workflow runs: node statuses and outputs, refinement iteration (see :func:`apply_workflow`)."""

    @property
    def tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def usage(self, now: float) -> Usage:
        """What the policy sees at time ``now``."""
        elapsed = 0.0 if self.started_at is None else max(0.0, now - self.started_at)
        return Usage(
            steps=self.steps,
            tokens=self.tokens,
            tool_calls=self.tool_calls,
            cost_usd=self.cost_usd,
            elapsed_s=elapsed,
        )

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form, stored in the snapshot row."""
        return {
            "status": self.status.value if self.status else None,
            "phase": self.phase.value,
            "policy": self.policy.to_json(),
            "steps": self.steps,
            "model_calls": self.model_calls,
            "tool_calls": self.tool_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "pending_tool_calls": [c.to_json() for c in self.pending_tool_calls],
            "final_output": self.final_output,
            "in_flight": (
                {"step": self.in_flight.step, "call": self.in_flight.call.to_json()} if self.in_flight else None
            ),
            "output": self.output,
            "error": self.error,
            "started_at": self.started_at,
            "last_seq": self.last_seq,
            "approval": self.approval.to_json() if self.approval else None,
            "failures": self.failures,
            "max_attempts": self.max_attempts,
            "last_failure": self.last_failure,
            "human_request": self.human_request.to_json() if self.human_request else None,
            "children": [list(c) for c in self.children],
            **({"workflow": self.workflow} if self.workflow is not None else {}),
        }

    def to_snapshot(self) -> dict[str, Any]:
        """The compact form the ``runs`` row stores.

        :meth:`to_json` without the fields (and policy limits) that hold their default value, which
        :meth:`from_json` restores. Every step commit rewrites the row, so every byte here is written once per step.
        """
        full = self.to_json()
        full["policy"] = _without_defaults(full["policy"], _DEFAULT_POLICY_JSON)
        return _without_defaults(full, _default_state_json())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        """Inverse of :meth:`to_json`."""
        in_flight = data.get("in_flight")
        return cls(
            status=RunStatus(data["status"]) if data.get("status") else None,
            phase=Phase(data.get("phase", Phase.INIT.value)),
            policy=StrictPolicy.from_json(data.get("policy")),
            steps=int(data.get("steps", 0)),
            model_calls=int(data.get("model_calls", 0)),
            tool_calls=int(data.get("tool_calls", 0)),
            input_tokens=int(data.get("input_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
            cost_usd=float(data.get("cost_usd", 0.0)),
            pending_tool_calls=tuple(ToolCall.from_json(c) for c in data.get("pending_tool_calls") or ()),
            final_output=data.get("final_output"),
            in_flight=(
                InFlightStep(step=int(in_flight["step"]), call=ToolCall.from_json(in_flight["call"]))
                if in_flight
                else None
            ),
            output=data.get("output"),
            error=data.get("error"),
            started_at=data.get("started_at"),
            last_seq=int(data.get("last_seq", 0)),
            approval=ApprovalState(**data["approval"]) if data.get("approval") else None,
            failures=int(data.get("failures", 0)),
            max_attempts=int(data.get("max_attempts", 4)),
            last_failure=data.get("last_failure"),
            human_request=HumanRequestState(**data["human_request"]) if data.get("human_request") else None,
            children=tuple((str(a), str(b)) for a, b in data.get("children") or ()),
            workflow=data.get("workflow"),
        )


def _without_defaults(data: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in defaults or v != defaults[k] or type(v) is not type(defaults[k])}


_DEFAULT_POLICY_JSON = StrictPolicy().to_json()


@functools.cache
def _default_state_json() -> dict[str, Any]:
    defaults = RunState().to_json()
    defaults["policy"] = {}
    defaults.pop("status")  # always stored
    return defaults


_TERMINATING = frozenset(
    {EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELLED, EventType.POLICY_VIOLATION}
)


_STEP_PHASES = {StepKind.MODEL_CALL.value: Phase.PLAN, StepKind.TOOL_CALL.value: Phase.EXECUTE}


def implied_phase(event_type: EventType, payload: dict[str, Any]) -> Phase | None:
    """The phase a step event puts its run in: a model call plans, a tool call executes (None: no phase).

    The fold moves the run to this phase (when the move is an allowed one), so the engine does not store a
    ``PHASE_CHANGED`` event that the step event right after it implies (see :func:`drop_implied_phase_changes`).
    """
    if event_type is EventType.STEP_STARTED:
        return Phase.EXECUTE
    if event_type is EventType.STEP_COMPLETED or event_type is EventType.STEP_FAILED:
        return _STEP_PHASES.get(payload.get("kind"))  # type: ignore[arg-type]
    return None


def drop_implied_phase_changes(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``specs`` (event specs about to be committed) without the ``PHASE_CHANGED`` events the next event implies.

    Folding the rest gives the same state: the step event moves the run to the same phase. A step costs one
    event row instead of two.
    """
    out: list[dict[str, Any]] = []
    for i, spec in enumerate(specs):
        if spec["type"] is EventType.PHASE_CHANGED and i + 1 < len(specs):
            nxt = specs[i + 1]
            implied = implied_phase(nxt["type"], nxt.get("payload") or {})
            if implied is not None and implied.value == spec["payload"]["to"]:
                continue
        out.append(spec)
    return out


def apply_event(state: RunState, event: Event) -> RunState:
    """Return the state after ``event``. Raises InvalidTransitionError for an illegal event.

    This is the only place that interprets events; the engine and replay both go through it.
    """
    if event.seq != state.last_seq + 1:
        raise InvalidTransitionError(f"event seq {event.seq} does not follow {state.last_seq} (gap or duplicate)")
    status = next_status(state.status, event.type)
    p = event.payload
    changes: dict[str, Any] = {"status": status, "last_seq": event.seq}
    t = event.type
    if t is EventType.RUN_CREATED:
        changes["policy"] = StrictPolicy.from_json(p.get("policy"))
        changes["max_attempts"] = int(p.get("max_attempts", 4))
    elif t is EventType.RUN_STARTED:
        changes["started_at"] = event.created_at
    elif t is EventType.PHASE_CHANGED:
        new_phase = Phase(p["to"])
        check_phase_change(state.phase, new_phase)
        changes["phase"] = new_phase
    elif t is EventType.STEP_STARTED:
        _expect_step(state, event)
        changes["in_flight"] = InFlightStep(step=state.steps, call=ToolCall.from_json(p["call"]))
    elif t is EventType.STEP_RECONCILED:
        _expect_step(state, event)
        if state.in_flight is None:
            raise InvalidTransitionError("STEP_RECONCILED without a started, unrecorded tool call")
        if p.get("decision") == Recovery.RUN.value:  # it did not happen (or may safely happen again): call it
            changes["in_flight"] = None
    elif t is EventType.STEP_COMPLETED:
        _expect_step(state, event)
        changes.update(_complete_step(state, p))
    elif t is EventType.STEP_FAILED:
        _expect_step(state, event)
        changes["steps"] = state.steps + 1
        changes["in_flight"] = None
        changes["failures"] = state.failures + 1
        changes["last_failure"] = {"kind": p.get("kind"), "error": p.get("error")}
        if p.get("kind") == StepKind.TOOL_CALL.value and p.get("call_id"):
            changes["pending_tool_calls"] = tuple(c for c in state.pending_tool_calls if c.call_id != p["call_id"])
    elif t is EventType.APPROVAL_REQUESTED:
        changes["approval"] = ApprovalState(
            approval_id=p["approval_id"],
            call_id=p["call"]["call_id"],
            args_hash=p["args_hash"],
            status="pending",
            run_id=p.get("run_id"),
        )
    elif t is EventType.APPROVAL_GRANTED:
        if state.approval is None or state.approval.approval_id != p.get("approval_id"):
            raise InvalidTransitionError(f"approval {p.get('approval_id')!r} is not the run's pending approval")
        changes["approval"] = dataclasses.replace(state.approval, status="approved", args_hash=p["args_hash"])
        if "arguments" in p:
            changes["pending_tool_calls"] = tuple(
                dataclasses.replace(c, arguments=dict(p["arguments"])) if c.call_id == state.approval.call_id else c
                for c in state.pending_tool_calls
            )
    elif t is EventType.APPROVAL_REJECTED:
        changes["approval"] = None
    elif t is EventType.HUMAN_INPUT_REQUESTED:
        changes["human_request"] = HumanRequestState(
            request_id=p["request_id"], kind=p["kind"], step_kind=p.get("step_kind")
        )
    elif t is EventType.HUMAN_INPUT_RECEIVED:
        changes["human_request"] = None
        changes["failures"] = 0
        action = p.get("action")
        if action == "retry":
            changes["in_flight"] = None
        elif action == "answer" and state.human_request is not None:
            hr = state.human_request
            if hr.kind == "step_failed" and hr.step_kind == StepKind.MODEL_CALL.value:
                changes["final_output"] = str(p.get("answer", ""))
    elif t is EventType.RUN_COMPLETED:
        changes["output"] = p.get("output")
    elif t in (EventType.RUN_FAILED, EventType.RUN_CANCELLED, EventType.POLICY_VIOLATION):
        changes["error"] = p.get("reason") or p.get("error")
    elif t is EventType.CHILDREN_SPAWNED:
        changes["children"] = tuple((c["call_id"], c["run_id"]) for c in p["children"])
    elif t is EventType.CHILDREN_FINISHED:
        changes["children"] = ()
    elif t is EventType.RUN_RESUMED:
        changes["error"] = None
        changes["failures"] = 0
        if p.get("policy"):
            changes["policy"] = StrictPolicy.from_json(p["policy"])
    elif t is EventType.RUN_FORKED:
        changes["in_flight"] = None
        changes["error"] = None
        # One decision, one execution: a grant copied into a fork's history authorises nothing there.
        # The fork asks again for any call still waiting to run.
        changes["approval"] = None
        if p.get("policy"):
            changes["policy"] = StrictPolicy.from_json(p["policy"])
    implied = implied_phase(t, p)
    if implied is not None and implied is not state.phase and (state.phase, implied) in PHASE_TRANSITIONS:
        changes["phase"] = implied
    if t in _TERMINATING:
        changes["phase"] = Phase.TERMINATE
    workflow = apply_workflow(state.workflow, event)
    if workflow is not state.workflow:
        changes["workflow"] = workflow
    return _evolve(state, changes)


def _evolve(state: RunState, changes: dict[str, Any]) -> RunState:
    """``dataclasses.replace(state, **changes)`` without re-running ``__init__`` (the fold's hot path).

    RunState has no ``__post_init__`` and no derived attributes, so copying the fields is all
    ``replace`` would do; ``changes`` holds field names only (a test compares both on every event type).
    """
    new = object.__new__(RunState)
    new.__dict__.update(state.__dict__)
    new.__dict__.update(changes)
    return new


# ------------------------------------------------------------------------------- workflow runs
#
# A workflow run (spec kind "workflow") records its decisions in a ``workflow`` section of the
# payload of CHILDREN_SPAWNED (nodes started), STEP_COMPLETED (kind MESSAGE, the result) and
# RUN_FAILED; the results of its nodes arrive with CHILDREN_FINISHED. The folded state is
# ``{"nodes": {id: {status, run_id, output, error, runs}}, "iteration": n, "refine_done": bool}``
# with node status pending | running | completed | failed | skipped (absent means pending).

_WORKFLOW_EVENTS = frozenset(
    {EventType.CHILDREN_SPAWNED, EventType.STEP_COMPLETED, EventType.RUN_FAILED, EventType.CHILDREN_FINISHED}
)


def apply_workflow(wf: dict[str, Any] | None, event: Event) -> dict[str, Any] | None:
    """The workflow section of a run's state after ``event`` (the same object when untouched)."""
    p = event.payload
    if event.type not in _WORKFLOW_EVENTS:
        return wf
    if event.type is EventType.CHILDREN_FINISHED:
        if wf is None:
            return None
        nodes = dict(wf["nodes"])
        for r in p.get("results") or ():
            ok = r.get("status") == RunStatus.COMPLETED.value
            nodes[r["call_id"]] = {
                **nodes.get(r["call_id"], {}),
                "status": "completed" if ok else "failed",
                "output": r.get("output"),
                "error": None if ok else (r.get("error") or f"child run {r.get('status')}"),
            }
        return {**wf, "nodes": nodes}
    section = p.get("workflow")
    if not isinstance(section, dict):
        return wf
    out: dict[str, Any] = dict(wf) if wf is not None else {"nodes": {}, "iteration": 0, "refine_done": False}
    nodes = dict(out["nodes"])
    for node_id in section.get("reset") or ():
        nodes[node_id] = {**nodes.get(node_id, {}), "status": "pending"}
    for node_id in section.get("skipped") or ():
        nodes[node_id] = {**nodes.get(node_id, {}), "status": "skipped"}
    if section.get("refine_done"):
        out["refine_done"] = True
    if "iteration" in section:
        out["iteration"] = int(section["iteration"])
    if event.type is EventType.CHILDREN_SPAWNED:
        for c in p.get("children") or ():
            prev = nodes.get(c["call_id"], {})
            nodes[c["call_id"]] = {
                **prev,
                "status": "running",
                "run_id": c["run_id"],
                "error": None,
                "runs": int(prev.get("runs", 0)) + 1,
            }
    out["nodes"] = nodes
    return out


def _expect_step(state: RunState, event: Event) -> None:
    if event.step != state.steps:
        raise InvalidTransitionError(f"event for step {event.step} but the run is at step {state.steps}")


def _complete_step(state: RunState, p: dict[str, Any]) -> dict[str, Any]:
    kind = StepKind(p["kind"])
    changes: dict[str, Any] = {"steps": state.steps + 1, "in_flight": None}
    if p.get("is_error") and p.get("counts_as_failure", True):
        changes["failures"] = state.failures + 1
        changes["last_failure"] = {"kind": kind.value, "error": p.get("result")}
    elif not p.get("is_error"):
        # A successful tool call ends a run of failures; a successful model call ends only a run of
        # model failures (the model answering after a tool error is not the tool succeeding).
        last = state.last_failure or {}
        if kind is StepKind.TOOL_CALL or last.get("kind") == StepKind.MODEL_CALL.value:
            changes["failures"] = 0
    if kind is StepKind.MODEL_CALL:
        calls = tuple(ToolCall.from_json(c) for c in p.get("tool_calls") or ())
        usage = p.get("usage") or {}
        changes.update(
            model_calls=state.model_calls + 1,
            input_tokens=state.input_tokens + int(usage.get("input_tokens", 0)),
            output_tokens=state.output_tokens + int(usage.get("output_tokens", 0)),
            cost_usd=state.cost_usd + float(p.get("cost_usd", 0.0)),
            pending_tool_calls=calls,
            final_output=None if calls else (p.get("content") or ""),
        )
    elif kind is StepKind.TOOL_CALL:
        call_id = p.get("call_id")
        changes.update(
            tool_calls=state.tool_calls + 1,
            pending_tool_calls=tuple(c for c in state.pending_tool_calls if c.call_id != call_id),
        )
        if state.approval is not None and state.approval.call_id == call_id:
            changes["approval"] = None
    elif kind is StepKind.MESSAGE:
        changes["final_output"] = p.get("content") or ""
    return changes


def fold(events: Iterable[Event], initial: RunState | None = None) -> RunState:
    """Apply events in order, starting from ``initial`` (an empty run by default)."""
    state = initial or RunState()
    for event in events:
        state = apply_event(state, event)
    return state


def conversation(system_prompt: str | None, task: str, events: Iterable[Event]) -> list[Message]:
    """Rebuild the model's context from the run's events (system prompt, task, steps)."""
    messages: list[Message] = []
    if system_prompt:
        messages.append(Message(role="system", content=system_prompt))
    messages.append(Message(role="user", content=task))
    for event in events:
        if event.type is EventType.STEP_COMPLETED:
            messages.extend(step_messages(event.payload))
        elif event.type in (EventType.STEP_FAILED, EventType.HUMAN_INPUT_RECEIVED):
            messages.extend(note_messages(event))
    return messages


def note_messages(event: Event) -> list[Message]:
    """Context the model gets from a failed attempt or an operator's input."""
    p = event.payload
    if event.type is EventType.STEP_FAILED and p.get("kind") == StepKind.MODEL_CALL.value:
        return [Message(role="user", content=f"[The previous attempt failed: {p.get('error')}. Try again.]")]
    if event.type is EventType.HUMAN_INPUT_RECEIVED:
        if p.get("instructions"):
            return [Message(role="user", content=f"[Operator instructions] {p['instructions']}")]
        if p.get("action") == "answer" and p.get("note_for_model"):
            return [Message(role="user", content=f"[Operator answer in place of the failed step] {p['answer']}")]
    return []


def step_messages(payload: dict[str, Any]) -> list[Message]:
    """The messages one completed step adds to the model's context."""
    kind = payload.get("kind")
    if kind == StepKind.MODEL_CALL.value:
        calls = tuple(ToolCall.from_json(c) for c in payload.get("tool_calls") or ())
        return [Message(role="assistant", content=payload.get("content"), tool_calls=calls)]
    if kind == StepKind.TOOL_CALL.value:
        return [
            Message(
                role="tool",
                content=str(payload.get("result", "")),
                tool_call_id=payload.get("call_id"),
                name=payload.get("name"),
            )
        ]
    return []


NUL_REPLACEMENT = "\ufffd"


def scrub_nul(value: Any) -> Any:
    """``value`` with every NUL character in its strings (keys included) replaced by U+FFFD.

    Model answers and tool output can contain NUL (a command printing binary data); PostgreSQL
    cannot store it in text or JSONB, and a step that cannot be committed would be retried forever.
    The engine scrubs event payloads the same way on every database, so replays agree. Returns
    ``value`` itself when there is nothing to replace (no copy on the hot path).
    """
    if isinstance(value, str):
        return value.replace("\x00", NUL_REPLACEMENT) if "\x00" in value else value
    # Hot path: one C-level pass. ``repr`` writes a NUL inside a string as the four characters
    # ``\x00``, so their absence proves there is nothing to scrub (their presence may be a literal
    # backslash sequence: the exact walk below decides).
    if "\\x00" not in repr(value):
        return value
    return _scrub(value)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", NUL_REPLACEMENT) if "\x00" in value else value
    if isinstance(value, dict):
        out = None
        for k, v in value.items():
            k2, v2 = _scrub(k), _scrub(v)
            if out is None and (k2 is not k or v2 is not v):
                out = {}
                for k0, v0 in value.items():
                    if k0 is k:
                        break
                    out[k0] = v0
            if out is not None:
                out[k2] = v2
        return value if out is None else out
    if isinstance(value, list | tuple):
        items = [_scrub(v) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return type(value)(items) if isinstance(value, tuple) else items
    return value
