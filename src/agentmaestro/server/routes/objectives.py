"""/v1/objectives: start an objective, read its task graph, edit dependencies, abandon tasks, re-plan, restart."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from agentmaestro.agents import AgentRegistry
from agentmaestro.server import schemas
from agentmaestro.server.auth import Operator, Viewer, get_store
from agentmaestro.server.errors import APIError
from agentmaestro.service import objectives as service
from agentmaestro.service.objectives import ObjectiveConfig
from agentmaestro.store.base import Store

router = APIRouter(prefix="/v1/objectives", tags=["objectives"])
StoreDep = Annotated[Store, Depends(get_store)]
REPOS_ENV = "MAESTRO_OBJECTIVE_REPOS"
"""A folder on the server under which objectives started over the API may use git repositories."""
TaskId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ObjectiveCreate(_Strict):
    """A goal for the planner, and how the objective runs."""

    goal: str = Field(min_length=1, max_length=20_000, description="What to achieve.")
    planner: str = Field(default="planner", min_length=1, max_length=200, description="The planning agent.")
    strategist: str = Field(default="strategist", min_length=1, max_length=200, description="The QA agent.")
    workers: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=50, description="Worker types the planner may use (default: every other agent)."
    )
    max_concurrent_workers: int = Field(default=5, ge=1, le=100)
    max_attempts: int = Field(default=4, ge=1, le=20, description="Attempts per task before a person decides.")
    repo: str | None = Field(
        default=None, max_length=1000, description=f"A git repository on the server, under ${REPOS_ENV}."
    )
    policy: schemas.PolicyIn | None = None


class TaskOut(BaseModel):
    """One task of an objective."""

    task_id: str
    title: str
    instructions: str
    worker: str
    depends_on: list[str]
    acceptance: list[str]
    status: Literal["planned", "ready", "active", "awaiting_qa", "complete", "failed", "waiting_human", "abandoned"]
    attempts: list[dict[str, Any]]
    notes: list[str]
    run_id: str | None
    escalation: dict[str, Any] | None
    reason: str | None
    order: int
    attempt_base: int


class Objective(BaseModel):
    """An objective run and its task graph."""

    run_id: str
    goal: str
    status: str
    output: str | None
    error: str | None
    planner: str | None
    strategist: str | None
    max_concurrent_workers: int | None
    max_attempts: int | None
    repo: str | None
    created_at: float
    updated_at: float
    counts: dict[str, int]
    tasks: list[TaskOut]


class DependencyChange(_Strict):
    """Dependencies to add to and remove from a task that has not started."""

    add: list[TaskId] = Field(default_factory=list, max_length=100)
    remove: list[TaskId] = Field(default_factory=list, max_length=100)


class Reason(_Strict):
    """Why (recorded in the graph and given to the planner)."""

    reason: str | None = Field(default=None, max_length=2000)


def _agents(request: Request) -> AgentRegistry:
    registry: AgentRegistry = request.app.state.agents
    return registry


def _repo(path: str) -> str:
    root = os.environ.get(REPOS_ENV)
    if not root:
        raise APIError(400, "invalid", f"git repositories over the API need {REPOS_ENV} set on the server")
    base = Path(root).resolve()
    target = (base / path).resolve()
    if target != base and base not in target.parents:
        raise APIError(400, "invalid", f"repo must be inside {REPOS_ENV}")
    return str(target)


@router.post("", status_code=201, response_model=Objective, summary="Start an objective")
async def create(body: ObjectiveCreate, principal: Operator, store: StoreDep, request: Request) -> dict[str, Any]:
    """Hand a goal to the planner; its tasks run as child runs of the objective run."""
    agents = _agents(request).visible_to(principal.workspace_id)
    for name in [body.planner, body.strategist, *(body.workers or [])]:
        if name not in agents:
            raise APIError(400, "invalid", f"unknown agent {name!r}; known agents: {', '.join(agents.names())}")
    config = ObjectiveConfig(
        goal=body.goal,
        planner=body.planner,
        strategist=body.strategist,
        workers=tuple(body.workers or ()),
        max_concurrent_workers=body.max_concurrent_workers,
        max_attempts=body.max_attempts,
        repo=_repo(body.repo) if body.repo else None,
        policy=body.policy.model_dump(exclude_unset=True) if body.policy else None,
    )
    rec = await service.start_objective(store, config, principal.as_actor())
    return await service.get_objective(store, rec.run_id, workspace_id=principal.workspace_id)


@router.get("", response_model=list[Objective], summary="List objectives")
async def list_objectives(
    principal: Viewer, store: StoreDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[dict[str, Any]]:
    """The workspace's objectives, newest first."""
    recs = await store.runs.page(workspace_id=principal.workspace_id, agent="objective", limit=limit)
    return [await service.get_objective(store, r.run_id, workspace_id=principal.workspace_id) for r in recs]


@router.get("/{objective_id}", response_model=Objective, summary="Get an objective")
async def get(objective_id: str, principal: Viewer, store: StoreDep) -> dict[str, Any]:
    """One objective with its tasks (statuses, attempts, QA feedback, escalations)."""
    return await service.get_objective(store, objective_id, workspace_id=principal.workspace_id)


@router.post("/{objective_id}/tasks/{task_id}/dependencies", response_model=Objective, summary="Change dependencies")
async def dependencies(
    objective_id: str, task_id: str, body: DependencyChange, principal: Operator, store: StoreDep
) -> dict[str, Any]:
    """Add or remove dependencies of a task not started yet; a change that would make a cycle is refused."""
    cmd = service.ChangeDependencies(run_id=objective_id, task_id=task_id, add=body.add, remove=body.remove)
    return await service.change_dependencies(store, cmd, principal.as_actor())


@router.post("/{objective_id}/tasks/{task_id}/abandon", response_model=Objective, summary="Abandon a task")
async def abandon(
    objective_id: str, task_id: str, body: Reason, principal: Operator, store: StoreDep
) -> dict[str, Any]:
    """Abandon a task (its run is cancelled); the planner re-plans the tasks that depended on it."""
    cmd = service.AbandonTask(run_id=objective_id, task_id=task_id, reason=body.reason)
    return await service.abandon_task(store, cmd, principal.as_actor())


@router.post("/{objective_id}/replan", response_model=Objective, summary="Re-plan")
async def replan(objective_id: str, body: Reason, principal: Operator, store: StoreDep) -> dict[str, Any]:
    """Ask the planner to re-plan every task that has not started."""
    return await service.replan(store, service.Replan(run_id=objective_id, reason=body.reason), principal.as_actor())


@router.post("/{objective_id}/restart", response_model=Objective, summary="Restart from the last checkpoint")
async def restart(objective_id: str, principal: Operator, store: StoreDep) -> dict[str, Any]:
    """Continue a FAILED or CANCELLED objective from its event log: complete tasks stay complete."""
    return await service.restart_objective(store, service.RestartObjective(run_id=objective_id), principal.as_actor())
