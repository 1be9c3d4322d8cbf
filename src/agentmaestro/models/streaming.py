"""Streamed answer text for live viewers: a process-wide delta sink that model adapters publish to.

Deltas are never stored: a run records one event per model step, whatever the answer's length.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

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
