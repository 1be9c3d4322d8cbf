"""Request and response models of the REST API (strict: no silent coercion)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Request bodies: unknown fields are errors and ``false`` is never ``0``."""

    model_config = ConfigDict(extra="forbid", strict=True)


class PolicyIn(Strict):
    """Limits for a run; omitted limits keep the agent's defaults."""

    max_steps: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    max_tool_calls: int | None = Field(default=None, ge=0)
    max_cost_usd: float | None = Field(default=None, ge=0)
    timeout_s: float | None = Field(default=None, ge=0)


class RunCreate(Strict):
    """Start a run of an agent on an input."""

    agent: str = Field(min_length=1, max_length=200)
    input: str = Field(max_length=1_000_000)
    policy: PolicyIn | None = None


class RunResume(Strict):
    """Resume a FAILED or CANCELLED run, optionally with new limits."""

    policy: PolicyIn | None = None


class RunFork(Strict):
    """Fork a run at an event."""

    at_seq: int = Field(ge=1)
    policy: PolicyIn | None = None


class RunCancel(Strict):
    """Cancel a run."""

    reason: str = Field(default="cancelled via API", max_length=2000)


RunKind = Literal["agent", "workflow", "objective", "escalation"]


class RunChildren(BaseModel):
    """How many child runs a run has started, and how many of them have finished."""

    total: int
    finished: int


class Run(BaseModel):
    """A run's snapshot."""

    run_id: str
    workspace_id: str
    agent: str
    kind: RunKind = Field(
        description="`agent`, `workflow`, `objective`, or `escalation` (an objective's wait for a person)."
    )
    parent_run_id: str | None
    created_by: str | None = Field(
        default=None,
        description="Who started the run tree: `user:<SHA-256 of the email>`, `key:<name>`, `cli:<login>` or null.",
    )
    input: str
    status: str
    phase: str
    steps: int
    model_calls: int
    tool_calls: int
    input_tokens: int
    output_tokens: int
    tokens: int
    cost_usd: float
    output: str | None
    error: str | None
    policy: dict[str, Any]
    last_seq: int
    version: int
    lease_owner: str | None
    lease_epoch: int
    lease_expires_at: float | None
    cancel_requested: bool
    created_at: float
    updated_at: float
    finished_at: float | None
    children: RunChildren | None = Field(
        default=None, description="From `GET /v1/runs` and `GET /v1/runs/{id}`: its child runs, or null if none."
    )


class Step(BaseModel):
    """One finished step."""

    step: int
    kind: str
    name: str | None
    status: str
    seq: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    duration_ms: float
    created_at: float


class RunDetail(Run):
    """A run with its steps."""

    steps_detail: list[Step]


class RunPage(BaseModel):
    """A page of runs, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    runs: list[Run]
    next_cursor: str | None


class Event(BaseModel):
    """One event of a run's log."""

    run_id: str
    seq: int
    type: str
    step: int | None
    created_at: float
    payload: dict[str, Any]


class EventPage(BaseModel):
    """Events after a sequence number; ``next_after`` continues the stream."""

    events: list[Event]
    next_after: int


class Agent(BaseModel):
    """An agent the server can run."""

    name: str
    model: str
    instructions: str
    description: str
    tools: list[dict[str, Any]]
    policy: dict[str, Any]
    gate: dict[str, Any] | None
    retry: dict[str, Any]
    source: str | None


class Worker(BaseModel):
    """A worker process heard of within its lease length (it claims runs of any workspace)."""

    owner: str = Field(description="The worker's id, as run leases name it.")
    host: str
    pid: int
    concurrency: int = Field(description="Most runs it drives at once.")
    started_at: float
    last_seen: float = Field(description="Its last presence heartbeat (Unix seconds).")
    expires_at: float = Field(description="When it counts as gone unless it beats again.")


class Tool(BaseModel):
    """A tool some agent can call."""

    name: str
    description: str
    risk: Literal["SAFE", "ELEVATED", "DANGEROUS"]
    idempotent: bool
    reconciles: bool = Field(
        description="After a crash the tool can tell whether an interrupted call happened (see docs/tools.md)."
    )
    idempotency_key: bool = Field(description="The tool passes its idempotency key to the service it calls.")
    timeout_s: float
    parameters: dict[str, Any]
    agents: list[str]


class ApprovalDecision(Strict):
    """Approve (optionally with edited arguments) or reject a held tool call."""

    decision: Literal["approve", "reject"]
    reason: str = Field(default="", max_length=2000)
    arguments: dict[str, Any] | None = None


class Approval(BaseModel):
    """A tool call held for a human decision."""

    approval_id: str
    workspace_id: str
    run_id: str
    step_index: int
    call_id: str
    tool: str
    arguments: dict[str, Any]
    args_hash: str
    risk: str
    reasons: list[str]
    status: str
    requested_at: float
    expires_at: float | None
    decided_at: float | None
    decided_by: str | None
    decision_reason: str | None
    approved_arguments: dict[str, Any] | None


class HumanResolution(Strict):
    """Answer an escalation."""

    action: Literal["retry", "answer", "abandon"]
    instructions: str | None = Field(default=None, max_length=20_000)
    answer: str | None = Field(default=None, max_length=1_000_000)


class HumanRequest(BaseModel):
    """A run waiting for a person."""

    request_id: str
    workspace_id: str
    run_id: str
    kind: str
    question: str
    detail: dict[str, Any]
    options: list[str]
    status: str
    created_at: float
    resolved_at: float | None
    resolved_by: str | None
    resolution: dict[str, Any] | None


class ApprovalPage(BaseModel):
    """A page of approvals, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    approvals: list[Approval]
    next_cursor: str | None


class HumanRequestPage(BaseModel):
    """A page of human requests, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    human_requests: list[HumanRequest]
    next_cursor: str | None
