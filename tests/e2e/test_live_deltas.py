"""Live model text deltas reach SSE and WebSocket viewers (``?deltas=true``), on SQLite and PostgreSQL.

An agent on the OpenAI adapter talks to a fake OpenAI-compatible server that streams its answer in
small chunks, 20 ms apart, like a model generating tokens. The fake holds its reply until a viewer
is subscribed (the server runs in this process, so the test can see the subscription), then the
viewer must receive the answer as deltas, all of the run's events exactly once and in order, and
the end message. On PostgreSQL the deltas travel through ``NOTIFY maestro_deltas`` and the server's
LISTEN connection. The dashboard shows the streaming answer as text in a "typing" bubble.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from agentmaestro.agents import Agent, AgentRegistry
from agentmaestro.engine.deltas import BUS
from agentmaestro.models.openai import OpenAIModel
from agentmaestro.store.base import Store
from tests.e2e.browser import Pages, expect, needs_chromium
from tests.e2e.test_server import auth, make_key
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.server import LiveServer

ANSWER = "Durable agents stream their answers, one small piece at a time."


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(model="gpt-4.1-mini", chunk_chars=4, chunk_delay_s=0.02) as server:
        yield server


@pytest.fixture
def live(db_url: str, fake: FakeOpenAIServer) -> Iterator[tuple[LiveServer, str]]:
    fake.reset()
    model = OpenAIModel("gpt-4.1-mini", base_url=fake.base_url, api_key="sk-test-123456789", max_retries=0)
    agents = AgentRegistry([Agent(name="streamer", model=model, instructions="Answer.")])
    with LiveServer(db_url, agents) as srv:
        # in a thread: once playwright's sync API runs, this thread has an event loop
        with ThreadPoolExecutor(1) as pool:
            key = pool.submit(make_key, db_url, "default", "operator").result()
        yield srv, key
    fake.reset()


def _start_held_run(srv: LiveServer, key: str, fake: FakeOpenAIServer) -> str:
    """Start a run whose model answer is held by the fake until released."""
    fake.reply_text(ANSWER, usage=(12, 14), delay_s=60)
    r = httpx.post(f"{srv.url}/v1/runs", json={"agent": "streamer", "input": "go"}, headers=auth(key), timeout=10)
    assert r.status_code == 201, r.text
    run_id: str = r.json()["run_id"]
    deadline = time.monotonic() + 20
    while not fake.requests:  # the model call is in flight (held)
        assert time.monotonic() < deadline, "the model was never called"
        time.sleep(0.02)
    return run_id


def _release_when_subscribed(run_id: str, fake: FakeOpenAIServer) -> None:
    deadline = time.monotonic() + 20
    while BUS.subscribers(run_id) == 0:
        assert time.monotonic() < deadline, "the viewer never subscribed"
        time.sleep(0.01)
    fake.reset()  # the held reply streams now


def _check(messages: list[tuple[str, Any]], run_id: str) -> None:
    events = [m for kind, m in messages if kind == "event"]
    ends = [m for kind, m in messages if kind == "end"]
    answer_at = next(
        i for i, (kind, m) in enumerate(messages) if kind == "event" and ANSWER in json.dumps(m["payload"])
    )
    live = [m for kind, m in messages[:answer_at] if kind == "delta"]
    every = [m for kind, m in messages if kind == "delta"]
    # The answer streamed in live, piece by piece, before its (durable) event was committed ...
    assert len(live) >= 3, f"only {len(live)} deltas arrived before the answer event"
    assert all(d["run_id"] == run_id for d in every)
    # ... in order, with nothing invented (deltas are best-effort: the tail may race the event).
    assert "".join(d["text"] for d in every) in ANSWER
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert ends and ends[-1]["status"] == "COMPLETED" and ends[-1]["last_seq"] == seqs[-1]
    assert len(events) < 20, "deltas never become events"


def test_sse_viewer_gets_deltas(live: tuple[LiveServer, str], fake: FakeOpenAIServer) -> None:
    srv, key = live
    run_id = _start_held_run(srv, key, fake)
    messages: list[tuple[str, Any]] = []
    headers = {**auth(key), "Accept": "text/event-stream"}
    with httpx.Client(timeout=30) as client:
        with client.stream("GET", f"{srv.url}/v1/runs/{run_id}/events?deltas=true", headers=headers) as resp:
            assert resp.status_code == 200
            released = False
            event, data, has_id = "", "", False
            for line in resp.iter_lines():
                if not released:
                    _release_when_subscribed(run_id, fake)
                    released = True
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line.startswith("id: "):
                    has_id = True
                elif line == "" and data:
                    if event == "delta":
                        assert not has_id, "deltas carry no id (Last-Event-ID keeps pointing at events)"
                        messages.append(("delta", json.loads(data)))
                    elif event == "end":
                        messages.append(("end", json.loads(data)))
                        break
                    else:
                        messages.append(("event", json.loads(data)))
                    event, data, has_id = "", "", False
    _check(messages, run_id)


def test_websocket_viewer_gets_deltas(live: tuple[LiveServer, str], fake: FakeOpenAIServer) -> None:
    srv, key = live
    run_id = _start_held_run(srv, key, fake)

    async def watch() -> list[tuple[str, Any]]:
        got: list[tuple[str, Any]] = []
        url = f"ws://127.0.0.1:{srv.port}/v1/runs/{run_id}/ws?deltas=true&key={key}"
        async with connect(url) as ws:
            release = asyncio.create_task(asyncio.to_thread(_release_when_subscribed, run_id, fake))
            async for raw in ws:
                msg = json.loads(raw)
                if msg["kind"] == "event":
                    got.append(("event", msg["event"]))
                else:
                    got.append((msg["kind"], msg))
            await release
        return got

    _check(asyncio.run(asyncio.wait_for(watch(), 30)), run_id)


def test_no_deltas_unless_asked(live: tuple[LiveServer, str], fake: FakeOpenAIServer, db_url: str) -> None:
    srv, key = live
    fake.reply_text(ANSWER, usage=(3, 4))
    r = httpx.post(f"{srv.url}/v1/runs", json={"agent": "streamer", "input": "go"}, headers=auth(key), timeout=10)
    run_id = r.json()["run_id"]
    headers = {**auth(key), "Accept": "text/event-stream"}
    with httpx.stream("GET", f"{srv.url}/v1/runs/{run_id}/events", headers=headers, timeout=30) as resp:
        body = "".join(resp.iter_text())
    assert "event: delta" not in body and "event: end" in body

    async def stored_types() -> list[str]:
        store = Store.open(db_url)
        try:
            return [e.type.value for e in await store.events.read(run_id, 0, 1000)]
        finally:
            await store.close()

    assert "delta" not in " ".join(asyncio.run(stored_types())).lower()


@needs_chromium
def test_dashboard_shows_the_answer_as_it_streams(
    live: tuple[LiveServer, str], fake: FakeOpenAIServer, pages: Callable[[str], Pages]
) -> None:
    srv, key = live
    run_id = _start_held_run(srv, key, fake)
    page = pages(srv.url).open(key, f"#/runs/{run_id}")
    threading.Thread(target=_release_when_subscribed, args=(run_id, fake), daemon=True).start()
    streaming = page.locator("li.ev.streaming .text")
    expect()(streaming).not_to_have_text("")  # partial answer, as text
    partial = streaming.text_content() or ""
    assert partial and partial in ANSWER  # best-effort: a page (re)connecting mid-answer shows the rest
    final = page.locator("li.ev.final .text")
    expect()(final).to_have_text(ANSWER)
    expect()(page.locator("li.ev.streaming")).to_have_count(0)  # replaced by the durable event
