"""The FastAPI application: the REST API and, by default, an embedded worker in the same process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response

from agentmaestro._version import __version__
from agentmaestro.agents import AgentRegistry
from agentmaestro.ceilings import quota_ceiling
from agentmaestro.engine import deltas
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.server import errors, streams
from agentmaestro.server.auth import FailureThrottle, authenticate
from agentmaestro.server.limits import limit_json_depth
from agentmaestro.server.mcp.http import mount_mcp
from agentmaestro.server.metrics import CONTENT_TYPE_LATEST, HTTPMetricsMiddleware, Metrics
from agentmaestro.server.quotas import RateLimiter
from agentmaestro.server.routes import admin, catalog, human, runs, usage, workflows
from agentmaestro.server.routes import chat as chat_routes
from agentmaestro.server.routes import credentials as credentials_routes
from agentmaestro.server.routes import knowledge as knowledge_routes
from agentmaestro.server.routes import objectives as objectives_routes
from agentmaestro.server.routes import webhooks as webhooks_routes
from agentmaestro.server.ui import router as ui_router
from agentmaestro.store.base import Store
from agentmaestro.workflows.spec import WorkflowRegistry

log = logging.getLogger("agentmaestro.server")


def create_app(
    database_url: str | None = None,
    *,
    agents: AgentRegistry | None = None,
    worker: bool = True,
    worker_config: WorkerConfig | None = None,
    store: Store | None = None,
    rate_limit_per_min: int | None = None,
    workflow_registry: WorkflowRegistry | None = None,
) -> FastAPI:
    """Build the app.

    Args:
        database_url: Database to serve (default: ``MAESTRO_DATABASE_URL`` or ``./.maestro/maestro.db``).
        agents: Agents the API may start and the embedded worker runs.
        worker: Run an embedded worker (set False for an API tier beside ``maestro worker`` processes).
        worker_config: Settings of the embedded worker.
        store: An already open store to use instead of opening ``database_url`` (not closed by the app).
        rate_limit_per_min: Requests per minute per API key (default: ``MAESTRO_RATE_LIMIT_PER_MIN`` or 600;
            0 disables the limit).
        workflow_registry: Workflows the API lists and runs, and the embedded worker executes (default:
                found in ``$MAESTRO_WORKFLOWS_DIR`` or ``./workflows`` on first use).
    """
    quota_ceiling()  # a bad MAESTRO_MAX_* is a configuration error at start, not on the first run
    registry = agents or AgentRegistry()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = store is None
        app.state.store = store or await asyncio.to_thread(Store.open, database_url)
        await app.state.store.workspaces.ensure()
        # Live model text deltas for viewers (engine/deltas.py): NOTIFY across processes on PostgreSQL.
        pg = app.state.store.dialect == "postgresql"
        deltas.BUS.install(pg_url=app.state.store.url if pg else None)
        app.state.store.listen_deltas(deltas.BUS.on_notify)
        app.state.worker = None
        task: asyncio.Task[None] | None = None
        if worker:
            app.state.worker = Worker(
                app.state.store,
                registry,
                config=worker_config,
                listeners=[metrics.on_events],
                workflows=workflow_registry,
            )
            task = asyncio.create_task(app.state.worker.run())
        else:  # outgoing webhooks (docs/notifications.md): the embedded worker runs them, else the API tier does
            from agentmaestro.notify.webhooks import Dispatcher

            app.state.webhooks = Dispatcher(app.state.store)
            task = asyncio.create_task(app.state.webhooks.run())
        try:
            async with app.state.mcp.running():  # the /mcp endpoint's session manager (docs/mcp.md)
                yield
        finally:
            if task is not None:
                (app.state.worker or app.state.webhooks).stop()
                await task
            deltas.BUS.uninstall()
            if own:
                await app.state.store.close()

    app = FastAPI(
        title="AgentMaestro",
        version=__version__,
        description=(
            "Control plane for durable, governed AI agent runs. Authenticate with `Authorization: Bearer <key>`."
        ),
        lifespan=lifespan,
        dependencies=[Depends(limit_json_depth)],  # every route: JSON bodies nested too deeply are 422
    )
    app.state.agents = registry
    if workflow_registry is not None:
        app.state.workflows = workflow_registry
    app.state.metrics = metrics
    app.add_middleware(HTTPMetricsMiddleware, metrics=metrics)  # request count, errors, latency by route
    app.state.rate_limiter = RateLimiter.from_env(rate_limit_per_min)
    app.state.auth_failures = FailureThrottle()
    errors.install(app, authenticate=authenticate)
    app.include_router(runs.router)
    app.include_router(human.router)
    app.include_router(catalog.router)
    app.include_router(streams.router)
    app.include_router(admin.router)
    app.include_router(usage.router)
    app.include_router(workflows.router)
    app.include_router(chat_routes.router)  # OpenAI-compatible chat (docs/chat-api.md)
    app.include_router(credentials_routes.router)  # credentials and OAuth (docs/credentials.md)
    app.include_router(knowledge_routes.router)  # knowledge collections and search (docs/knowledge.md)
    app.include_router(webhooks_routes.router)  # outgoing webhooks and approval links (docs/notifications.md)
    app.include_router(objectives_routes.router)  # objectives: planned task graphs (docs/objectives.md)
    app.include_router(ui_router)  # the dashboard at / (docs/dashboard.md)
    mount_mcp(app)  # MCP (streamable HTTP) at /mcp, behind the API keys (docs/mcp.md)

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, Any]:
        """The process is up."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["ops"], summary="Readiness", responses={503: {"description": "not ready"}})
    async def readyz() -> Any:
        """The database answers and its schema is current."""
        st: Store = app.state.store
        try:
            await st.runs.count_by_status(None)
            await asyncio.to_thread(st.check_schema)
        except Exception as exc:
            return JSONResponse(
                errors.error_body("not_ready", f"{type(exc).__name__}: {exc}".splitlines()[0]), status_code=503
            )
        return {"status": "ready"}

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics"}},
    )
    async def prometheus_metrics() -> Response:
        """Runs by status and queue depth (from the database), steps, tool calls, latency, tokens, cost."""
        body = await metrics.render(app.state.store)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = errors.document(default_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
