"""The shared per-provider rate limiter: token buckets for requests and tokens per minute."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from agentmaestro.core.messages import Message, ModelRequest, ToolSpec
from agentmaestro.errors import ConfigError
from agentmaestro.models.openai import OpenAIModel
from agentmaestro.models.ratelimit import (
    RateLimiter,
    estimate_tokens,
    limiter_for,
    limits_from_env,
    reset_limiters,
)
from tests.fakes.openai_server import FakeOpenAIServer


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for provider in ("OPENAI", "ANTHROPIC", "OPENROUTER", "MY_PROXY"):
        monkeypatch.delenv(f"MAESTRO_RPM_{provider}", raising=False)
        monkeypatch.delenv(f"MAESTRO_TPM_{provider}", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    reset_limiters()
    yield
    reset_limiters()


def _limiter(fake: FakeTime, **kwargs: float | None) -> RateLimiter:
    return RateLimiter(clock=fake.clock, sleep=fake.sleep, name="test", **kwargs)  # type: ignore[arg-type]


def test_requests_per_minute_burst_then_wait(fake_time: FakeTime) -> None:
    limiter = _limiter(fake_time, rpm=60)

    async def go() -> list[float]:
        return [(await limiter.acquire()).waited_s for _ in range(63)]

    waits = asyncio.run(go())
    assert waits[:60] == [0.0] * 60  # a full bucket holds one minute's allowance
    assert waits[60:] == pytest.approx([1.0, 2.0, 3.0])  # then one per second, queued in order
    assert fake_time.sleeps == pytest.approx([1.0, 2.0, 3.0])
    fake_time.advance(3.0)
    assert limiter.available_requests == pytest.approx(0.0)
    fake_time.advance(30.0)
    assert limiter.available_requests == pytest.approx(30.0)
    fake_time.advance(3600.0)
    assert limiter.available_requests == pytest.approx(60.0)  # never above capacity


def test_tokens_per_minute_and_settle(fake_time: FakeTime) -> None:
    limiter = _limiter(fake_time, tpm=600)  # 10 tokens per second

    async def go() -> None:
        first = await limiter.acquire(500)
        assert first.waited_s == 0.0
        first.settle(300)  # used less than estimated: 200 come back
        assert limiter.available_tokens == pytest.approx(300)
        second = await limiter.acquire(500)  # 200 short: 20 s
        assert second.waited_s == pytest.approx(20.0)
        second.settle(700)  # used more than estimated: deeper in debt
        second.settle(0)  # only the first settle counts
        assert limiter.available_tokens == pytest.approx(-400)
        third = await limiter.acquire(0)  # no tokens asked, no request limit: no wait
        assert third.waited_s == 0.0

    asyncio.run(go())
    assert limiter.rpm is None and limiter.tpm == 600


def test_oversized_estimate_is_capped_at_capacity(fake_time: FakeTime) -> None:
    limiter = _limiter(fake_time, tpm=1000)

    async def go() -> float:
        await limiter.acquire(5000)  # more than a minute's worth: takes the full bucket, never deadlocks
        return (await limiter.acquire(100)).waited_s

    assert asyncio.run(go()) == pytest.approx(6.0)


def test_both_limits_wait_for_the_slower(fake_time: FakeTime) -> None:
    limiter = _limiter(fake_time, rpm=60, tpm=60)

    async def go() -> float:
        await limiter.acquire(60)
        return (await limiter.acquire(30)).waited_s

    assert asyncio.run(go()) == pytest.approx(30.0)


def test_cancelled_wait_gives_the_reservation_back() -> None:
    limiter = RateLimiter(rpm=60, name="cancel")

    async def go() -> None:
        for _ in range(60):
            await limiter.acquire()
        waiting = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0.05)
        assert (limiter.available_requests or 0) < 0
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert limiter.available_requests == pytest.approx(0.0, abs=0.1)

    asyncio.run(go())


def test_reconfigure_keeps_level(fake_time: FakeTime) -> None:
    limiter = _limiter(fake_time, rpm=100)
    asyncio.run(limiter.acquire())
    limiter.configure(rpm=50, tpm=1000)
    assert limiter.available_requests == pytest.approx(50)  # capped at the new capacity
    assert limiter.available_tokens == pytest.approx(1000)
    limiter.configure(rpm=None, tpm=None)
    assert limiter.available_requests is None and limiter.rpm is None


@pytest.mark.parametrize("bad", [-1, float("nan"), "10", True])
def test_bad_limits_are_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError, match="rate limit"):
        RateLimiter(rpm=bad)  # type: ignore[arg-type]


def test_shared_across_threads_and_event_loops() -> None:
    limiter = RateLimiter(rpm=6000, name="threads")  # 100 per second after a burst of 6000
    for _ in range(6000):
        limiter.reserve()
    started = time.monotonic()

    def worker() -> None:
        async def go() -> None:
            for _ in range(5):
                await limiter.acquire()

        asyncio.run(go())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    # 20 requests at 100/s, with the bucket empty: the last one waited about 0.2 s
    assert time.monotonic() - started >= 0.15


def test_limits_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert limits_from_env("openai") == (None, None)
    monkeypatch.setenv("MAESTRO_RPM_OPENAI", "500")
    monkeypatch.setenv("MAESTRO_TPM_OPENAI", "200000")
    assert limits_from_env("openai") == (500.0, 200000.0)
    monkeypatch.setenv("MAESTRO_RPM_MY_PROXY", "0")  # provider names are upper-cased, '-' becomes '_'
    assert limits_from_env("my-proxy") == (None, None)
    monkeypatch.setenv("MAESTRO_TPM_ANTHROPIC", "lots")
    with pytest.raises(ConfigError, match="MAESTRO_TPM_ANTHROPIC"):
        limits_from_env("anthropic")


def test_limiter_for_shares_one_limiter_per_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    assert limiter_for("openai", "http://127.0.0.1:1/v1") is None  # unlimited: no limiter at all
    monkeypatch.setenv("MAESTRO_RPM_OPENAI", "120")
    a = limiter_for("openai", "http://127.0.0.1:1/v1")
    b = limiter_for("openai", "http://127.0.0.1:1/v1/")
    c = limiter_for("openai", "http://127.0.0.1:2/v1")
    assert a is not None and a is b and a is not c
    assert a.rpm == 120 and a.tpm is None
    assert limiter_for("anthropic", None) is None
    d = limiter_for("openai", "http://127.0.0.1:1/v1", rpm=30, tpm=1000)  # explicit wins, same limiter
    assert d is a and (a.rpm, a.tpm) == (30, 1000)
    monkeypatch.setenv("MAESTRO_RPM_OPENAI", "240")
    assert limiter_for("openai", "http://127.0.0.1:1/v1") is a and a.rpm == 240  # env read on every call


def test_estimate_tokens() -> None:
    request = ModelRequest(
        model="m",
        messages=(Message(role="system", content="x" * 400), Message(role="user", content="y" * 400)),
        tools=(ToolSpec(name="t", description="d", parameters={"type": "object"}),),
        max_output_tokens=100,
    )
    estimate = estimate_tokens(request)
    assert 200 + 8 + 100 <= estimate <= 200 + 8 + 100 + 20


def test_openai_adapter_uses_the_shared_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("MAESTRO_TPM_OPENAI", "100000")
        monkeypatch.setenv("MAESTRO_RPM_OPENAI", "100")
        server.reply_text("one", usage=(1000, 200))
        server.reply_text("two", usage=(500, 100))
        model = OpenAIModel("gpt-test", base_url=server.base_url, api_key="sk-test-123456789", max_retries=0)
        request = ModelRequest(model="gpt-test", messages=(Message(role="user", content="hi"),))
        asyncio.run(model.complete(request))
        asyncio.run(model.complete(request))
        server.reply_error(500, "boom")
        with pytest.raises(Exception, match="HTTP 500"):
            asyncio.run(model.complete(request))
    limiter = limiter_for("openai", server.base_url)
    assert limiter is not None
    refill = (time.monotonic() - started) / 60  # fraction of a minute's allowance refilled meanwhile
    # actual usage was settled (1200 + 600 tokens); the failed call cost a request but no tokens
    tokens, requests = limiter.available_tokens, limiter.available_requests
    assert tokens is not None and requests is not None
    assert 100000 - 1800 <= tokens <= 100000 - 1800 + 100000 * refill + 1
    assert 100 - 3 <= requests <= 100 - 3 + 100 * refill + 0.01
