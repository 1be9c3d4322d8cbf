"""Model prices as data: USD per million input and output tokens, and the cost of one model call.

The built-in table lives in ``prices.yaml`` next to this module. A user file of the same shape,
named by ``MAESTRO_PRICES_FILE`` or passed to :meth:`PriceTable.load`, is merged on top::

    free_providers: [scripted, local, ollama]
    models:
      gpt-4.1-mini: {input: 0.40, output: 1.60}
      openrouter:openai/gpt-4o-mini: {input: 0.15, output: 0.60}
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import yaml

from agentmaestro.core.messages import Usage
from agentmaestro.errors import ConfigError

__all__ = ["PRICES_FILE_ENV", "Price", "PriceTable"]

log = logging.getLogger(__name__)

PRICES_FILE_ENV = "MAESTRO_PRICES_FILE"
"""Environment variable naming an optional YAML price file merged over the built-in table."""

_SNAPSHOT_SUFFIXES = (re.compile(r"-\d{4}-\d{2}-\d{2}$"), re.compile(r"-\d{8}$"), re.compile(r"-latest$"))


@dataclass(frozen=True, kw_only=True)
class Price:
    """What a model charges, in USD per million tokens."""

    input_per_mtok: float
    """USD per million input (prompt) tokens."""
    output_per_mtok: float
    """USD per million output (completion) tokens."""

    def cost_usd(self, usage: Usage) -> float:
        """Cost in USD of a call with this usage."""
        return (usage.input_tokens * self.input_per_mtok + usage.output_tokens * self.output_per_mtok) / 1_000_000


FREE = Price(input_per_mtok=0.0, output_per_mtok=0.0)
"""The price of scripted and local models."""


class PriceTable:
    """Prices by model name, looked up from model strings such as ``openai:gpt-4.1-mini``.

    Lookup of ``provider:name`` tries, in order: the full model string; zero for a free provider
    (``scripted``, ``local``, ``ollama``) or an OpenRouter ``:free`` variant; the bare name; the bare
    name without a date or ``-latest`` suffix; and for ``vendor/name`` ids the part after the slash.
    Keys are case-insensitive.
    """

    _defaults: ClassVar[dict[str | None, PriceTable]] = {}

    def __init__(self, prices: Mapping[str, Price] | None = None, *, free_providers: Iterable[str] = ()) -> None:
        """Build a table.

        Args:
            prices: Prices keyed by bare model name or by ``provider:name``.
            free_providers: Providers whose models cost nothing.
        """
        self._prices: dict[str, Price] = {}
        self._free_providers: set[str] = {p.lower() for p in free_providers}
        self._warned: set[str] = set()
        self._found: dict[str, Price | None] = {}  # lookups by model string (every model call asks)
        for name, price in (prices or {}).items():
            self.add(name, price)

    @classmethod
    def builtin(cls) -> PriceTable:
        """A fresh copy of the built-in table, without any user file."""
        prices, free = _builtin_data()
        return cls(prices, free_providers=free)

    @classmethod
    def default(cls) -> PriceTable:
        """The built-in table merged with the file named by ``MAESTRO_PRICES_FILE``, if set.

        The result is cached per value of the environment variable and shared: prices added to it
        with :meth:`add` are seen by every later caller.

        Raises:
            ConfigError: the user file is missing or malformed.
        """
        path = os.environ.get(PRICES_FILE_ENV) or None
        table = cls._defaults.get(path)
        if table is None:
            table = cls.load(path) if path else cls.builtin()
            cls._defaults[path] = table
        return table

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PriceTable:
        """The built-in table with the prices of a user YAML file merged on top.

        Args:
            path: A YAML file with ``models`` (name -> ``{input, output}``) and optional ``free_providers``.

        Raises:
            ConfigError: the file is missing or malformed.
        """
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read price file {str(file)!r}: {exc.strerror or exc}") from exc
        prices, free = _parse(text, source=str(file))
        table = cls.builtin()
        table._free_providers.update(free)
        table._found.clear()
        for name, price in prices.items():
            table.add(name, price)
        return table

    def add(self, name: str, price: Price) -> None:
        """Set the price of a model, by bare name (``gpt-4o``) or model string (``openai:gpt-4o``)."""
        self._prices[name.strip().lower()] = price
        self._found.clear()

    def get(self, model_string: str) -> Price | None:
        """The price of a model string, or None when the table does not know the model."""
        try:
            return self._found[model_string]
        except KeyError:
            price = self._found[model_string] = self._lookup(model_string)
            return price

    def _lookup(self, model_string: str) -> Price | None:
        provider, sep, name = model_string.strip().lower().partition(":")
        if not sep:
            provider, name = "", provider
        if provider:
            for key in _variants(name):
                price = self._prices.get(f"{provider}:{key}")
                if price is not None:
                    return price
            if provider in self._free_providers:
                return FREE
        if name.endswith(":free"):
            return FREE
        for key in _variants(name):
            price = self._prices.get(key)
            if price is not None:
                return price
        return None

    def cost_usd(self, model_string: str, usage: Usage) -> float:
        """Cost in USD of one call; 0.0 (and one warning per model) when the model has no price."""
        price = self.get(model_string)
        if price is None:
            if model_string not in self._warned:
                self._warned.add(model_string)
                log.warning(
                    "no price known for model %r; counting its cost as 0 (see %s)", model_string, PRICES_FILE_ENV
                )
            return 0.0
        return price.cost_usd(usage)

    def __contains__(self, model_string: object) -> bool:
        return isinstance(model_string, str) and self.get(model_string) is not None

    def __iter__(self) -> Iterator[tuple[str, Price]]:
        """The explicit entries, sorted by key."""
        return iter(sorted(self._prices.items()))


def _variants(name: str) -> Iterator[str]:
    """The name, then the name without a snapshot suffix, then the same for the part after a slash."""
    seen: set[str] = set()
    bases = [name]
    if "/" in name:
        bases.append(name.rsplit("/", 1)[1])
    for base in bases:
        for candidate in (base, *(pattern.sub("", base) for pattern in _SNAPSHOT_SUFFIXES)):
            if candidate and candidate not in seen:
                seen.add(candidate)
                yield candidate


@cache
def _builtin_data() -> tuple[dict[str, Price], frozenset[str]]:
    text = resources.files("agentmaestro.models").joinpath("prices.yaml").read_text(encoding="utf-8")
    prices, free = _parse(text, source="agentmaestro/models/prices.yaml")
    return prices, frozenset(free)


def _parse(text: str, *, source: str) -> tuple[dict[str, Price], set[str]]:
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"price file {source!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}, set()
    if not isinstance(data, dict):
        raise ConfigError(f"price file {source!r} must be a mapping with 'models' and optional 'free_providers'")
    unknown = set(data) - {"models", "free_providers"}
    if unknown:
        raise ConfigError(f"price file {source!r} has unknown keys {sorted(map(str, unknown))!r}")
    free_raw = data.get("free_providers") or []
    if not isinstance(free_raw, list) or not all(isinstance(p, str) for p in free_raw):
        raise ConfigError(f"price file {source!r}: 'free_providers' must be a list of provider names")
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise ConfigError(f"price file {source!r}: 'models' must map model names to {{input, output}}")
    prices: dict[str, Price] = {}
    for name, entry in models.items():
        prices[str(name).lower()] = _parse_price(str(name), entry, source=source)
    return prices, {p.lower() for p in free_raw}


def _parse_price(name: str, entry: Any, *, source: str) -> Price:
    if not isinstance(entry, dict) or set(entry) != {"input", "output"}:
        raise ConfigError(
            f"price file {source!r}: model {name!r} needs exactly 'input' and 'output' (USD per 1M tokens)"
        )
    values: list[float] = []
    for key in ("input", "output"):
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"price file {source!r}: {key} price of {name!r} must be a number >= 0, got {value!r}")
        values.append(float(value))
    return Price(input_per_mtok=values[0], output_per_mtok=values[1])
