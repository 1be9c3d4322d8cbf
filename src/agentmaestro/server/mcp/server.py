"""AgentMaestro as an MCP server: the control plane's runs and approvals as MCP tools (docs/mcp.md).

Built with the official SDK's :class:`mcp.server.mcpserver.MCPServer`. The tools call a
:class:`~agentmaestro.service.plane.Plane`, which is either the database itself
(:class:`~agentmaestro.service.plane.local.LocalPlane`: ``maestro mcp`` on a database, and the ``/mcp`` endpoint
of ``maestro serve``) or a server's REST API (:class:`~agentmaestro.service.plane.remote.RemotePlane`:
``maestro mcp --server URL``). Every error reaches the
MCP client as a tool error of one line; never a traceback.

Tools: ``list_agents``, ``list_workflows``, ``start_run``, ``get_run``, ``get_run_events``, ``wait_run``,
``cancel_run``, ``list_approvals``, ``resolve_approval``; and the resource template ``maestro://runs/{run_id}``.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import CallToolResult, InputRequiredResult, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import DataError

from agentmaestro._version import __version__
from agentmaestro.errors import MaestroError, one_line
from agentmaestro.server.errors import APIError
from agentmaestro.server.schemas import PolicyIn
from agentmaestro.service.plane import JSON, OnWait, Plane, RunKind

__all__ = [
    "AgentInfo",
    "AgentList",
    "ApprovalInfo",
    "ApprovalList",
    "ControlPlane",
    "OnWait",
    "RunKind",
    "EventInfo",
    "EventPage",
    "RunInfo",
    "WorkflowInfo",
    "WorkflowList",
    "build_server",
]

log = logging.getLogger("agentmaestro.mcp")

ApprovalStatus = Literal["pending", "approved", "rejected", "expired", "all"]

INSTRUCTIONS = (
    "AgentMaestro runs AI agents as durable, governed runs. Start a run of an agent or a workflow with start_run, "
    "then wait_run until it finishes or waits for a person. A run in WAITING_FOR_APPROVAL holds a risky tool call: "
    "see list_approvals (or the run's pending_approvals) and decide with resolve_approval, then wait_run again. "
    "get_run_events reads the run's durable event log."
)


# --------------------------------------------------------------------------------------------- output models


class AgentInfo(BaseModel):
    """An agent the control plane can run."""

    name: str
    description: str
    model: str = Field(description="Model string, e.g. openai:gpt-4.1-mini or scripted:calculator.")
    tools: list[str] = Field(description="Tool names, each with its risk level: 'purge_logs (DANGEROUS)'.")


class AgentList(BaseModel):
    """Agents."""

    agents: list[AgentInfo]


class WorkflowInfo(BaseModel):
    """A workflow (a graph of agent tasks) the control plane can run."""

    name: str
    description: str
    nodes: list[str] = Field(description="Node ids.")
    agents: list[str] = Field(description="Agents the nodes run.")


class WorkflowList(BaseModel):
    """Workflows."""

    workflows: list[WorkflowInfo]


class Usage(BaseModel):
    """What a run has used so far."""

    steps: int
    model_calls: int
    tool_calls: int
    input_tokens: int
    output_tokens: int
    tokens: int
    cost_usd: float


class ApprovalInfo(BaseModel):
    """A tool call held for a person's decision."""

    approval_id: str
    run_id: str
    tool: str
    arguments: JSON = Field(description="The arguments the model proposed.")
    risk: str
    reasons: list[str] = Field(description="Why the call was held.")
    status: str = Field(description="pending, approved, rejected or expired.")
    requested_at: float
    decided_by: str | None = None
    decision_reason: str | None = None
    approved_arguments: JSON | None = Field(default=None, description="Edited arguments the approval binds to.")

    @classmethod
    def from_json(cls, row: JSON) -> ApprovalInfo:
        """From the API/store form of an approval."""
        return cls.model_validate({k: row.get(k) for k in cls.model_fields} | {"reasons": row.get("reasons") or []})


