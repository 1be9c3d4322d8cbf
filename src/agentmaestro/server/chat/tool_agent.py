"""One tool call as a durable, governed run: the agent behind the chat command ``@tool NAME {args}``.

A chat client may ask for a single tool call without a model choosing it. AgentMaestro still runs it
the way it runs every tool call: as a step of a run, through the risk gate (workspace rules plus the
rules of the agent that owns the tool), with approvals, retries and the event log. The run belongs to a
small built-in agent, ``chat-tool.NAME``, whose "model" is deterministic:

* turn 1 proposes exactly one call of the tool with the arguments given in the run's input (a JSON object);
* turn 2 answers with what the call returned (or why it did not run: denied, rejected, failed).

The turn is the number of assistant messages in the conversation, as for the scripted model, so a run
recovered after a crash continues where it left off.
"""

from __future__ import annotations

import json
from typing import Any

from agentmaestro.agents import Agent, AgentRegistry
from agentmaestro.core.decide import DELEGATE_TOOL
from agentmaestro.core.messages import ModelRequest, ModelResponse, ToolCall, Usage
from agentmaestro.core.policy import StrictPolicy
from agentmaestro.errors import ModelAPIError
from agentmaestro.tools.registry import Tool

TOOL_AGENT_PREFIX = "chat-tool."
"""Names of the single-tool agents start with this (``chat-tool.purge_logs``)."""


class ToolCallModel:
    """A deterministic stand-in for a model: calls one tool with the run's input, then reports the result."""

    def __init__(self, tool_name: str) -> None:
        self.tool_name = tool_name

    @property
    def name(self) -> str:
        """``tool:<name>``: no language model is involved."""
        return f"tool:{self.tool_name}"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Turn 1: the tool call; turn 2: the call's outcome as the final answer."""
        turn = sum(1 for m in request.messages if m.role == "assistant")
        if turn == 0:
            task = next((m.content or "" for m in request.messages if m.role == "user"), "")
            arguments = parse_arguments(task)
            if arguments is None:
                raise ModelAPIError(
                    f"the {self.name} runner expects its input to be a JSON object of arguments, got {task[:80]!r}",
                    transient=False,
                )
            call = ToolCall(call_id="call_0", name=self.tool_name, arguments=arguments)
            return ModelResponse(tool_calls=(call,), usage=Usage(), model=self.name, finish_reason="tool_calls")
        result = next((m.content or "" for m in reversed(request.messages) if m.role == "tool"), "")
        return ModelResponse(content=result, usage=Usage(), model=self.name, finish_reason="stop")


def parse_arguments(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text`` (an empty text is ``{}``), or None if it is not one."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def find_tool(registry: AgentRegistry, tool_name: str) -> tuple[Agent, Tool] | None:
    """The first agent (by name) that has a tool called ``tool_name``, and the tool; None if none has it.

    The engine's own ``delegate`` tool and the single-tool agents themselves are not candidates.
    """
    if tool_name == DELEGATE_TOOL:
        return None
    for name in registry.names():
        if name.startswith(TOOL_AGENT_PREFIX):
            continue
        agent = registry.get(name)
        found = agent.tool_map().get(tool_name)
        if found is not None:
            return agent, found
    return None


def tool_agent_name(tool_name: str) -> str:
    """The name of the single-tool agent of ``tool_name``."""
    return f"{TOOL_AGENT_PREFIX}{tool_name}"


def ensure_tool_agent(registry: AgentRegistry, tool_name: str, *, workspace_id: str) -> Agent | None:
    """Register (for ``workspace_id``) and return the single-tool agent of ``tool_name``; None if no agent has it.

    The tool is looked for among the agents the workspace sees, and the single-tool agent is registered for that
    workspace only: another workspace neither lists it nor can start it until it asks for the tool itself. The
    agent carries the owning agent's gate rules, so the call is governed as strictly as when the owning agent's
    model proposes it (the workspace's rules apply to every run anyway).
    """
    found = find_tool(registry.visible_to(workspace_id), tool_name)
    if found is None:
        return None
    owner, tool = found
    name = tool_agent_name(tool_name)
    if name in registry:
        existing = registry.get(name)
        if existing.tool_map().get(tool_name) is tool and existing.gate == owner.gate:
            return registry.register(existing, workspace_id=workspace_id)
    agent = Agent(
        name=name,
        model=ToolCallModel(tool_name),
        instructions="",
        description=f"Runs the tool {tool_name!r} once, as asked in chat (@tool); gate rules of agent {owner.name!r}.",
        tools=[tool],
        policy=StrictPolicy(max_steps=6, max_tool_calls=1),
        gate=owner.gate,
        max_attempts=2,
        retry_backoff_s=0.0,
    )
    return registry.register(agent, workspace_id=workspace_id)
