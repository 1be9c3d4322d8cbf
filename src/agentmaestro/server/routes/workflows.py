"""/v1/workflows: validate, store, list, get, run, delete and generate declarative workflows (docs/workflows.md).

A workspace sees the server's folder workflows (``MAESTRO_WORKFLOWS_DIR`` or ``./workflows``, checked
against the server's agents and discovered on first use; the embedded worker is given them then) plus
its own stored workflows; a stored workflow shadows a folder one of the same name in its workspace
only. Saving, deleting and generating need an operator key; reading needs a viewer key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from agentmaestro.errors import NotFoundError
from agentmaestro.server import schemas
from agentmaestro.server.auth import Operator, Viewer, get_store
from agentmaestro.server.errors import APIError
from agentmaestro.server.provider_access import ProviderAccess
from agentmaestro.server.routes.runs import check_workflow_models_here
from agentmaestro.server.schemas import Strict
from agentmaestro.service.workflows import StartWorkflow, start_workflow
from agentmaestro.workflows import generate as gen
from agentmaestro.workflows import stored
from agentmaestro.workflows.spec import WorkflowError, WorkflowRegistry, load_workflows_dir, validate_text

router = APIRouter(prefix="/v1", tags=["workflows"])

SERVER_SIDE_PROVIDERS = ("scripted", "local")
"""Model providers that read files on the server: usable as the server's planner role, not named by a caller."""


class ValidateBody(Strict):
    """A workflow document to check."""

    yaml: str = Field(max_length=1_000_000, description="The workflow as YAML (or JSON) text.")


class SaveBody(Strict):
    """A workflow document to store in the key's workspace (replaces the stored one of the same name)."""

    yaml: str = Field(min_length=1, max_length=1_000_000, description="The workflow as YAML (or JSON) text.")


class RunBody(Strict):
    """Input of a new workflow run."""

    input: str = Field(max_length=1_000_000)


class GenerateBody(Strict):
    """What the workflow should do; the model writes it, the server validates it."""

    goal: str = Field(min_length=1, max_length=gen.MAX_GOAL_CHARS, description="The goal, in natural language.")
    model: str | None = Field(
        default=None,
        min_length=3,
        max_length=200,
        description="Model string (provider:name or role:NAME); default: the server's planner role.",
    )
    save: bool = Field(default=False, description="Store the workflow in the workspace when it is valid.")
    max_repairs: int = Field(default=gen.MAX_REPAIRS, ge=0, le=gen.MAX_REPAIRS, description="Repairs allowed.")


class ProblemOut(BaseModel):
    """One validation problem."""

    path: str
    line: int | None
    message: str


class ValidationReport(BaseModel):
    """Whether a document is a valid workflow, and every problem with its line."""

    valid: bool
    name: str | None
    problems: list[ProblemOut]


class WorkflowSummary(BaseModel):
    """A workflow the workspace can run."""

    name: str
    description: str
    nodes: list[str]
    agents: list[str]
    source: Literal["folder", "stored"]
    location: str | None = Field(description="The folder file, or stored:NAME@vVERSION.")
    version: int | None = Field(description="Saves of a stored workflow (null for folder ones).")
    updated_at: float | None
    updated_by: str | None


class WorkflowDetail(WorkflowSummary):
    """A workflow with its definition (and, when stored, its YAML text)."""

    definition: dict[str, Any]
    yaml: str | None
    created_at: float | None
    created_by: str | None


class WorkflowDeleted(BaseModel):
    """A stored workflow that was deleted."""

    name: str
    version: int
    deleted: bool = True


class AttemptOut(BaseModel):
    """One answer of the model."""

    number: int
    yaml: str
    valid: bool
    problems: list[ProblemOut]


class UsageOut(BaseModel):
    """Tokens spent writing the workflow."""

    input_tokens: int
    output_tokens: int


class Generated(BaseModel):
    """A generated workflow for review: the YAML, its validation report and every attempt."""

    goal: str
    model: str
    valid: bool
    name: str | None
    yaml: str
    problems: list[ProblemOut]
    attempts: list[AttemptOut]
    usage: UsageOut
    saved: WorkflowDetail | None = Field(default=None, description="The stored workflow, when save was asked.")


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


def _invalid(exc: WorkflowError) -> APIError:
    return APIError(422, "invalid_workflow", str(exc))