class ApprovalList(BaseModel):
    """A page of approvals, newest first."""

    approvals: list[ApprovalInfo]
    next_cursor: str | None = Field(
        default=None, description="Pass as cursor to list_approvals for the next page; null on the last page."
    )


class RunInfo(BaseModel):
    """A run: its status, output, usage and error, and the approvals it waits for."""

    run_id: str
    agent: str = Field(description="The agent or workflow that runs.")
    status: str = Field(
        description="PENDING, RUNNING, WAITING_FOR_APPROVAL, WAITING_FOR_HUMAN, WAITING_FOR_CHILDREN, "
        "COMPLETED, FAILED or CANCELLED."
    )
    phase: str
    input: str
    output: str | None
    error: str | None
    usage: Usage
    parent_run_id: str | None
    last_seq: int = Field(description="The seq of the run's latest event (see get_run_events).")
    created_at: float
    updated_at: float
    finished_at: float | None
    pending_approvals: list[ApprovalInfo] = Field(
        default_factory=list, description="Held tool calls of this run (and its sub-runs) waiting for a decision."
    )
    timed_out: bool | None = Field(
        default=None, description="wait_run only: true if the timeout passed before the run finished or waited."
    )

    @classmethod
    def from_json(cls, run: JSON, approvals: list[JSON] | None = None, timed_out: bool | None = None) -> RunInfo:
        """From the API/store form of a run."""
        return cls(
            run_id=run["run_id"],
            agent=run["agent"],
            status=run["status"],
            phase=run["phase"],
            input=run["input"],
            output=run["output"],
            error=run["error"],
            usage=Usage.model_validate({k: run[k] for k in Usage.model_fields}),
            parent_run_id=run.get("parent_run_id"),
            last_seq=run["last_seq"],
            created_at=run["created_at"],
            updated_at=run["updated_at"],
            finished_at=run.get("finished_at"),
            pending_approvals=[ApprovalInfo.from_json(a) for a in approvals or []],
            timed_out=timed_out,
        )


class EventInfo(BaseModel):
    """One entry of a run's append-only event log."""

    seq: int
    type: str
    step: int | None
    created_at: float
    payload: JSON


class EventPage(BaseModel):
    """A page of events; continue with ``after=next_after``."""

    events: list[EventInfo]
    next_after: int


# --------------------------------------------------------------------------------------------- control plane


ControlPlane = Plane
"""What the MCP tools act on: :class:`~agentmaestro.service.plane.Plane` (a database or a server)."""


# --------------------------------------------------------------------------------------------- tools


