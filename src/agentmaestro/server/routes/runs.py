"""/v1/runs: create, list, get, cancel, resume, restart, fork, events (JSON pages)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from agentmaestro.actor import Actor
from agentmaestro.agents import Agent, AgentRegistry, check_usable
from agentmaestro.core.states import RunStatus
from agentmaestro.server import schemas, streams
from agentmaestro.server.auth import Operator, Viewer, get_store
from agentmaestro.server.errors import APIError
from agentmaestro.service import runs
from agentmaestro.store.base import Store
from agentmaestro.store.records import RunRecord
from agentmaestro.workflows.spec import Workflow

router = APIRouter(prefix="/v1/runs", tags=["runs"])
StoreDep = Annotated[Store, Depends(get_store)]


def _agents(request: Request) -> AgentRegistry:
    registry: AgentRegistry = request.app.state.agents
    return registry


async def check_models_here(request: Request, agents: Iterable[Agent]) -> None:
    """With an embedded worker, refuse (400 ``model_unavailable``) a run whose model this server cannot use.

    An API tier without a worker (``--no-worker``) checks nothing: its workers may well have the keys.
    """
    if getattr(request.app.state, "worker", None) is not None:
        await check_usable(agents)


async def check_workflow_models_here(request: Request, workflow: Workflow) -> None:
    """:func:`check_models_here` for the agents of a workflow's nodes that this server knows."""
    registry = _agents(request)
    await check_models_here(request, [registry.get(n) for n in workflow.agent_names() if n in registry])


async def create_run(
    store: Store,
    registry: AgentRegistry,
    actor: Actor,
    agent_name: str,
    task: str,
    policy: schemas.PolicyIn | None,
    *,
    request: Request | None = None,
    detail: Mapping[str, Any] | None = None,
) -> RunRecord:
    """Start a run of an agent the actor's workspace sees (shared by several routes).

    Given the ``request``, the agent's model is checked first (:func:`check_models_here`). ``detail``: more to
    record in the run's ``run.start`` audit entry (the chat endpoint's ``via``).
    """
    visible = registry.visible_to(actor.workspace_id)
    if agent_name not in visible:
        raise APIError(404, "not_found", f"agent {agent_name!r} not found; known agents: {', '.join(visible.names())}")
    agent = visible.get(agent_name)
    if request is not None:
        await check_models_here(request, [agent])
    overrides = policy.model_dump(exclude_unset=True) if policy is not None else None
    start = runs.StartRun.of_agent(agent, task, policy=overrides)
    return await runs.start_run(store, replace(start, detail=dict(detail or {})), actor)


@router.post("", status_code=201, response_model=schemas.Run, summary="Start a run")
async def post_run(body: schemas.RunCreate, principal: Operator, store: StoreDep, request: Request) -> dict[str, Any]:
    """Create a run of an agent; a worker picks it up at once."""
    actor = principal.as_actor()
    rec = await create_run(store, _agents(request), actor, body.agent, body.input, body.policy, request=request)
    return rec.to_json()


