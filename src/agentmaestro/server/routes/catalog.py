"""/v1/agents, /v1/tools and /v1/workers: what this server can run, and who runs it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from agentmaestro.agents import AgentRegistry
from agentmaestro.server import schemas
from agentmaestro.server.auth import Operator, Principal, Viewer, get_store
from agentmaestro.server.errors import APIError

router = APIRouter(prefix="/v1", tags=["agents and tools"])


def _registry(request: Request, principal: Principal) -> AgentRegistry:
    """The agents the caller's workspace sees (shared ones and those registered for it, such as chat @tool agents)."""
    registry: AgentRegistry = request.app.state.agents
    return registry.visible_to(principal.workspace_id)


@router.get("/agents", response_model=list[schemas.Agent], summary="List agents")
async def list_agents(principal: Viewer, request: Request) -> list[dict[str, Any]]:
    """Agents this server's workers can run."""
    return [a.spec() for a in _registry(request, principal)]


@router.get("/agents/{name}", response_model=schemas.Agent, summary="Get an agent")
async def get_agent(name: str, principal: Viewer, request: Request) -> dict[str, Any]:
    """One agent's definition."""
    registry = _registry(request, principal)
    if name not in registry:
        raise APIError(404, "not_found", f"agent {name!r} not found")
    return registry.get(name).spec()


@router.get("/tools", response_model=list[schemas.Tool], summary="List tools")
async def list_tools(principal: Viewer, request: Request) -> list[dict[str, Any]]:
    """Every tool some agent can call, with its risk level and schema."""
    tools: dict[str, dict[str, Any]] = {}
    for agent in _registry(request, principal):
        for t in agent.tool_map().values():
            entry = tools.setdefault(
                t.name,
                {
                    "name": t.name,
                    "description": t.description,
                    "risk": t.risk.name,
                    "idempotent": t.idempotent,
                    "reconciles": bool(getattr(t, "can_reconcile", False)),
                    "idempotency_key": bool(getattr(t, "idempotency_key", False)),
                    "timeout_s": t.timeout_s,
                    "parameters": t.spec().parameters,
                    "agents": [],
                },
            )
            entry["agents"].append(agent.name)
    return sorted(tools.values(), key=lambda t: t["name"])


@router.get("/workers", response_model=list[schemas.Worker], summary="List live workers")
async def list_workers(principal: Operator, request: Request) -> list[dict[str, Any]]:
    """Worker processes on this database that claim runs (this server's embedded one too), oldest first.

    Each refreshes its presence every heartbeat interval; one not heard of within its lease length is left out.
    ``maestro --server URL run`` asks this to say whether a queued run will be picked up.
    """
    return await get_store(request).workers.alive()
