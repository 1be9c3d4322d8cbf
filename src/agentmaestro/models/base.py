"""The Model protocol and the factory that turns a model string into a model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from agentmaestro.core.messages import ModelRequest, ModelResponse
from agentmaestro.errors import ConfigError, ModelUnavailableError

log = logging.getLogger(__name__)


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
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    from agentmaestro.models import anthropic as _anthropic
    from agentmaestro.models import local as _local
    from agentmaestro.models import openai as _openai
    from agentmaestro.models import roles as _roles
    from agentmaestro.models import scripted as _scripted

    _openai.register()
    _scripted.register()
    _anthropic.register()
    _local.register()
    _roles.register()


# ------------------------------------------------------------------------------------------- streaming

DeltaSink = Callable[[str, str], None]
"""``sink(run_id, text_delta)``: receives the text of a model answer as it streams in."""

_delta_sink: DeltaSink | None = None


def set_delta_sink(sink: DeltaSink | None) -> DeltaSink | None:
    """Install the process-wide receiver of streamed text deltas (None to remove it); return the previous one.

    While a sink is installed, adapters that can stream (``openai``, ``openrouter``, ``ollama``, ``anthropic``)
    use the provider's streaming API for calls that belong to a run (``ModelRequest.run_id`` set) and call
    ``sink(run_id, text_delta)`` for every piece of answer text as it arrives. The full
    :class:`~agentmaestro.core.messages.ModelResponse` (text, tool calls, usage) is still returned at the end
    and recorded as one event: deltas are never stored.

    The sink runs on the thread of the model call, inside its event loop: it must be fast, must not block, and
    must be thread-safe (e.g. hand the delta over with ``loop.call_soon_threadsafe``). An exception it raises is
    logged and ignored.
    """
    global _delta_sink
    previous, _delta_sink = _delta_sink, sink
    return previous


def get_delta_sink() -> DeltaSink | None:
    """The installed delta sink, if any."""
    return _delta_sink


def delta_publisher(run_id: str | None) -> Callable[[str], None] | None:
    """A function publishing the deltas of one call of ``run_id``, or None when nothing listens.

    Adapters call this once per call: None means "do not stream".
    """
    sink = _delta_sink
    if sink is None or not run_id:
        return None
    failed = False

    def publish(text: str) -> None:
        nonlocal failed
        if not text or failed:
            return
        try:
            sink(run_id, text)
        except Exception:
            failed = True  # one report per call is enough
            log.warning("delta sink %r failed for run %s; dropping this call's deltas", sink, run_id, exc_info=True)

    return publish
