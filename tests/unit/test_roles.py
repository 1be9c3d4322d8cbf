"""Per-role models: role -> model string from the environment or the MAESTRO_CONFIG file; ``role:NAME`` strings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmaestro import Agent
from agentmaestro.errors import ConfigError
from agentmaestro.models.anthropic import AnthropicModel
from agentmaestro.models.base import resolve_model
from agentmaestro.models.openai import OpenAIModel
from agentmaestro.models.roles import RoleModels, model_for_role, role_models
from agentmaestro.models.scripted import ScriptedModel


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import os

    for name in list(os.environ):
        if name.startswith("MAESTRO_MODEL_") or name == "MAESTRO_CONFIG":
            monkeypatch.delenv(name)
    yield


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "maestro.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_roles_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAESTRO_MODEL_PLANNER", "openai:gpt-4.1")
    monkeypatch.setenv("MAESTRO_MODEL_DEFAULT", "anthropic:claude-haiku-4-5")
    roles = role_models()
    assert roles.model_for("planner") == "openai:gpt-4.1"
    assert roles.model_for("worker") == "anthropic:claude-haiku-4-5"  # falls back to default
    assert roles.source_of("planner") == "MAESTRO_MODEL_PLANNER"
    assert roles.source_of("reviewer") == "MAESTRO_MODEL_DEFAULT"


def test_roles_from_config_file_and_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _config(
        tmp_path,
        "server: {port: 8000}\n"  # other sections belong to other parts of AgentMaestro
        "models:\n"
        "  planner: openai:gpt-4.1\n"
        "  worker: anthropic:claude-haiku-4-5\n"
        "  code-reviewer: openai:o3\n",
    )
    monkeypatch.setenv("MAESTRO_CONFIG", str(path))
    monkeypatch.setenv("MAESTRO_MODEL_WORKER", "openai:gpt-4.1-mini")
    roles = role_models()
    assert roles.model_for("planner") == "openai:gpt-4.1"
    assert roles.model_for("worker") == "openai:gpt-4.1-mini"
    assert roles.model_for("code-reviewer") == roles.model_for("code_reviewer") == "openai:o3"
    assert roles.source_of("planner") == f"{path} (models.planner)"
    with pytest.raises(ConfigError, match="MAESTRO_MODEL_REVIEWER"):
        roles.model_for("reviewer")  # no default configured


def test_unconfigured_role_names_the_settings() -> None:
    with pytest.raises(ConfigError) as info:
        RoleModels.load().model_for("planner")
    message = str(info.value)
    assert "MAESTRO_MODEL_PLANNER" in message and "MAESTRO_CONFIG" in message


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("models: [a, b]\n", "must map roles"),
        ("models: {planner: gpt-4}\n", "provider:name"),
        ("models: {planner: 'role:worker'}\n", "not another role"),
        ("models: {Planner!: openai:x}\n", "invalid role name"),
        ("- just\n- a list\n", "must be a mapping"),
        ("models: {planner: [\n", "not valid YAML"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RoleModels.load(_config(tmp_path, text))


def test_missing_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAESTRO_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        role_models()


def test_empty_config_and_bad_env(tmp_path: Path) -> None:
    assert RoleModels.load(_config(tmp_path, "")).models == {}
    with pytest.raises(ConfigError, match="MAESTRO_MODEL_PLANNER"):
        RoleModels.load(environ={"MAESTRO_MODEL_PLANNER": "no-provider"})


def test_role_model_strings_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAESTRO_MODEL_PLANNER", "openai:gpt-4.1")
    monkeypatch.setenv("MAESTRO_MODEL_REVIEWER", "anthropic:claude-haiku-4-5")
    monkeypatch.setenv("MAESTRO_MODEL_WORKER", "scripted:calculator")
    planner = resolve_model("role:planner")
    assert isinstance(planner, OpenAIModel) and planner.name == "openai:gpt-4.1"
    assert isinstance(resolve_model("role:reviewer"), AnthropicModel)
    assert isinstance(resolve_model("role:worker"), ScriptedModel)
    with pytest.raises(ConfigError, match="MAESTRO_MODEL_OTHER"):
        resolve_model("role:other")


def test_agent_explicit_model_overrides_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAESTRO_MODEL_WORKER", "scripted:calculator")
    by_role = Agent(name="by-role", model="role:worker")
    assert by_role.model_name == "role:worker"  # the spec keeps the role: each deployment fills it
    assert by_role.get_model().name == "scripted:calculator"
    explicit = Agent(name="explicit", model="scripted:wordsmith")
    assert explicit.get_model().name == "scripted:wordsmith"
    assert model_for_role("worker") == "scripted:calculator"
    assert model_for_role("worker", override="openai:gpt-4o") == "openai:gpt-4o"
    assert model_for_role("worker", override="") == "scripted:calculator"
