"""Where CLI commands send their work: a local database (:class:`LocalBackend`) or a server (:class:`RemoteBackend`).

Both answer the same operations with the REST API's JSON shapes (runs, approvals, keys, ...) and
:class:`~agentmaestro.core.events.Event` objects for events, so every command is written once.
``maestro --server URL`` picks the remote one; commands that only make sense next to a database
(``worker``, ``serve``, ``db upgrade``, ``demo``) refuse it with exit code 2.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from agentmaestro.core.events import Event
from agentmaestro.core.gate import GatePolicy
from agentmaestro.core.policy import StrictPolicy
from agentmaestro.core.states import EventType
from agentmaestro.errors import ConfigError, LocalOnlyError, MaestroError

if TYPE_CHECKING:  # imported where used: a command loads only what it needs (fast CLI start-up)
    from agentmaestro.agents import Agent, AgentRegistry
    from agentmaestro.client import AsyncClient
    from agentmaestro.store.base import Store
    from agentmaestro.store.records import RunRecord

__all__ = ["Backend", "LocalBackend", "LocalOnlyError", "RemoteBackend", "load_registry", "resolve_agent"]

JSON = dict[str, Any]
OnEvent = Callable[[Event], None] | None
HumanAction = Literal["retry", "answer", "abandon"]
KeyRole = Literal["viewer", "operator", "admin"]


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


class Backend(Protocol):
    """The operations CLI commands need, with the REST API's JSON shapes."""

    where: str
    """The database (redacted) or the server, for messages."""

    async def close(self) -> None:
        """Release connections."""

    # runs
    async def start_run(self, agent: str, task: str, overrides: JSON, *, here: bool = False) -> JSON:
        """Create a run of ``agent`` (a name; locally also a YAML file) with policy overrides.

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

    async def events(self, run_id: str, after: int = 0) -> list[Event]:
        """A run's events after ``after``."""

    def follow(self, run_id: str, after: int) -> AsyncIterator[Event]:
        """A run's events as they happen, until it is terminal or waits for a person."""

    async def drive(self, run_id: str, on_event: OnEvent) -> JSON:
        """See the run through until it is terminal or waits (locally: execute it here); the final run."""

    async def cancel_run(self, run_id: str, reason: str) -> JSON:
        """Cancel a run."""

    async def resume_run(self, run_id: str, overrides: JSON) -> JSON:
        """Resume a FAILED or CANCELLED run."""

    async def fork_run(self, run_id: str, at_seq: int, overrides: JSON) -> JSON:
        """Fork a run at an event."""

    async def snapshot(self, run_id: str) -> JSON:
        """The stored snapshot to check a replay against (locally the whole state; remotely the run)."""

    # people
    async def list_approvals(self, statuses: Sequence[str] | None, *, before: str | None, limit: int) -> list[JSON]:
        """Approvals (all statuses when None), newest first; ``before`` is the last id of the previous page."""

    async def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, reason: str, arguments: JSON | None
    ) -> JSON:
        """Approve or reject a held tool call."""

    async def list_human_requests(
        self, statuses: Sequence[str] | None, *, before: str | None, limit: int
    ) -> list[JSON]:
        """Escalations (all statuses when None), newest first; ``before`` is the last id of the previous page."""

    async def resolve_human_request(
        self, request_id: str, *, action: str, by: str, instructions: str | None, answer: str | None
    ) -> JSON:
        """Retry, answer or abandon an escalation."""

    async def gate(self) -> JSON:
        """The workspace's gate rules."""

    async def set_gate(self, gate: JSON) -> JSON:
        """Replace the workspace's gate rules; the rules now in force."""

    # catalog
    async def list_agents(self) -> list[JSON]:
        """Agent definitions."""

    async def get_agent(self, name: str) -> JSON:
        """One agent's definition (locally also from a YAML file)."""

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


# --------------------------------------------------------------------------------------- local


