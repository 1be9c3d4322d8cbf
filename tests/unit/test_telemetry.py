from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agentmaestro import telemetry
from agentmaestro.core.messages import Usage
from agentmaestro.errors import ToolError


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    telemetry.set_tracer_provider_for_tests(provider)
    try:
        yield memory
    finally:
        telemetry.set_tracer_provider_for_tests(None)
        provider.shutdown()


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, spans
    return spans[0]


def test_run_span(exporter: InMemorySpanExporter) -> None:
    with telemetry.run_span(run_id="r1", agent="calc", workspace_id="ws") as span:
        assert span.is_recording()
    s = only_span(exporter)
    assert s.name == "invoke_agent calc"
    assert s.kind is SpanKind.INTERNAL
    assert dict(s.attributes or {}) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "calc",
        "maestro.run_id": "r1",
        "maestro.workspace_id": "ws",
    }
    assert s.status.status_code is StatusCode.UNSET
    assert s.instrumentation_scope is not None and s.instrumentation_scope.name == "agentmaestro"


def test_model_call_span_with_usage(exporter: InMemorySpanExporter) -> None:
    with telemetry.model_call_span(run_id="r1", step=3, model="openai:gpt-4.1-mini") as span:
        telemetry.record_usage(
            span, Usage(input_tokens=12, output_tokens=5), response_model="gpt-4.1-mini-2025", finish_reason="stop"
        )
    s = only_span(exporter)
    assert s.name == "chat gpt-4.1-mini"
    assert s.kind is SpanKind.CLIENT
    assert dict(s.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4.1-mini",
        "maestro.run_id": "r1",
        "maestro.step": 3,
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 5,
        "gen_ai.response.model": "gpt-4.1-mini-2025",
        "gen_ai.response.finish_reasons": ("stop",),
    }


def test_model_names_with_colons_and_without_provider(exporter: InMemorySpanExporter) -> None:
    with telemetry.model_call_span(run_id="r", step=1, model="ollama:llama3:8b") as span:
        telemetry.record_usage(span, Usage())
    with telemetry.model_call_span(run_id="r", step=2, model="bare-model"):
        pass
    first, second = exporter.get_finished_spans()
    assert first.name == "chat llama3:8b"
    assert first.attributes is not None
    assert first.attributes["gen_ai.provider.name"] == "ollama"
    assert first.attributes["gen_ai.request.model"] == "llama3:8b"
    assert first.attributes["gen_ai.usage.input_tokens"] == 0
    assert "gen_ai.response.model" not in first.attributes
    assert second.name == "chat bare-model"
    assert second.attributes is not None and "gen_ai.provider.name" not in second.attributes


def test_tool_call_span_records_no_arguments(exporter: InMemorySpanExporter) -> None:
    with telemetry.tool_call_span(run_id="r1", step=4, tool_name="add", call_id="call_9"):
        pass
    s = only_span(exporter)
    assert s.name == "execute_tool add"
    assert dict(s.attributes or {}) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "add",
        "gen_ai.tool.call.id": "call_9",
        "maestro.run_id": "r1",
        "maestro.step": 4,
    }
    assert s.events == ()


def test_spans_nest(exporter: InMemorySpanExporter) -> None:
    with telemetry.run_span(run_id="r1", agent="calc", workspace_id="ws"):
        with telemetry.model_call_span(run_id="r1", step=1, model="openai:m"):
            pass
        with telemetry.tool_call_span(run_id="r1", step=2, tool_name="add", call_id="c"):
            pass
    model, tool, run = exporter.get_finished_spans()
    assert run.context is not None
    assert model.parent is not None and model.parent.span_id == run.context.span_id
    assert tool.parent is not None and tool.parent.span_id == run.context.span_id


def test_exception_is_recorded_without_message_and_reraised(exporter: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match="secret-token"):
        with telemetry.tool_call_span(run_id="r1", step=1, tool_name="leak", call_id="c"):
            raise ValueError("secret-token")
    s = only_span(exporter)
    assert s.status.status_code is StatusCode.ERROR
    assert s.attributes is not None and s.attributes["error.type"] == "ValueError"
    assert s.events == ()  # no exception event: its message and traceback could carry secrets
    assert "secret-token" not in repr(s.to_json())


def test_record_error_uses_qualified_type(exporter: InMemorySpanExporter) -> None:
    with telemetry.model_call_span(run_id="r1", step=1, model="openai:m") as span:
        telemetry.record_error(span, ToolError("nope"))
    s = only_span(exporter)
    assert s.status.status_code is StatusCode.ERROR
    assert s.attributes is not None and s.attributes["error.type"] == "agentmaestro.errors.ToolError"


def test_free_and_harmless_without_a_provider() -> None:
    telemetry.set_tracer_provider_for_tests(None)
    with telemetry.run_span(run_id="r", agent="a", workspace_id="w") as run:
        with telemetry.model_call_span(run_id="r", step=1, model="openai:m") as span:
            telemetry.record_usage(span, Usage(input_tokens=1), response_model="m", finish_reason="stop")
            telemetry.record_error(span, RuntimeError("x"))
        with telemetry.tool_call_span(run_id="r", step=2, tool_name="t", call_id="c"):
            pass
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        assert not run.is_recording()
    with pytest.raises(KeyError):
        with telemetry.tool_call_span(run_id="r", step=3, tool_name="t", call_id="c"):
            raise KeyError("k")


def test_configure_from_env_without_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_configured", False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert telemetry.configure_from_env() is False


def test_configure_from_env_without_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_configured", False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace.export", None)
    assert telemetry.configure_from_env() is False


def test_configure_from_env_installs_provider_once(monkeypatch: pytest.MonkeyPatch) -> None:
    installed: list[trace.TracerProvider] = []
    monkeypatch.setattr(telemetry, "_configured", False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "maestro-test")
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    try:
        assert telemetry.configure_from_env() is True
        assert telemetry.configure_from_env() is True
        assert len(installed) == 1
        provider = installed[0]
        assert isinstance(provider, TracerProvider)
        assert provider.resource.attributes["service.name"] == "maestro-test"
    finally:
        for p in installed:
            assert isinstance(p, TracerProvider)
            p.shutdown()


def test_configure_from_env_leaves_an_existing_provider_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    existing = TracerProvider()
    monkeypatch.setattr(telemetry, "_configured", False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: existing)
    monkeypatch.setattr(trace, "set_tracer_provider", pytest.fail)
    assert telemetry.configure_from_env() is False
    existing.shutdown()
