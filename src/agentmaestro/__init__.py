"""AgentMaestro: run LLM agents as durable, deterministic, governed processes."""

from __future__ import annotations

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
    NotFoundError,
    ToolError,
)
from agentmaestro.models.scripted import ScriptedModel
from agentmaestro.sdk import HookEvent, MultiAgentOrchestrator, Orchestrator, RunReport
from agentmaestro.tools.registry import Tool, ToolResult, tool

__version__ = "0.1.0"

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
