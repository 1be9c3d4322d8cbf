"""OpenTelemetry spans for runs, model calls and tool calls, following the GenAI semantic conventions.

Only ``opentelemetry-api`` is imported here, so tracing costs next to nothing until a tracer provider is installed:
by the application, by :func:`configure_from_env` (which needs the ``otel`` extra), or by tests through
:func:`set_tracer_provider_for_tests`.

Spans carry identifiers, model names, token counts and error types, never tool arguments, tool results, message
contents or exception messages: those may hold secrets.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from importlib import metadata

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from agentmaestro.core.messages import Usage

__all__ = [
    "configure_from_env",
    "model_call_span",
    "record_error",
    "record_usage",
    "run_span",
    "set_tracer_provider_for_tests",
    "tool_call_span",
]

logger = logging.getLogger(__name__)

TRACER_NAME = "agentmaestro"
DEFAULT_SERVICE_NAME = "agentmaestro"

_lock = threading.Lock()
_configured = False
_provider_override: trace.TracerProvider | None = None


def configure_from_env() -> bool:
    """Install an OTLP/HTTP exporting tracer provider when the environment asks for one.

    Tracing is configured when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and
    ``opentelemetry-sdk`` and ``opentelemetry-exporter-otlp-proto-http`` are installed (the ``otel`` extra). The
    service name is ``OTEL_SERVICE_NAME`` or ``agentmaestro``. The exporter reads its other settings (headers,
    timeout, ...) from the standard ``OTEL_EXPORTER_OTLP_*`` variables. A tracer provider the application installed
    itself is left alone. Safe to call more than once.

    Returns:
        True when a provider installed by this function (now or earlier) is active.
    """
    global _configured
    with _lock:
        if _configured:
            return True
        if not (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
            return False
        if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            logger.info("a tracer provider is already installed; not configuring OpenTelemetry from the environment")
            return False
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import SERVICE_NAME, Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            logger.warning(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but tracing is off: %s (install agentmaestro[otel])", exc
            )
            return False
        service_name = os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _configured = True
        return True


def set_tracer_provider_for_tests(provider: trace.TracerProvider | None) -> None:
    """Send this module's spans to ``provider`` instead of the global one; None restores the global provider.

    OpenTelemetry allows setting the global provider only once per process, so tests inject theirs here.
    """
    global _provider_override
    _provider_override = provider


def run_span(*, run_id: str, agent: str, workspace_id: str) -> AbstractContextManager[Span]:
    """Span around one run of an agent (``invoke_agent {agent}``).

    Args:
        run_id: The run's id.
        agent: The agent's name.
        workspace_id: The workspace the run belongs to.

    Returns:
        A context manager giving the span, current for the duration of the block.
    """
    if not _tracing():
        return _NO_SPAN
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": agent,
        "maestro.run_id": run_id,
        "maestro.workspace_id": workspace_id,
    }
    return _span(f"invoke_agent {agent}", SpanKind.INTERNAL, attributes)


def model_call_span(*, run_id: str, step: int, model: str) -> AbstractContextManager[Span]:
    """Span around one model call (``chat {name}``).

    Args:
        run_id: The run's id.
        step: The step number of the call within the run.
        model: The model as ``provider:name`` (the name may itself contain colons, as in ``ollama:llama3:8b``).

    Returns:
        A context manager giving the span, current for the duration of the block; pass it to :func:`record_usage`.
    """
    if not _tracing():
        return _NO_SPAN
    provider, sep, name = model.partition(":")
    if not sep:
        provider, name = "", model
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": name,
        "maestro.run_id": run_id,
        "maestro.step": step,
    }
    if provider:
        attributes["gen_ai.provider.name"] = provider
    return _span(f"chat {name}", SpanKind.CLIENT, attributes)


def tool_call_span(*, run_id: str, step: int, tool_name: str, call_id: str) -> AbstractContextManager[Span]:
    """Span around one tool call (``execute_tool {tool_name}``). Arguments and results are never recorded.

    Args:
        run_id: The run's id.
        step: The step number of the call within the run.
        tool_name: The tool's name.
        call_id: The model-assigned id of the tool call.

    Returns:
        A context manager giving the span, current for the duration of the block.
    """
    if not _tracing():
        return _NO_SPAN
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool_name,
        "gen_ai.tool.call.id": call_id,
        "maestro.run_id": run_id,
        "maestro.step": step,
    }
    return _span(f"execute_tool {tool_name}", SpanKind.INTERNAL, attributes)


def record_usage(
    span: Span, usage: Usage, *, response_model: str | None = None, finish_reason: str | None = None
) -> None:
    """Record a model call's token usage and response metadata on its span.

    Args:
        span: The span from :func:`model_call_span`.
        usage: Token usage reported by the provider.
        response_model: The model that answered, as reported (recorded as given).
        finish_reason: The provider's finish reason, when given.
    """
    if not span.is_recording():
        return
    span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
    if response_model:
        span.set_attribute("gen_ai.response.model", response_model)
    if finish_reason:
        span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])


def record_error(span: Span, exc: BaseException) -> None:
    """Mark a span as failed: status ERROR and ``error.type``.

    The exception's message and traceback are left out on purpose: they may quote arguments or secrets.

    Args:
        span: The span to mark.
        exc: The exception that ended the operation.
    """
    if not span.is_recording():
        return
    span.set_attribute("error.type", _error_type(exc))
    span.set_status(Status(StatusCode.ERROR))


def _tracing() -> bool:
    """Whether spans are recorded: a provider was installed (globally, or for tests)."""
    return _provider_override is not None or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


class _NoSpan:
    """The context manager used while tracing is off: yields the invalid span, costs next to nothing."""

    def __enter__(self) -> Span:
        return trace.INVALID_SPAN

    def __exit__(self, *_exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


@contextmanager
def _span(name: str, kind: SpanKind, attributes: Mapping[str, AttributeValue]) -> Iterator[Span]:
    with _tracer().start_as_current_span(
        name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except Exception as exc:
            record_error(span, exc)
            raise


def _tracer() -> trace.Tracer:
    """The tracer, looked up on every use so that providers installed later (or in tests) take effect."""
    provider = _provider_override
    if provider is not None:
        return provider.get_tracer(TRACER_NAME, _version())
    return trace.get_tracer(TRACER_NAME, _version())


@functools.cache
def _version() -> str:
    try:
        return metadata.version("agentmaestro")
    except metadata.PackageNotFoundError:
        return "0"


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
