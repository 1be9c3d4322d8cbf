"""Objectives: start one, change its task graph, re-plan, restart; each change audited in its transaction.

Shared by the API, the CLI and the SDK. Reads (:func:`get_objective`) and the clean-up of an ended
objective's git worktrees are here too, so that every door shows an objective the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentmaestro.actor import Actor, Role
from agentmaestro.core.tasks import Graph, TaskStatus, validate_dependency_change
from agentmaestro.errors import ValidationError
from agentmaestro.service.access import audit_note, require
from agentmaestro.service.runs import StartRun, start_run
from agentmaestro.store.base import Store
from agentmaestro.store.records import RunRecord

__all__ = [
    "AbandonTask",
    "ChangeDependencies",
    "ObjectiveConfig",
    "Replan",
    "RestartObjective",
    "abandon_task",
    "change_dependencies",
    "cleanup_worktrees",
    "get_objective",
    "objective_json",
    "replan",
    "restart_objective",
    "start_objective",
]


@dataclass(frozen=True, kw_only=True)
class ObjectiveConfig:
    """How an objective runs."""

    goal: str
    """What to achieve."""
    planner: str = "planner"
    """The agent that plans (emits the task graph)."""
    strategist: str = "strategist"
    """The agent that reviews each task's result against its acceptance criteria (QA)."""
    workers: tuple[str, ...] = ()
    """Worker types (agents) the planner may use; default: every agent but the planner and strategist."""
    max_concurrent_workers: int = 5
    """Most worker runs at once."""
    max_attempts: int = 4
    """Attempts per task (QA rejections and failures) before it goes to a person."""
    repo: str | None = None
    """A git repository: each task works in its own worktree and branch; approved work is merged."""
    base_branch: str | None = None
    """The branch approved work is merged into (default: the repository's current branch)."""
    policy: dict[str, Any] | None = None
    """Limits of the objective run; ``max_cost_usd`` / ``max_tokens`` are a budget shared by all its runs."""

    def spec(self) -> dict[str, Any]:
        """The objective run's spec."""
        if not self.goal.strip():
            raise ValidationError("the goal must not be empty")
        if not 1 <= self.max_concurrent_workers <= 100:
            raise ValidationError("max_concurrent_workers must be between 1 and 100")
        if not 1 <= self.max_attempts <= 20:
            raise ValidationError("max_attempts must be between 1 and 20")
        spec: dict[str, Any] = {
            "kind": "objective",
            "goal": self.goal,
            "planner": self.planner,
            "strategist": self.strategist,
            "max_concurrent_workers": self.max_concurrent_workers,
            "max_attempts": self.max_attempts,
            "depth": 0,
        }
        if self.workers:
            spec["workers"] = list(self.workers)
        if self.repo:
            from agentmaestro.objectives.git import Repo

            repo = Repo(self.repo, run_id="check", base_branch=self.base_branch)  # clear errors now
            spec["repo"] = str(repo.path)
            spec["base_branch"] = repo.base_branch
        return spec


@dataclass(frozen=True, kw_only=True)
class ChangeDependencies:
    """Add or remove dependencies of a task not started yet (no cycles)."""

    run_id: str
    """The objective."""
    task_id: str
    """The task."""
    add: Sequence[str] = ()
    """Tasks it should wait for."""
    remove: Sequence[str] = ()
    """Tasks it should no longer wait for."""


@dataclass(frozen=True, kw_only=True)
class AbandonTask:
    """Abandon a task (its run is cancelled); the planner re-plans the tasks that depended on it."""

    run_id: str
    """The objective."""
    task_id: str
    """The task."""
    reason: str | None = None
    """Why."""


@dataclass(frozen=True, kw_only=True)
class Replan:
    """Ask the planner to re-plan every task not started yet."""

    run_id: str
    """The objective."""
    reason: str | None = None
    """Why."""


@dataclass(frozen=True, kw_only=True)
class RestartObjective:
    """Continue a FAILED or CANCELLED objective from its event log: complete tasks stay complete."""

    run_id: str
    """The objective."""


async def start_objective(store: Store, config: ObjectiveConfig, actor: Actor) -> RunRecord:
    """Create an objective run (PENDING), recorded as ``run.start``; a worker with its agents executes it."""
    start = StartRun(
        agent_name="objective",
        input=config.goal,
        spec=config.spec(),
        policy={"max_steps": None, **(config.policy or {})},
    )
    await store.workspaces.ensure(actor.workspace_id)
    return await start_run(store, start, actor)


def objective_json(rec: RunRecord, graph: Graph) -> dict[str, Any]:
    """The API's view of an objective: the run and its tasks."""
    spec = rec.spec
    return {
        "run_id": rec.run_id,
        "goal": str(spec.get("goal") or rec.input),
        "status": rec.status.value,
        "output": rec.state.output,
        "error": rec.state.error,
        "planner": spec.get("planner"),
        "strategist": spec.get("strategist"),
        "max_concurrent_workers": spec.get("max_concurrent_workers"),
        "max_attempts": spec.get("max_attempts"),
        "repo": spec.get("repo"),
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "counts": graph.counts(),
        "tasks": graph.to_json()["tasks"],
    }