@router.get("", response_model=schemas.RunPage, summary="List runs")
async def list_runs(
    principal: Viewer,
    store: StoreDep,
    status: Annotated[list[RunStatus] | None, Query(description="Filter by status (repeatable).")] = None,
    agent: Annotated[str | None, Query(max_length=200)] = None,
    parent_run_id: Annotated[str | None, Query(max_length=40, description="Only the child runs of this run.")] = None,
    top_level: Annotated[bool, Query(description="Only runs without a parent (no sub-runs or task runs).")] = False,
    kind: Annotated[schemas.RunKind | None, Query(description="Only runs of this kind.")] = None,
    cursor: Annotated[str | None, Query(max_length=40, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Runs of the caller's workspace, newest first, with cursor pagination; each with its child-run counts."""
    if top_level and parent_run_id:
        raise APIError(400, "invalid", "top_level=true and parent_run_id exclude each other")
    records = await store.runs.page(
        workspace_id=principal.workspace_id,
        statuses=[s.value for s in status] if status else None,
        agent=agent,
        parent_run_id=parent_run_id,
        top_level=top_level,
        kind=kind,
        before=cursor,
        limit=limit,
    )
    counts = await store.runs.count_children([r.run_id for r in records])
    runs = [{**r.to_json(), "children": _children(counts, r.run_id)} for r in records]
    return {"runs": runs, "next_cursor": records[-1].run_id if len(records) == limit else None}


def _children(counts: dict[str, tuple[int, int]], run_id: str) -> dict[str, int] | None:
    total, finished = counts.get(run_id, (0, 0))
    return {"total": total, "finished": finished} if total else None


@router.get("/{run_id}", response_model=schemas.RunDetail, summary="Get a run with its steps")
async def get_run(run_id: str, principal: Viewer, store: StoreDep) -> dict[str, Any]:
    """A run's snapshot, its child-run counts and its finished steps."""
    rec = await store.runs.get(run_id, principal.workspace_id)
    steps = await store.steps.read(run_id)
    children = _children(await store.runs.count_children([run_id]), run_id)
    return {**rec.to_json(), "children": children, "steps_detail": [s.to_json() for s in steps]}


@router.post("/{run_id}/cancel", response_model=schemas.Run, summary="Cancel a run")
async def cancel_run(
    run_id: str, principal: Operator, store: StoreDep, body: schemas.RunCancel | None = None
) -> dict[str, Any]:
    """Cancel at once if not running; a running run stops at its next step."""
    reason = body.reason if body else "cancelled via API"
    rec = await runs.cancel_run(store, runs.CancelRun(run_id=run_id, reason=reason), principal.as_actor())
    return rec.to_json()


@router.post("/{run_id}/resume", response_model=schemas.Run, summary="Resume a failed or cancelled run")
async def resume_run(
    run_id: str, principal: Operator, store: StoreDep, body: schemas.RunResume | None = None
) -> dict[str, Any]:
    """Continue from the last completed step, optionally with new limits."""
    policy = body.policy.model_dump(exclude_unset=True) if body and body.policy else None
    rec = await runs.resume_run(store, runs.ResumeRun(run_id=run_id, policy=policy), principal.as_actor())
    return rec.to_json()


@router.post("/{run_id}/restart", status_code=201, response_model=schemas.Run, summary="Restart a run afresh")
async def restart_run(run_id: str, principal: Operator, store: StoreDep, request: Request) -> dict[str, Any]:
    """A new run of the same agent (or workflow, or objective) on the same input and limits."""
    actor = principal.as_actor()
    src = await store.runs.get(run_id, actor.workspace_id)
    visible = _agents(request).visible_to(actor.workspace_id)
    if src.spec.get("kind") not in ("workflow", "objective") and src.agent_name in visible:
        await check_models_here(request, [visible.get(src.agent_name)])
    rec = await runs.restart_run(store, runs.RestartRun(run_id=run_id), actor, agents=_agents(request))
    return rec.to_json()


@router.post("/{run_id}/fork", status_code=201, response_model=schemas.Run, summary="Fork a run at an event")
async def fork_run(run_id: str, body: schemas.RunFork, principal: Operator, store: StoreDep) -> dict[str, Any]:
    """A new run whose history is a copy of this run's events up to ``at_seq``."""
    policy = body.policy.model_dump(exclude_unset=True) if body.policy else None
    cmd = runs.ForkRun(run_id=run_id, at_seq=body.at_seq, policy=policy)
    rec = await runs.fork_run(store, cmd, principal.as_actor())
    return rec.to_json()


@router.get(
    "/{run_id}/events",
    response_model=schemas.EventPage,
    summary="A run's events (JSON page or live event stream)",
    responses=streams.SSE_RESPONSES,
)
async def list_events(
    run_id: str,
    principal: Viewer,
    store: StoreDep,
    sse: Annotated[streams.SSEOptions | None, Depends(streams.sse_options)],
    after: Annotated[int, Query(ge=0, le=2**31 - 1, description="Only events with a greater seq.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> Any:
    """Events in order; continue with ``after=next_after``.

    With ``Accept: text/event-stream``: a live Server-Sent Events stream that resumes after
    ``Last-Event-ID`` (see docs/streams.md).
    """
    await store.runs.get(run_id, principal.workspace_id)
    if sse is not None:
        return streams.sse_response(store, run_id, principal, after, sse)
    events = await store.events.read(run_id, after, limit)
    return {"events": [e.to_json() for e in events], "next_after": events[-1].seq if events else after}
