"""/v1/runs: create, list, get, cancel, resume, restart, fork, events (JSON pages)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from agentmaestro.agents import Agent, AgentRegistry, check_usable
from agentmaestro.core.policy import StrictPolicy
from agentmaestro.core.states import RunStatus
from agentmaestro.server import schemas, streams
from agentmaestro.server.auth import Operator, Viewer, get_store
from agentmaestro.server.errors import APIError
from agentmaestro.server.quotas import check_run_quota
from agentmaestro.store.base import Store
from agentmaestro.store.records import RunRecord, new_run_id
from agentmaestro.store.runs import NewRun
from agentmaestro.workflows.spec import Workflow

router = APIRouter(prefix="/v1/runs", tags=["runs"])
StoreDep = Annotated[Store, Depends(get_store)]


def _agents(request: Request) -> AgentRegistry:
    registry: AgentRegistry = request.app.state.agents
    return registry


def _policy(base: StrictPolicy, override: schemas.PolicyIn | None) -> StrictPolicy:
    if override is None:
        return base
    return base.merged(override.model_dump(exclude_unset=True))


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
    workspace_id: str,
    agent_name: str,
    task: str,
    policy: schemas.PolicyIn | None,
    *,
    created_by: str | None = None,
    request: Request | None = None,
) -> RunRecord:
    """Create a run of an agent the workspace sees (shared by several routes); ``created_by`` is the caller's actor.

    Given the ``request``, the agent's model is checked first (:func:`check_models_here`).
    """
    visible = registry.visible_to(workspace_id)
    if agent_name not in visible:
        raise APIError(404, "not_found", f"agent {agent_name!r} not found; known agents: {', '.join(visible.names())}")
    agent = visible.get(agent_name)
    if request is not None:
        await check_models_here(request, [agent])
    await check_run_quota(store, workspace_id)
    [rec] = await store.runs.create(
        [
            NewRun(
                run_id=new_run_id(),
                workspace_id=workspace_id,
                agent_name=agent.name,
                input=task,
                spec=agent.spec(),
                policy=_policy(agent.policy or StrictPolicy(), policy).to_json(),
                created_by=created_by,
            )
        ]
    )
    return rec


@router.post("", status_code=201, response_model=schemas.Run, summary="Start a run")
async def post_run(body: schemas.RunCreate, principal: Operator, store: StoreDep, request: Request) -> dict[str, Any]:
    """Create a run of an agent; a worker picks it up at once."""
    rec = await create_run(
        store,
        _agents(request),
        principal.workspace_id,
        body.agent,
        body.input,
        body.policy,
        created_by=principal.actor,
        request=request,
    )
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
    rec = await store.runs.cancel(run_id, workspace_id=principal.workspace_id, reason=reason, by=principal.actor)
    await store.audit.append(
        principal.workspace_id, actor=principal.actor, action="run.cancel", target=run_id, detail={"reason": reason}
    )
    return rec.to_json()


@router.post("/{run_id}/resume", response_model=schemas.Run, summary="Resume a failed or cancelled run")
async def resume_run(
    run_id: str, principal: Operator, store: StoreDep, body: schemas.RunResume | None = None
) -> dict[str, Any]:
    """Continue from the last completed step, optionally with new limits."""
    policy = body.policy.model_dump(exclude_unset=True) if body and body.policy else None
    rec = await store.runs.resume(run_id, workspace_id=principal.workspace_id, by=principal.actor, policy=policy)
    return rec.to_json()


@router.post("/{run_id}/restart", status_code=201, response_model=schemas.Run, summary="Restart a run afresh")
async def restart_run(run_id: str, principal: Operator, store: StoreDep, request: Request) -> dict[str, Any]:
    """A new run of the same agent (or workflow, or objective) on the same input and limits."""
    src = await store.runs.get(run_id, principal.workspace_id)
    if src.spec.get("kind") in ("workflow", "objective"):
        # Not in the agent registry: start again from the definition the run was started with.
        await check_run_quota(store, principal.workspace_id)
        [rec] = await store.runs.create(
            [
                NewRun(
                    run_id=new_run_id(),
                    workspace_id=principal.workspace_id,
                    agent_name=src.agent_name,
                    input=src.input,
                    spec=src.spec,
                    policy=src.state.policy.to_json(),
                    created_by=principal.actor,
                )
            ]
        )
        return rec.to_json()
    policy = schemas.PolicyIn(**src.state.policy.to_json())
    rec = await create_run(
        store,
        _agents(request),
        principal.workspace_id,
        src.agent_name,
        src.input,
        policy,
        created_by=principal.actor,
        request=request,
    )
    return rec.to_json()


@router.post("/{run_id}/fork", status_code=201, response_model=schemas.Run, summary="Fork a run at an event")
async def fork_run(run_id: str, body: schemas.RunFork, principal: Operator, store: StoreDep) -> dict[str, Any]:
    """A new run whose history is a copy of this run's events up to ``at_seq``."""
    policy = body.policy.model_dump(exclude_unset=True) if body.policy else None
    await check_run_quota(store, principal.workspace_id)
    rec = await store.runs.fork(
        run_id, at_seq=body.at_seq, workspace_id=principal.workspace_id, by=principal.actor, policy=policy
    )
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
