"""LangChain chat models as AgentMaestro models and LangChain tools as governed tools, end to end.

Uses langchain-core's fake chat models (no network) and runs through ``agentmaestro.Orchestrator`` on an SQLite
file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core", reason="the 'langchain' extra is not installed")

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import StructuredTool
from langchain_core.tools import tool as lc_tool
from pydantic import BaseModel, Field

from agentmaestro import Agent, EventType, Orchestrator, RiskLevel, RunStatus
from agentmaestro.adapters import LangChainModel, langchain_tool
from agentmaestro.adapters.langchain import LangChainModelError, to_langchain_messages
from agentmaestro.core.messages import Message, ModelRequest, ToolCall, ToolSpec
from agentmaestro.engine.worker import WorkerConfig
from agentmaestro.errors import ConfigError, ModelAPIError
from agentmaestro.models.base import Model

CALLS: list[tuple[str, dict[str, Any]]] = []


@lc_tool
def get_weather(city: str, unit: str = "celsius") -> str:
    """Current weather for a city."""
    CALLS.append(("get_weather", {"city": city, "unit": unit}))
    return f"{city}: 21 degrees {unit}, sunny"


class DeleteArgs(BaseModel):
    path: str = Field(description="File to delete.")
    force: bool = Field(default=False, description="Delete even if read-only.")


async def _delete(path: str, force: bool = False) -> str:
    CALLS.append(("delete_file", {"path": path, "force": force}))
    return f"deleted {path}"


delete_file = StructuredTool.from_function(
    coroutine=_delete, name="delete_file", description="Delete a file.", args_schema=DeleteArgs
)


SEEN: list[list[BaseMessage]] = []
BOUND: list[list[dict[str, Any]]] = []


class RecordingChatModel(FakeMessagesListChatModel):
    """A fake chat model that supports bind_tools and records what it was sent (in SEEN and BOUND)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        BOUND.append(list(tools))
        return self.bind(tools=list(tools), **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        SEEN.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def _call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


@pytest.fixture(autouse=True)
def _clear() -> None:
    CALLS.clear()
    SEEN.clear()
    BOUND.clear()


@pytest.fixture
def orch(tmp_path: Path) -> Iterator[Orchestrator]:
    config = WorkerConfig(poll_interval_s=0.05, transient_backoff_s=0.01)
    with Orchestrator(database_url=f"sqlite:///{tmp_path / 'lc.db'}", config=config) as o:
        yield o


# ------------------------------------------------------------------------------------------ model


def test_model_protocol_and_name() -> None:
    model = LangChainModel(GenericFakeChatModel(messages=iter(["hi"])))
    assert isinstance(model, Model)
    assert model.name == "langchain:generic-fake-chat-model"
    assert LangChainModel(GenericFakeChatModel(messages=iter([])), name="gpt-4o").name == "langchain:gpt-4o"
    with pytest.raises(ConfigError, match="not a LangChain chat model"):
        LangChainModel(object())


def test_message_mapping() -> None:
    call = ToolCall(call_id="c1", name="get_weather", arguments={"city": "Oslo"})
    converted = to_langchain_messages(
        [
            Message(role="system", content="Be brief."),
            Message(role="user", content="Weather?"),
            Message(role="assistant", content=None, tool_calls=(call,)),
            Message(role="tool", content="sunny", tool_call_id="c1", name="get_weather"),
        ]
    )
    system, human, ai, tool_msg = converted
    assert isinstance(system, SystemMessage) and system.content == "Be brief."
    assert isinstance(human, HumanMessage) and human.content == "Weather?"
    assert isinstance(ai, AIMessage)
    assert [(c["name"], c["args"], c["id"]) for c in ai.tool_calls] == [("get_weather", {"city": "Oslo"}, "c1")]
    assert isinstance(tool_msg, ToolMessage) and tool_msg.tool_call_id == "c1" and tool_msg.content == "sunny"
    with pytest.raises(ConfigError, match="tool_call_id"):
        to_langchain_messages([Message(role="tool", content="x")])


def test_answer_mapping_tool_calls_usage_and_content_blocks() -> None:
    answers: list[BaseMessage] = [
        AIMessage(
            content=[{"type": "text", "text": "Checking "}, {"type": "text", "text": "now."}],
            tool_calls=[_call("get_weather", {"city": "Oslo"}, "call_9")],
            usage_metadata={"input_tokens": 120, "output_tokens": 15, "total_tokens": 135},
            response_metadata={"finish_reason": "tool_calls"},
        ),
        AIMessage(
            content="",
            invalid_tool_calls=[{"name": "get_weather", "args": '{"city": ', "id": "bad1", "error": "bad json"}],
        ),
    ]
    model = LangChainModel(FakeMessagesListChatModel(responses=answers))
    request = ModelRequest(model="x", messages=(Message(role="user", content="hi"),))
    first = asyncio.run(model.complete(request))
    assert first.content == "Checking now."
    assert [(c.call_id, c.name, c.arguments) for c in first.tool_calls] == [("call_9", "get_weather", {"city": "Oslo"})]
    assert (first.usage.input_tokens, first.usage.output_tokens) == (120, 15)
    assert first.finish_reason == "tool_calls"
    second = asyncio.run(model.complete(request))
    assert second.content is None
    assert [(c.name, c.arguments) for c in second.tool_calls] == [("get_weather", {"_raw": '{"city": '})]
    assert second.usage.total_tokens == 0


def test_tools_are_bound_when_the_model_supports_it() -> None:
    model = LangChainModel(RecordingChatModel(responses=[AIMessage(content="ok")]))
    spec = ToolSpec(name="add", description="Add.", parameters={"type": "object", "properties": {}})
    asyncio.run(model.complete(ModelRequest(model="x", messages=(Message(role="user", content="hi"),), tools=(spec,))))
    assert BOUND == [
        [{"type": "function", "function": {"name": "add", "description": "Add.", "parameters": spec.parameters}}]
    ]
    # a model without tool support still answers
    plain = LangChainModel(GenericFakeChatModel(messages=iter(["plain"])))
    response = asyncio.run(
        plain.complete(ModelRequest(model="x", messages=(Message(role="user", content="hi"),), tools=(spec,)))
    )
    assert response.content == "plain"


class StatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code} from upstream")
        self.status_code = status_code