class _Server(MCPServer):
    """The SDK's server, with argument validation errors on one line (the SDK sends pydantic's multi-line text)."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        """Call a tool; a ToolError caused by invalid arguments says which and why, in one line."""
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if not isinstance(cause, ValidationError):
                raise
            problems = [f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in cause.errors()[:5]]
            raise ToolError(one_line(f"invalid arguments for {name}: {'; '.join(problems)}")) from None


P = ParamSpec("P")
R = TypeVar("R")


def _one_line_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn every failure of a tool into a ToolError of one line (the client sees ``isError`` and the message)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except ToolError:
            raise
        except APIError as exc:
            raise ToolError(one_line(exc.message)) from None
        except MaestroError as exc:
            raise ToolError(one_line(exc)) from None
        except DataError:
            raise ToolError("a value cannot be stored or compared: a number out of range or a NUL character") from None
        except Exception as exc:
            log.exception("MCP tool %s failed", getattr(fn, "__name__", "?"))
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise ToolError(one_line(f"unexpected {type(exc).__name__}: {first}")) from None

    return wrapper


_ID = r"^[A-Za-z0-9_-]+$"
RunId = Annotated[str, Field(min_length=1, max_length=64, pattern=_ID, description="A run id (run_...).")]
_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def _status_filter(status: ApprovalStatus) -> list[str] | None:
    return None if status == "all" else [status]


def build_server(plane: ControlPlane, *, name: str = "agentmaestro") -> MCPServer:
    """An MCP server whose tools act on ``plane``.

    The SDK configures the root logger when a server is built; this leaves the process's logging as it was.
    """
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    server: MCPServer = _Server(
        name, version=__version__, instructions=INSTRUCTIONS, log_level="WARNING", warn_on_duplicate_tools=False
    )
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]

    async def pending_for(run: JSON) -> list[JSON]:
        """The pending approvals a waiting run (or, for a workflow, one of its sub-runs) waits for."""
        if run["status"] not in ("WAITING_FOR_APPROVAL", "WAITING_FOR_CHILDREN"):
            return []
        if run["status"] == "WAITING_FOR_APPROVAL":
            return await plane.list_approvals(["pending"], run_id=run["run_id"])
        pending: list[JSON] = []
        before: str | None = None
        while True:  # every pending approval of the workspace, a page at a time: which are in this run's tree?
            page = await plane.list_approvals(["pending"], before=before, limit=500)
            pending += [a for a in page if await _is_descendant(plane, a["run_id"], run["run_id"])]
            if len(page) < 500:
                return pending
            before = page[-1]["approval_id"]

    @server.tool(annotations=_READ)
    @_one_line_errors
    async def list_agents() -> AgentList:
        """List the agents you can start runs of, with their tools and each tool's risk level."""
        specs = await plane.list_agents()
        return AgentList(
            agents=[
                AgentInfo(
                    name=a["name"],
                    description=a.get("description") or "",
                    model=a.get("model") or "",
                    tools=[f"{t['name']} ({t.get('risk', '?')})" for t in a.get("tools") or []],
                )
                for a in specs
            ]
        )

    @server.tool(annotations=_READ)
    @_one_line_errors
    async def list_workflows() -> WorkflowList:
        """List the workflows (graphs of agent tasks) you can start runs of."""
        rows = await plane.list_workflows()
        return WorkflowList(
            workflows=[
                WorkflowInfo(
                    name=w["name"],
                    description=w.get("description") or "",
                    nodes=list(w.get("nodes") or []),
                    agents=list(w.get("agents") or []),
                )
                for w in rows
            ]
        )

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True))
    @_one_line_errors
    async def start_run(
        target: Annotated[str, Field(min_length=1, max_length=200, description="An agent or workflow name.")],
        input: Annotated[str, Field(max_length=1_000_000, description="The task (or the workflow's input).")],
        kind: Annotated[
            RunKind, Field(description="auto: an agent of that name, else a workflow; or say which.")
        ] = "auto",
        policy: Annotated[
            PolicyIn | None, Field(description="Agent runs only: limits that override the agent's policy.")
        ] = None,
    ) -> RunInfo:
        """Start a run of an agent or a workflow; returns at once with the run id and status (see wait_run).

        Needs the operator role.
        """
        overrides = policy.model_dump(exclude_unset=True) if policy is not None else None
        run = await plane.start_run(target, input, overrides, kind=kind)
        return RunInfo.from_json(run)

    @server.tool(annotations=_READ)
    @_one_line_errors
    async def get_run(run_id: RunId) -> RunInfo:
        """A run's status, output, usage (steps, tokens, tool calls, cost) and error, and its pending approvals."""
        run = await plane.get_run(run_id)
        return RunInfo.from_json(run, await pending_for(run))

    @server.tool(annotations=_READ)
    @_one_line_errors
    async def get_run_events(
        run_id: RunId,
        after: Annotated[int, Field(ge=0, le=2**31 - 1, description="Only events with a greater seq.")] = 0,
        limit: Annotated[int, Field(ge=1, le=1000, description="Most events to return.")] = 100,
    ) -> EventPage:
        """A run's durable event log in order (model calls, tool calls, approvals, status changes)."""
        events = await plane.events(run_id, after, limit)
        page = [EventInfo.model_validate(e.to_json()) for e in events]
        return EventPage(events=page, next_after=events[-1].seq if events else after)

    @server.tool(annotations=_READ)
    @_one_line_errors
    async def wait_run(
        run_id: RunId,
        ctx: Context[Any, Any],
        timeout_s: Annotated[float, Field(ge=0, le=300, description="Most seconds to wait.")] = 30.0,
    ) -> RunInfo:
        """Wait until a run finishes (COMPLETED, FAILED, CANCELLED) or waits for a person (an approval or an answer).

        Returns the run; timed_out is true if the timeout passed first (call it again to keep waiting). Reports
        progress (seconds waited, the run's status) when the client asks for it.
        """
        reported: list[float] = []

        async def progress(run: JSON, elapsed_s: float) -> None:
            if reported and elapsed_s - reported[-1] < 1.0:  # at most one notification a second
                return
            reported.append(elapsed_s)
            await ctx.report_progress(round(elapsed_s, 3), timeout_s, f"{run['status']} after {run['last_seq']} events")

        run, timed_out = await plane.wait_run(run_id, timeout_s, progress)
        return RunInfo.from_json(run, await pending_for(run), timed_out=timed_out)

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True))
    @_one_line_errors
    async def cancel_run(
        run_id: RunId,
        reason: Annotated[str, Field(max_length=2000, description="Why; recorded in the run and the audit log.")] = (
            "cancelled via MCP"
        ),
    ) -> RunInfo:
        """Cancel a run: at once if it is not running, at its next step if it is. Needs the operator role."""
        return RunInfo.from_json(await plane.cancel_run(run_id, reason))

    @server.tool(annotations=_READ)
    @_one_line_errors
    async def list_approvals(
        status: Annotated[ApprovalStatus, Field(description="Which approvals; default pending.")] = "pending",
        run_id: Annotated[
            str | None, Field(max_length=64, pattern=_ID, description="Only this run's approvals.")
        ] = None,
        cursor: Annotated[
            str | None, Field(max_length=64, pattern=_ID, description="next_cursor of the previous page.")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=500, description="Most approvals to return.")] = 100,
    ) -> ApprovalList:
        """Tool calls held for a person's decision (DANGEROUS or ELEVATED calls the risk gate stopped), newest first."""
        rows = await plane.list_approvals(_status_filter(status), run_id=run_id, before=cursor, limit=limit)
        return ApprovalList(
            approvals=[ApprovalInfo.from_json(a) for a in rows],
            next_cursor=rows[-1]["approval_id"] if len(rows) == limit else None,
        )

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=True))
    @_one_line_errors
    async def resolve_approval(
        approval_id: Annotated[
            str, Field(min_length=1, max_length=64, pattern=_ID, description="From list_approvals.")
        ],
        decision: Annotated[Literal["approve", "reject"], Field(description="approve runs the call; reject skips it.")],
        reason: Annotated[str, Field(max_length=2000, description="Why; recorded in the audit log.")] = "",
        arguments: Annotated[
            JSON | None, Field(description="approve only: edited arguments; the approval binds to exactly these.")
        ] = None,
    ) -> ApprovalInfo:
        """Approve or reject a held tool call; the run then continues (see wait_run). Needs the operator role."""
        if arguments is not None and decision != "approve":
            raise ToolError("edited arguments go with approve, not reject")
        approve = decision == "approve"
        row = await plane.decide_approval(approval_id, approve=approve, reason=reason, arguments=arguments)
        return ApprovalInfo.from_json(row)

    @server.resource(
        "maestro://runs/{run_id}",
        name="run",
        description="A run as JSON (the same as the get_run tool).",
        mime_type="application/json",
    )
    async def run_resource(run_id: str) -> str:
        if not re.match(_ID, run_id):
            raise ResourceError(f"invalid run id {run_id[:64]!r}")
        try:
            run = await plane.get_run(run_id)
            info = RunInfo.from_json(run, await pending_for(run))
        except (MaestroError, APIError, DataError) as exc:
            raise ResourceError(one_line(getattr(exc, "message", exc))) from None
        return json.dumps(info.model_dump(mode="json"))

    return server


async def _is_descendant(plane: ControlPlane, run_id: str, ancestor: str) -> bool:
    """True if ``run_id`` is a sub-run (at any depth) of ``ancestor``."""
    seen = 0
    current: str | None = run_id
    while current is not None and seen < 50:
        try:
            run = await plane.get_run(current)
        except MaestroError:
            return False
        parent = run.get("parent_run_id")
        if parent == ancestor:
            return True
        current = parent
        seen += 1
    return False
