"""AgentMaestro: run LLM agents as durable, deterministic, governed processes.

The public names below are imported on first use (PEP 562), so ``import agentmaestro`` (and any
``agentmaestro.core`` module) loads no database, HTTP or model library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentmaestro._version import __version__

_EXPORTS: dict[str, str] = {
    "Agent": "agentmaestro.agents",
    "AgentRegistry": "agentmaestro.agents",
    "load_agents_dir": "agentmaestro.agents",
    "GateDecision": "agentmaestro.core.gate",
    "GatePolicy": "agentmaestro.core.gate",
    "Message": "agentmaestro.core.messages",
    "ModelRequest": "agentmaestro.core.messages",
    "ModelResponse": "agentmaestro.core.messages",
    "ToolCall": "agentmaestro.core.messages",
    "Usage": "agentmaestro.core.messages",
    "StrictPolicy": "agentmaestro.core.policy",
    "Reconciled": "agentmaestro.core.reconcile",
    "RiskLevel": "agentmaestro.core.risk",
    "EventType": "agentmaestro.core.states",
    "Phase": "agentmaestro.core.states",
    "RunStatus": "agentmaestro.core.states",
    "StepKind": "agentmaestro.core.states",
    "ConfigError": "agentmaestro.errors",
    "ConflictError": "agentmaestro.errors",
    "InvalidTransitionError": "agentmaestro.errors",
    "MaestroError": "agentmaestro.errors",
    "ModelAPIError": "agentmaestro.errors",
    "ModelUnavailableError": "agentmaestro.errors",
    "NotFoundError": "agentmaestro.errors",
    "ToolError": "agentmaestro.errors",
    "ScriptedModel": "agentmaestro.models.scripted",
    "HookEvent": "agentmaestro.sdk",
    "MultiAgentOrchestrator": "agentmaestro.sdk",
    "Orchestrator": "agentmaestro.sdk",
    "RunReport": "agentmaestro.sdk",
    "Tool": "agentmaestro.tools.registry",
    "ToolResult": "agentmaestro.tools.registry",
    "tool": "agentmaestro.tools.registry",
}

__all__ = [
    "Agent",
    "AgentRegistry",
    "ConfigError",
    "ConflictError",
    "EventType",
    "GateDecision",
    "GatePolicy",
    "HookEvent",
    "InvalidTransitionError",
    "MaestroError",
    "Message",
    "ModelAPIError",
    "ModelRequest",
    "ModelResponse",
    "ModelUnavailableError",
    "MultiAgentOrchestrator",
    "NotFoundError",
    "Orchestrator",
    "Phase",
    "Reconciled",
    "RiskLevel",
    "RunReport",
    "RunStatus",
    "ScriptedModel",
    "StepKind",
    "StrictPolicy",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolResult",
    "Usage",
    "load_agents_dir",
    "tool",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentmaestro' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # what type checkers and IDEs see
    from agentmaestro.agents import Agent, AgentRegistry, load_agents_dir
    from agentmaestro.core.gate import GateDecision, GatePolicy
    from agentmaestro.core.messages import Message, ModelRequest, ModelResponse, ToolCall, Usage
    from agentmaestro.core.policy import StrictPolicy
    from agentmaestro.core.reconcile import Reconciled
    from agentmaestro.core.risk import RiskLevel
    from agentmaestro.core.states import EventType, Phase, RunStatus, StepKind
    from agentmaestro.errors import (
        ConfigError,
        ConflictError,
        InvalidTransitionError,
        MaestroError,
        ModelAPIError,
        ModelUnavailableError,
        NotFoundError,
        ToolError,
    )
    from agentmaestro.models.scripted import ScriptedModel
    from agentmaestro.sdk import HookEvent, MultiAgentOrchestrator, Orchestrator, RunReport
    from agentmaestro.tools.registry import Tool, ToolResult, tool
