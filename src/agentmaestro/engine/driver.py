"""Drives one leased run: decide -> act (outside any transaction) -> commit, until it stops running."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentmaestro import telemetry
from agentmaestro.agents import Agent, AgentRegistry
from agentmaestro.ceilings import quota_ceiling
from agentmaestro.core.decide import DELEGATE_TOOL, Action, ActionKind, Snapshot, decide
from agentmaestro.core.events import (
    Event,
    RunState,
    apply_event,
    conversation,
    drop_implied_phase_changes,
    note_messages,
    scrub_nul,
    step_messages,
)
from agentmaestro.core.gate import GateDecision, GatePolicy, Verdict, args_hash, combine, path_argument_risk
from agentmaestro.core.messages import Message, ModelRequest, ToolCall, ToolSpec
from agentmaestro.core.policy import StrictPolicy, Violation
from agentmaestro.core.reconcile import Recovery, idempotency_key
from agentmaestro.core.risk import RiskLevel
from agentmaestro.core.states import EventType, RunStatus, StepKind
from agentmaestro.credentials.runtime import StoreCredentials
from agentmaestro.engine.recovery import Reconciliation, can_recover, reconcile_call
from agentmaestro.errors import ConfigError, ConflictError, LeaseLostError, MaestroError, ModelAPIError
from agentmaestro.models.pricing import PriceTable
from agentmaestro.store.base import Store
from agentmaestro.store.records import (
    Claim,
    Commit,
    LedgerSpec,
    NewRun,
    Refusal,
    Reservation,
    StepRow,
    new_id,
    new_run_id,
)
from agentmaestro.tools.context import ToolContext
from agentmaestro.tools.memory import StoreMemory
from agentmaestro.tools.registry import ToolResult

log = logging.getLogger("agentmaestro.engine")

EventListener = Callable[[str, str, list[Event]], Awaitable[None] | None]
"""Called after each commit with (run_id, agent name, committed events)."""

RESERVE_OUTPUT_TOKENS = 4096
"""Worst-case completion size a budgeted call reserves when the agent sets no max_output_tokens."""

MAX_DEPTH = 8
"""Deepest sub-agent nesting (a guard against agents delegating in circles)."""

TRANSIENT_RETRIES = 3
"""Retries of a model call that failed transiently (429, 5xx, timeout) before the step fails."""


_CONTEXT_SUPPORT: dict[type, bool] = {}


def _accepts_context(tool: Any) -> bool:
    """Whether ``tool.invoke`` takes a ``context`` argument (cached per tool class)."""
    cls = type(tool)
    if cls not in _CONTEXT_SUPPORT:
        _CONTEXT_SUPPORT[cls] = "context" in inspect.signature(tool.invoke).parameters
    return _CONTEXT_SUPPORT[cls]


def estimate_tokens(request: ModelRequest) -> int:
    """A deliberately high estimate of a request's prompt tokens (about 3 characters per token)."""
    chars = sum(len(m.content or "") + sum(len(str(c.arguments)) for c in m.tool_calls) for m in request.messages)
    chars += sum(len(t.description) + len(str(t.parameters)) for t in request.tools)
    return chars // 3 + 16 * len(request.messages) + 64


_FINISH = (EventType.STEP_COMPLETED, EventType.STEP_FAILED)
_PARKED = frozenset({RunStatus.WAITING_FOR_APPROVAL, RunStatus.WAITING_FOR_HUMAN, RunStatus.WAITING_FOR_CHILDREN})
"""Statuses a step commit can leave a run in, waiting for something other than a worker."""
"""The events that finish a step (and hold its payload): a steps row names one of them."""


class _StepCancelled(Exception):
    """The current step was interrupted because an operator asked to cancel the run."""


@dataclass(kw_only=True)
class _Outcome:
    events: list[dict[str, Any]]
    steps: list[StepRow]
    message_payloads: list[dict[str, Any]]
    approval: dict[str, Any] | None = None
    human_request: dict[str, Any] | None = None
    children: list[NewRun] = field(default_factory=list)
    budget_settle: list[dict[str, Any]] = field(default_factory=list)