class LocalBackend:
    """Commands against the database itself; ``drive`` executes the run in this process."""

    def __init__(
        self,
        open_store: Callable[[], Store],
        workspace: str,
        where: str,
        agents: Callable[[], AgentRegistry],
        actor: str,
    ) -> None:
        self._open_store = open_store
        self._store: Store | None = None
        self.workspace = workspace
        self.where = where
        self._agents = agents
        self._actor = actor
        self._registry: AgentRegistry | None = None

    @property
    def store(self) -> Store:
        """The database, opened on first use (listing agents needs none)."""
        if self._store is None:
            self._store = self._open_store()
        return self._store

    async def close(self) -> None:
        """Flush and close the store, if it was opened."""
        if self._store is not None:
            await self._store.close()

    def _registry_for_drive(self) -> AgentRegistry:
        return self._registry if self._registry is not None else self._agents()

    async def _audit(self, action: str, target: str, detail: JSON, workspace: str | None = None) -> None:
        await self.store.audit.append(
            workspace or self.workspace, actor=self._actor, action=action, target=target, detail=detail
        )

    # runs

    async def start_run(self, agent: str, task: str, overrides: JSON, *, here: bool = False) -> JSON:
        """Create the run and remember the agent so that :meth:`drive` can run it here.

        Raises:
            ModelUnavailableError: ``here`` and this process cannot use the agent's model (nothing is stored).
        """
        from agentmaestro.agents import AgentRegistry, check_usable
        from agentmaestro.store.records import new_run_id
        from agentmaestro.store.runs import NewRun

        a = resolve_agent(agent, self._agents)
        if here:
            await check_usable([a])
        policy = (a.policy or StrictPolicy()).merged(overrides)
        await self.store.workspaces.ensure(self.workspace)
        await self.store.agents.put(self.workspace, a.name, a.spec())
        [rec] = await self.store.runs.create(
            [
                NewRun(
                    run_id=new_run_id(),
                    workspace_id=self.workspace,
                    agent_name=a.name,
                    input=task,
                    spec=a.spec(),
                    policy=policy.to_json(),
                    created_by=self._actor,
                )
            ]
        )
        self._registry = AgentRegistry([a])
        return rec.to_json()

    async def live_workers(self) -> list[JSON] | None:
        """Workers whose presence heartbeat is current."""
        return await self.store.workers.alive()

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
        """Runs of the workspace, newest first."""
        records = await self.store.runs.page(
            workspace_id=self.workspace,
            statuses=list(statuses) or None,
            agent=agent,
            top_level=top_level,
            kind=kind,
            before=before,
            limit=limit,
        )
        return [r.to_json() for r in records]

    async def get_run(self, run_id: str) -> JSON:
        """The run and its steps."""
        rec = await self.store.runs.get(run_id, self.workspace)
        return {**rec.to_json(), "steps_detail": [s.to_json() for s in await self.store.steps.read(run_id)]}

    async def children(self, run_id: str) -> list[JSON]:
        """Direct sub-runs, oldest first."""
        records = await self.store.runs.page(workspace_id=self.workspace, parent_run_id=run_id, limit=1000)
        return [r.to_json() for r in reversed(records)]

    async def events(self, run_id: str, after: int = 0) -> list[Event]:
        """Events from the log."""
        await self.store.runs.get(run_id, self.workspace)
        return await self.store.events.read(run_id, after)

    async def follow(self, run_id: str, after: int) -> AsyncIterator[Event]:
        """Read the log as it grows (another process executes the run)."""
        seq = after
        while True:
            rec = await self.store.runs.get(run_id, self.workspace)
            for ev in await self.store.events.read(run_id, seq):
                yield ev
                seq = ev.seq
            if rec.status.terminal or rec.status.waiting:
                for ev in await self.store.events.read(run_id, seq):
                    yield ev
                return
            await self.store.events.wait(run_id, 0.5)

    async def drive(self, run_id: str, on_event: OnEvent) -> JSON:
        """Run a dedicated in-process worker for this run until it stops or waits."""
        from agentmaestro.engine.worker import Worker, WorkerConfig

        store = self.store
        worker = Worker(
            store, self._registry_for_drive(), run_ids={run_id}, config=WorkerConfig(concurrency=1, poll_interval_s=0.2)
        )
        task = asyncio.ensure_future(worker.run())
        seq = 0
        try:
            while True:
                rec = await store.runs.get(run_id, self.workspace)
                if on_event is not None:
                    for ev in await store.events.read(run_id, seq):
                        on_event(ev)
                        seq = ev.seq
                if rec.status.terminal or rec.status.waiting:
                    break
                if task.done():
                    await task  # surface a crash
                    break
                await store.events.wait(run_id, 0.5)
        finally:
            worker.stop()
            await task
        if on_event is not None:
            for ev in await store.events.read(run_id, seq):
                on_event(ev)
        return await self.get_run(run_id)

    async def cancel_run(self, run_id: str, reason: str) -> JSON:
        """Cancel, and audit it."""
        rec = await self.store.runs.cancel(run_id, workspace_id=self.workspace, reason=reason, by="cli")
        await self._audit("run.cancel", run_id, {"reason": reason})
        return rec.to_json()

    async def resume_run(self, run_id: str, overrides: JSON) -> JSON:
        """Resume from the last completed step."""
        rec = await self.store.runs.resume(run_id, workspace_id=self.workspace, by="cli", policy=overrides or None)
        return rec.to_json()

    async def fork_run(self, run_id: str, at_seq: int, overrides: JSON) -> JSON:
        """Fork at ``at_seq``."""
        rec = await self.store.runs.fork(
            run_id, at_seq=at_seq, workspace_id=self.workspace, by="cli", policy=overrides or None
        )
        return rec.to_json()

    async def snapshot(self, run_id: str) -> JSON:
        """The whole stored state of the run."""
        rec: RunRecord = await self.store.runs.get(run_id, self.workspace)
        return rec.state.to_json()

    # people

    async def list_approvals(self, statuses: Sequence[str] | None, *, before: str | None, limit: int) -> list[JSON]:
        """Approvals of the workspace."""
        return await self.store.approvals.page(
            workspace_id=self.workspace, statuses=statuses, before=before, limit=limit
        )

    async def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, reason: str, arguments: JSON | None
    ) -> JSON:
        """Decide and audit."""
        await self.store.workspaces.ensure(self.workspace)
        row = await self.store.approvals.resolve(
            approval_id, approve=approve, by=by, reason=reason, arguments=arguments, workspace_id=self.workspace
        )
        detail = {
            "run_id": row["run_id"],
            "tool": row["tool"],
            "reason": reason,
            "by": by,
            "edited": arguments is not None,
        }
        await self._audit("approval.approve" if approve else "approval.reject", approval_id, detail)
        return row

    async def list_human_requests(
        self, statuses: Sequence[str] | None, *, before: str | None, limit: int
    ) -> list[JSON]:
        """Escalations of the workspace."""
        return await self.store.escalations.page(
            workspace_id=self.workspace, statuses=statuses, before=before, limit=limit
        )

    async def resolve_human_request(
        self, request_id: str, *, action: str, by: str, instructions: str | None, answer: str | None
    ) -> JSON:
        """Resolve and audit."""
        await self.store.workspaces.ensure(self.workspace)
        row = await self.store.escalations.resolve(
            request_id, action=action, by=by, instructions=instructions, answer=answer, workspace_id=self.workspace
        )
        await self._audit("human_request.resolve", request_id, {"run_id": row["run_id"], "action": action, "by": by})
        return row

    async def gate(self) -> JSON:
        """Stored gate rules, or the defaults."""
        settings = await self.store.workspaces.settings(self.workspace)
        return GatePolicy.from_json(settings.get("gate")).to_json()

    async def set_gate(self, gate: JSON) -> JSON:
        """Store the rules and audit the change."""
        await self.store.workspaces.ensure(self.workspace)
        settings = await self.store.workspaces.settings(self.workspace)
        await self.store.workspaces.update_settings(self.workspace, {"gate": gate})
        await self._audit("gate.update", self.workspace, {"before": settings.get("gate"), "after": gate})
        return gate

    # catalog

    async def list_agents(self) -> list[JSON]:
        """The agents this CLI can run (its agents folder and the built-in ones)."""
        return [a.spec() for a in self._agents()]

    async def get_agent(self, name: str) -> JSON:
        """An agent by name, or from a YAML file."""
        return resolve_agent(name, self._agents).spec()

    # administration

    async def list_keys(self) -> list[JSON]:
        """Keys of the workspace."""
        return await self.store.keys.all(self.workspace)

    async def create_key(self, name: str, role: str, user: str | None = None) -> tuple[JSON, str]:
        """Create (and audit) a key."""
        await self.store.workspaces.ensure(self.workspace)
        return await self.store.keys.create_audited(
            self.workspace, name=name, role=role, actor=self._actor, user_email=user
        )

    async def revoke_key(self, key_id: str) -> JSON:
        """Revoke (and audit) a key."""
        return await self.store.keys.revoke_audited(self.workspace, key_id, actor=self._actor)

    async def list_workspaces(self) -> list[JSON]:
        """All workspaces of the database."""
        return await self.store.workspaces.all()

    async def create_workspace(self, workspace_id: str, name: str | None) -> None:
        """Create (and audit) a workspace."""
        if any(w["workspace_id"] == workspace_id for w in await self.store.workspaces.all()):
            raise ConfigError(f"workspace {workspace_id!r} already exists")
        await self.store.workspaces.ensure(workspace_id, name)
        await self._audit("workspace.create", workspace_id, {"name": name}, workspace=workspace_id)

    async def audit_entries(self, *, limit: int, action: str | None) -> list[JSON]:
        """Newest entries of the workspace's chain."""
        return await self.store.audit.page(self.workspace, limit=limit, action=action, newest_first=True)

    async def verify_audit(self, workspace_id: str | None, checkpoint: JSON | None = None) -> list[JSON]:
        """One chain, or every chain in the database."""
        return [r.to_json() for r in await self.store.audit.verify(workspace_id, checkpoint=checkpoint)]

    async def audit_checkpoint(self, workspace_id: str | None) -> JSON:
        """Every chain's head (or one workspace's), signed with the keyring."""
        return await self.store.audit.checkpoint(workspace_id)

    async def seal_audit(self) -> list[JSON]:
        """Append a keyed seal to every chain whose newest entry predates keying."""
        return await self.store.audit.seal(self._actor)

    async def usage(self, *, since: float | None, until: float | None, group_by: str) -> JSON:
        """The same report as ``GET /v1/usage``, from the database."""
        from agentmaestro.store.usage import month_start

        now = time.time()
        start = month_start(now) if since is None else since
        end = now if until is None else until
        if end < start:
            raise ConfigError("--until must not be before --since")
        groups, total = await self.store.usage.report(self.workspace, since=start, until=end, group_by=group_by)
        return {
            "workspace_id": self.workspace,
            "since": start,
            "until": end,
            "group_by": group_by,
            "groups": groups,
            "total": total,
        }


