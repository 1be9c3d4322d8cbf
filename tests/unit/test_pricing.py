from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agentmaestro.core.messages import Usage
from agentmaestro.errors import ConfigError
from agentmaestro.models.pricing import PRICES_FILE_ENV, Price, PriceTable

MILLION = Usage(input_tokens=1_000_000, output_tokens=1_000_000)


@pytest.fixture
def table() -> PriceTable:
    return PriceTable.builtin()


@pytest.mark.parametrize(
    "model",
    [
        "openai:gpt-4.1",
        "openai:gpt-4.1-mini",
        "openai:gpt-4.1-nano",
        "openai:gpt-4o",
        "openai:gpt-4o-mini",
        "openai:o3",
        "openai:o4-mini",
        "anthropic:claude-opus-4",
        "anthropic:claude-sonnet-4",
        "anthropic:claude-3-5-haiku",
        "openrouter:openai/gpt-4o-mini",
        "openrouter:anthropic/claude-sonnet-4",
    ],
)
def test_builtin_table_knows_common_models(table: PriceTable, model: str) -> None:
    price = table.get(model)
    assert price is not None
    assert 0 < price.input_per_mtok <= price.output_per_mtok


def test_known_prices(table: PriceTable) -> None:
    assert table.get("openai:gpt-4.1-mini") == Price(input_per_mtok=0.40, output_per_mtok=1.60)
    assert table.get("gpt-4o-mini") == Price(input_per_mtok=0.15, output_per_mtok=0.60)
    assert table.get("anthropic:claude-sonnet-4") == Price(input_per_mtok=3.0, output_per_mtok=15.0)


def test_cost_usd(table: PriceTable) -> None:
    usage = Usage(input_tokens=1000, output_tokens=500)
    assert table.cost_usd("openai:gpt-4.1-mini", usage) == pytest.approx((1000 * 0.40 + 500 * 1.60) / 1e6)
    assert table.cost_usd("openai:gpt-4o", MILLION) == pytest.approx(12.5)
    assert table.cost_usd("openai:gpt-4o", Usage()) == 0.0


@pytest.mark.parametrize(
    "model", ["scripted:demo/calc.yaml", "local:gemma3-270m", "ollama:llama3.2", "openrouter:meta-llama/x:free"]
)
def test_scripted_local_and_free_models_cost_nothing(table: PriceTable, model: str) -> None:
    assert table.get(model) == Price(input_per_mtok=0.0, output_per_mtok=0.0)
    assert table.cost_usd(model, MILLION) == 0.0


def test_snapshot_and_alias_names_fall_back(table: PriceTable) -> None:
    assert table.get("openai:gpt-4o-mini-2024-07-18") == table.get("gpt-4o-mini")
    assert table.get("anthropic:claude-sonnet-4-20250514") == table.get("claude-sonnet-4")
    assert table.get("anthropic:claude-3-5-haiku-latest") == table.get("claude-3-5-haiku")
    assert table.get("OpenAI:GPT-4o") == table.get("gpt-4o")


def test_vendor_prefixed_ids_fall_back_to_bare_name(table: PriceTable) -> None:
    assert table.get("openrouter:openai/gpt-4.1-nano") == table.get("gpt-4.1-nano")
    assert table.get("someproxy:openai/o3-mini") == table.get("o3-mini")


def test_provider_specific_entry_wins(table: PriceTable) -> None:
    table.add("azure:gpt-4o", Price(input_per_mtok=9.0, output_per_mtok=9.0))
    assert table.get("azure:gpt-4o") == Price(input_per_mtok=9.0, output_per_mtok=9.0)
    assert table.get("openai:gpt-4o") == Price(input_per_mtok=2.5, output_per_mtok=10.0)
    table.add("ollama:big-hosted", Price(input_per_mtok=1.0, output_per_mtok=2.0))
    assert table.get("ollama:big-hosted") == Price(input_per_mtok=1.0, output_per_mtok=2.0)