class RunDriver:
    """Executes the steps of one run while its worker holds the lease."""

    def __init__(
        self,
        *,
        store: Store,
        claim: Claim,
        agent: Agent,
        owner: str,
        listeners: list[EventListener],
        prices: PriceTable,
        transient_backoff_s: float = 0.5,
        registry: AgentRegistry | None = None,
    ) -> None:
        rec = claim.record
        self.registry = registry or AgentRegistry([agent])
        self.parent_run_id = rec.parent_run_id
        self.spec = rec.spec
        self.depth = int(rec.spec.get("depth", 0))
        self.ledgers: list[LedgerSpec] = []
        self._held: Reservation | None = None  # reserved by the last commit for the next model call
        self._refused: Refusal | None = None  # ... or why that reservation was refused
        self._tool_specs: tuple[ToolSpec, ...] | None = None
        self.store = store
        self.run_id = rec.run_id
        self.workspace_id = rec.workspace_id
        self.task = rec.input
        self.agent = agent
        self.owner = owner
        self.epoch = rec.lease_epoch
        self.version = rec.version
        self.state: RunState = rec.state
        self.cancel_requested = rec.cancel_requested
        self.cancel_reason = rec.cancel_reason
        self.listeners = listeners
        self.prices = prices
        self.transient_backoff_s = transient_backoff_s
        self.lost = False
        self.stopping = False
        self.messages: list[Message] = []
        self._action_task: asyncio.Task[Any] | None = None
        self._recovered_from = claim.recovered_from
        self._claim_events = list(claim.events)
        self.workspace_gate = GatePolicy()
        self.context = dataclasses.replace(
            ToolContext.for_run(run_id=self.run_id, workspace_id=self.workspace_id, agent=agent.name),
            memory=StoreMemory(store=store, workspace_id=self.workspace_id, agent=agent.name, run_id=self.run_id),
            credentials=StoreCredentials(store=store, workspace_id=self.workspace_id, run_id=self.run_id),
        )
        if rec.spec.get("workdir"):  # an objective's task works in its own git worktree
            self.context = dataclasses.replace(self.context, workdir=Path(str(rec.spec["workdir"])).resolve())

    # --------------------------------------------------------------------------- control

    def request_cancel(self) -> None:
        """An operator asked to cancel: interrupt the current step; the next decision cancels."""
        self.cancel_requested = True
        if self._action_task is not None and not self._action_task.done():
            self._action_task.cancel(msg="cancel requested")

    def lease_lost(self) -> None:
        """The heartbeat found the lease gone: stop without committing anything more."""
        self.lost = True
        if self._action_task is not None and not self._action_task.done():
            self._action_task.cancel(msg="lease lost")

    # ------------------------------------------------------------------------------ loop

    async def drive(self) -> None:
        """Run steps until the run leaves RUNNING, the lease is lost, or the worker stops."""
        with telemetry.run_span(run_id=self.run_id, agent=self.agent.name, workspace_id=self.workspace_id):
            await self._load_context()
            if self._claim_events:
                await self._emit(self._claim_events)
            while self.state.status is RunStatus.RUNNING and not self.lost and not self.stopping:
                verdict = self._verdict(self.state.pending_tool_calls[0]) if self.state.pending_tool_calls else None
                snapshot = Snapshot(
                    state=self.state,
                    now=time.time(),
                    cancel_requested=self.cancel_requested,
                    verdict=verdict,
                    run_id=self.run_id,
                )
                action = decide(snapshot)
                if self.state.failures and action.kind in (ActionKind.CALL_MODEL, ActionKind.CALL_TOOL):
                    await self._backoff()
                    if self.lost or self.stopping:
                        return
                outcome = await self._act(action)
                if self.lost:
                    return
                await self._commit(outcome)
            if self.cancel_requested and not self.lost and self.state.status in _PARKED:
                await self._cancel_parked()
            if self._held is not None and not self.lost and self.stopping:
                held, self._held = self._held, None  # the worker stops: give the next call's reservation back
                await self.store.budgets.settle(held.settle_entries())

    async def _cancel_parked(self) -> None:
        """A cancel that arrived while the step that parked the run was being committed: cancel it now.

        The commit that moved the run to wait for a person (or for its sub-runs) read the request, but no next
        step will: without this the run would wait, its approval or question in the human queue, until someone
        answers it. Cancelling a waiting run is immediate (its open requests leave the queue, its sub-runs are
        cancelled).
        """
        rec = await self.store.runs.get(self.run_id)
        if rec.status not in _PARKED:
            return  # answered, or cancelled, in the meantime: the next driver (or nobody) has it
        reason = rec.cancel_reason or self.cancel_reason or "cancelled"
        try:
            done = await self.store.runs.cancel(self.run_id, reason=reason, by="engine")
        except ConflictError:
            return  # it finished or changed concurrently; the cancel request stays on the row if still needed
        self.state = done.state

    async def _backoff(self) -> None:
        delay = min(30.0, self.agent.retry_backoff_s * 2 ** max(0, self.state.failures - 1))
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                if not (self.cancel_requested or self.lost):
                    raise

    def _verdict(self, call: ToolCall) -> Verdict:
        """The risk gate: the call's risk (tool level, raised by argument rules) against the policies."""
        tool = self.agent.tool_map().get(call.name)
        if tool is None:
            return Verdict(decision=GateDecision.ALLOW, risk=RiskLevel.SAFE, reasons=("unknown tool",))
        risk, reasons = tool.risk, []
        assess = getattr(tool, "assess", None)
        if assess is not None:
            try:
                rule_risk, rule_reasons = assess(dict(call.arguments), self.context)
            except Exception as exc:  # a broken rule must fail closed
                rule_risk, rule_reasons = RiskLevel.DANGEROUS, [f"risk rule failed: {type(exc).__name__}"]
            risk = max(risk, RiskLevel(rule_risk))
            reasons.extend(rule_reasons)
        path_risk, path_reasons = path_argument_risk(call.arguments, str(self.context.workdir))
        risk = max(risk, path_risk)
        reasons.extend(path_reasons)
        policies = [self.workspace_gate] + ([self.agent.gate] if self.agent.gate else [])
        return combine(call.name, risk, policies, reasons)

    def _budget_ledgers(self, settings: dict[str, Any]) -> list[LedgerSpec]:
        """The budgets this run's model calls are charged to: its run tree's and its workspace's month."""
        ledgers: list[LedgerSpec] = []
        tree = self.spec.get("budget")
        if tree is None and self.parent_run_id is None:
            p = self.state.policy
            if p.max_cost_usd is not None or p.max_tokens is not None:
                tree = {
                    "ledger_id": f"run:{self.run_id}",
                    "label": f"of run tree {self.run_id}",
                    "limit_usd": p.max_cost_usd,
                    "limit_tokens": p.max_tokens,
                }
        if tree:
            ledgers.append(LedgerSpec(workspace_id=self.workspace_id, **tree))
        monthly = (settings.get("quotas") or {}).get("monthly_budget_usd")
        if not isinstance(monthly, int | float) or isinstance(monthly, bool):
            monthly = None
        monthly = quota_ceiling().cap({"monthly_budget_usd": monthly})["monthly_budget_usd"]
        if monthly is not None:
            month = time.strftime("%Y-%m", time.gmtime())
            ledgers.append(
                LedgerSpec(
                    ledger_id=f"ws:{self.workspace_id}:{month}",
                    workspace_id=self.workspace_id,
                    limit_usd=float(monthly),
                    limit_tokens=None,
                    label=f"of workspace {self.workspace_id} for {month}",
                )
            )
        return ledgers

    def _approval_ttl(self) -> float | None:
        ttls = [g.approval_ttl_s for g in (self.workspace_gate, self.agent.gate) if g and g.approval_ttl_s]
        return min(ttls) if ttls else None

    async def _load_context(self) -> None:
        settings = await self.store.workspaces.settings(self.workspace_id)
        self.workspace_gate = GatePolicy.from_json(settings.get("gate"))
        self.ledgers = self._budget_ledgers(settings)
        system = self.agent.instructions or None
        if self.state.steps == 0:
            self.messages = conversation(system, self.task, [])
            return
        events = await self.store.events.read(self.run_id)
        self.messages = conversation(system, self.task, events)

    async def _commit(self, outcome: _Outcome) -> None:
        now = time.time()
        state = self.state
        events: list[Event] = []
        for spec in drop_implied_phase_changes(outcome.events):
            ev = Event(
                run_id=self.run_id,
                seq=state.last_seq + 1,
                type=spec["type"],
                payload=scrub_nul(spec.get("payload", {})),  # model/tool text may carry NUL (PostgreSQL refuses it)
                created_at=now,
                step=spec.get("step"),
            )
            state = apply_event(state, ev)
            events.append(ev)
        if events and state.status is RunStatus.RUNNING and state.final_output is not None:
            # The step gave the final answer: when the table says COMPLETE next, record it in the
            # same commit instead of a separate one.
            nxt = decide(Snapshot(state=state, now=now, cancel_requested=self.cancel_requested, run_id=self.run_id))
            if nxt.kind is ActionKind.COMPLETE:
                done = Event(
                    run_id=self.run_id,
                    seq=state.last_seq + 1,
                    type=EventType.RUN_COMPLETED,
                    payload={"output": nxt.output},
                    created_at=now,
                )
                state = apply_event(state, done)
                events.append(done)
        steps = [
            StepRow(
                **{
                    **s.__dict__,
                    "seq": next(e.seq for e in events if e.step == s.step_index and e.type in _FINISH),
                    "created_at": now,
                }
            )
            for s in outcome.steps
        ]
        leaving = state.status is not RunStatus.RUNNING
        new_messages: list[Message] = []
        for ev in events:
            if ev.type is EventType.STEP_COMPLETED:
                new_messages.extend(step_messages(ev.payload))
            else:
                new_messages.extend(note_messages(ev))
        settle = list(outcome.budget_settle)
        reserve: Reservation | None = None
        if self.ledgers:
            if leaving and self._held is not None:  # the run stops: give the unused reservation back
                settle += self._held.settle_entries()
                self._held = None
            elif not leaving and not state.pending_tool_calls and self._held is None and self._refused is None:
                nxt = decide(Snapshot(state=state, now=now, cancel_requested=self.cancel_requested))
                if nxt.kind is ActionKind.CALL_MODEL:  # reserve the next call's worst case in this commit
                    reserve = self._reservation([*self.messages, *new_messages])
        commit = Commit(
            run_id=self.run_id,
            workspace_id=self.workspace_id,
            owner=self.owner,
            epoch=self.epoch,
            version=self.version,
            state=state,
            events=tuple(events),
            steps=tuple(steps),
            release=leaving,
            finished_at=now if state.status is not None and state.status.terminal else None,
            approval=outcome.approval,
            human_request=outcome.human_request,
            children=tuple(outcome.children),
            parent_run_id=self.parent_run_id,
            budget_settle=tuple(settle),
            reserve=reserve,
        )
        try:
            result = await self.store.steps.commit(commit)
        except LeaseLostError:
            self.lost = True
            log.warning(
                "run %s: commit rejected, lease lost (worker %s, epoch %d)", self.run_id, self.owner, self.epoch
            )
            return
        self.version = result.version
        self.cancel_requested = self.cancel_requested or result.cancel_requested
        self.state = state
        self.messages.extend(new_messages)
        if reserve is not None:
            if result.refusal is None:
                self._held = reserve
            else:
                self._refused = result.refusal
        await self._emit(events)

    async def _emit(self, events: list[Event]) -> None:
        for listener in self.listeners:
            try:
                res = listener(self.run_id, self.agent.name, events)
                if res is not None:
                    await res
            except Exception:  # a hook must never break a run
                log.exception("event listener failed for run %s", self.run_id)

    # ---------------------------------------------------------------------------- actions

    async def _act(self, action: Action) -> _Outcome:
        kind = action.kind
        if kind is ActionKind.CANCEL:
            return await self._cancelled()
        if kind is ActionKind.COMPLETE:
            return _Outcome(
                events=[{"type": EventType.RUN_COMPLETED, "payload": {"output": action.output}}],
                steps=[],
                message_payloads=[],
            )
        if kind is ActionKind.POLICY_VIOLATION:
            assert action.violation is not None
            return self._violation(action.violation)
        if kind is ActionKind.RECOVER_UNCERTAIN:
            return await self._recover(action)
        if kind is ActionKind.ESCALATE_FAILED:
            failure = self.state.last_failure or {}
            return self._escalate(
                kind="step_failed",
                step_kind=failure.get("kind"),
                question=(
                    f"The {str(failure.get('kind', 'step')).lower().replace('_', ' ')} failed "
                    f"{self.state.failures} times in a row: {failure.get('error')}. Retry (optionally with new "
                    "instructions), answer in place of the step, or abandon the run."
                ),
                detail={"failures": self.state.failures, "last_error": failure.get("error")},
            )
        if kind is ActionKind.DENY_TOOL:
            return self._denied(action)
        if kind is ActionKind.REQUEST_APPROVAL:
            return self._request_approval(action)
        if kind is ActionKind.SPAWN_CHILDREN:
            return self._spawn(action)
        prefix = self._phase_events(action)
        if action.kind is ActionKind.CALL_TOOL and action.tool_call is not None:
            tool = self.agent.tool_map().get(action.tool_call.name)
            if tool is not None and not tool.idempotent:
                # Record the intent durably first: if this worker dies mid-call, the next one
                # knows the call may have happened and asks a human instead of repeating it.
                started: dict[str, Any] = {
                    "type": EventType.STEP_STARTED,
                    "payload": {"call": action.tool_call.to_json()},
                    "step": self.state.steps,
                }
                await self._commit(_Outcome(events=[*prefix, started], steps=[], message_payloads=[]))
                prefix = []
                if self.lost:
                    return _Outcome(events=[], steps=[], message_payloads=[])
        try:
            outcome: _Outcome = await self._guarded_step(action)
        except _StepCancelled:
            return await self._cancelled()
        except TimeoutError:
            return self._violation(self._timeout_violation())
        outcome.events[:0] = prefix
        return outcome

    async def _recover(self, action: Action) -> _Outcome:
        """A started, unrecorded non-idempotent call: the tool reconciles it if it can, else a person decides."""
        call = action.tool_call
        assert call is not None
        tool = self.agent.tool_map().get(call.name)
        found: Reconciliation | None = None
        if can_recover(tool):
            try:
                found = await self._guarded_step(action)
            except _StepCancelled:
                return await self._cancelled()
            except TimeoutError:
                return self._violation(self._timeout_violation())
            assert isinstance(found, Reconciliation)
            if found.move is not Recovery.ASK:
                return _Outcome(events=found.events, steps=found.steps, message_payloads=[])
        why = f" Its reconcile could not tell: {found.reason}." if found is not None else ""
        outcome = self._escalate(
            kind="uncertain_tool_call",
            question=(
                f"Tool {call.name!r} (not idempotent) was started but its outcome was never recorded, so it "
                f"was not re-run.{why} Retry it, answer in its place with what it returned, or abandon the run."
            ),
            detail={"call": call.to_json(), "step": self.state.steps},
        )
        if found is not None:
            outcome.events[:0] = found.events
        return outcome

    def _timeout_violation(self) -> Violation:
        return Violation(
            limit="timeout_s",
            limit_value=float(self.state.policy.timeout_s or 0),
            observed=round(self.state.usage(time.time()).elapsed_s, 3),
        )

    async def fail_internal(self, exc: BaseException) -> None:
        """Record an engine bug as RUN_FAILED, so a deterministic crash is not retried forever."""
        if self.lost or self.state.status is not RunStatus.RUNNING:
            return
        error = f"internal error: {type(exc).__name__}: {exc}"
        await self._commit(
            _Outcome(
                events=[{"type": EventType.RUN_FAILED, "payload": {"error": error}}], steps=[], message_payloads=[]
            )
        )

    def _escalate(self, *, kind: str, question: str, detail: dict[str, Any], step_kind: str | None = None) -> _Outcome:
        request_id = new_id("hum")
        payload = {
            "request_id": request_id,
            "kind": kind,
            "step_kind": step_kind,
            "question": question,
            "options": ["retry", "answer", "abandon"],
            **detail,
        }
        row = {
            "request_id": request_id,
            "workspace_id": self.workspace_id,
            "run_id": self.run_id,
            "kind": kind,
            "question": question,
            "detail": {**detail, "step_kind": step_kind},
            "options": ["retry", "answer", "abandon"],
            "status": "pending",
            "created_at": time.time(),
        }
        return _Outcome(
            events=[{"type": EventType.HUMAN_INPUT_REQUESTED, "payload": payload}],
            steps=[],
            message_payloads=[],
            human_request=row,
        )

    def _denied(self, action: Action) -> _Outcome:
        call, verdict = action.tool_call, action.verdict
        assert call is not None and verdict is not None
        reasons = "; ".join(verdict.reasons) or "denied by policy"
        payload = {
            "kind": StepKind.TOOL_CALL.value,
            "name": call.name,
            "call_id": call.call_id,
            "arguments": call.arguments,
            "result": f"The call to {call.name!r} was denied by policy ({reasons}). It was not executed.",
            "is_error": True,
            "counts_as_failure": False,
            "denied": True,
            "gate": verdict.to_json(),
        }
        row = StepRow(step_index=self.state.steps, kind=StepKind.TOOL_CALL, name=call.name, status="denied", seq=0)
        return _Outcome(
            events=[
                *self._phase_events(action),
                {"type": EventType.STEP_COMPLETED, "payload": payload, "step": self.state.steps},
            ],
            steps=[row],
            message_payloads=[payload],
        )

    def _request_approval(self, action: Action) -> _Outcome:
        call, verdict = action.tool_call, action.verdict
        assert call is not None and verdict is not None
        now = time.time()
        ttl = self._approval_ttl()
        approval_id = new_id("apr")
        digest = args_hash(call.name, call.arguments)
        payload = {
            "approval_id": approval_id,
            "run_id": self.run_id,
            "call": call.to_json(),
            "risk": verdict.risk.name,
            "reasons": list(verdict.reasons),
            "args_hash": digest,
            "expires_at": None if ttl is None else now + ttl,
        }
        row = {
            "approval_id": approval_id,
            "workspace_id": self.workspace_id,
            "run_id": self.run_id,
            "step_index": self.state.steps,
            "call_id": call.call_id,
            "tool": call.name,
            "arguments": call.arguments,
            "args_hash": digest,
            "risk": verdict.risk.name,
            "reasons": list(verdict.reasons),
            "status": "pending",
            "requested_at": now,
            "expires_at": payload["expires_at"],
        }
        return _Outcome(
            events=[*self._phase_events(action), {"type": EventType.APPROVAL_REQUESTED, "payload": payload}],
            steps=[],
            message_payloads=[],
            approval=row,
        )

    def _spawn(self, action: Action) -> _Outcome:
        """Start sub-agent runs for the delegate calls at the head of the pending list."""
        calls = []
        for call in self.state.pending_tool_calls:
            if call.name != DELEGATE_TOOL:
                break
            calls.append(call)
        children: list[NewRun] = []
        spawned: list[dict[str, Any]] = []
        for call in calls:
            problem = self._delegation_problem(call)
            if problem is not None:
                if spawned:
                    break  # spawn the valid ones first; this call is answered on the way back
                return self._tool_observation(action, call, problem)
            target = self.registry.get(str(call.arguments["agent"]))
            child_id = new_run_id()
            spec = {**target.spec(), "depth": self.depth + 1}
            tree = next((lg for lg in self.ledgers if lg.ledger_id.startswith("run:")), None)
            if tree is not None:  # sub-runs draw on the same run-tree budget
                spec["budget"] = {
                    "ledger_id": tree.ledger_id,
                    "label": tree.label,
                    "limit_usd": tree.limit_usd,
                    "limit_tokens": tree.limit_tokens,
                }
            children.append(
                NewRun(
                    run_id=child_id,
                    workspace_id=self.workspace_id,
                    agent_name=target.name,
                    input=str(call.arguments["task"]),
                    spec=spec,
                    policy=(target.policy or StrictPolicy()).to_json(),
                    parent_run_id=self.run_id,
                )
            )
            spawned.append({"call_id": call.call_id, "run_id": child_id, "agent": target.name})
        return _Outcome(
            events=[
                *self._phase_events(action),
                {"type": EventType.CHILDREN_SPAWNED, "payload": {"children": spawned}},
            ],
            steps=[],
            message_payloads=[],
            children=children,
        )

    def _delegation_problem(self, call: ToolCall) -> str | None:
        agent, task = call.arguments.get("agent"), call.arguments.get("task")
        allowed = [str(d) for d in self.agent.delegates]
        if not isinstance(agent, str) or not isinstance(task, str) or set(call.arguments) != {"agent", "task"}:
            return "invalid arguments for tool 'delegate': expected {'agent': str, 'task': str}"
        if agent not in allowed:
            return f"agent {agent!r} is not one this agent may delegate to ({', '.join(allowed) or 'none'})"
        if agent not in self.registry:
            return f"agent {agent!r} is not available on this worker"
        if self.depth + 1 > MAX_DEPTH:
            return f"sub-agent depth limit {MAX_DEPTH} reached; answer without delegating"
        return None

    def _tool_observation(self, action: Action, call: ToolCall, message: str) -> _Outcome:
        payload = {
            "kind": StepKind.TOOL_CALL.value,
            "name": call.name,
            "call_id": call.call_id,
            "arguments": call.arguments,
            "result": message,
            "is_error": True,
        }
        row = StepRow(step_index=self.state.steps, kind=StepKind.TOOL_CALL, name=call.name, status="error", seq=0)
        return _Outcome(
            events=[
                *self._phase_events(action),
                {"type": EventType.STEP_COMPLETED, "payload": payload, "step": self.state.steps},
            ],
            steps=[row],
            message_payloads=[payload],
        )

    async def _cancelled(self) -> _Outcome:
        if self.cancel_reason is None:
            self.cancel_reason = (await self.store.runs.get(self.run_id)).cancel_reason
        payload = {"reason": self.cancel_reason or "cancelled"}
        return _Outcome(events=[{"type": EventType.RUN_CANCELLED, "payload": payload}], steps=[], message_payloads=[])

    def _violation(self, v: Violation) -> _Outcome:
        return _Outcome(
            events=[{"type": EventType.POLICY_VIOLATION, "payload": v.to_json()}], steps=[], message_payloads=[]
        )

    def _phase_events(self, action: Action) -> list[dict[str, Any]]:
        if action.phase is self.state.phase:
            return []
        return [
            {"type": EventType.PHASE_CHANGED, "payload": {"from": self.state.phase.value, "to": action.phase.value}}
        ]

    async def _guarded_step(self, action: Action) -> Any:
        """Run a model or tool step (or a reconciliation) under the policy's remaining wall time; interruptible."""
        timeout = self.state.policy.timeout_s
        remaining = None if timeout is None else max(0.0, timeout - self.state.usage(time.time()).elapsed_s)
        coro: Awaitable[Any]
        if action.kind is ActionKind.RECOVER_UNCERTAIN:
            assert action.tool_call is not None
            call, step = action.tool_call, self.state.steps
            tool = self.agent.tool_map().get(call.name)
            context = self._call_context(step, call)
            coro = reconcile_call(tool=tool, call=call, step=step, run_id=self.run_id, context=context)
        elif action.kind is ActionKind.CALL_TOOL:
            coro = self._call_tool(action.tool_call)
        else:
            coro = self._call_model()
        self._action_task = asyncio.ensure_future(coro)
        try:
            async with asyncio.timeout(remaining):
                return await asyncio.shield(self._action_task)
        except asyncio.CancelledError:
            if self._action_task.cancelled() and (self.cancel_requested or self.lost):
                if not self._action_task.done():
                    self._action_task.cancel()
                raise _StepCancelled() from None
            self._action_task.cancel()
            raise
        except TimeoutError:
            self._action_task.cancel()
            raise
        finally:
            self._action_task = None

    # ------------------------------------------------------------------------------ model

    async def _call_model(self) -> _Outcome:
        step = self.state.steps
        try:
            model = self.agent.get_model()
        except ConfigError as exc:
            return self._model_unusable(step, self.agent.model_name, exc)
        tools = self._tools()
        max_out = self.agent.max_output_tokens or (RESERVE_OUTPUT_TOKENS if self.ledgers else None)
        request = ModelRequest(
            model=model.name.partition(":")[2],
            messages=tuple(self.messages),
            tools=tools,
            run_id=self.run_id,
            max_output_tokens=max_out,
        )
        reservation: Reservation | None = None
        if self.ledgers:
            reservation, self._held = self._held, None
            refusal, self._refused = self._refused, None
            if reservation is None and refusal is None:  # nothing carried by the last commit: reserve now
                reservation = self._reservation(self.messages)
                refusal = await self.store.budgets.reserve(reservation)
                if refusal is not None:
                    reservation = None
            if refusal is not None:
                return self._violation(
                    Violation(
                        limit="budget_usd" if refusal.limit == "budget_usd" else "budget_tokens",
                        limit_value=refusal.limit_value,
                        observed=round(refusal.committed, 8),
                        budget=refusal.ledger.label,
                        requested=round(refusal.requested, 8),
                    )
                )
        outcome = await self._model_attempts(step, model, request)
        if reservation is not None:
            payload = next((e["payload"] for e in outcome.events if e["type"] is EventType.STEP_COMPLETED), None)
            usage = (payload or {}).get("usage") or {}
            outcome.budget_settle = reservation.settle_entries(
                spent_usd=float((payload or {}).get("cost_usd", 0.0)),
                spent_tokens=int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0)),
            )
        return outcome

    def _reservation(self, messages: list[Message]) -> Reservation:
        """The worst case of a model call on ``messages``: the prompt estimate plus the completion limit."""
        max_out = self.agent.max_output_tokens or RESERVE_OUTPUT_TOKENS
        est_in = estimate_tokens(ModelRequest(model="", messages=tuple(messages), tools=self._tools()))
        price = self.prices.get(self.agent.model_name)
        usd = 0.0
        if price is not None:
            usd = (est_in * price.input_per_mtok + max_out * price.output_per_mtok) / 1_000_000
        return Reservation(ledgers=tuple(self.ledgers), usd=usd, tokens=est_in + max_out)

    def _tools(self) -> tuple[ToolSpec, ...]:
        if self._tool_specs is None:
            self._tool_specs = tuple(t.spec() for t in self.agent.tool_map().values())
        return self._tool_specs

    async def _model_attempts(self, step: int, model: Any, request: ModelRequest) -> _Outcome:
        started = time.perf_counter()
        attempt = 0
        while True:
            with telemetry.model_call_span(run_id=self.run_id, step=step, model=model.name) as span:
                try:
                    response = await model.complete(request)
                    telemetry.record_usage(
                        span, response.usage, response_model=response.model, finish_reason=response.finish_reason
                    )
                    break
                except ConfigError as exc:  # no API key on this worker, weights missing: retrying cannot help
                    telemetry.record_error(span, exc)
                    return self._model_unusable(step, model.name, exc)
                except ModelAPIError as exc:
                    telemetry.record_error(span, exc)
                    if exc.transient and attempt < TRANSIENT_RETRIES:
                        attempt += 1
                        await asyncio.sleep(self.transient_backoff_s * 2 ** (attempt - 1))
                        continue
                    return self._model_failed(step, model.name, exc, time.perf_counter() - started)
        duration_ms = (time.perf_counter() - started) * 1000
        cost = self.prices.cost_usd(response.model or model.name, response.usage)
        payload: dict[str, Any] = {
            "kind": StepKind.MODEL_CALL.value,
            "model": response.model or model.name,
            "content": response.content,
            "tool_calls": [c.to_json() for c in response.tool_calls],
            "usage": {"input_tokens": response.usage.input_tokens, "output_tokens": response.usage.output_tokens},
            "cost_usd": cost,
            "duration_ms": round(duration_ms, 3),
            "finish_reason": response.finish_reason,
        }
        row = StepRow(
            step_index=step,
            kind=StepKind.MODEL_CALL,
            name=payload["model"],
            status="completed",
            seq=0,
            input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
            cost_usd=cost,
            duration_ms=round(duration_ms, 3),
        )
        return _Outcome(
            events=[{"type": EventType.STEP_COMPLETED, "payload": payload, "step": step}],
            steps=[row],
            message_payloads=[payload],
        )

    def _model_unusable(self, step: int, model: str, exc: ConfigError) -> _Outcome:
        """The model cannot be used by this worker (e.g. no API key here): the run fails, saying why."""
        error = f"model {model!r} cannot be used by this worker: {exc}"
        payload = {"kind": StepKind.MODEL_CALL.value, "model": model, "error": error, "status_code": None}
        row = StepRow(step_index=step, kind=StepKind.MODEL_CALL, name=model, status="failed", seq=0)
        return _Outcome(
            events=[
                {"type": EventType.STEP_FAILED, "payload": payload, "step": step},
                {"type": EventType.RUN_FAILED, "payload": {"error": error}},
            ],
            steps=[row],
            message_payloads=[],
        )

    def _model_failed(self, step: int, model: str, exc: MaestroError, elapsed: float) -> _Outcome:
        error = f"model call failed: {exc}"
        payload = {
            "kind": StepKind.MODEL_CALL.value,
            "model": model,
            "error": error,
            "status_code": getattr(exc, "status_code", None),
        }
        row = StepRow(
            step_index=step,
            kind=StepKind.MODEL_CALL,
            name=model,
            status="failed",
            seq=0,
            duration_ms=round(elapsed * 1000, 3),
        )
        return _Outcome(
            events=[{"type": EventType.STEP_FAILED, "payload": payload, "step": step}],
            steps=[row],
            message_payloads=[],
        )

    # ------------------------------------------------------------------------------- tools

    def _call_context(self, step: int, call: ToolCall) -> ToolContext:
        key = idempotency_key(self.run_id, step)
        return dataclasses.replace(self.context, step=step, call_id=call.call_id, idempotency_key=key)

    async def _call_tool(self, call: ToolCall | None) -> _Outcome:
        assert call is not None
        step = self.state.steps
        tool = self.agent.tool_map().get(call.name)
        t0 = time.perf_counter()
        with telemetry.tool_call_span(run_id=self.run_id, step=step, tool_name=call.name, call_id=call.call_id):
            if tool is None:
                known = ", ".join(sorted(self.agent.tool_map())) or "(none)"
                result = ToolResult(content=f"unknown tool {call.name!r}; available tools: {known}", is_error=True)
            elif "_raw" in call.arguments and len(call.arguments) == 1:
                result = ToolResult(content=f"arguments for tool {call.name!r} are not valid JSON", is_error=True)
            elif _accepts_context(tool) and getattr(tool, "uses_context", True):
                result = await tool.invoke(dict(call.arguments), context=self._call_context(step, call))
            else:
                result = await tool.invoke(dict(call.arguments))
        duration_ms = (time.perf_counter() - t0) * 1000
        payload = {
            "kind": StepKind.TOOL_CALL.value,
            "name": call.name,
            "call_id": call.call_id,
            "arguments": call.arguments,
            "result": result.content,
            "is_error": result.is_error,
            "duration_ms": round(duration_ms, 3),
        }
        row = StepRow(
            step_index=step,
            kind=StepKind.TOOL_CALL,
            name=call.name,
            status="error" if result.is_error else "completed",
            seq=0,
            duration_ms=round(duration_ms, 3),
        )
        return _Outcome(
            events=[{"type": EventType.STEP_COMPLETED, "payload": payload, "step": step}],
            steps=[row],
            message_payloads=[payload],
        )
