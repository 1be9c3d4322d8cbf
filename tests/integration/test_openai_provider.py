"""OpenAIModel against a real HTTP server on 127.0.0.1 speaking the chat-completions API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from agentmaestro.core.messages import Message, ModelRequest, ModelResponse, ToolCall, ToolSpec
from agentmaestro.errors import ConfigError, ModelAPIError
from agentmaestro.models import openai as openai_models
from agentmaestro.models.base import Model, resolve_model
from agentmaestro.models.openai import OpenAIModel
from tests.fakes.openai_server import FakeOpenAIServer, ScriptedReply

ENV_VARS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENROUTER_API_KEY",
    "OPENROUTER_BASE_URL",
    "OLLAMA_BASE_URL",
)

ADD = ToolSpec(
    name="add",
    description="Add two integers.",
    parameters={"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def _shared_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def server(_shared_server: FakeOpenAIServer) -> Iterator[FakeOpenAIServer]:
    _shared_server.reset()
    yield _shared_server
    _shared_server.reset()


def _model(server: FakeOpenAIServer, **kwargs: object) -> OpenAIModel:
    options: dict[str, object] = {"base_url": server.base_url, "api_key": "sk-test-key-123456", "max_retries": 0}
    options.update(kwargs)
    return OpenAIModel("gpt-test", **options)  # type: ignore[arg-type]


def _ask(model: Model, *messages: Message, **kwargs: object) -> ModelResponse:
    msgs = messages or (Message(role="system", content="be brief"), Message(role="user", content="hi"))
    request = ModelRequest(model="gpt-test", messages=tuple(msgs), **kwargs)  # type: ignore[arg-type]
    return asyncio.run(model.complete(request))


def _error(model: Model, **kwargs: object) -> ModelAPIError:
    with pytest.raises(ModelAPIError) as info:
        _ask(model, **kwargs)
    return info.value


def test_model_satisfies_protocol_and_names_itself() -> None:
    model = OpenAIModel("gpt-4.1-mini")
    assert isinstance(model, Model)
    assert model.name == "openai:gpt-4.1-mini"
    assert OpenAIModel("x/y", provider="openrouter").name == "openrouter:x/y"


def test_text_reply_and_usage(server: FakeOpenAIServer) -> None:
    server.reply_text("Hello!", usage=(17, 4))
    response = _ask(_model(server))
    assert response.content == "Hello!"
    assert response.tool_calls == ()
    assert response.usage.input_tokens == 17
    assert response.usage.output_tokens == 4
    assert response.model == "openai:gpt-test"
    assert response.finish_reason == "stop"
    sent = server.requests[0]
    assert sent["model"] == "gpt-test"
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert "tools" not in sent
    assert server.headers[0]["authorization"] == "Bearer sk-test-key-123456"


def test_missing_usage_is_zero(server: FakeOpenAIServer) -> None:
    server.reply_text("ok", usage=None)
    response = _ask(_model(server))
    assert response.usage.total_tokens == 0


def test_tool_call_reply_decodes_arguments(server: FakeOpenAIServer) -> None:
    server.reply_tool_calls([("add", {"a": 2, "b": 3}), ("add", {"a": 1, "b": 1})], usage=(30, 9))
    response = _ask(_model(server), tools=(ADD,))
    assert response.content is None
    assert response.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("add", {"a": 2, "b": 3}),
        ("add", {"a": 1, "b": 1}),
    ]
    assert response.tool_calls[0].call_id != response.tool_calls[1].call_id
    assert response.usage.input_tokens == 30
    assert server.requests[0]["tools"] == [
        {
            "type": "function",
            "function": {"name": "add", "description": ADD.description, "parameters": ADD.parameters},
        }
    ]


def test_invalid_or_non_object_arguments_are_kept_raw(server: FakeOpenAIServer) -> None:
    server.reply_tool_calls([("add", '{"a": 2, "b":'), ("add", "[1, 2]"), ("add", "")])
    response = _ask(_model(server), tools=(ADD,))
    assert [c.arguments for c in response.tool_calls] == [{"_raw": '{"a": 2, "b":'}, {"_raw": "[1, 2]"}, {}]


def test_conversation_round_trip(server: FakeOpenAIServer) -> None:
    server.reply_tool_calls([("add", {"a": 2, "b": 3})])
    server.reply_text("2 + 3 = 5")
    model = _model(server)
    system = Message(role="system", content="You add numbers.")
    user = Message(role="user", content="What is 2+3?")
    first = _ask(model, system, user, tools=(ADD,))
    call = first.tool_calls[0]
    assistant = Message(role="assistant", content=first.content, tool_calls=first.tool_calls)
    result = Message(role="tool", content="5", tool_call_id=call.call_id, name="add")
    second = _ask(model, system, user, assistant, result, tools=(ADD,))
    assert second.content == "2 + 3 = 5"
    assert server.requests[1]["messages"] == [
        {"role": "system", "content": "You add numbers."},
        {"role": "user", "content": "What is 2+3?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call.call_id, "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
            ],
        },
        {"role": "tool", "tool_call_id": call.call_id, "content": "5"},
    ]


def test_assistant_text_with_tool_calls_is_sent(server: FakeOpenAIServer) -> None:
    server.reply_text("done")
    assistant = Message(
        role="assistant", content="Let me check.", tool_calls=(ToolCall(call_id="c1", name="add", arguments={}),)
    )
    tool = Message(role="tool", content="0", tool_call_id="c1")
    _ask(_model(server), Message(role="user", content="go"), assistant, tool)
    sent = server.requests[0]["messages"][1]
    assert sent["content"] == "Let me check."
    assert sent["tool_calls"][0]["function"] == {"name": "add", "arguments": "{}"}


def test_tool_message_without_call_id_is_a_config_error(server: FakeOpenAIServer) -> None:
    with pytest.raises(ConfigError, match="tool_call_id"):
        _ask(_model(server), Message(role="tool", content="5"))
    assert server.requests == []


def test_max_output_tokens_is_sent(server: FakeOpenAIServer) -> None:
    server.reply_text("ok")
    _ask(_model(server), max_output_tokens=64)
    assert server.requests[0]["max_tokens"] == 64
    assert "max_completion_tokens" not in server.requests[0]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_status_errors(server: FakeOpenAIServer, status: int) -> None:
    server.reply_error(status, "try again later")
    err = _error(_model(server))
    assert err.status_code == status
    assert err.transient
    assert "try again later" in str(err)
    assert err.body is not None and "try again later" in err.body
    assert len(server.requests) == 1


def test_client_errors_are_not_transient(server: FakeOpenAIServer) -> None:
    server.reply_error(400, "bad request: unknown parameter")
    err = _error(_model(server))
    assert err.status_code == 400
    assert not err.transient


def test_sdk_retries_are_honoured(server: FakeOpenAIServer) -> None:
    server.enqueue(ScriptedReply(status=429, body={"error": {"message": "slow"}}, headers={"retry-after-ms": "1"}))
    server.reply_text("finally")
    response = _ask(_model(server, max_retries=1))
    assert response.content == "finally"
    assert len(server.requests) == 2


def test_error_body_is_truncated_and_key_redacted(server: FakeOpenAIServer) -> None:
    key = "sk-secret-abcdefghijkl"
    server.reply_error(401, f"Incorrect API key provided: {key}. " + "x" * 5000)
    err = _error(_model(server, api_key=key))
    assert err.status_code == 401
    assert key not in str(err)
    assert err.body is not None and key not in err.body
    assert len(err.body) < openai_models.MAX_ERROR_BODY_CHARS + 50


def test_plain_text_error_body(server: FakeOpenAIServer) -> None:
    server.enqueue(ScriptedReply(status=502, body="upstream exploded"))
    err = _error(_model(server))
    assert err.status_code == 502
    assert err.transient
    assert err.body == "upstream exploded"


def test_timeout_from_request(server: FakeOpenAIServer) -> None:
    server.reply_text("too late", delay_s=5)
    err = _error(_model(server), timeout_s=0.2)
    assert err.status_code is None
    assert err.transient
    assert "timed out" in str(err)


def test_timeout_from_constructor(server: FakeOpenAIServer) -> None:
    server.reply_text("too late", delay_s=5)
    err = _error(_model(server, timeout_s=0.2))
    assert err.status_code is None


def test_connection_refused_is_transient_without_status() -> None:
    with FakeOpenAIServer() as stopped:
        url = stopped.base_url
    model = OpenAIModel("gpt-test", base_url=url, api_key="k", max_retries=0)
    err = _error(model)
    assert err.status_code is None
    assert err.transient
    assert "could not be reached" in str(err)


def test_no_key_for_remote_endpoint_is_a_config_error() -> None:
    model = OpenAIModel("gpt-test", base_url="https://api.example.com/v1", max_retries=0)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        _ask(model)
    with pytest.raises(ConfigError, match="OPENROUTER_API_KEY"):
        _ask(OpenAIModel("openai/gpt-4o-mini", provider="openrouter"))


def test_local_endpoint_needs_no_key(server: FakeOpenAIServer) -> None:
    server.reply_text("local")
    model = OpenAIModel("llama", base_url=server.base_url, max_retries=0)
    assert _ask(model).content == "local"
    assert server.headers[0]["authorization"] == "Bearer not-set"


def test_env_configures_openai(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    server.reply_text("env")
    response = _ask(OpenAIModel("gpt-env", max_retries=0))
    assert response.model == "openai:gpt-env"
    assert server.headers[0]["authorization"] == "Bearer sk-from-env"


def test_registered_openrouter_shortcut(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENROUTER_API_KEY", "or-key")
    monkeypatch.setenv("OPENAI_API_KEY", "must-not-leak")
    model = resolve_model("openrouter:openai/gpt-4o-mini")
    assert isinstance(model, OpenAIModel)
    assert model.name == "openrouter:openai/gpt-4o-mini"
    server.reply_text("routed")
    response = _ask(model)
    assert response.model == "openrouter:openai/gpt-4o-mini"
    assert server.requests[0]["model"] == "openai/gpt-4o-mini"
    assert server.headers[0]["authorization"] == "Bearer or-key"


def test_registered_ollama_shortcut(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_model("ollama:llama3.2").name == "ollama:llama3.2"
    assert OpenAIModel("llama3.2", provider="ollama").base_url == "http://127.0.0.1:11434/v1"
    monkeypatch.setenv("OLLAMA_BASE_URL", server.base_url)
    server.reply_text("llama says hi")
    response = _ask(resolve_model("ollama:llama3.2"))
    assert response.content == "llama says hi"
    assert response.model == "ollama:llama3.2"
    assert server.headers[0]["authorization"] == "Bearer ollama"


def test_registered_openai_shortcut() -> None:
    model = resolve_model("openai:gpt-4.1-mini")
    assert isinstance(model, OpenAIModel)
    assert model.base_url is None


def test_one_model_serves_concurrent_calls(server: FakeOpenAIServer) -> None:
    for i in range(5):
        server.reply_text(f"answer {i}")
    model = _model(server)
    request = ModelRequest(model="gpt-test", messages=(Message(role="user", content="hi"),))

    async def many() -> list[ModelResponse]:
        return list(await asyncio.gather(*(model.complete(request) for _ in range(5))))

    answers = asyncio.run(many())
    assert sorted(a.content or "" for a in answers) == [f"answer {i}" for i in range(5)]