@router.post("/workflows/validate", response_model=ValidationReport, summary="Validate a workflow")
async def validate_workflow(body: ValidateBody, principal: Viewer, request: Request) -> dict[str, Any]:
    """Every problem of a workflow document, with its YAML line (agents checked against this server's)."""
    wf, problems = validate_text(body.yaml, agents=request.app.state.agents.visible_to(principal.workspace_id))
    return {"valid": wf is not None, "name": wf.name if wf else None, "problems": [p.to_json() for p in problems]}


@router.post("/workflows/generate", response_model=Generated, summary="Generate a workflow from a goal")
async def generate_workflow(body: GenerateBody, principal: Operator, request: Request) -> dict[str, Any]:
    """A model writes a workflow for the goal; it is validated and repaired by the model at most twice.

    Returned for review; stored in the workspace only with ``save: true``. Still invalid after the
    repairs: 422 with every problem in the message.
    """
    if body.model is not None and body.model.partition(":")[0] in SERVER_SIDE_PROVIDERS:
        raise APIError(
            400,
            "invalid_model",
            f"model {body.model!r} reads files on the server: set it as the server's planner role "
            "(MAESTRO_MODEL_PLANNER) instead of naming it in a request",
        )
    if body.model is not None:
        await ProviderAccess.from_env().check_model(body.model)
    agents = request.app.state.agents.visible_to(principal.workspace_id)
    try:
        result = await gen.generate(body.goal, agents=agents, model=body.model, max_repairs=body.max_repairs)
    except gen.GenerationError as exc:
        raise APIError(422, "invalid_workflow", str(exc)) from None
    out = result.to_json()
    store = get_store(request)
    if body.save:
        entry = await stored.save(store, principal.workspace_id, result.yaml, agents=agents, actor=principal.actor)
        out["saved"] = entry.detail()
    await store.audit.append(
        principal.workspace_id,
        actor=principal.actor,
        action="workflow.generate",
        target=result.workflow.name if result.workflow else None,
        detail={"model": result.model, "attempts": len(result.attempts), "saved": body.save},
    )
    return out


@router.get("/workflows", response_model=list[WorkflowSummary], summary="List workflows")
async def list_workflows(principal: Viewer, request: Request) -> list[dict[str, Any]]:
    """Workflows the key's workspace can run: the server's folder ones and the workspace's stored ones."""
    entries = await stored.visible(get_store(request), principal.workspace_id, _workflows(request))
    return [e.summary() for e in entries]


@router.post("/workflows", response_model=WorkflowDetail, summary="Store a workflow")
async def save_workflow(body: SaveBody, principal: Operator, request: Request) -> dict[str, Any]:
    """Validate a workflow and store it in the workspace (a new version when the name exists).

    Invalid documents are refused with 422; the message lists every problem with its line.
    """
    try:
        entry = await stored.save(
            get_store(request),
            principal.workspace_id,
            body.yaml,
            agents=request.app.state.agents.visible_to(principal.workspace_id),
            actor=principal.actor,
        )
    except WorkflowError as exc:
        raise _invalid(exc) from None
    return entry.detail()


@router.get("/workflows/{name}", response_model=WorkflowDetail, summary="Get a workflow")
async def get_workflow(name: str, principal: Viewer, request: Request) -> dict[str, Any]:
    """One workflow's definition (stored in the workspace, else the server's folder one)."""
    entry = await stored.find(get_store(request), principal.workspace_id, name, _workflows(request))
    return entry.detail()


@router.post("/workflows/{name}/runs", status_code=201, response_model=schemas.Run, summary="Run a workflow")
async def run_workflow(name: str, body: RunBody, principal: Operator, request: Request) -> dict[str, Any]:
    """Start a workflow run; its nodes run as child runs. Poll or stream it like any run.

    The run keeps the definition it started with: saving a new version does not change it.
    """
    store = get_store(request)
    entry = await stored.find(store, principal.workspace_id, name, _workflows(request))
    await check_workflow_models_here(request, entry.workflow)
    rec = await start_workflow(store, StartWorkflow(entry=entry, input=body.input), principal.as_actor())
    return rec.to_json()


@router.delete("/workflows/{name}", response_model=WorkflowDeleted, summary="Delete a stored workflow")
async def delete_workflow(name: str, principal: Operator, request: Request) -> dict[str, Any]:
    """Delete the workspace's stored workflow (runs already started go on); folder workflows cannot be deleted."""
    store = get_store(request)
    try:
        row = await store.workflows.delete(principal.workspace_id, name, actor=principal.actor)
    except NotFoundError:
        if name in _workflows(request):
            raise APIError(
                409, "conflict", f"workflow {name!r} comes from the server's folder and cannot be deleted"
            ) from None
        raise
    return {"name": row["name"], "version": row["version"], "deleted": True}