def resolve_agent(ref: str, agents: Callable[[], AgentRegistry]) -> Agent:
    """An agent from a YAML file path, or by name from the registry."""
    from agentmaestro.agents import Agent

    path = Path(ref)
    if ref.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"agent file {ref!r} does not exist")
        return Agent.from_yaml(path)
    return agents().get(ref)


# -------------------------------------------------------------------------------------- remote


class RemoteBackend:
    """Commands against a server's REST API; the server's workers execute the runs."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.where = client.base_url

    async def close(self) -> None:
        """Close the connections."""
        await self.client.aclose()

    async def start_run(self, agent: str, task: str, overrides: JSON, *, here: bool = False) -> JSON:
        """Start a run of one of the server's agents (its workers execute it, whatever ``here`` says)."""
        if agent.endswith((".yaml", ".yml")) or Path(agent).is_file():
            raise ConfigError(
                f"{agent!r} is a file; with --server, runs use the agents the server knows (maestro agents list)"
            )
        return await self.client.create_run(agent, task, policy=overrides or None)

    async def live_workers(self) -> list[JSON] | None:
        """The workers on the server's database (``GET /v1/workers``); None if the server cannot say."""
        try:
            return await self.client.list_workers()
        except MaestroError:  # an older server without the route, or a key that may not ask
            return None

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
        """A page of the server's runs."""
        page = await self.client.list_runs(
            status=statuses or None, agent=agent, top_level=top_level, kind=kind, cursor=before, limit=limit
        )
        runs: list[JSON] = page["runs"]
        return runs

    async def get_run(self, run_id: str) -> JSON:
        """The run with its steps."""
        return await self.client.get_run(run_id)

    async def children(self, run_id: str) -> list[JSON]:
        """Direct sub-runs, oldest first."""
        page = await self.client.list_runs(parent_run_id=run_id, limit=500)
        runs: list[JSON] = page["runs"]
        return list(reversed(runs))

    async def events(self, run_id: str, after: int = 0) -> list[Event]:
        """Every event after ``after``."""
        return [event_from_json(e) for e in await self.client.all_events(run_id, after=after)]

    async def follow(self, run_id: str, after: int) -> AsyncIterator[Event]:
        """The run's event stream (SSE) until it stops or waits."""
        async for data in self.client.stream_events(run_id, after=after, follow="waiting"):
            yield event_from_json(data)

    async def drive(self, run_id: str, on_event: OnEvent) -> JSON:
        """Follow the run while the server's workers execute it."""
        async for ev in self.follow(run_id, 0):
            if on_event is not None:
                on_event(ev)
        return await self.client.get_run(run_id)

    async def cancel_run(self, run_id: str, reason: str) -> JSON:
        """Cancel (the server audits it)."""
        return await self.client.cancel_run(run_id, reason=reason)

    async def resume_run(self, run_id: str, overrides: JSON) -> JSON:
        """Resume."""
        return await self.client.resume_run(run_id, policy=overrides or None)

    async def fork_run(self, run_id: str, at_seq: int, overrides: JSON) -> JSON:
        """Fork."""
        return await self.client.fork_run(run_id, at_seq, policy=overrides or None)

    async def snapshot(self, run_id: str) -> JSON:
        """The run as the API shows it."""
        run = await self.client.get_run(run_id)
        run.pop("steps_detail", None)
        run.pop("children", None)  # the API's child-run counts, not the state's awaited children
        return run

    async def list_approvals(self, statuses: Sequence[str] | None, *, before: str | None, limit: int) -> list[JSON]:
        """Approvals (every status when None)."""
        every = ["pending", "approved", "rejected", "expired"]
        status = every if statuses is None else statuses
        page = await self.client.list_approvals(status=status, cursor=before, limit=limit)
        rows: list[JSON] = page["approvals"]
        return rows

    async def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, reason: str, arguments: JSON | None
    ) -> JSON:
        """Decide; the server records the API key as the decider."""
        return await self.client.decide_approval(
            approval_id, "approve" if approve else "reject", reason=reason, arguments=arguments
        )

    async def list_human_requests(
        self, statuses: Sequence[str] | None, *, before: str | None, limit: int
    ) -> list[JSON]:
        """Escalations (every status when None)."""
        status = ["pending", "resolved"] if statuses is None else statuses
        page = await self.client.list_human_requests(status=status, cursor=before, limit=limit)
        rows: list[JSON] = page["human_requests"]
        return rows

    async def resolve_human_request(
        self, request_id: str, *, action: str, by: str, instructions: str | None, answer: str | None
    ) -> JSON:
        """Resolve; the server records the API key."""
        if action not in ("retry", "answer", "abandon"):
            raise ConfigError(f"unknown action {action!r}")
        return await self.client.resolve_human_request(
            request_id, cast(HumanAction, action), instructions=instructions, answer=answer
        )

    async def gate(self) -> JSON:
        """The workspace's gate rules."""
        gate: JSON = (await self.client.get_workspace())["gate"]
        return gate

    async def set_gate(self, gate: JSON) -> JSON:
        """Replace the gate rules (admin key)."""
        out: JSON = (await self.client.update_workspace_settings(gate=gate))["gate"]
        return out

    async def list_agents(self) -> list[JSON]:
        """The server's agents."""
        return await self.client.list_agents()

    async def get_agent(self, name: str) -> JSON:
        """One of the server's agents."""
        return await self.client.get_agent(name)

    async def list_keys(self) -> list[JSON]:
        """Keys of the key's workspace (admin key)."""
        return await self.client.list_keys()

    async def create_key(self, name: str, role: str, user: str | None = None) -> tuple[JSON, str]:
        """Create a key (admin key)."""
        if role not in ("viewer", "operator", "admin"):
            raise ConfigError(f"role must be viewer, operator or admin, not {role!r}")
        row = await self.client.create_key(name, role=cast(KeyRole, role), user=user)
        key = str(row.pop("key"))
        return row, key

    async def revoke_key(self, key_id: str) -> JSON:
        """Revoke a key (admin key)."""
        return await self.client.revoke_key(key_id)

    async def list_workspaces(self) -> list[JSON]:
        """The key's own workspace."""
        ws = await self.client.get_workspace()
        return [{"workspace_id": ws["workspace_id"], "name": ws["name"], "created_at": ws["created_at"]}]

    async def create_workspace(self, workspace_id: str, name: str | None) -> None:
        """Not offered by the API."""
        raise LocalOnlyError("workspaces are created next to the database (maestro workspaces create without --server)")

    async def usage(self, *, since: float | None, until: float | None, group_by: str) -> JSON:
        """``GET /v1/usage``."""
        return await self.client.usage(since=since, until=until, group_by=cast(Any, group_by))

    async def audit_entries(self, *, limit: int, action: str | None) -> list[JSON]:
        """The newest ``limit`` entries (the API pages oldest first, so this reads to the end)."""
        entries: list[JSON] = []
        after = 0
        while True:
            page = await self.client.audit_log(after=after, limit=1000, action=action)
            entries = (entries + page["entries"])[-limit:]
            if not page["entries"]:
                return entries[::-1]
            after = page["next_after"]

    async def verify_audit(self, workspace_id: str | None, checkpoint: JSON | None = None) -> list[JSON]:
        """The key's workspace's chain (admin key), against a checkpoint the server's keyring signed."""
        report = await self.client.verify_audit(checkpoint=checkpoint)
        if workspace_id is not None and workspace_id != report["workspace_id"]:
            raise ConfigError(f"the API key belongs to workspace {report['workspace_id']!r}, not {workspace_id!r}")
        return [report]

    async def audit_checkpoint(self, workspace_id: str | None) -> JSON:
        """The key's workspace's chain head, signed by the server."""
        cp = await self.client.audit_checkpoint()
        if workspace_id is not None and cp.get("scope") != workspace_id:
            raise ConfigError(f"the API key belongs to workspace {cp.get('scope')!r}, not {workspace_id!r}")
        return cp

    async def seal_audit(self) -> list[JSON]:
        """Sealing writes with the keyring next to the database."""
        raise LocalOnlyError("maestro audit seal works on the database (without --server), with the server's keyring")


def tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext | bool:
    """TLS settings for ``--server https://...``: a CA to trust and a client certificate for mutual TLS."""
    if not (ca or cert):
        return True
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, key)
    return context


def load_registry(agents_dir: Path | None, builtin: Path) -> AgentRegistry:
    """The built-in agents plus those of ``agents_dir`` (or ``./agents`` when it exists)."""
    from agentmaestro.agents import load_agents_dir

    registry = load_agents_dir(builtin)
    folder = agents_dir
    if folder is None and Path("agents").is_dir():
        folder = Path("agents")
    if folder is not None:
        for agent in load_agents_dir(folder):
            registry.register(agent)
    return registry
