"""The Model protocol and the factory that turns a model string into a model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from agentmaestro.core.messages import ModelRequest, ModelResponse
from agentmaestro.errors import ConfigError


@runtime_checkable
class Model(Protocol):
    """A chat model: messages and tool schemas in; text, tool calls and token usage out.

    Implementations raise :class:`~agentmaestro.errors.ModelAPIError` for provider errors;
    ``error.transient`` tells the engine whether retrying without spending an attempt makes sense.
    """

    @property
    def name(self) -> str:
        """The model string this model was built from, e.g. ``openai:gpt-4.1-mini``."""
        ...

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Run one chat completion."""
        ...


ModelFactory = Callable[[str], Model]
"""Builds a model from the part of a model string after ``provider:``."""

_PROVIDERS: dict[str, ModelFactory] = {}
_builtins_loaded = False


def register_provider(prefix: str, factory: ModelFactory) -> None:
    """Register a factory for model strings of the form ``prefix:NAME``."""
    _PROVIDERS[prefix] = factory


def resolve_model(model: str | Model) -> Model:
    """Return a Model for a model string (``provider:name``) or pass a Model through.

    Raises:
        ConfigError: the string has no provider prefix or names an unknown provider.
    """
    if not isinstance(model, str):
        return model
    prefix, sep, rest = model.partition(":")
    if not sep or not rest:
        raise ConfigError(f"model {model!r} must look like 'provider:name' (e.g. 'openai:gpt-4.1-mini')")
    _load_builtin_providers()
    factory = _PROVIDERS.get(prefix)
    if factory is None:
        known = ", ".join(sorted(_PROVIDERS))
        raise ConfigError(f"unknown model provider {prefix!r} in {model!r}; known providers: {known}")
    return factory(rest)


def _load_builtin_providers() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    from agentmaestro.models import openai as _openai
    from agentmaestro.models import scripted as _scripted

    _openai.register()
    _scripted.register()