def test_unknown_model_costs_zero_and_warns_once(table: PriceTable, caplog: pytest.LogCaptureFixture) -> None:
    assert table.get("openai:gpt-99") is None
    assert "openai:gpt-99" not in table
    with caplog.at_level(logging.WARNING, logger="agentmaestro.models.pricing"):
        assert table.cost_usd("openai:gpt-99", MILLION) == 0.0
        assert table.cost_usd("openai:gpt-99", MILLION) == 0.0
    assert len([r for r in caplog.records if "gpt-99" in r.getMessage()]) == 1


def test_add_and_contains() -> None:
    table = PriceTable()
    assert table.get("openai:gpt-4o") is None
    table.add("my-model", Price(input_per_mtok=1.0, output_per_mtok=3.0))
    assert "vllm:my-model" in table
    assert table.cost_usd("vllm:my-model", Usage(input_tokens=2_000_000, output_tokens=1_000_000)) == pytest.approx(5.0)
    assert list(table) == [("my-model", Price(input_per_mtok=1.0, output_per_mtok=3.0))]


def test_builtin_returns_independent_copies() -> None:
    first = PriceTable.builtin()
    first.add("gpt-4o", Price(input_per_mtok=0.0, output_per_mtok=0.0))
    assert PriceTable.builtin().get("gpt-4o") == Price(input_per_mtok=2.5, output_per_mtok=10.0)


def test_load_merges_user_file_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "free_providers: [vllm]\n"
        "models:\n"
        "  gpt-4o: {input: 1.0, output: 2.0}\n"
        "  openrouter:openai/gpt-4o-mini: {input: 0.2, output: 0.7}\n"
        "  In-House: {input: 0, output: 0.5}\n"
    )
    table = PriceTable.load(path)
    assert table.get("openai:gpt-4o") == Price(input_per_mtok=1.0, output_per_mtok=2.0)
    assert table.get("openrouter:openai/gpt-4o-mini") == Price(input_per_mtok=0.2, output_per_mtok=0.7)
    assert table.get("openai:gpt-4o-mini") == Price(input_per_mtok=0.15, output_per_mtok=0.60)
    assert table.get("x:in-house") == Price(input_per_mtok=0.0, output_per_mtok=0.5)
    assert table.cost_usd("vllm:anything", MILLION) == 0.0
    assert table.get("openai:gpt-4.1") is not None


def test_default_is_cached_and_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PRICES_FILE_ENV, raising=False)
    assert PriceTable.default() is PriceTable.default()
    assert PriceTable.default().get("gpt-4o") == Price(input_per_mtok=2.5, output_per_mtok=10.0)
    path = tmp_path / "user.yaml"
    path.write_text("models:\n  gpt-4o: {input: 7, output: 8}\n")
    monkeypatch.setenv(PRICES_FILE_ENV, str(path))
    assert PriceTable.default().get("openai:gpt-4o") == Price(input_per_mtok=7.0, output_per_mtok=8.0)
    assert PriceTable.default() is PriceTable.default()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [1, 2]\n", "'models' must map"),
        ("models:\n  gpt-x: {input: 1}\n", "exactly 'input' and 'output'"),
        ("models:\n  gpt-x: {input: -1, output: 2}\n", "must be a number >= 0"),
        ("models:\n  gpt-x: {input: cheap, output: 2}\n", "must be a number >= 0"),
        ("prices: {}\n", "unknown keys"),
        ("free_providers: local\n", "'free_providers' must be a list"),
        ("- just\n- a list\n", "must be a mapping"),
        ("models: {gpt: [\n", "not valid YAML"),
    ],
)
def test_malformed_user_file_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        PriceTable.load(path)


def test_missing_user_file_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="cannot read price file"):
        PriceTable.load(tmp_path / "nope.yaml")
    monkeypatch.setenv(PRICES_FILE_ENV, str(tmp_path / "also-missing.yaml"))
    with pytest.raises(ConfigError, match="cannot read price file"):
        PriceTable.default()


def test_empty_user_file_keeps_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert PriceTable.load(path).get("gpt-4o") == Price(input_per_mtok=2.5, output_per_mtok=10.0)
