"""Memory tools: an agent remembers facts across runs, per agent or per workspace, with provenance.

Entries record the run and agent that last wrote them. A workspace never sees another's entries:
the engine binds the tools to the run's own workspace; the model chooses only the scope
(``agent`` for this agent's own notes, ``workspace`` for notes shared by the workspace's agents).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from agentmaestro.core.risk import RiskLevel
from agentmaestro.errors import NotFoundError, ToolError
from agentmaestro.tools.context import ToolContext
from agentmaestro.tools.registry import Tool, tool

Scope = Literal["agent", "workspace"]


@dataclass(frozen=True, kw_only=True)
class StoreMemory:
    """Memory bound to one run: its workspace, its agent, its run id as provenance."""

    store: Any
    workspace_id: str
    agent: str
    run_id: str

    def _scope(self, scope: str) -> str:
        return "workspace" if scope == "workspace" else f"agent:{self.agent}"

    async def put(self, scope: str, key: str, value: str) -> dict[str, Any]:
        """Store an entry."""
        return dict(
            await self.store.memory.put(
                self.workspace_id, self._scope(scope), key, value, run_id=self.run_id, agent=self.agent
            )
        )

    async def get(self, scope: str, key: str) -> dict[str, Any]:
        """Read an entry."""
        return dict(await self.store.memory.get(self.workspace_id, self._scope(scope), key))

    async def list(self, scope: str, prefix: str) -> list[dict[str, Any]]:
        """List entries."""
        return list(await self.store.memory.page(self.workspace_id, self._scope(scope), prefix))

    async def delete(self, scope: str, key: str) -> bool:
        """Delete an entry."""
        return bool(await self.store.memory.delete(self.workspace_id, self._scope(scope), key))


def _memory(ctx: ToolContext) -> Any:
    if ctx.memory is None:
        raise ToolError("memory is not available to this run")
    return ctx.memory


@tool(risk=RiskLevel.SAFE, idempotent=True)
async def remember(key: str, value: str, ctx: ToolContext, scope: Scope = "agent") -> str:
    """Store a fact under a key for later runs (scope 'agent': your own notes; 'workspace': shared)."""
    await _memory(ctx).put(scope, key, value)
    return f"remembered {key!r} ({scope})"


@tool(risk=RiskLevel.SAFE, idempotent=True)
async def recall(key: str, ctx: ToolContext, scope: Scope = "agent") -> str:
    """Read a fact stored earlier, with which run wrote it."""
    try:
        entry = await _memory(ctx).get(scope, key)
    except NotFoundError:
        return f"nothing remembered under {key!r} ({scope})"
    return json.dumps({"key": key, "value": entry["value"], "written_by_run": entry["run_id"]})


@tool(risk=RiskLevel.SAFE, idempotent=True)
async def list_memories(ctx: ToolContext, scope: Scope = "agent", prefix: str = "") -> str:
    """List remembered keys (optionally those starting with a prefix)."""
    entries = await _memory(ctx).list(scope, prefix)
    return json.dumps([{"key": e["key"], "written_by_run": e["run_id"]} for e in entries])


@tool(risk=RiskLevel.ELEVATED, idempotent=True)
async def forget(key: str, ctx: ToolContext, scope: Scope = "agent") -> str:
    """Delete a remembered fact."""
    gone = await _memory(ctx).delete(scope, key)
    return f"forgot {key!r}" if gone else f"nothing remembered under {key!r}"


MEMORY_TOOLS: dict[str, Tool] = {t.name: t for t in (remember, recall, list_memories, forget)}
"""The memory tools by name; agent YAML refers to them as ``builtin:remember`` etc."""


def memory_tools() -> list[Tool]:
    """All memory tools, for ``Agent(tools=[*memory_tools(), ...])``."""
    return list(MEMORY_TOOLS.values())