async def change_dependencies(store: Store, cmd: ChangeDependencies, actor: Actor) -> dict[str, Any]:
    """Change the dependencies, recorded as ``objective.dependencies``; returns the objective."""
    require(actor, Role.operator, "change_dependencies")
    task_id, add, remove = cmd.task_id, list(cmd.add), list(cmd.remove)
    if not add and not remove:
        raise ValidationError("give dependencies to add or to remove")

    def plan(graph: Graph) -> list[dict[str, Any]]:
        problems = validate_dependency_change(graph, task_id, list(add), list(remove))
        if problems:
            raise ValidationError("; ".join(problems))
        changes: list[dict[str, Any]] = [{"op": "deps", "task": task_id, "add": list(add), "remove": list(remove)}]
        task = graph.tasks[task_id]
        # A ready task that now waits for an unfinished dependency goes back to planned.
        if task.status is TaskStatus.READY and any(
            graph.tasks[d].status is not TaskStatus.COMPLETE for d in add if d in graph.tasks
        ):
            changes.append({"op": "status", "task": task_id, "to": "planned"})
        return changes

    detail = {"task_id": task_id, "add": add, "remove": remove}
    rec, graph = await store.objectives.command(
        cmd.run_id,
        plan,
        workspace_id=actor.workspace_id,
        by=actor.name,
        audit=lambda rec: audit_note(actor, "objective.dependencies", rec.run_id, detail),
    )
    return objective_json(rec, graph)


async def abandon_task(store: Store, cmd: AbandonTask, actor: Actor) -> dict[str, Any]:
    """Abandon the task, recorded as ``objective.abandon``; returns the objective."""
    require(actor, Role.operator, "abandon_task")
    task_id, reason, by = cmd.task_id, cmd.reason, actor.name

    def plan(graph: Graph) -> list[dict[str, Any]]:
        task = graph.tasks.get(task_id)
        if task is None:
            raise ValidationError(f"unknown task {task_id!r}")
        if task.status.terminal:
            raise ValidationError(f"task {task_id!r} is already {task.status.value}")
        why = f"abandoned by {by}" + (f": {reason}" if reason else "")
        return [
            {"op": "status", "task": task_id, "to": "abandoned", "reason": why},
            {"op": "replan", "reason": why, "tasks": [task_id]},
        ]

    rec, graph = await store.objectives.command(
        cmd.run_id,
        plan,
        workspace_id=actor.workspace_id,
        by=by,
        audit=lambda rec: audit_note(actor, "objective.abandon", rec.run_id, {"task_id": task_id, "reason": reason}),
    )
    return objective_json(rec, graph)


async def replan(store: Store, cmd: Replan, actor: Actor) -> dict[str, Any]:
    """Re-plan, recorded as ``objective.replan``; returns the objective."""
    require(actor, Role.operator, "replan")
    reason, by = cmd.reason, actor.name

    def plan(graph: Graph) -> list[dict[str, Any]]:
        return [
            {"op": "replan", "reason": f"re-plan requested by {by}" + (f": {reason}" if reason else ""), "tasks": []}
        ]

    rec, graph = await store.objectives.command(
        cmd.run_id,
        plan,
        workspace_id=actor.workspace_id,
        by=by,
        audit=lambda rec: audit_note(actor, "objective.replan", rec.run_id, {"reason": reason}),
    )
    return objective_json(rec, graph)


async def restart_objective(store: Store, cmd: RestartObjective, actor: Actor) -> dict[str, Any]:
    """Resume the objective from its log, recorded as ``objective.restart``; returns the objective."""
    require(actor, Role.operator, "restart_objective")
    await get_objective(store, cmd.run_id, workspace_id=actor.workspace_id)  # not found for other runs
    await store.runs.resume(
        cmd.run_id,
        workspace_id=actor.workspace_id,
        by=actor.name,
        audit=lambda rec: audit_note(actor, "objective.restart", rec.run_id, {}),
    )
    return await get_objective(store, cmd.run_id, workspace_id=actor.workspace_id)


async def get_objective(store: Store, run_id: str, *, workspace_id: str | None = None) -> dict[str, Any]:
    """One objective with its tasks."""
    rec, graph = await store.objectives.get(run_id, workspace_id=workspace_id)
    return objective_json(rec, graph)


async def cleanup_worktrees(store: Store, run_id: str, *, workspace_id: str | None = None) -> dict[str, Any]:
    """Remove the git worktrees and task branches of an objective that has ended.

    The objective's worker does this itself when the objective completes, fails or is cancelled while it
    decides; an objective cancelled while it waits (``maestro runs cancel``) leaves them for this.
    """
    from agentmaestro.errors import ConflictError
    from agentmaestro.objectives.git import Repo

    rec, _graph = await store.objectives.get(run_id, workspace_id=workspace_id)
    if not rec.status.terminal:
        raise ConflictError(f"objective {run_id!r} is {rec.status.value}; clean up after it ends")
    repo_path = rec.spec.get("repo")
    if not repo_path:
        raise ValidationError(f"objective {run_id!r} has no git repository")
    repo = Repo(repo_path, run_id=run_id, base_branch=rec.spec.get("base_branch"))
    repo.cleanup()
    return {"run_id": run_id, "repo": str(repo.path), "cleaned": True}