class FailingChatModel(FakeMessagesListChatModel):
    error: Exception = ValueError("bad prompt")

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status", "transient"),
    [
        (StatusError(429), 429, True),
        (StatusError(503), 503, True),
        (StatusError(400), 400, False),
        (TimeoutError("read timed out"), None, True),
        (ValueError("bad prompt"), None, False),
    ],
)
def test_errors_are_model_api_errors(error: Exception, status: int | None, transient: bool) -> None:
    model = LangChainModel(FailingChatModel(responses=[AIMessage(content="never")], error=error))
    with pytest.raises(ModelAPIError) as info:
        asyncio.run(model.complete(ModelRequest(model="x", messages=(Message(role="user", content="hi"),))))
    assert isinstance(info.value, LangChainModelError)
    assert info.value.status_code == status and info.value.transient is transient
    assert type(error).__name__ in str(info.value)


# ------------------------------------------------------------------------------------------ tools


def test_langchain_tool_schema_and_invocation() -> None:
    weather = langchain_tool(get_weather, risk=RiskLevel.SAFE, idempotent=True)
    assert weather.name == "get_weather" and weather.description == "Current weather for a city."
    assert weather.risk is RiskLevel.SAFE and weather.idempotent
    assert weather.parameters["required"] == ["city"]
    assert set(weather.parameters["properties"]) == {"city", "unit"}
    assert weather.parameters["additionalProperties"] is False
    result = asyncio.run(weather.invoke({"city": "Rome"}))
    assert not result.is_error and result.content == "Rome: 21 degrees celsius, sunny"
    assert CALLS == [("get_weather", {"city": "Rome", "unit": "celsius"})]
    bad = asyncio.run(weather.invoke({"city": 3, "extra": 1}))
    assert bad.is_error and "city" in bad.content and "extra" in bad.content
    assert len(CALLS) == 1

    delete = langchain_tool(delete_file, risk="DANGEROUS", name="rm")
    assert delete.name == "rm" and delete.risk is RiskLevel.DANGEROUS
    assert delete.parameters["properties"]["path"]["description"] == "File to delete."
    assert delete.parameters["properties"]["force"]["default"] is False


