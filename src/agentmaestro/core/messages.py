"""Conversation and model-call value types shared by the engine, the models and the tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """A tool call proposed by a model."""

    call_id: str
    """Provider-assigned id that ties the tool result back to the call."""
    name: str
    """Name of the tool to call."""
    arguments: dict[str, Any] = field(default_factory=dict)
    """Decoded JSON arguments, exactly as the model proposed them (not yet validated)."""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form, as stored in events."""
        return {"call_id": self.call_id, "name": self.name, "arguments": self.arguments}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToolCall:
        """Inverse of :meth:`to_json`."""
        return cls(call_id=str(data["call_id"]), name=str(data["name"]), arguments=dict(data.get("arguments") or {}))


@dataclass(frozen=True, kw_only=True)
class Message:
    """One chat message in a model's context."""

    role: Role
    """Who speaks: system, user, assistant or tool."""
    content: str | None = None
    """Text content; may be None for an assistant message that only calls tools."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Tool calls made by an assistant message."""
    tool_call_id: str | None = None
    """For tool messages: the id of the call this message answers."""
    name: str | None = None
    """For tool messages: the tool's name."""


@dataclass(frozen=True, kw_only=True)
class Usage:
    """Token usage of one model call."""

    input_tokens: int = 0
    """Prompt tokens."""
    output_tokens: int = 0
    """Completion tokens."""

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, kw_only=True)
class ToolSpec:
    """What a model is told about a tool: its name, description and JSON-schema parameters."""

    name: str
    """Tool name, unique within an agent."""
    description: str
    """One-paragraph description shown to the model."""
    parameters: dict[str, Any]
    """JSON schema (type object) of the arguments."""


@dataclass(frozen=True, kw_only=True)
class ModelRequest:
    """Everything a model needs for one call."""

    model: str
    """Provider-specific model name (the part after ``provider:``)."""
    messages: tuple[Message, ...]
    """The conversation so far, system message first."""
    tools: tuple[ToolSpec, ...] = ()
    """Tools the model may call."""
    run_id: str | None = None
    """The run this call belongs to (for tracing and scripted templates)."""
    max_output_tokens: int | None = None
    """Upper bound on completion tokens, when the caller wants one."""
    timeout_s: float | None = None
    """Per-call timeout in seconds."""


@dataclass(frozen=True, kw_only=True)
class ModelResponse:
    """A model's answer: text, tool calls, and token usage."""

    content: str | None = None
    """Assistant text. A response with text and no tool calls is a final answer."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Tool calls the model wants made, in order."""
    usage: Usage = field(default_factory=Usage)
    """Token usage reported by the provider."""
    model: str = ""
    """The model that answered, as ``provider:name``."""
    finish_reason: str | None = None
    """Provider's finish reason, when given."""
