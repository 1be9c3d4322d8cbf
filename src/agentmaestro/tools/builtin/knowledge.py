"""Knowledge tools: ``search_knowledge`` (SAFE) retrieves cited passages; ``add_knowledge`` (ELEVATED) adds a note.

Both work only on the calling run's own workspace (the engine binds the workspace; the model names only a
collection). Reference them from agent YAML by import path::

    tools:
      - agentmaestro.tools.builtin.knowledge:search_knowledge
      - agentmaestro.tools.builtin.knowledge:add_knowledge
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from agentmaestro.core.risk import RiskLevel
from agentmaestro.errors import ConfigError, ModelAPIError, NotFoundError, ToolError
from agentmaestro.tools.context import ToolContext
from agentmaestro.tools.registry import Tool, tool

if TYPE_CHECKING:
    from agentmaestro.knowledge.base import KnowledgeBase

__all__ = ["KNOWLEDGE_TOOLS", "add_knowledge", "search_knowledge"]


def _knowledge(ctx: ToolContext) -> KnowledgeBase:
    from agentmaestro.knowledge.base import knowledge_for

    # The engine gives every run a workspace-bound memory that carries the run's store.
    store = getattr(ctx.memory, "store", None)
    if store is None:
        raise ToolError("knowledge is not available to this run (it runs without a database)")
    return knowledge_for(store)


@tool(risk=RiskLevel.SAFE, idempotent=True)
async def search_knowledge(
    query: Annotated[str, Field(min_length=1, max_length=2000, description="What to look for, in plain words.")],
    collection: Annotated[str, Field(min_length=1, max_length=100, description="The knowledge collection's name.")],
    ctx: ToolContext,
    k: Annotated[int, Field(ge=1, le=20, description="How many passages to return.")] = 5,
) -> str:
    """Search a knowledge collection of your workspace; passages come numbered [1], [2], ... with their source.

    Cite the passages you use by their number, e.g. "Refunds take 14 days [1]".
    """
    from agentmaestro.knowledge.base import format_passages

    kb = _knowledge(ctx)
    try:
        passages = await kb.search(ctx.workspace_id, collection, query, k=k)
    except NotFoundError:
        names = [c["name"] for c in await kb.list_collections(ctx.workspace_id)]
        raise ToolError(f"no knowledge collection {collection!r}; available: {', '.join(names) or 'none'}") from None
    except (ConfigError, ModelAPIError) as exc:
        raise ToolError(str(exc)) from None
    return format_passages(query, collection, passages)


@tool(risk=RiskLevel.ELEVATED, idempotent=True)
async def add_knowledge(
    collection: Annotated[str, Field(min_length=1, max_length=100, description="The knowledge collection's name.")],
    source: Annotated[str, Field(min_length=1, max_length=300, description="A name for the note, e.g. 'notes/q3.md'.")],
    text: Annotated[str, Field(min_length=1, max_length=200_000, description="The text to add (Markdown welcome).")],
    ctx: ToolContext,
) -> str:
    """Add (or replace) a text document in a knowledge collection of your workspace, so later searches find it."""
    kb = _knowledge(ctx)
    try:
        result = await kb.ingest_text(
            ctx.workspace_id, collection, source, text, created_by=f"agent:{ctx.agent}", created_by_run=ctx.run_id
        )
    except NotFoundError:
        raise ToolError(f"no knowledge collection {collection!r}") from None
    except (ConfigError, ModelAPIError) as exc:
        raise ToolError(str(exc)) from None
    return f"{result.status} {source!r} in {collection!r} ({result.chunks} chunks)"


KNOWLEDGE_TOOLS: dict[str, Tool] = {t.name: t for t in (search_knowledge, add_knowledge)}
"""The knowledge tools by name."""