def test_langchain_tool_rejects_other_objects_and_dict_schemas() -> None:
    with pytest.raises(ConfigError, match="BaseTool"):
        langchain_tool(lambda x: x)
    dict_tool = StructuredTool(
        name="raw",
        description="Raw schema.",
        args_schema={"type": "object", "properties": {"q": {"type": "string"}}},
        func=lambda q: q,
    )
    with pytest.raises(ConfigError, match="pydantic"):
        langchain_tool(dict_tool)


# ------------------------------------------------------------------------------------------ end to end


def test_langchain_agent_end_to_end(orch: Orchestrator) -> None:
    chat = RecordingChatModel(
        responses=[
            AIMessage(
                content="",
                tool_calls=[_call("get_weather", {"city": "Lisbon", "unit": "fahrenheit"}, "call_1")],
                usage_metadata={"input_tokens": 200, "output_tokens": 20, "total_tokens": 220},
            ),
            AIMessage(
                content="It is sunny in Lisbon.",
                usage_metadata={"input_tokens": 260, "output_tokens": 12, "total_tokens": 272},
            ),
        ]
    )
    agent = Agent(
        name="lc-weather",
        model=LangChainModel(chat),
        instructions="Answer weather questions.",
        tools=[langchain_tool(get_weather, idempotent=True)],
    )
    report = orch.run(agent, "Weather in Lisbon?", timeout=30)
    assert report.status is RunStatus.COMPLETED, report.error
    assert report.output == "It is sunny in Lisbon."
    assert (report.steps, report.tool_calls, report.tokens) == (3, 1, 220 + 272)
    assert CALLS == [("get_weather", {"city": "Lisbon", "unit": "fahrenheit"})]
    second = SEEN[1]
    assert [type(m).__name__ for m in second] == ["SystemMessage", "HumanMessage", "AIMessage", "ToolMessage"]
    assert second[3].content == "Lisbon: 21 degrees fahrenheit, sunny" and second[3].tool_call_id == "call_1"


def test_dangerous_langchain_tool_waits_for_approval(orch: Orchestrator) -> None:
    chat = FakeMessagesListChatModel(
        responses=[
            AIMessage(content="", tool_calls=[_call("delete_file", {"path": "/tmp/old.log"}, "call_rm")]),
            AIMessage(content="Deleted the old log."),
        ]
    )
    agent = Agent(
        name="lc-janitor",
        model=LangChainModel(chat),
        instructions="Clean up.",
        tools=[langchain_tool(delete_file, risk=RiskLevel.DANGEROUS)],
    )
    report = orch.run(agent, "Delete /tmp/old.log", timeout=30)
    assert report.status is RunStatus.WAITING_FOR_APPROVAL
    assert CALLS == []  # nothing ran before a person said yes
    [approval] = orch.approvals()
    assert approval["run_id"] == report.run_id and approval["risk"] == "DANGEROUS"
    assert approval["tool"] == "delete_file" and approval["arguments"] == {"path": "/tmp/old.log"}
    orch.approve(approval["approval_id"], reason="ok", by="ops")
    final = orch.wait(report.run_id, timeout=30)
    assert final.status is RunStatus.COMPLETED, final.error
    assert final.output == "Deleted the old log."
    assert CALLS == [("delete_file", {"path": "/tmp/old.log", "force": False})]
    types = [e.type for e in orch.events(report.run_id)]
    assert EventType.APPROVAL_REQUESTED in types
