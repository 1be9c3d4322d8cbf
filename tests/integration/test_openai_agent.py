"""An agent on OpenAIModel, end to end through the Orchestrator, against a fake OpenAI server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from agentmaestro import Agent, EventType, Orchestrator, RiskLevel, RunStatus, StepKind, tool
from agentmaestro.core.messages import Usage
from agentmaestro.engine.driver import TRANSIENT_RETRIES
from agentmaestro.engine.worker import WorkerConfig
from agentmaestro.models.openai import OpenAIModel
from agentmaestro.models.pricing import PriceTable
from tests.fakes.openai_server import FakeOpenAIServer

MODEL = "gpt-4.1-mini"
API_KEY = "sk-test-key-0123456789"
ENV_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "MAESTRO_PRICES_FILE")

CALLS: list[dict[str, Any]] = []


@tool(risk=RiskLevel.SAFE, idempotent=True)
def get_weather(city: str, unit: str = "celsius") -> str:
    """Current weather for a city."""
    CALLS.append({"city": city, "unit": unit})
    return f"{city}: 21 degrees {unit}, sunny"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    CALLS.clear()


@pytest.fixture(scope="module")
def _shared_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(model=MODEL) as fake:
        yield fake


@pytest.fixture
def server(_shared_server: FakeOpenAIServer) -> Iterator[FakeOpenAIServer]:
    _shared_server.reset()
    yield _shared_server
    _shared_server.reset()


@pytest.fixture
def orch(db_url: str) -> Iterator[Orchestrator]:
    config = WorkerConfig(poll_interval_s=0.05, transient_backoff_s=0.01)
    with Orchestrator(database_url=db_url, config=config) as o:
        yield o


def weather_agent(server: FakeOpenAIServer, *, max_attempts: int = 4) -> Agent:
    model = OpenAIModel(MODEL, base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout_s=10)
    return Agent(
        name="weather",
        model=model,
        instructions="Answer weather questions.",
        tools=[get_weather],
        max_attempts=max_attempts,
        retry_backoff_s=0.01,
    )


def expected_cost(*usages: tuple[int, int]) -> float:
    price = PriceTable.builtin().get(f"openai:{MODEL}")
    assert price is not None and price.input_per_mtok > 0
    return sum(price.cost_usd(Usage(input_tokens=i, output_tokens=o)) for i, o in usages)


def test_tool_call_then_answer_end_to_end(orch: Orchestrator, server: FakeOpenAIServer) -> None:
    server.reply_tool_calls([("get_weather", {"city": "Lisbon", "unit": "fahrenheit"})], usage=(1200, 40))
    server.reply_text("It is 21 degrees and sunny in Lisbon.", usage=(1500, 25))

    report = orch.run(weather_agent(server), "Weather in Lisbon?")

    assert report.status is RunStatus.COMPLETED, report.error
    assert report.output == "It is 21 degrees and sunny in Lisbon."
    assert (report.steps, report.tool_calls) == (3, 1)
    assert report.tokens == 1200 + 40 + 1500 + 25
    cost = expected_cost((1200, 40), (1500, 25))
    assert report.cost_usd > 0
    assert report.cost_usd == pytest.approx(cost, rel=1e-6)
    assert report.state_history[-1] == "COMPLETED/TERMINATE"

    # the tool ran with the model's arguments
    assert CALLS == [{"city": "Lisbon", "unit": "fahrenheit"}]

    # first request: system + user, the tool's JSON schema, the model name
    assert len(server.requests) == 2
    first, second = server.requests
    assert first["model"] == MODEL
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert first["messages"][0]["content"] == "Answer weather questions."
    assert first["messages"][1]["content"] == "Weather in Lisbon?"
    [spec] = first["tools"]
    assert spec["type"] == "function" and spec["function"]["name"] == "get_weather"
    assert set(spec["function"]["parameters"]["properties"]) == {"city", "unit"}
    assert server.headers[0]["authorization"] == f"Bearer {API_KEY}"

    # second request: the assistant's tool call and the tool result, linked by the call id
    roles = [m["role"] for m in second["messages"]]
    assert roles == ["system", "user", "assistant", "tool"]
    assistant, tool_msg = second["messages"][2], second["messages"][3]
    [call] = assistant["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Lisbon", "unit": "fahrenheit"}
    assert tool_msg["tool_call_id"] == call["id"]
    assert tool_msg["content"] == "Lisbon: 21 degrees fahrenheit, sunny"

    # usage and cost are recorded per step, and the events say which model answered
    steps = orch.steps(report.run_id)
    assert [s.kind for s in steps] == [StepKind.MODEL_CALL, StepKind.TOOL_CALL, StepKind.MODEL_CALL]
    assert [(s.input_tokens, s.output_tokens) for s in steps] == [(1200, 40), (0, 0), (1500, 25)]
    assert sum(s.cost_usd for s in steps) == pytest.approx(cost, rel=1e-6)
    assert steps[0].cost_usd == pytest.approx(expected_cost((1200, 40)), rel=1e-6)
    model_events = [
        e
        for e in orch.events(report.run_id)
        if e.type is EventType.STEP_COMPLETED and e.payload["kind"] == "MODEL_CALL"
    ]
    assert [e.payload["model"] for e in model_events] == [f"openai:{MODEL}"] * 2
    assert model_events[0].payload["tool_calls"][0]["arguments"] == {"city": "Lisbon", "unit": "fahrenheit"}


def test_transient_server_errors_are_retried_by_the_engine(orch: Orchestrator, server: FakeOpenAIServer) -> None:
    assert TRANSIENT_RETRIES >= 2
    server.reply_error(500, "upstream hiccup")
    server.reply_tool_calls([("get_weather", {"city": "Oslo"})], usage=(100, 10))
    server.reply_error(503, "overloaded")
    server.reply_error(429, "slow down")
    server.reply_text("Oslo is sunny.", usage=(200, 20))

    report = orch.run(weather_agent(server), "Oslo?", timeout=60)

    assert report.status is RunStatus.COMPLETED, report.error
    assert report.output == "Oslo is sunny."
    assert report.steps == 3  # the failed attempts are not steps
    assert report.tokens == 330
    assert report.cost_usd == pytest.approx(expected_cost((100, 10), (200, 20)), rel=1e-6)
    assert CALLS == [{"city": "Oslo", "unit": "celsius"}]
    assert len(server.requests) == 5 and server.pending == 0
    # the retried request is the same request
    assert server.requests[0]["messages"] == server.requests[1]["messages"]
    assert server.requests[2]["messages"] == server.requests[4]["messages"]
    events = orch.events(report.run_id)
    assert not [e for e in events if e.type in (EventType.STEP_FAILED, EventType.RUN_FAILED)]


def test_persistent_server_errors_fail_the_step_then_the_step_is_retried(
    orch: Orchestrator, server: FakeOpenAIServer
) -> None:
    for _ in range(TRANSIENT_RETRIES + 1):
        server.reply_error(502, "bad gateway")
    server.reply_text("Back online.", usage=(50, 5))

    report = orch.run(weather_agent(server, max_attempts=2), "Anyone?", timeout=60)

    # the engine's transient retries run out: the step fails; the agent's next attempt succeeds
    assert report.status is RunStatus.COMPLETED, report.error
    assert report.output == "Back online."
    assert len(server.requests) == TRANSIENT_RETRIES + 2 and server.pending == 0
    events = orch.events(report.run_id)
    [failed] = [e for e in events if e.type is EventType.STEP_FAILED]
    assert failed.payload["status_code"] == 502 and "HTTP 502" in failed.payload["error"]
    assert report.cost_usd == pytest.approx(expected_cost((50, 5)), rel=1e-6)
    assert [s.status for s in orch.steps(report.run_id)] == ["failed", "completed"]


def test_client_error_is_not_retried_and_reported_clearly(orch: Orchestrator, server: FakeOpenAIServer) -> None:
    server.reply_error(400, "Invalid parameter: messages[1].content is too long")
    server.reply_text("never served")

    report = orch.run(weather_agent(server, max_attempts=1), "Weather?", timeout=60)

    # one request only: a 400 is not a transient error; the failed step escalates to a person
    assert len(server.requests) == 1 and server.pending == 1
    assert report.status is RunStatus.WAITING_FOR_HUMAN
    assert report.output is None
    events = orch.events(report.run_id)
    [failed] = [e for e in events if e.type is EventType.STEP_FAILED]
    error = failed.payload["error"]
    assert failed.payload["status_code"] == 400
    assert error.startswith("model call failed:")
    assert f"openai:{MODEL}" in error and "HTTP 400" in error
    assert "messages[1].content is too long" in error
    assert API_KEY not in error and "\n" not in error
    [step] = orch.steps(report.run_id)
    assert step.kind is StepKind.MODEL_CALL and step.status == "failed"
    assert CALLS == []

    [request] = orch.human_requests()
    assert request["run_id"] == report.run_id and request["kind"] == "step_failed"
    assert error in request["question"]
    assert events[-1].type is EventType.HUMAN_INPUT_REQUESTED

    orch.resolve(request["request_id"], "abandon")
    final = orch.wait(report.run_id, timeout=30)
    assert final.status is RunStatus.FAILED
    assert final.state_history[-1] == "FAILED/TERMINATE"
    assert len(server.requests) == 1
