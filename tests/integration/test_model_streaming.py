"""Streaming: text deltas reach the delta sink while the full response (with usage) is still returned.

Runs the OpenAI and Anthropic adapters against fake servers on 127.0.0.1 that stream SSE chunks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agentmaestro import Agent, EventType, Orchestrator, RunStatus
from agentmaestro.core.messages import Message, ModelRequest, ModelResponse, ToolSpec
from agentmaestro.engine.worker import WorkerConfig
from agentmaestro.models.anthropic import AnthropicModel
from agentmaestro.models.base import Model
from agentmaestro.models.openai import OpenAIModel
from agentmaestro.models.streaming import delta_publisher, get_delta_sink, set_delta_sink
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer

ADD = ToolSpec(
    name="add",
    description="Add two integers.",
    parameters={"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
)
TEXT = "The quick brown fox jumps over the lazy dog."


class Collector:
    """A thread-safe delta sink."""

    def __init__(self) -> None:
        self.deltas: list[tuple[str, str]] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, run_id: str, text: str) -> None:
        with self._lock:
            self.deltas.append((run_id, text))
            self.threads.add(threading.current_thread().name)

    def text(self, run_id: str) -> str:
        return "".join(t for r, t in self.deltas if r == run_id)


@pytest.fixture
def sink() -> Iterator[Collector]:
    collector = Collector()
    previous = set_delta_sink(collector)
    yield collector
    set_delta_sink(previous)


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(chunk_chars=5) as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer(chunk_chars=5) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _reset(openai_server: FakeOpenAIServer, anthropic_server: FakeAnthropicServer) -> Iterator[None]:
    openai_server.reset()
    anthropic_server.reset()
    yield
    openai_server.reset()
    anthropic_server.reset()


def _openai(server: FakeOpenAIServer) -> OpenAIModel:
    return OpenAIModel("gpt-4.1-mini", base_url=server.base_url, api_key="sk-test-123456789", max_retries=0)


def _anthropic(server: FakeAnthropicServer) -> AnthropicModel:
    return AnthropicModel("claude-haiku-4-5", base_url=server.base_url, api_key="sk-ant-123456789", max_retries=0)


def _ask(model: Model, *, run_id: str | None = "run-1", tools: tuple[ToolSpec, ...] = ()) -> ModelResponse:
    request = ModelRequest(
        model="m", messages=(Message(role="user", content="hi"),), tools=tools, run_id=run_id, max_output_tokens=100
    )
    return asyncio.run(model.complete(request))


def test_hook_install_and_remove() -> None:
    assert get_delta_sink() is None
    assert delta_publisher("run-1") is None

    def first(run_id: str, text: str) -> None: ...

    assert set_delta_sink(first) is None
    assert get_delta_sink() is first
    assert delta_publisher(None) is None  # calls outside a run never stream
    assert delta_publisher("run-1") is not None
    assert set_delta_sink(None) is first
    assert delta_publisher("run-1") is None


def test_openai_streams_text_and_returns_full_response(openai_server: FakeOpenAIServer, sink: Collector) -> None:
    openai_server.reply_text(TEXT, usage=(21, 9))
    response = _ask(_openai(openai_server))
    assert response.content == TEXT
    assert (response.usage.input_tokens, response.usage.output_tokens) == (21, 9)
    assert response.finish_reason == "stop"
    assert response.model == "openai:gpt-4.1-mini"
    assert len(sink.deltas) == -(-len(TEXT) // 5) and sink.text("run-1") == TEXT
    sent = openai_server.requests[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["max_tokens"] == 100


def test_openai_streamed_tool_calls_are_assembled(openai_server: FakeOpenAIServer, sink: Collector) -> None:
    openai_server.reply_tool_calls([("add", {"a": 2, "b": 3}), ("add", {"a": 10, "b": 20})], usage=(40, 12))
    response = _ask(_openai(openai_server), tools=(ADD,))
    assert response.content is None
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("add", {"a": 2, "b": 3}),
        ("add", {"a": 10, "b": 20}),
    ]
    assert response.tool_calls[0].call_id.startswith("call_")
    assert response.finish_reason == "tool_calls"
    assert response.usage.total_tokens == 52
    assert sink.deltas == []  # no text, nothing published


def test_openai_without_run_id_does_not_stream(openai_server: FakeOpenAIServer, sink: Collector) -> None:
    openai_server.reply_text(TEXT)
    assert _ask(_openai(openai_server), run_id=None).content == TEXT
    assert "stream" not in openai_server.requests[0]
    assert sink.deltas == []


def test_openai_stream_errors_are_mapped(openai_server: FakeOpenAIServer, sink: Collector) -> None:
    from agentmaestro.errors import ModelAPIError

    openai_server.reply_error(429, "slow down")
    with pytest.raises(ModelAPIError) as info:
        _ask(_openai(openai_server))
    assert info.value.status_code == 429 and info.value.transient


def test_anthropic_streams_text_and_returns_full_response(
    anthropic_server: FakeAnthropicServer, sink: Collector
) -> None:
    anthropic_server.reply_text(TEXT, usage=(33, 11))
    response = _ask(_anthropic(anthropic_server))
    assert response.content == TEXT
    assert (response.usage.input_tokens, response.usage.output_tokens) == (33, 11)
    assert response.finish_reason == "end_turn"
    assert len(sink.deltas) > 1 and sink.text("run-1") == TEXT
    assert anthropic_server.requests[0]["stream"] is True


def test_anthropic_streamed_tool_calls(anthropic_server: FakeAnthropicServer, sink: Collector) -> None:
    anthropic_server.reply_tool_calls([("add", {"a": 2, "b": 3})], text="Adding now.", usage=(50, 7))
    response = _ask(_anthropic(anthropic_server), tools=(ADD,))
    assert response.content == "Adding now."
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert response.finish_reason == "tool_use"
    assert response.usage.total_tokens == 57
    assert sink.text("run-1") == "Adding now."


def test_anthropic_stream_errors_are_mapped(anthropic_server: FakeAnthropicServer, sink: Collector) -> None:
    from agentmaestro.errors import ModelAPIError

    anthropic_server.reply_error(529, "overloaded")
    with pytest.raises(ModelAPIError) as info:
        _ask(_anthropic(anthropic_server))
    assert info.value.status_code == 529 and info.value.transient


def test_failing_sink_does_not_break_the_call(
    openai_server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def broken(run_id: str, text: str) -> None:
        calls.append(text)
        raise RuntimeError("viewer went away")

    previous = set_delta_sink(broken)
    try:
        openai_server.reply_text(TEXT)
        with caplog.at_level(logging.WARNING, logger="agentmaestro.models.streaming"):
            assert _ask(_openai(openai_server)).content == TEXT
    finally:
        set_delta_sink(previous)
    assert len(calls) == 1  # disabled for the rest of the call after the first failure
    assert "delta sink" in caplog.text


def test_run_streams_deltas_but_stores_one_event_per_step(
    tmp_path: Any, openai_server: FakeOpenAIServer, sink: Collector
) -> None:
    long_text = "word " * 40
    openai_server.reply_text(long_text.strip(), usage=(10, 40))
    agent = Agent(name="streamer", model=_openai(openai_server), instructions="Talk.")
    config = WorkerConfig(poll_interval_s=0.05, transient_backoff_s=0.01)
    with Orchestrator(database_url=f"sqlite:///{tmp_path / 'm.db'}", config=config) as orch:
        report = orch.run(agent, "Say words", timeout=30)
        events = orch.events(report.run_id)
    assert report.status is RunStatus.COMPLETED, report.error
    assert report.output == long_text.strip()
    assert sink.text(report.run_id) == long_text.strip()
    assert len(sink.deltas) >= 30
    model_events = [e for e in events if e.type is EventType.STEP_COMPLETED and e.payload["kind"] == "MODEL_CALL"]
    assert len(model_events) == 1
    assert len(events) < 15  # deltas are not events
