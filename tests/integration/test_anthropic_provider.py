"""AnthropicModel against a real HTTP server on 127.0.0.1 speaking the Messages API, alone and under the engine."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from agentmaestro import Agent, EventType, Orchestrator, RiskLevel, RunStatus, StepKind, tool
from agentmaestro.core.messages import Message, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage
from agentmaestro.engine.driver import TRANSIENT_RETRIES
from agentmaestro.engine.worker import WorkerConfig
from agentmaestro.errors import ConfigError, ModelAPIError
from agentmaestro.models import openai as openai_models
from agentmaestro.models.anthropic import DEFAULT_MAX_TOKENS, AnthropicModel, to_anthropic_messages
from agentmaestro.models.base import Model, resolve_model
from agentmaestro.models.pricing import PriceTable
from agentmaestro.models.ratelimit import reset_limiters
from tests.fakes.anthropic_server import FakeAnthropicServer, ScriptedReply

MODEL = "claude-haiku-4-5"
API_KEY = "sk-ant-test-key-0123456789"
ENV_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "MAESTRO_PRICES_FILE")

ADD = ToolSpec(
    name="add",
    description="Add two integers.",
    parameters={"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    for name in ("MAESTRO_RPM_ANTHROPIC", "MAESTRO_TPM_ANTHROPIC"):
        monkeypatch.delenv(name, raising=False)
    reset_limiters()
    yield
    reset_limiters()


@pytest.fixture(scope="module")
def _shared_server() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer(model=MODEL) as fake:
        yield fake


@pytest.fixture
def server(_shared_server: FakeAnthropicServer) -> Iterator[FakeAnthropicServer]:
    _shared_server.reset()
    yield _shared_server
    _shared_server.reset()


def _model(server: FakeAnthropicServer, **kwargs: Any) -> AnthropicModel:
    options: dict[str, Any] = {"base_url": server.base_url, "api_key": API_KEY, "max_retries": 0}
    options.update(kwargs)
    return AnthropicModel(MODEL, **options)


def _ask(model: Model, *messages: Message, **kwargs: Any) -> ModelResponse:
    msgs = messages or (Message(role="system", content="be brief"), Message(role="user", content="hi"))
    request = ModelRequest(model=MODEL, messages=tuple(msgs), **kwargs)
    return asyncio.run(model.complete(request))


def _sent_key(headers: dict[str, str]) -> str | None:
    """The key a request carried (the SDK sends ``x-api-key`` or ``authorization: Bearer``, by version)."""
    if "x-api-key" in headers:
        return headers["x-api-key"]
    auth = headers.get("authorization", "")
    return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None


def _error(model: Model, **kwargs: Any) -> ModelAPIError:
    with pytest.raises(ModelAPIError) as info:
        _ask(model, **kwargs)
    return info.value


# ------------------------------------------------------------------------------------------ mapping


def test_model_satisfies_protocol_and_is_registered() -> None:
    model = AnthropicModel(MODEL)
    assert isinstance(model, Model)
    assert model.name == f"anthropic:{MODEL}"
    resolved = resolve_model(f"anthropic:{MODEL}")
    assert isinstance(resolved, AnthropicModel)
    assert resolved.model == MODEL


def test_text_reply_usage_and_request_shape(server: FakeAnthropicServer) -> None:
    server.reply_text("Hello!", usage=(17, 4))
    response = _ask(_model(server))
    assert response.content == "Hello!"
    assert response.tool_calls == ()
    assert (response.usage.input_tokens, response.usage.output_tokens) == (17, 4)
    assert response.model == f"anthropic:{MODEL}"
    assert response.finish_reason == "end_turn"
    sent = server.requests[0]
    assert sent["model"] == MODEL
    assert sent["system"] == "be brief"
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    assert sent["max_tokens"] == DEFAULT_MAX_TOKENS
    assert "tools" not in sent and "stream" not in sent
    headers = server.headers[0]
    assert _sent_key(headers) == API_KEY
    assert "anthropic-version" in headers


def test_text_blocks_are_joined(server: FakeAnthropicServer) -> None:
    server.reply_text("", texts=["Part one. ", "Part two."])
    assert _ask(_model(server)).content == "Part one. Part two."


def test_tool_calls_and_tool_specs(server: FakeAnthropicServer) -> None:
    server.reply_tool_calls([("add", {"a": 2, "b": 3}), ("add", {"a": 1, "b": 1})], text="Adding.", usage=(30, 9))
    response = _ask(_model(server), tools=(ADD,), max_output_tokens=256)
    assert response.content == "Adding."
    assert response.finish_reason == "tool_use"
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("add", {"a": 2, "b": 3}),
        ("add", {"a": 1, "b": 1}),
    ]
    assert response.tool_calls[0].call_id != response.tool_calls[1].call_id
    assert response.usage.total_tokens == 39
    sent = server.requests[0]
    assert sent["tools"] == [{"name": "add", "description": ADD.description, "input_schema": ADD.parameters}]
    assert sent["max_tokens"] == 256


def test_conversation_round_trip_merges_tool_results(server: FakeAnthropicServer) -> None:
    server.reply_tool_calls([("add", {"a": 2, "b": 3}), ("add", {"a": 4, "b": 5})])
    server.reply_text("5 and 9")
    model = _model(server)
    system = Message(role="system", content="You add numbers.")
    user = Message(role="user", content="What are 2+3 and 4+5?")
    first = _ask(model, system, user, tools=(ADD,))
    c1, c2 = first.tool_calls
    assistant = Message(role="assistant", content=first.content, tool_calls=first.tool_calls)
    r1 = Message(role="tool", content="5", tool_call_id=c1.call_id, name="add")
    r2 = Message(role="tool", content="9", tool_call_id=c2.call_id, name="add")
    second = _ask(model, system, user, assistant, r1, r2, tools=(ADD,))
    assert second.content == "5 and 9"
    assert server.requests[1]["system"] == "You add numbers."
    assert server.requests[1]["messages"] == [
        {"role": "user", "content": "What are 2+3 and 4+5?"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": c1.call_id, "name": "add", "input": {"a": 2, "b": 3}},
                {"type": "tool_use", "id": c2.call_id, "name": "add", "input": {"a": 4, "b": 5}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": c1.call_id, "content": "5"},
                {"type": "tool_result", "tool_use_id": c2.call_id, "content": "9"},
            ],
        },
    ]


def test_message_mapping_details() -> None:
    system, messages = to_anthropic_messages(
        [
            Message(role="system", content="one"),
            Message(role="system", content="two"),
            Message(role="user", content="go"),
            Message(
                role="assistant", content="Checking.", tool_calls=(ToolCall(call_id="t1", name="add", arguments={}),)
            ),
            Message(role="tool", content="0", tool_call_id="t1"),
            Message(role="user", content="and now?"),
            Message(role="assistant", content=None),
        ]
    )
    assert system == "one\n\ntwo"
    assert messages[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "t1", "name": "add", "input": {}},
        ],
    }
    # the tool result and the next user message form one user turn, tool result first
    assert messages[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "0"},
            {"type": "text", "text": "and now?"},
        ],
    }
    assert messages[3] == {"role": "assistant", "content": "(empty)"}
    with pytest.raises(ConfigError, match="tool_call_id"):
        to_anthropic_messages([Message(role="tool", content="5")])


# ------------------------------------------------------------------------------------------ errors


def test_429_is_transient_and_mapped(server: FakeAnthropicServer) -> None:
    server.reply_error(429, "rate limited, try later")
    err = _error(_model(server))
    assert err.status_code == 429 and err.transient
    assert "rate limited, try later" in str(err) and "HTTP 429" in str(err)
    assert err.body is not None and "rate_limit_error" in err.body
    assert len(server.requests) == 1  # the SDK did not retry (max_retries=0)


def test_429_then_success_with_sdk_retries(server: FakeAnthropicServer) -> None:
    server.enqueue(
        ScriptedReply(
            status=429,
            body={"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
            headers={"retry-after-ms": "1"},
        )
    )
    server.reply_text("finally")
    assert _ask(_model(server, max_retries=1)).content == "finally"
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", [500, 529])
def test_server_errors_are_transient(server: FakeAnthropicServer, status: int) -> None:
    server.reply_error(status, "overloaded")
    err = _error(_model(server))
    assert err.status_code == status and err.transient


def test_client_errors_are_not_transient(server: FakeAnthropicServer) -> None:
    server.reply_error(400, "messages: roles must alternate")
    err = _error(_model(server))
    assert err.status_code == 400 and not err.transient
    assert "roles must alternate" in str(err)


def test_key_never_appears_in_errors(server: FakeAnthropicServer) -> None:
    key = "sk-ant-secret-abcdefghijklmnop"
    server.reply_error(401, f"invalid x-api-key {key} " + "x" * 5000)
    err = _error(_model(server, api_key=key))
    assert err.status_code == 401
    assert key not in str(err)
    assert err.body is not None and key not in err.body
    assert len(err.body) < openai_models.MAX_ERROR_BODY_CHARS + 50


def test_plain_text_error_body(server: FakeAnthropicServer) -> None:
    server.enqueue(ScriptedReply(status=502, body="upstream exploded"))
    err = _error(_model(server))
    assert err.status_code == 502 and err.transient
    assert err.body == "upstream exploded"


def test_timeout_from_request_and_constructor(server: FakeAnthropicServer) -> None:
    server.reply_text("too late", delay_s=5)
    err = _error(_model(server), timeout_s=0.2)
    assert err.status_code is None and err.transient
    assert "timed out" in str(err)
    server.reset()
    server.reply_text("too late", delay_s=5)
    assert _error(_model(server, timeout_s=0.2)).status_code is None


def test_connection_refused_is_transient() -> None:
    with FakeAnthropicServer() as stopped:
        url = stopped.base_url
    err = _error(AnthropicModel(MODEL, base_url=url, api_key="k", max_retries=0))
    assert err.status_code is None and err.transient
    assert "could not be reached" in str(err)


# ------------------------------------------------------------------------------------------ configuration


def test_no_key_for_remote_endpoint_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        _ask(AnthropicModel(MODEL, max_retries=0))


def test_env_configures_key_and_base_url(server: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    server.reply_text("env")
    model = resolve_model(f"anthropic:{MODEL}")
    assert _ask(model).content == "env"
    assert _sent_key(server.headers[0]) == "sk-ant-from-env"
    assert "sk-ant-from-env" not in repr(model)


def test_local_endpoint_needs_no_key(server: FakeAnthropicServer) -> None:
    server.reply_text("local")
    assert _ask(AnthropicModel(MODEL, base_url=server.base_url, max_retries=0)).content == "local"
    assert _sent_key(server.headers[0]) == "not-set"


def test_one_model_serves_concurrent_calls(server: FakeAnthropicServer) -> None:
    for i in range(5):
        server.reply_text(f"answer {i}")
    model = _model(server)
    request = ModelRequest(model=MODEL, messages=(Message(role="user", content="hi"),))

    async def many() -> list[ModelResponse]:
        return list(await asyncio.gather(*(model.complete(request) for _ in range(5))))

    assert sorted(a.content or "" for a in asyncio.run(many())) == [f"answer {i}" for i in range(5)]


# ------------------------------------------------------------------------------------------ under the engine

CALLS: list[dict[str, Any]] = []


@tool(risk=RiskLevel.SAFE, idempotent=True)
def lookup(topic: str) -> str:
    """Look a topic up in the encyclopedia."""
    CALLS.append({"topic": topic})
    return f"{topic}: a well-known thing."


@pytest.fixture
def orch(tmp_path: Any) -> Iterator[Orchestrator]:
    CALLS.clear()
    config = WorkerConfig(poll_interval_s=0.05, transient_backoff_s=0.01)
    with Orchestrator(database_url=f"sqlite:///{tmp_path / 'maestro.db'}", config=config) as o:
        yield o


def _agent(server: FakeAnthropicServer, *, max_attempts: int = 4) -> Agent:
    return Agent(
        name="researcher",
        model=_model(server, timeout_s=10),
        instructions="Research topics.",
        tools=[lookup],
        max_attempts=max_attempts,
        retry_backoff_s=0.01,
    )


def _cost(*usages: tuple[int, int]) -> float:
    price = PriceTable.builtin().get(f"anthropic:{MODEL}")
    assert price is not None and price.input_per_mtok > 0
    return sum(price.cost_usd(Usage(input_tokens=i, output_tokens=o)) for i, o in usages)


def test_engine_retries_429_then_completes(orch: Orchestrator, server: FakeAnthropicServer) -> None:
    assert TRANSIENT_RETRIES >= 1
    server.reply_error(429, "slow down")
    server.reply_tool_calls([("lookup", {"topic": "tides"})], usage=(300, 20))
    server.reply_error(529, "overloaded")
    server.reply_text("Tides are well known.", usage=(400, 10))

    report = orch.run(_agent(server), "Explain tides", timeout=60)

    assert report.status is RunStatus.COMPLETED, report.error
    assert report.output == "Tides are well known."
    assert (report.steps, report.tool_calls) == (3, 1)
    assert report.tokens == 730
    assert report.cost_usd == pytest.approx(_cost((300, 20), (400, 10)), rel=1e-6)
    assert CALLS == [{"topic": "tides"}]
    assert len(server.requests) == 4 and server.pending == 0
    assert server.requests[0]["messages"] == server.requests[1]["messages"]
    last = server.requests[3]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "user"]
    assert last[2]["content"][0]["type"] == "tool_result"
    assert last[2]["content"][0]["content"] == "tides: a well-known thing."
    events = orch.events(report.run_id)
    assert not [e for e in events if e.type in (EventType.STEP_FAILED, EventType.RUN_FAILED)]


def test_persistent_500_fails_the_step(orch: Orchestrator, server: FakeAnthropicServer) -> None:
    for _ in range(TRANSIENT_RETRIES + 1):
        server.reply_error(500, "internal error")

    report = orch.run(_agent(server, max_attempts=1), "Anything?", timeout=60)

    assert len(server.requests) == TRANSIENT_RETRIES + 1 and server.pending == 0
    assert report.status is RunStatus.WAITING_FOR_HUMAN
    [failed] = [e for e in orch.events(report.run_id) if e.type is EventType.STEP_FAILED]
    assert failed.payload["status_code"] == 500
    assert "HTTP 500" in failed.payload["error"] and f"anthropic:{MODEL}" in failed.payload["error"]
    assert API_KEY not in failed.payload["error"]
    [step] = orch.steps(report.run_id)
    assert step.kind is StepKind.MODEL_CALL and step.status == "failed"
