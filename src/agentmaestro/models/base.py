"""The Model protocol and the factory that turns a model string into a model (built-in providers and your own)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from agentmaestro.core.messages import ModelRequest, ModelResponse
from agentmaestro.errors import ConfigError, ModelUnavailableError
from agentmaestro.models import streaming


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


async def check_model(model: str | Model) -> None:
    """Fail fast when ``model`` cannot be used from this process, before a run is started with it.

    Models may define ``async check()``: the ``openai``-compatible and ``anthropic`` adapters check that an API
    key is configured, and for a server on a local or private address that it answers (and, for ``ollama:``,
    that it has the model); ``local:`` checks that the weights can be found. Remote providers are not
    contacted: a model unknown to them fails on the first call, as a step error.

    Raises:
        ModelUnavailableError: the model cannot be used here (its message says what to set or start).
        ConfigError: the model string is malformed or names an unknown provider.
    """
    resolved = resolve_model(model)
    check = getattr(resolved, "check", None)
    if check is None:
        return
    try:
        await check()
    except ModelUnavailableError:
        raise
    except ConfigError as exc:
        raise ModelUnavailableError(str(exc)) from None


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
    """Register the built-in prefixes (once): their modules load only when a model string first needs one."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    from agentmaestro.models import anthropic, local, openai, roles, scripted

    for provider in ("openai", "openrouter", "ollama"):
        register_provider(provider, functools.partial(openai.OpenAIModel, provider=provider))
    register_provider("scripted", scripted.ScriptedModel.from_ref)
    register_provider("anthropic", anthropic.AnthropicModel)
    register_provider("local", local.LocalModel)
    register_provider("role", lambda role: resolve_model(roles.role_model(role)))


_MOVED_TO_STREAMING = ("DeltaSink", "delta_publisher", "get_delta_sink", "set_delta_sink")


def __getattr__(name: str) -> Any:
    """The delta sink moved to :mod:`agentmaestro.models.streaming`; its old names here warn (removed in 0.2)."""
    if name in _MOVED_TO_STREAMING:
        warnings.warn(
            f"agentmaestro.models.base.{name} moved to agentmaestro.models.streaming (this alias goes away in 0.2)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(streaming, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
