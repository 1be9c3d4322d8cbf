"""Agents registered for a workspace are seen by that workspace only (the chat's @tool agents)."""

from __future__ import annotations

import asyncio

import pytest

from agentmaestro import Agent, ScriptedModel, tool
from agentmaestro.actor import Actor, Role
from agentmaestro.agents import AgentRegistry
from agentmaestro.server.chat.tool_agent import ensure_tool_agent
from agentmaestro.service.plane.local import LocalPlane
from agentmaestro.workflows.spec import WorkflowRegistry


@tool
def recall(topic: str) -> str:
    """Remember something about a topic."""
    return f"about {topic}"


def registry() -> AgentRegistry:
    return AgentRegistry([Agent(name="memo", model=ScriptedModel(["ok"]), tools=[recall])])


def test_visible_to_keeps_workspace_registrations_apart() -> None:
    agents = registry()
    mine = ensure_tool_agent(agents, "recall", workspace_id="ws-a")
    assert mine is not None and mine.name == "chat-tool.recall"
    assert "chat-tool.recall" in agents  # the worker runs it, whatever the workspace
    assert agents.visible_to("ws-a").names() == ["chat-tool.recall", "memo"]
    assert agents.visible_to("ws-b").names() == ["memo"]
    again = ensure_tool_agent(agents, "recall", workspace_id="ws-b")
    assert again is mine  # the same agent, now registered for both
    assert agents.visible_to("ws-b").names() == ["chat-tool.recall", "memo"]
    assert agents.visible_to("ws-c").names() == ["memo"]
    agents.register(mine)  # registered without a workspace: shared again
    assert "chat-tool.recall" in agents.visible_to("ws-c")


def test_mcp_tools_see_only_the_callers_agents() -> None:
    agents = registry()
    ensure_tool_agent(agents, "recall", workspace_id="ws-a")

    def plane(workspace: str) -> LocalPlane:
        actor = Actor(name="key:t", workspace_id=workspace, role=Role.operator, quotas=True)
        return LocalPlane(lambda: pytest.fail("no store needed"), actor, lambda: agents, WorkflowRegistry)

    assert sorted(a["name"] for a in asyncio.run(plane("ws-a").list_agents())) == ["chat-tool.recall", "memo"]
    assert [a["name"] for a in asyncio.run(plane("ws-b").list_agents())] == ["memo"]
