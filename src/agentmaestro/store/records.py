"""Value objects the store hands out and takes in."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from agentmaestro.core.events import Event, RunState
from agentmaestro.core.states import RunStatus, StepKind


def new_run_id(now: float | None = None) -> str:
    """A sortable run id: milliseconds since the epoch, then randomness (``run_`` + 24 hex chars)."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"run_{millis:012x}{secrets.token_hex(6)}"


def new_id(prefix: str) -> str:
    """A sortable id with a prefix, e.g. ``apr_...`` for approvals, ``hum_...`` for human requests."""
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


def new_worker_id() -> str:
    """A worker identity: host, pid and a random suffix."""
    host = os.uname().nodename.split(".")[0][:40]
    return f"{host}:{os.getpid()}:{secrets.token_hex(3)}"


RUN_KINDS: Final[Mapping[str, str]] = {
    "workflow": "workflow",
    "objective": "objective",
    "objective_escalation": "escalation",
}
"""A run's kind by its spec's ``kind``; a spec without one (or with another) is an ``agent`` run."""


def run_kind(spec: Mapping[str, Any]) -> str:
    """``agent``, ``workflow``, ``objective`` or ``escalation`` (an objective's wait for a person)."""
    return RUN_KINDS.get(str(spec.get("kind")), "agent")


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """A run's snapshot row."""

    run_id: str
    """The run."""
    workspace_id: str
    """Its workspace."""
    agent_name: str
    """The agent (or workflow) it runs."""
    parent_run_id: str | None
    """The run that spawned it, for sub-agent runs."""
    input: str
    """The task it was given."""
    spec: dict[str, Any]
    """The agent definition as it was when the run was created."""
    state: RunState
    """The folded state."""
    version: int
    """Optimistic-concurrency version, bumped by every change."""
    lease_owner: str | None
    """Worker holding the lease, if any."""
    lease_epoch: int
    """Fencing epoch, bumped by every claim."""
    lease_expires_at: float | None
    """When the lease lapses."""
    cancel_requested: bool
    """An operator asked to cancel; the lease holder records the cancellation."""
    cancel_reason: str | None
    """The reason given with the cancel request."""
    created_at: float
    """Creation time."""
    updated_at: float
    """Last change."""
    finished_at: float | None
    """When the run reached a terminal status."""
    created_by: str | None = None
    """Who started it: ``user:<sha256 of email>``, ``key:<name>``, ``cli:<login>``; sub-runs inherit it."""

    @property
    def status(self) -> RunStatus:
        """Current status."""
        assert self.state.status is not None
        return self.state.status

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form for the CLI and API."""
        st = self.state
        return {
            "run_id": self.run_id,
            "workspace_id": self.workspace_id,
            "agent": self.agent_name,
            "kind": run_kind(self.spec),
            "parent_run_id": self.parent_run_id,
            "created_by": self.created_by,
            "input": self.input,
            "status": self.status.value,
            "phase": st.phase.value,
            "steps": st.steps,
            "model_calls": st.model_calls,
            "tool_calls": st.tool_calls,
            "input_tokens": st.input_tokens,
            "output_tokens": st.output_tokens,
            "tokens": st.tokens,
            "cost_usd": round(st.cost_usd, 8),
            "output": st.output,
            "error": st.error,
            "policy": st.policy.to_json(),
            "last_seq": st.last_seq,
            "version": self.version,
            "lease_owner": self.lease_owner,
            "lease_epoch": self.lease_epoch,
            "lease_expires_at": self.lease_expires_at,
            "cancel_requested": self.cancel_requested,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
        }


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A run a worker has just leased."""

    record: RunRecord
    """The run as claimed (status RUNNING, lease owned by the claimant)."""
    recovered_from: str | None
    """The previous lease owner when the claim took over an expired lease."""
    events: tuple[Event, ...] = ()
    """Events the claim itself committed (RUN_STARTED or LEASE_RECOVERED)."""


@dataclass(frozen=True, kw_only=True)
class StepRow:
    """A finished step, as recorded in the steps table."""

    step_index: int
    """Index within the run (0-based)."""
    kind: StepKind
    """Kind of step."""
    name: str | None
    """Tool name or model string."""
    status: str
    """``completed``, ``failed`` or ``error`` (a tool that returned an error result)."""
    seq: int
    """Sequence number of the event that holds the step's payload."""
    input_tokens: int = 0
    """Prompt tokens (model calls)."""
    output_tokens: int = 0
    """Completion tokens (model calls)."""
    cost_usd: float = 0.0
    """Cost (model calls)."""
    duration_ms: float = 0.0
    """How long the step took."""
    created_at: float = 0.0
    """When it was recorded."""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "step": self.step_index,
            "kind": self.kind.value,
            "name": self.name,
            "status": self.status,
            "seq": self.seq,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "duration_ms": self.duration_ms,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, kw_only=True)
class NewRun:
    """Input for :func:`create_runs`."""

    run_id: str
    workspace_id: str
    agent_name: str
    input: str
    spec: dict[str, Any]
    policy: dict[str, Any]
    parent_run_id: str | None = None
    max_attempts: int | None = None
    """Attempts before escalation; default: the spec's ``retry.max_attempts`` (or 4)."""
    created_by: str | None = None
    """Who started it (see RunRecord.created_by); None for a sub-run inherits its parent's."""
    audit: AuditNote | None = None
    """The audit-log entry recording who started it, written in the transaction that creates it."""


