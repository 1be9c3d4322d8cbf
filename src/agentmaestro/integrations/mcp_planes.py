"""Where the MCP tools act: the database (:class:`StorePlane`) or a server's REST API (:class:`ClientPlane`).

:class:`StorePlane` does what the REST routes do, for one :class:`Caller`: every query is scoped to the
caller's workspace (another workspace's run or approval is "not found"), writes need the operator role,
decisions and cancels are audited under the caller's name, and new runs respect the workspace's quotas.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from agentmaestro.agents import AgentRegistry
from agentmaestro.client import AsyncClient
from agentmaestro.core.states import RunStatus
from agentmaestro.errors import AuthError, ConfigError, NotFoundError
from agentmaestro.server.auth import Role
from agentmaestro.server.mcp.server import JSON, OnWait, RunKind
from agentmaestro.server.quotas import check_run_quota
from agentmaestro.server.routes.runs import create_run
from agentmaestro.server.schemas import PolicyIn
from agentmaestro.store.base import Store
from agentmaestro.workflows import stored
from agentmaestro.workflows.spec import WorkflowRegistry

__all__ = ["Caller", "ClientPlane", "StorePlane"]

_PERSON = (RunStatus.WAITING_FOR_APPROVAL, RunStatus.WAITING_FOR_HUMAN)


@dataclass(frozen=True, kw_only=True)
class Caller:
    """Who calls the MCP tools."""

    workspace_id: str
    """The workspace every query is scoped to."""
    role: Role
    """What the caller may do: viewers read, operators also start, cancel and decide."""
    actor: str
    """How the caller is named in events and the audit log (``key:NAME``, ``cli:USER``)."""

    def require_operator(self, action: str) -> None:
        """Refuse ``action`` to a viewer."""
        if self.role < Role.operator:
            raise AuthError(f"{action} needs the operator role; this API key is a {self.role.name}")


def _kind(name: str, kind: RunKind, agents: set[str], workflows: set[str]) -> str:
    """``agent`` or ``workflow`` for ``name``; NotFoundError naming what exists."""
    if kind in ("auto", "agent") and name in agents:
        return "agent"
    if kind in ("auto", "workflow") and name in workflows:
        return "workflow"
    what = {"auto": "agent or workflow", "agent": "agent", "workflow": "workflow"}[kind]
    known = sorted(agents if kind == "agent" else workflows if kind == "workflow" else agents | workflows)
    raise NotFoundError(f"{what} {name!r} not found; known: {', '.join(known) or 'none'}")


class StorePlane:
    """The tools on a database, for the caller ``caller()`` returns (the API key of the request, or the CLI user).

    Args:
        store: The open store (a callable, as a server opens it when it starts).
        agents: The agents runs may use.
        workflows: The workflows runs may use.
        caller: The current caller.
    """

    def __init__(
        self,
        store: Callable[[], Store],
        agents: Callable[[], AgentRegistry],
        workflows: Callable[[], WorkflowRegistry],
        caller: Callable[[], Caller],
    ) -> None:
        self._store = store
        self._all_agents = agents
        self._workflows = workflows
        self._caller = caller

    def _agents(self) -> AgentRegistry:
        """The agents the caller's workspace sees (shared ones and those registered for it)."""
        return self._all_agents().visible_to(self._caller().workspace_id)

    async def list_agents(self) -> list[JSON]:
        """The agents' definitions."""
        return [a.spec() for a in self._agents()]

    async def list_workflows(self) -> list[JSON]:
        """The workflows the workspace can run: the folder's and its stored ones (as ``GET /v1/workflows``)."""
        entries = await stored.visible(self._store(), self._caller().workspace_id, self._workflows())
        return [e.summary() for e in entries]

    async def start_run(self, name: str, task: str, kind: RunKind, policy: PolicyIn | None) -> JSON:
        """Create the run (quota checked); a worker picks it up."""
        caller = self._caller()
        caller.require_operator("start_run")
        store, agents, folder = self._store(), self._agents(), self._workflows()
        workflows = {e.name for e in await stored.visible(store, caller.workspace_id, folder)}
        if _kind(name, kind, set(agents.names()), workflows) == "agent":
            rec = await create_run(store, agents, caller.workspace_id, name, task, policy, created_by=caller.actor)
            return rec.to_json()
        if policy is not None:
            raise ConfigError("policy limits apply to agent runs; a workflow's limits come from its definition")
        entry = await stored.find(store, caller.workspace_id, name, folder)
        await check_run_quota(store, caller.workspace_id)
        rec = await stored.start(store, caller.workspace_id, entry, task, created_by=caller.actor)
        detail = {"name": name, "source": entry.source, "version": entry.version}
        await store.audit.append(
            caller.workspace_id, actor=caller.actor, action="workflow.run", target=rec.run_id, detail=detail
        )
        return rec.to_json()

    async def get_run(self, run_id: str) -> JSON:
        """The run, if it is the caller's workspace's."""
        return (await self._store().runs.get(run_id, self._caller().workspace_id)).to_json()

    async def events(self, run_id: str, after: int, limit: int) -> list[JSON]:
        """A page of the run's events."""
        store = self._store()
        await store.runs.get(run_id, self._caller().workspace_id)
        return [e.to_json() for e in await store.events.read(run_id, after, limit)]

    async def _settled(self, run_id: str, status: RunStatus, workspace_id: str) -> bool:
        if status.terminal or status in _PERSON:
            return True
        if status is RunStatus.WAITING_FOR_CHILDREN:  # a workflow: settled when a node waits for a person
            children = await self._store().runs.page(workspace_id=workspace_id, parent_run_id=run_id, limit=1000)
            return any(ch.status in _PERSON for ch in children)
        return False

    async def wait_run(self, run_id: str, timeout_s: float, on_wait: OnWait | None = None) -> tuple[JSON, bool]:
        """Wake on every change of the run (and, for a workflow, of any run) until it settles or time is up."""
        store, workspace = self._store(), self._caller().workspace_id
        start = time.monotonic()
        deadline = start + timeout_s
        while True:
            rec = await store.runs.get(run_id, workspace)
            if await self._settled(run_id, rec.status, workspace):
                return rec.to_json(), False
            if on_wait is not None:
                await on_wait(rec.to_json(), time.monotonic() - start)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return rec.to_json(), True
            watched = None if rec.status is RunStatus.WAITING_FOR_CHILDREN else run_id
            await store.events.wait(watched, min(remaining, 1.0))

    async def cancel_run(self, run_id: str, reason: str) -> JSON:
        """Cancel and audit."""
        caller = self._caller()
        caller.require_operator("cancel_run")
        store = self._store()
        rec = await store.runs.cancel(run_id, workspace_id=caller.workspace_id, reason=reason, by=caller.actor)
        await store.audit.append(
            caller.workspace_id, actor=caller.actor, action="run.cancel", target=run_id, detail={"reason": reason}
        )
        return rec.to_json()

    async def list_approvals(
        self, statuses: list[str] | None, *, run_id: str | None = None, before: str | None = None, limit: int = 100
    ) -> list[JSON]:
        """The workspace's approvals, newest first."""
        return await self._store().approvals.page(
            workspace_id=self._caller().workspace_id,
            statuses=statuses,
            run_ids=None if run_id is None else [run_id],
            before=before,
            limit=limit,
        )

    async def resolve_approval(self, approval_id: str, approve: bool, reason: str, arguments: JSON | None) -> JSON:
        """Decide and audit (as ``POST /v1/approvals/{id}`` does)."""
        caller = self._caller()
        caller.require_operator("resolve_approval")
        store = self._store()
        row = await store.approvals.resolve(
            approval_id,
            approve=approve,
            by=caller.actor,
            reason=reason,
            arguments=arguments,
            workspace_id=caller.workspace_id,
        )
        detail = {"run_id": row["run_id"], "tool": row["tool"], "reason": reason, "edited": arguments is not None}
        action = "approval.approve" if approve else "approval.reject"
        await store.audit.append(
            caller.workspace_id, actor=caller.actor, action=action, target=approval_id, detail=detail
        )
        return row


