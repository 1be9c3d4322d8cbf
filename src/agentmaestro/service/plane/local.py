"""The :class:`~agentmaestro.service.plane.Plane` on a database: reads from the store, changes through the service.

One :class:`~agentmaestro.actor.Actor` scopes it: every query is the actor's workspace's (another
workspace's run or approval is "not found"), changes need the actor's role, an API key's new runs are
held to the workspace's quotas, and each change is audited under the actor's name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from agentmaestro.actor import Actor
from agentmaestro.core.events import Event
from agentmaestro.core.gate import GatePolicy
from agentmaestro.core.states import RunStatus
from agentmaestro.errors import ConfigError
from agentmaestro.service.plane import JSON, OnEvent, OnWait, RunKind, choose_kind

if TYPE_CHECKING:  # imported where used: a command loads only what it needs (fast CLI start-up)
    from agentmaestro.agents import Agent, AgentRegistry
    from agentmaestro.store.base import Store
    from agentmaestro.workflows.spec import WorkflowRegistry

__all__ = ["LocalPlane", "load_registry", "resolve_agent"]

_PERSON = (RunStatus.WAITING_FOR_APPROVAL, RunStatus.WAITING_FOR_HUMAN)


class LocalPlane:
    """Commands and MCP tools on the database; :meth:`drive` executes a run in this process.

    Args:
        store: The store. Called once and closed by :meth:`close` when ``owns_store``; else called for each
            operation (a server's store, opened when it starts) and left open.
        actor: Who acts (a callable for an actor that changes per request: the MCP endpoint's API key).
        agents: The agents runs may use (the actor's workspace sees the shared ones and its own).
        workflows: The folder's workflows (the workspace's stored ones are added to them); none by default.
        where: The database (redacted), for messages.
        owns_store: Open the store on first use and close it with the plane.
    """

    def __init__(
        self,
        store: Callable[[], Store],
        actor: Actor | Callable[[], Actor],
        agents: Callable[[], AgentRegistry],
        workflows: Callable[[], WorkflowRegistry] | None = None,
        *,
        where: str = "the database",
        owns_store: bool = True,
    ) -> None:
        self._open_store = store
        self._store: Store | None = None
        self._actor = actor
        self._agents = agents
        self._workflows = workflows
        self.where = where
        self._owns_store = owns_store
        self._registry: AgentRegistry | None = None

    @property
    def actor(self) -> Actor:
        """Who acts now."""
        return self._actor if isinstance(self._actor, Actor) else self._actor()

    @property
    def workspace(self) -> str:
        """The actor's workspace."""
        return self.actor.workspace_id

    @property
    def store(self) -> Store:
        """The database (opened on first use when the plane owns it: listing agents needs none)."""
        if not self._owns_store:
            return self._open_store()
        if self._store is None:
            self._store = self._open_store()
        return self._store

    async def close(self) -> None:
        """Flush and close the store, if this plane opened it."""
        if self._owns_store and self._store is not None:
            await self._store.close()

    def _visible_agents(self) -> AgentRegistry:
        return self._agents().visible_to(self.workspace)

    def _folder(self) -> WorkflowRegistry:
        from agentmaestro.workflows.spec import WorkflowRegistry

        return self._workflows() if self._workflows is not None else WorkflowRegistry()

    # runs

    async def start_run(
        self, name: str, task: str, overrides: JSON | None = None, *, kind: RunKind = "agent", here: bool = False
    ) -> JSON:
        """Start the run (:func:`~agentmaestro.service.runs.start_run`); remember an agent for :meth:`drive`.

        Raises:
            ModelUnavailableError: ``here`` and this process cannot use the agent's model (nothing is stored).
        """
        from agentmaestro.agents import AgentRegistry, check_usable
        from agentmaestro.service import runs
        from agentmaestro.service.workflows import StartWorkflow, start_workflow
        from agentmaestro.workflows import stored

        actor, store = self.actor, self.store
        if kind == "agent":
            agent = resolve_agent(name, self._visible_agents)
        else:
            agents = self._visible_agents()
            workflows: set[str] = set()
            if kind == "workflow" or name not in agents:
                workflows = {e.name for e in await stored.visible(store, actor.workspace_id, self._folder())}
            if choose_kind(name, kind, set(agents.names()), workflows) == "workflow":
                if overrides:
                    raise ConfigError("policy limits apply to agent runs; a workflow's limits come from its definition")
                entry = await stored.find(store, actor.workspace_id, name, self._folder())
                rec = await start_workflow(store, StartWorkflow(entry=entry, input=task), actor)
                return rec.to_json()
            agent = agents.get(name)
        if here:
            await check_usable([agent])
        start = runs.StartRun.of_agent(agent, task, policy=overrides)  # a bad override fails before any write
        await store.workspaces.ensure(actor.workspace_id)
        await store.agents.put(actor.workspace_id, agent.name, agent.spec())
        rec = await runs.start_run(store, start, actor)
        self._registry = AgentRegistry([agent])
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
        store = self.store
        rec = await store.runs.get(run_id, self.workspace)
        return {**rec.to_json(), "steps_detail": [s.to_json() for s in await store.steps.read(run_id)]}

    async def children(self, run_id: str) -> list[JSON]:
        """Direct sub-runs, oldest first."""
        records = await self.store.runs.page(workspace_id=self.workspace, parent_run_id=run_id, limit=1000)
        return [r.to_json() for r in reversed(records)]

    async def events(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        """Events from the log."""
        store = self.store
        await store.runs.get(run_id, self.workspace)
        return await store.events.read(run_id, after, limit)

    async def follow(self, run_id: str, after: int) -> AsyncIterator[Event]:
        """Read the log as it grows (another process executes the run)."""
        store = self.store
        seq = after
        while True:
            rec = await store.runs.get(run_id, self.workspace)
            for ev in await store.events.read(run_id, seq):
                yield ev
                seq = ev.seq
            if rec.status.terminal or rec.status.waiting:
                for ev in await store.events.read(run_id, seq):
                    yield ev
                return
            await store.events.wait(run_id, 0.5)

    async def drive(self, run_id: str, on_event: OnEvent) -> JSON:
        """Run a dedicated in-process worker for this run until it stops or waits."""
        from agentmaestro.engine.worker import Worker, WorkerConfig

        store = self.store
        registry = self._registry if self._registry is not None else self._agents()
        worker = Worker(store, registry, run_ids={run_id}, config=WorkerConfig(concurrency=1, poll_interval_s=0.2))
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

    async def _settled(self, run_id: str, status: RunStatus, workspace_id: str) -> bool:
        if status.terminal or status in _PERSON:
            return True
        if status is RunStatus.WAITING_FOR_CHILDREN:  # a workflow: settled when a node waits for a person
            children = await self.store.runs.page(workspace_id=workspace_id, parent_run_id=run_id, limit=1000)
            return any(ch.status in _PERSON for ch in children)
        return False

    async def wait_run(self, run_id: str, timeout_s: float, on_wait: OnWait | None = None) -> tuple[JSON, bool]:
        """Wake on every change of the run (and, for a workflow, of any run) until it settles or time is up."""
        store, workspace = self.store, self.workspace
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
        """:func:`~agentmaestro.service.runs.cancel_run`."""
        from agentmaestro.service import runs

        return (await runs.cancel_run(self.store, runs.CancelRun(run_id=run_id, reason=reason), self.actor)).to_json()

    async def resume_run(self, run_id: str, overrides: JSON) -> JSON:
        """:func:`~agentmaestro.service.runs.resume_run`."""
        from agentmaestro.service import runs

        cmd = runs.ResumeRun(run_id=run_id, policy=overrides or None)
        return (await runs.resume_run(self.store, cmd, self.actor)).to_json()

    async def fork_run(self, run_id: str, at_seq: int, overrides: JSON) -> JSON:
        """:func:`~agentmaestro.service.runs.fork_run`."""
        from agentmaestro.service import runs

        cmd = runs.ForkRun(run_id=run_id, at_seq=at_seq, policy=overrides or None)
        return (await runs.fork_run(self.store, cmd, self.actor)).to_json()

    async def snapshot(self, run_id: str) -> JSON:
        """The whole stored state of the run."""
        rec = await self.store.runs.get(run_id, self.workspace)
        return rec.state.to_json()

    # people

    async def list_approvals(
        self, statuses: Sequence[str] | None, *, run_id: str | None = None, before: str | None = None, limit: int = 100
    ) -> list[JSON]:
        """Approvals of the workspace, newest first."""
        return await self.store.approvals.page(
            workspace_id=self.workspace,
            statuses=statuses,
            run_ids=None if run_id is None else [run_id],
            before=before,
            limit=limit,
        )

    async def decide_approval(
        self, approval_id: str, *, approve: bool, reason: str, arguments: JSON | None, by: str | None = None
    ) -> JSON:
        """:func:`~agentmaestro.service.approvals.decide_approval`."""
        from agentmaestro.service import approvals

        cmd = approvals.DecideApproval(
            approval_id=approval_id, approve=approve, reason=reason, arguments=arguments, by=by
        )
        return await approvals.decide_approval(self.store, cmd, self.actor)

    async def list_human_requests(
        self, statuses: Sequence[str] | None, *, before: str | None, limit: int
    ) -> list[JSON]:
        """Escalations of the workspace."""
        return await self.store.escalations.page(
            workspace_id=self.workspace, statuses=statuses, before=before, limit=limit
        )

    async def resolve_human_request(
        self, request_id: str, *, action: str, instructions: str | None, answer: str | None, by: str | None = None
    ) -> JSON:
        """:func:`~agentmaestro.service.approvals.resolve_human_request`."""
        from agentmaestro.service import approvals

        if action not in ("retry", "answer", "abandon"):
            raise ConfigError(f"unknown action {action!r}")
        cmd = approvals.ResolveHumanRequest(
            request_id=request_id,
            action=cast(approvals.HumanAction, action),
            instructions=instructions,
            answer=answer,
            by=by,
        )
        return await approvals.resolve_human_request(self.store, cmd, self.actor)

    async def gate(self) -> JSON:
        """Stored gate rules, or the defaults."""
        settings = await self.store.workspaces.settings(self.workspace)
        return GatePolicy.from_json(settings.get("gate")).to_json()

    async def set_gate(self, gate: JSON) -> JSON:
        """Store the rules and audit the change (one transaction)."""
        store = self.store
        await store.workspaces.ensure(self.workspace)
        await store.workspaces.update_settings_audited(self.workspace, {"gate": gate}, actor=self.actor.name)
        return gate

    # catalog

    async def list_agents(self) -> list[JSON]:
        """The agents the workspace can run (the agents folder's and the built-in ones)."""
        return [a.spec() for a in self._visible_agents()]

    async def get_agent(self, name: str) -> JSON:
        """An agent by name, or from a YAML file."""
        return resolve_agent(name, self._visible_agents).spec()

    async def list_workflows(self) -> list[JSON]:
        """The folder's workflows and the workspace's stored ones (as ``GET /v1/workflows``)."""
        from agentmaestro.workflows import stored

        return [e.summary() for e in await stored.visible(self.store, self.workspace, self._folder())]

    # administration

    async def list_keys(self) -> list[JSON]:
        """Keys of the workspace."""
        return await self.store.keys.all(self.workspace)

    async def create_key(self, name: str, role: str, user: str | None = None) -> tuple[JSON, str]:
        """:func:`~agentmaestro.service.keys.create_key`."""
        from agentmaestro.service import keys

        await self.store.workspaces.ensure(self.workspace)
        return await keys.create_key(self.store, keys.CreateKey(name=name, role=role, user=user), self.actor)

    async def revoke_key(self, key_id: str) -> JSON:
        """:func:`~agentmaestro.service.keys.revoke_key`."""
        from agentmaestro.service import keys

        return await keys.revoke_key(self.store, keys.RevokeKey(key_id=key_id), self.actor)

    async def list_workspaces(self) -> list[JSON]:
        """All workspaces of the database."""
        return await self.store.workspaces.all()

    async def create_workspace(self, workspace_id: str, name: str | None) -> None:
        """:func:`~agentmaestro.service.workspaces.create_workspace`."""
        from agentmaestro.service import workspaces

        cmd = workspaces.CreateWorkspace(workspace_id=workspace_id, name=name)
        await workspaces.create_workspace(self.store, cmd, self.actor)

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
        return await self.store.audit.seal(self.actor.name)

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


def _is_file(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml")) or Path(ref).is_file()


def resolve_agent(ref: str, agents: Callable[[], AgentRegistry]) -> Agent:
    """An agent from a YAML file path, or by name from the registry."""
    from agentmaestro.agents import Agent

    path = Path(ref)
    if _is_file(ref):
        if not path.is_file():
            raise ConfigError(f"agent file {ref!r} does not exist")
        return Agent.from_yaml(path)
    return agents().get(ref)


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
