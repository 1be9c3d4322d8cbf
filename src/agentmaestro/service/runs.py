"""Runs: start, cancel, resume, fork and restart, each with its audit entry in the same transaction.

Every door (REST, CLI, MCP, SDK) resolves what it was given (an agent name, a YAML file, an agent object)
into an input below and calls one of these functions with its :class:`~agentmaestro.actor.Actor`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from agentmaestro.actor import Actor, Role
from agentmaestro.core.policy import StrictPolicy
from agentmaestro.errors import NotFoundError
from agentmaestro.service.access import audit_note, require
from agentmaestro.service.quotas import check_run_quota
from agentmaestro.store.base import Store
from agentmaestro.store.records import NewRun, RunRecord, new_run_id, run_kind

if TYPE_CHECKING:
    from agentmaestro.agents import Agent, AgentRegistry
    from agentmaestro.workflows.spec import Workflow

__all__ = [
    "CancelRun",
    "ForkRun",
    "RestartRun",
    "ResumeRun",
    "StartRun",
    "cancel_run",
    "fork_run",
    "restart_run",
    "resume_run",
    "start_run",
]

PolicyOverrides = Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class StartRun:
    """A new run: of an agent (:meth:`of_agent`), a workflow (:meth:`of_workflow`) or a prepared spec."""

    agent_name: str
    """The agent (or workflow, or ``objective``) it runs."""
    input: str
    """The task."""
    spec: Mapping[str, Any]
    """The definition it runs with (an agent's spec, a workflow's, an objective's)."""
    policy: Mapping[str, Any]
    """The run's limits (a :class:`StrictPolicy` as JSON; a workflow's overrides)."""
    parent_run_id: str | None = None
    """The run it is a sub-run of (its starter is then the parent's)."""
    detail: Mapping[str, Any] = field(default_factory=lambda: {})
    """More to record in the audit entry (a workflow's source and version, the run restarted)."""

    @classmethod
    def of_agent(
        cls,
        agent: Agent,
        input: str,
        *,
        policy: StrictPolicy | PolicyOverrides | None = None,
        parent_run_id: str | None = None,
    ) -> StartRun:
        """A run of ``agent``: with ``policy`` (a whole policy), or the agent's with some limits overridden."""
        if isinstance(policy, StrictPolicy):
            effective = policy
        else:
            effective = (agent.policy or StrictPolicy()).merged(dict(policy or {}))
        return cls(
            agent_name=agent.name,
            input=input,
            spec=agent.spec(),
            policy=effective.to_json(),
            parent_run_id=parent_run_id,
        )

    @classmethod
    def of_workflow(
        cls, workflow: Workflow, input: str, *, source: str | None = None, detail: Mapping[str, Any] | None = None
    ) -> StartRun:
        """A run of ``workflow`` as defined now (``source``: where the definition comes from)."""
        return cls(
            agent_name=workflow.name,
            input=input,
            spec=workflow.to_spec(source),
            policy=workflow.policy.to_overrides() if workflow.policy else {},
            detail={"name": workflow.name, **(detail or {})},
        )


@dataclass(frozen=True, kw_only=True)
class CancelRun:
    """Cancel a run: at once if it is not running, at its next step if it is."""

    run_id: str
    """The run."""
    reason: str = "cancelled"
    """Why (recorded in the run's log and the audit entry)."""


@dataclass(frozen=True, kw_only=True)
class ResumeRun:
    """Resume a FAILED or CANCELLED run from its last completed step."""

    run_id: str
    """The run."""
    policy: PolicyOverrides | None = None
    """Limits to change (e.g. a higher ``max_steps``)."""


@dataclass(frozen=True, kw_only=True)
class ForkRun:
    """A new run whose history is a copy of a run's events up to ``at_seq``."""

    run_id: str
    """The run forked."""
    at_seq: int
    """The last event copied."""
    policy: PolicyOverrides | None = None
    """Limits to change."""


@dataclass(frozen=True, kw_only=True)
class RestartRun:
    """A new run on the same input and limits: of the agent as it is now, or of the workflow as it was."""

    run_id: str
    """The run restarted."""


async def start_run(store: Store, cmd: StartRun, actor: Actor) -> RunRecord:
    """Create the run (PENDING; a worker picks it up), recorded as ``run.start`` (``workflow.run`` for a workflow)."""
    require(actor, Role.operator, "start_run")
    if actor.quotas:
        await check_run_quota(store, actor.workspace_id)
    run_id = new_run_id()
    kind = run_kind(cmd.spec)
    action = "workflow.run" if kind == "workflow" else "run.start"
    detail = {"agent": cmd.agent_name, "kind": kind, **cmd.detail}
    if cmd.parent_run_id:
        detail["parent_run_id"] = cmd.parent_run_id
    [rec] = await store.runs.create(
        [
            NewRun(
                run_id=run_id,
                workspace_id=actor.workspace_id,
                agent_name=cmd.agent_name,
                input=cmd.input,
                spec=dict(cmd.spec),
                policy=dict(cmd.policy),
                parent_run_id=cmd.parent_run_id,
                created_by=None if cmd.parent_run_id else actor.name,
                audit=audit_note(actor, action, run_id, detail),
            )
        ]
    )
    return rec


async def cancel_run(store: Store, cmd: CancelRun, actor: Actor) -> RunRecord:
    """Cancel the run, recorded as ``run.cancel``."""
    require(actor, Role.operator, "cancel_run")
    return await store.runs.cancel(
        cmd.run_id,
        workspace_id=actor.workspace_id,
        reason=cmd.reason,
        by=actor.name,
        audit=lambda rec: audit_note(actor, "run.cancel", rec.run_id, {"reason": cmd.reason}),
    )


async def resume_run(store: Store, cmd: ResumeRun, actor: Actor) -> RunRecord:
    """Resume the run, recorded as ``run.resume``."""
    require(actor, Role.operator, "resume_run")
    policy = dict(cmd.policy) if cmd.policy else None
    detail = {"policy": policy} if policy else {}
    return await store.runs.resume(
        cmd.run_id,
        workspace_id=actor.workspace_id,
        by=actor.name,
        policy=policy,
        audit=lambda rec: audit_note(actor, "run.resume", rec.run_id, detail),
    )


async def fork_run(store: Store, cmd: ForkRun, actor: Actor) -> RunRecord:
    """Fork the run, recorded as ``run.fork`` (its target is the new run)."""
    require(actor, Role.operator, "fork_run")
    if actor.quotas:
        await check_run_quota(store, actor.workspace_id)
    policy = dict(cmd.policy) if cmd.policy else None
    detail: dict[str, Any] = {"source_run_id": cmd.run_id, "at_seq": cmd.at_seq}
    if policy:
        detail["policy"] = policy
    return await store.runs.fork(
        cmd.run_id,
        at_seq=cmd.at_seq,
        workspace_id=actor.workspace_id,
        by=actor.name,
        policy=policy,
        audit=lambda rec: audit_note(actor, "run.fork", rec.run_id, detail),
    )


async def restart_run(store: Store, cmd: RestartRun, actor: Actor, *, agents: AgentRegistry) -> RunRecord:
    """A new run of the same agent (as ``agents`` defines it now) or workflow/objective (as it was), same input."""
    src = await store.runs.get(cmd.run_id, actor.workspace_id)
    detail = {"restarted_from": src.run_id}
    policy = src.state.policy.to_json()
    if src.spec.get("kind") in ("workflow", "objective"):
        # Not in the agent registry: start again from the definition the run was started with.
        start = StartRun(agent_name=src.agent_name, input=src.input, spec=src.spec, policy=policy, detail=detail)
        return await start_run(store, start, actor)
    visible = agents.visible_to(actor.workspace_id)
    if src.agent_name not in visible:
        raise NotFoundError(f"agent {src.agent_name!r} not found; known agents: {', '.join(visible.names())}")
    start = StartRun.of_agent(visible.get(src.agent_name), src.input, policy=policy)
    return await start_run(store, replace(start, detail=detail), actor)