class ClientPlane:
    """The tools through a server's REST API (``maestro mcp --server URL``): the API key's workspace and role apply."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def list_agents(self) -> list[JSON]:
        """The server's agents."""
        return await self.client.list_agents()

    async def list_workflows(self) -> list[JSON]:
        """The server's workflows."""
        rows: list[JSON] = await self.client.request("GET", "/v1/workflows")
        return rows

    async def start_run(self, name: str, task: str, kind: RunKind, policy: PolicyIn | None) -> JSON:
        """``POST /v1/runs`` or ``POST /v1/workflows/{name}/runs``."""
        agents = {a["name"] for a in await self.client.list_agents()}
        workflows = {w["name"] for w in await self.list_workflows()} if name not in agents or kind != "auto" else set()
        if _kind(name, kind, agents, workflows) == "agent":
            overrides = policy.model_dump(exclude_unset=True) if policy is not None else None
            return await self.client.create_run(name, task, policy=overrides)
        if policy is not None:
            raise ConfigError("policy limits apply to agent runs; a workflow's limits come from its definition")
        run: JSON = await self.client.request("POST", f"/v1/workflows/{name}/runs", json_body={"input": task})
        return run

    async def get_run(self, run_id: str) -> JSON:
        """``GET /v1/runs/{id}``."""
        return await self.client.get_run(run_id)

    async def events(self, run_id: str, after: int, limit: int) -> list[JSON]:
        """``GET /v1/runs/{id}/events``."""
        page = await self.client.events(run_id, after=after, limit=limit)
        events: list[JSON] = page["events"]
        return events

    async def _settled(self, run: JSON) -> bool:
        status = RunStatus(run["status"])
        if status.terminal or status in _PERSON:
            return True
        if status is RunStatus.WAITING_FOR_CHILDREN:
            page = await self.client.list_runs(parent_run_id=run["run_id"], limit=500)
            return any(RunStatus(ch["status"]) in _PERSON for ch in page["runs"])
        return False

    async def wait_run(self, run_id: str, timeout_s: float, on_wait: OnWait | None = None) -> tuple[JSON, bool]:
        """Check the run after each of its events (the server's event stream) until it settles or time is up."""
        start = time.monotonic()
        deadline = start + timeout_s
        while True:
            run = await self.client.get_run(run_id)
            if await self._settled(run):
                return run, False
            if on_wait is not None:
                await on_wait(run, time.monotonic() - start)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return run, True
            # a workflow's own log is quiet while its nodes run: look again every second
            quiet_s = 1.0 if run["status"] == RunStatus.WAITING_FOR_CHILDREN.value else 5.0
            with anyio.move_on_after(min(remaining, quiet_s)):
                stream = self.client.stream_events(run_id, after=int(run["last_seq"]), follow="always")
                async with contextlib.aclosing(stream):
                    async for _event in stream:
                        break

    async def cancel_run(self, run_id: str, reason: str) -> JSON:
        """``POST /v1/runs/{id}/cancel``."""
        return await self.client.cancel_run(run_id, reason=reason)

    async def list_approvals(
        self, statuses: list[str] | None, *, run_id: str | None = None, before: str | None = None, limit: int = 100
    ) -> list[JSON]:
        """``GET /v1/approvals``."""
        every = ["pending", "approved", "rejected", "expired"]
        status = every if statuses is None else statuses
        page = await self.client.list_approvals(status=status, run_id=run_id, cursor=before, limit=limit)
        rows: list[JSON] = page["approvals"]
        return rows

    async def resolve_approval(self, approval_id: str, approve: bool, reason: str, arguments: JSON | None) -> JSON:
        """``POST /v1/approvals/{id}``."""
        return await self.client.decide_approval(
            approval_id, "approve" if approve else "reject", reason=reason, arguments=arguments
        )
