"""Where the CLI and the MCP server send their work: a database or a server, behind one :class:`Plane`.

- :class:`~agentmaestro.service.plane.local.LocalPlane`: the database itself, through the service layer
  (:mod:`agentmaestro.service`) for every change, scoped to one :class:`~agentmaestro.actor.Actor`
  (``maestro ...``, ``maestro mcp``, and the ``/mcp`` endpoint of ``maestro serve`` for each API key).
- :class:`~agentmaestro.service.plane.remote.RemotePlane`: a server's REST API through
  :class:`~agentmaestro.client.AsyncClient` (``maestro --server URL ...``, ``maestro mcp --server URL``);
  the server's routes call the same service functions.

Both answer with the REST API's JSON shapes (runs, approvals, keys, ...) and
:class:`~agentmaestro.core.events.Event` objects for events, so every command and MCP tool is
written once. Commands that only make sense next to a database (``worker``, ``serve``, ``db upgrade``,
``demo``) refuse ``--server`` with exit code 2.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

from agentmaestro.core.events import Event
from agentmaestro.core.states import EventType
from agentmaestro.errors import NotFoundError

__all__ = ["JSON", "OnEvent", "OnWait", "Plane", "RunKind", "choose_kind", "event_from_json"]

JSON = dict[str, Any]
OnEvent = Callable[[Event], None] | None
OnWait = Callable[[JSON, float], Awaitable[None]]
"""Called while :meth:`Plane.wait_run` waits: the run as it stands and the seconds waited."""
RunKind = Literal["auto", "agent", "workflow"]
"""What :meth:`Plane.start_run` starts: an agent, a workflow, or (auto) an agent of that name, else a workflow."""


def event_from_json(data: JSON) -> Event:
    """An Event from its API JSON form."""
    return Event(
        run_id=data["run_id"],
        seq=int(data["seq"]),
        type=EventType(data["type"]),
        payload=data.get("payload") or {},
        created_at=float(data.get("created_at") or 0.0),
        step=data.get("step"),
    )


def choose_kind(name: str, kind: RunKind, agents: set[str], workflows: set[str]) -> Literal["agent", "workflow"]:
    """Whether ``name`` is an agent or a workflow of those given, as ``kind`` asks; NotFoundError naming what exists."""
    if kind in ("auto", "agent") and name in agents:
        return "agent"
    if kind in ("auto", "workflow") and name in workflows:
        return "workflow"
    what = {"auto": "agent or workflow", "agent": "agent", "workflow": "workflow"}[kind]
    known = sorted(agents if kind == "agent" else workflows if kind == "workflow" else agents | workflows)
    raise NotFoundError(f"{what} {name!r} not found; known: {', '.join(known) or 'none'}")


class Plane(Protocol):
    """The operations the CLI and the MCP server need, with the REST API's JSON shapes."""

    where: str
    """The database (redacted) or the server, for messages."""

    async def close(self) -> None:
        """Release connections."""

    # runs
    async def start_run(
        self, name: str, task: str, overrides: JSON | None = None, *, kind: RunKind = "agent", here: bool = False
    ) -> JSON:
        """Start a run of an agent (locally also a YAML file) or a workflow, with policy overrides (agents only).

        ``here``: this process will execute it (locally, a model it cannot use is refused first).
        """

    async def list_runs(
        self,
        *,
        statuses: Sequence[str],
        agent: str | None,
        before: str | None,
        limit: int,
        top_level: bool = False,
        kind: str | None = None,
    ) -> list[JSON]:
        """Runs, newest first."""

    async def live_workers(self) -> list[JSON] | None:
        """Worker processes heard of recently (their heartbeats); None when not known (a server's workers)."""

    async def get_run(self, run_id: str) -> JSON:
        """A run with its steps (``steps_detail``)."""

    async def children(self, run_id: str) -> list[JSON]:
        """The run's direct sub-runs (delegations, workflow nodes), oldest first."""

    async def events(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        """A run's events after ``after`` (at most ``limit``)."""

    def follow(self, run_id: str, after: int) -> AsyncIterator[Event]:
        """A run's events as they happen, until it is terminal or waits for a person."""

    async def drive(self, run_id: str, on_event: OnEvent) -> JSON:
        """See the run through until it is terminal or waits (locally: execute it here); the final run."""

    async def wait_run(self, run_id: str, timeout_s: float, on_wait: OnWait | None = None) -> tuple[JSON, bool]:
        """Wait until the run settles (ends, or it or a workflow node waits for a person); (run, timed out)."""

    async def cancel_run(self, run_id: str, reason: str) -> JSON:
        """Cancel a run."""

    async def resume_run(self, run_id: str, overrides: JSON) -> JSON:
        """Resume a FAILED or CANCELLED run."""

    async def fork_run(self, run_id: str, at_seq: int, overrides: JSON) -> JSON:
        """Fork a run at an event."""

    async def snapshot(self, run_id: str) -> JSON:
        """The stored snapshot to check a replay against (locally the whole state; remotely the run)."""

    # people
    async def list_approvals(
        self, statuses: Sequence[str] | None, *, run_id: str | None = None, before: str | None = None, limit: int = 100
    ) -> list[JSON]:
        """Approvals (all statuses when None), newest first; ``before`` is the last id of the previous page."""

    async def decide_approval(
        self, approval_id: str, *, approve: bool, reason: str, arguments: JSON | None, by: str | None = None
    ) -> JSON:
        """Approve or reject a held tool call (``by``: on whose behalf, locally)."""

    async def list_human_requests(
        self, statuses: Sequence[str] | None, *, before: str | None, limit: int
    ) -> list[JSON]:
        """Escalations (all statuses when None), newest first; ``before`` is the last id of the previous page."""

    async def resolve_human_request(
        self, request_id: str, *, action: str, instructions: str | None, answer: str | None, by: str | None = None
    ) -> JSON:
        """Retry, answer or abandon an escalation (``by``: on whose behalf, locally)."""

    async def gate(self) -> JSON:
        """The workspace's gate rules."""

    async def set_gate(self, gate: JSON) -> JSON:
        """Replace the workspace's gate rules; the rules now in force."""

    # catalog
    async def list_agents(self) -> list[JSON]:
        """Agent definitions."""

    async def get_agent(self, name: str) -> JSON:
        """One agent's definition (locally also from a YAML file)."""

    async def list_workflows(self) -> list[JSON]:
        """The workflows the workspace can run (summaries, as ``GET /v1/workflows``)."""

    # administration
    async def list_keys(self) -> list[JSON]:
        """The workspace's API keys."""

    async def create_key(self, name: str, role: str, user: str | None = None) -> tuple[JSON, str]:
        """A new key's public row and its secret (owned by the user with email ``user``, if given)."""

    async def revoke_key(self, key_id: str) -> JSON:
        """Revoke a key."""

    async def list_workspaces(self) -> list[JSON]:
        """Workspaces (remotely: the key's own)."""

    async def create_workspace(self, workspace_id: str, name: str | None) -> None:
        """Create a workspace."""

    async def audit_entries(self, *, limit: int, action: str | None) -> list[JSON]:
        """The newest audit entries, newest first."""

    async def verify_audit(self, workspace_id: str | None, checkpoint: JSON | None = None) -> list[JSON]:
        """Walk audit chains: one report per chain (each chain a checkpoint names must reach its head)."""

    async def audit_checkpoint(self, workspace_id: str | None) -> JSON:
        """A signed checkpoint of the audit chains' heads."""

    async def seal_audit(self) -> list[JSON]:
        """Seal chains whose newest entries predate keying (local only)."""

    async def usage(self, *, since: float | None, until: float | None, group_by: str) -> JSON:
        """Usage and cost of the workspace (the ``GET /v1/usage`` report)."""
