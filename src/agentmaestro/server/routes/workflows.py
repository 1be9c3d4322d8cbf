"""/v1/workflows: validate, list, get and run declarative workflows (docs/workflows.md).

The server's workflows are those of ``MAESTRO_WORKFLOWS_DIR`` (or ``./workflows``), checked against the
server's agents and discovered on first use; the embedded worker is given them then.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from agentmaestro.server.auth import Operator, Viewer, get_store
from agentmaestro.server.errors import APIError
from agentmaestro.server.quotas import check_run_quota
from agentmaestro.server.schemas import Strict
from agentmaestro.store.records import NewRun, new_run_id
from agentmaestro.workflows.spec import Workflow, WorkflowRegistry, load_workflows_dir, validate_text

router = APIRouter(prefix="/v1", tags=["workflows"])


class ValidateBody(Strict):
    """A workflow document to check."""

    yaml: str = Field(max_length=1_000_000, description="The workflow as YAML (or JSON) text.")


class RunBody(Strict):
    """Input of a new workflow run."""

    input: str = Field(max_length=1_000_000)


def _workflows(request: Request) -> WorkflowRegistry:
    state = request.app.state
    registry: WorkflowRegistry | None = getattr(state, "workflows", None)
    if registry is None:
        env = os.environ.get("MAESTRO_WORKFLOWS_DIR")
        folder = Path(env) if env else Path("workflows")
        registry = load_workflows_dir(folder, state.agents) if folder.is_dir() else WorkflowRegistry()
        state.workflows = registry
        worker = getattr(state, "worker", None)
        if worker is not None and worker.workflows is None:
            worker.workflows = registry  # the embedded worker claims these workflows' runs from now on
    return registry


def _summary(wf: Workflow, source: str | None) -> dict[str, Any]:
    return {
        "name": wf.name,
        "description": wf.description,
        "nodes": [n.id for n in wf.nodes],
        "agents": wf.agent_names(),
        "source": source,
    }


@router.post("/workflows/validate", summary="Validate a workflow")
async def validate_workflow(body: ValidateBody, principal: Viewer, request: Request) -> dict[str, Any]:
    """Every problem of a workflow document, with its YAML line (agents checked against this server's)."""
    wf, problems = validate_text(body.yaml, agents=request.app.state.agents)
    return {"valid": wf is not None, "name": wf.name if wf else None, "problems": [p.to_json() for p in problems]}


@router.get("/workflows", summary="List workflows")
async def list_workflows(principal: Viewer, request: Request) -> list[dict[str, Any]]:
    """Workflows this server can run."""
    registry = _workflows(request)
    return [_summary(wf, registry.source(wf.name)) for wf in registry]


@router.get("/workflows/{name}", summary="Get a workflow")
async def get_workflow(name: str, principal: Viewer, request: Request) -> dict[str, Any]:
    """One workflow's definition."""
    registry = _workflows(request)
    if name not in registry:
        raise APIError(404, "not_found", f"workflow {name!r} not found")
    wf = registry.get(name)
    return {**_summary(wf, registry.source(name)), "definition": wf.model_dump(mode="json", exclude_none=True)}


@router.post("/workflows/{name}/runs", status_code=201, summary="Run a workflow")
async def run_workflow(name: str, body: RunBody, principal: Operator, request: Request) -> dict[str, Any]:
    """Start a workflow run; its nodes run as child runs. Poll or stream it like any run."""
    registry = _workflows(request)
    if name not in registry:
        raise APIError(404, "not_found", f"workflow {name!r} not found")
    wf = registry.get(name)
    store = get_store(request)
    await check_run_quota(store, principal.workspace_id)
    [rec] = await store.create_runs(
        [
            NewRun(
                run_id=new_run_id(),
                workspace_id=principal.workspace_id,
                agent_name=wf.name,
                input=body.input,
                spec=wf.to_spec(registry.source(name)),
                policy=wf.policy.to_overrides() if wf.policy else {},
            )
        ]
    )
    await store.audit(
        principal.workspace_id, actor=principal.actor, action="workflow.run", target=rec.run_id, detail={"name": name}
    )
    return rec.to_json()
