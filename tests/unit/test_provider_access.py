"""The operator's rules for providers named by API callers, and the JSON depth limit of request bodies."""

from __future__ import annotations

import json

import pytest

from agentmaestro.errors import ConfigError
from agentmaestro.server.limits import MAX_JSON_DEPTH, json_depth_exceeds
from agentmaestro.server.provider_access import ProviderAccess, ProviderNotAllowedError, is_local_endpoint

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def no_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OLLAMA_BASE_URL", "OPENROUTER_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_settings_from_the_environment() -> None:
    assert ProviderAccess.from_env({}) == ProviderAccess(allowed=None, loopback=False)
    access = ProviderAccess.from_env(
        {"MAESTRO_ALLOWED_PROVIDERS": " OpenAI, lexical ,,", "MAESTRO_API_LOOPBACK_PROVIDERS": "1"}
    )
    assert access == ProviderAccess(allowed=frozenset({"openai", "lexical"}), loopback=True)
    assert not ProviderAccess.from_env({"MAESTRO_API_LOOPBACK_PROVIDERS": "yes"}).loopback  # only "1" counts


async def test_loopback_providers_are_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    default = ProviderAccess()
    for refused in ("ollama:llama3.2", "ollama:x"):
        with pytest.raises(ProviderNotAllowedError, match="own machine or private network"):
            await default.check_model(refused)
    with pytest.raises(ProviderNotAllowedError):
        await default.check_embedder("ollama:nomic-embed-text")
    for fine in ("openai:gpt-4.1-mini", "anthropic:claude-x", "openrouter:meta/llama", "role:planner"):
        await default.check_model(fine)
    for fine in ("openai:text-embedding-3-small", "lexical", "lexical:512"):
        await default.check_embedder(fine)
    for url in ("http://10.0.0.7:8000/v1", "http://[::1]:8000/v1", "http://localhost:8000/v1", "http://169.254.1.1/"):
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        with pytest.raises(ProviderNotAllowedError):
            await default.check_model("openai:gpt-x")
    await ProviderAccess(loopback=True).check_model("openai:gpt-x")
    await ProviderAccess(loopback=True).check_embedder("ollama:nomic-embed-text")


async def test_the_allow_list() -> None:
    access = ProviderAccess(allowed=frozenset({"anthropic", "lexical"}), loopback=True)
    await access.check_model("anthropic:claude-x")
    await access.check_embedder("lexical")
    await access.check_model("role:planner")  # the operator's own role setting
    with pytest.raises(ProviderNotAllowedError, match=r"provider 'openai' .*allowed: anthropic, lexical"):
        await access.check_model("openai:gpt-x")
    with pytest.raises(ProviderNotAllowedError):
        await access.check_embedder("local:all-minilm-l6-v2")
    with pytest.raises(ConfigError, match="unknown model provider"):
        await ProviderAccess().check_model("nope:x")


async def test_local_endpoints() -> None:
    assert await is_local_endpoint("http://127.0.0.1:11434/v1")
    assert await is_local_endpoint("http://[::ffff:127.0.0.1]:1/")
    assert await is_local_endpoint("http://0.0.0.0:80/")
    assert await is_local_endpoint("http://ollama.localhost/")
    assert not await is_local_endpoint("https://93.184.215.14/v1")
    assert not await is_local_endpoint("https://no-such-host.invalid/v1")


def test_json_depth() -> None:
    assert not json_depth_exceeds(b'{"a": [1, {"b": "[[[[[[[["}]}', limit=3)
    assert json_depth_exceeds(b'{"a": [1, {"b": [[]]}]}', limit=3)
    assert not json_depth_exceeds(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert json_depth_exceeds(b"[" * (MAX_JSON_DEPTH + 1))
    assert not json_depth_exceeds(json.dumps({"s": '\\"[' * 500}).encode())  # escaped quotes stay in the string
    assert not json_depth_exceeds(b"[]" * 10_000)  # many, but flat