@dataclass(frozen=True, kw_only=True)
class AuditNote:
    """An audit-log entry to append in the same transaction as the change it records."""

    workspace_id: str
    """The workspace whose chain it joins."""
    actor: str
    """Who acted: ``key:<name>``, ``cli:<user>``, ..."""
    action: str
    """What happened, ``noun.verb`` (``run.cancel``, ``approval.approve``, ...)."""
    target: str | None = None
    """The id of what it happened to (a run, an approval, a key, ...)."""
    detail: Mapping[str, Any] = field(default_factory=lambda: {})
    """Anything else worth keeping (JSON)."""


ChangedT = TypeVar("ChangedT")
AuditFor = Callable[[ChangedT], AuditNote | None]
"""Given what a change returned, the audit entry recording it (written in the change's transaction)."""


@dataclass(frozen=True, kw_only=True)
class LedgerSpec:
    """A budget ledger a model call is charged to, with the limits the charging run holds."""

    ledger_id: str
    """``run:<root run id>`` or ``ws:<workspace>:<YYYY-MM>``."""
    workspace_id: str
    """The workspace."""
    limit_usd: float | None
    """USD limit (None: unlimited)."""
    limit_tokens: int | None
    """Token limit (None: unlimited)."""
    label: str
    """How a violation names this budget."""


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """Why a reservation was refused."""

    ledger: LedgerSpec
    """The budget that would be exceeded."""
    limit: str
    """``budget_usd`` or ``budget_tokens``."""
    limit_value: float
    """The limit."""
    committed: float
    """Spent plus reserved before this call."""
    requested: float
    """The worst case of this call."""


@dataclass(frozen=True, kw_only=True)
class Reservation:
    """A model call's worst case, to reserve on every one of ``ledgers`` or on none."""

    ledgers: tuple[LedgerSpec, ...]
    """The budgets the call is charged to."""
    usd: float
    """Worst-case cost in USD."""
    tokens: int
    """Worst-case tokens (prompt estimate plus the completion limit)."""

    def release_entry(self, ledger_id: str, *, spent_usd: float = 0.0, spent_tokens: int = 0) -> dict[str, Any]:
        """A settle entry turning this reservation on ``ledger_id`` into ``spent_*`` (0: give it back)."""
        return {
            "ledger_id": ledger_id,
            "reserved_usd": self.usd,
            "reserved_tokens": self.tokens,
            "spent_usd": spent_usd,
            "spent_tokens": spent_tokens,
        }

    def settle_entries(self, *, spent_usd: float = 0.0, spent_tokens: int = 0) -> list[dict[str, Any]]:
        """Settle entries for every ledger of this reservation."""
        return [self.release_entry(lg.ledger_id, spent_usd=spent_usd, spent_tokens=spent_tokens) for lg in self.ledgers]


@dataclass(frozen=True, kw_only=True)
class Commit:
    """What a lease holder commits after one step: new snapshot, new events, finished steps.

    Applied as one guarded update (run, status RUNNING, lease owner and epoch, version) plus the
    inserts, in one transaction. If the guard matches no row, nothing is written.
    """

    run_id: str
    """The run."""
    workspace_id: str
    """Its workspace."""
    owner: str
    """The committing worker."""
    epoch: int
    """The lease epoch the worker holds."""
    version: int
    """The version the worker last saw."""
    state: RunState
    """The state after ``events``."""
    events: tuple[Event, ...]
    """New events, seq continuing the run's log."""
    steps: tuple[StepRow, ...] = ()
    """Steps finished by this commit."""
    release: bool = False
    """Drop the lease (the run left RUNNING or the worker is stopping)."""
    finished_at: float | None = None
    """Set when the run reaches a terminal status."""
    approval: dict[str, Any] | None = None
    """An ``approvals`` row to insert with this commit (the run starts waiting for approval)."""
    human_request: dict[str, Any] | None = None
    """A ``human_requests`` row to insert with this commit (the run escalates to a person)."""
    children: tuple[NewRun, ...] = ()
    """Sub-agent runs to create with this commit (the run starts waiting for them)."""
    parent_run_id: str | None = None
    """The run's parent: resumed in the same transaction if this commit ends the last child."""
    budget_settle: tuple[dict[str, Any], ...] = ()
    """Budget reservations to settle to actual spend with this commit."""
    reserve: Reservation | None = None
    """The next model call's worst case, reserved in this commit's transaction if its guard holds
    (the decision table says a model call comes next); :attr:`CommitResult.refusal` says how it went."""


@dataclass(frozen=True, kw_only=True)
class CommitResult:
    """What the store reports back to the committing worker."""

    version: int
    """The run's new version."""
    cancel_requested: bool
    """Whether an operator asked to cancel in the meantime."""
    refusal: Refusal | None = None
    """Why the commit's :attr:`Commit.reserve` was refused (None: reserved, or nothing asked)."""


@dataclass(frozen=True, kw_only=True)
class HeartbeatResult:
    """Leases a heartbeat could not renew, and runs asked to cancel."""

    lost: frozenset[str] = field(default_factory=frozenset)
    """Runs whose lease this worker no longer holds."""
    cancel_requested: frozenset[str] = field(default_factory=frozenset)
    """Runs an operator asked to cancel."""
