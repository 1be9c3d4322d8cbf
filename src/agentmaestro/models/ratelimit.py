"""A rate limiter shared by every call to one provider endpoint: requests and tokens per minute.

Providers limit requests per minute (RPM) and tokens per minute (TPM). A :class:`RateLimiter` keeps one token
bucket for each, refilled continuously (a full bucket holds one minute's allowance). Model adapters call
:meth:`RateLimiter.acquire` with an estimate of the call's tokens before the call and :meth:`Permit.settle` with
the actual usage after it, so the next callers wait exactly as long as the real consumption requires.

One limiter is shared by all calls in the process for one provider and base URL (:func:`limiter_for`), whichever
thread or event loop they run on. Limits come from constructor arguments or the environment::

    MAESTRO_RPM_OPENAI=500      # requests per minute to the openai provider
    MAESTRO_TPM_OPENAI=200000   # tokens per minute (input + output)
    MAESTRO_RPM_ANTHROPIC=50

Without a limit for a provider, calls are not limited here (the provider's own 429s are retried by the engine).

Waiting uses ``asyncio.sleep``; the bucket state is guarded by a thread lock, never held across an ``await``.
Callers are served in order of arrival: a caller that has to wait reserves its share at once, so later callers
queue behind it instead of overtaking it.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agentmaestro.core.messages import ModelRequest
from agentmaestro.errors import ConfigError

__all__ = [
    "RPM_ENV_PREFIX",
    "TPM_ENV_PREFIX",
    "Permit",
    "RateLimiter",
    "estimate_tokens",
    "limiter_for",
    "limits_from_env",
    "reset_limiters",
]

RPM_ENV_PREFIX = "MAESTRO_RPM_"
"""``MAESTRO_RPM_<PROVIDER>``: requests per minute for a provider (e.g. ``MAESTRO_RPM_OPENAI``)."""
TPM_ENV_PREFIX = "MAESTRO_TPM_"
"""``MAESTRO_TPM_<PROVIDER>``: tokens per minute for a provider (e.g. ``MAESTRO_TPM_ANTHROPIC``)."""

_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4


class _Bucket:
    """A token bucket that may go into debt.

    A reservation larger than the level is granted at once; the debt tells later callers how long to wait.
    """

    def __init__(self, per_minute: float, now: float) -> None:
        self.capacity = per_minute
        self.rate = per_minute / 60.0
        self.level = per_minute
        self.updated = now

    def reconfigure(self, per_minute: float, now: float) -> None:
        self.refill(now)
        self.capacity = per_minute
        self.rate = per_minute / 60.0
        self.level = min(self.level, per_minute)

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def reserve(self, amount: float, now: float) -> float:
        """Take ``amount`` (capped at the capacity); return the seconds until the bucket is out of debt."""
        self.refill(now)
        self.level -= min(amount, self.capacity)
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def give_back(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level = min(self.capacity, self.level + amount)


class Permit:
    """The right to make one call, returned by :meth:`RateLimiter.acquire`.

    Attributes:
        estimated_tokens: The tokens reserved for the call.
        waited_s: Seconds the caller waited for the permit.
    """

    def __init__(self, limiter: RateLimiter | None, estimated_tokens: int, waited_s: float = 0.0) -> None:
        self._limiter = limiter
        self.estimated_tokens = estimated_tokens
        self.waited_s = waited_s
        self._settled = False

    def settle(self, actual_tokens: int) -> None:
        """Correct the token bucket with the call's real usage (input plus output tokens).

        Use 0 for a call that failed before the provider counted any tokens. Only the first call counts.
        """
        if self._settled:
            return
        self._settled = True
        if self._limiter is not None:
            self._limiter._adjust_tokens(self.estimated_tokens - max(0, int(actual_tokens)))


UNLIMITED = Permit(None, 0)
"""A permit for calls that are not limited; settling it does nothing."""


@dataclass(frozen=True)
class _Limits:
    rpm: float | None
    tpm: float | None


class RateLimiter:
    """Token buckets for requests per minute and tokens per minute, safe to share across threads and loops.

    Example::

        limiter = RateLimiter(rpm=60, tpm=100_000)
        permit = await limiter.acquire(estimated_tokens=1_200)
        try:
            response = await call_the_provider()
        except Exception:
            permit.settle(0)
            raise
        permit.settle(response.usage.total_tokens)
    """

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        """Create a limiter; ``None`` (or 0) for a limit means no limit of that kind.

        Args:
            rpm: Requests per minute.
            tpm: Tokens (input plus output) per minute.
            name: What is limited, for messages and ``repr``.
            clock: Monotonic clock in seconds (replaceable in tests).
            sleep: Async sleep function (replaceable in tests).

        Raises:
            ConfigError: a limit is negative or not a number.
        """
        self.name = name
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._requests: _Bucket | None = None
        self._tokens: _Bucket | None = None
        self.configure(rpm=rpm, tpm=tpm)

    @property
    def rpm(self) -> float | None:
        """Requests per minute, or None when requests are not limited."""
        return self._requests.capacity if self._requests else None

    @property
    def tpm(self) -> float | None:
        """Tokens per minute, or None when tokens are not limited."""
        return self._tokens.capacity if self._tokens else None

    @property
    def available_requests(self) -> float | None:
        """Requests that could start now without waiting (negative: queued debt); None when unlimited."""
        return self._level(self._requests)

    @property
    def available_tokens(self) -> float | None:
        """Tokens that could be used now without waiting (negative: queued debt); None when unlimited."""
        return self._level(self._tokens)

    def _level(self, bucket: _Bucket | None) -> float | None:
        if bucket is None:
            return None
        with self._lock:
            bucket.refill(self._clock())
            return bucket.level

    def configure(self, *, rpm: float | None, tpm: float | None) -> None:
        """Change the limits; the buckets keep their current level (capped at the new capacity).

        Raises:
            ConfigError: a limit is negative or not a number.
        """
        rpm = _check_limit(rpm, "rpm", self.name)
        tpm = _check_limit(tpm, "tpm", self.name)
        with self._lock:
            now = self._clock()
            self._requests = _configured(self._requests, rpm, now)
            self._tokens = _configured(self._tokens, tpm, now)

    def __repr__(self) -> str:
        return f"RateLimiter({self.name!r}, rpm={self.rpm}, tpm={self.tpm})"

    def reserve(self, estimated_tokens: int = 0) -> float:
        """Reserve one request and ``estimated_tokens`` now, without waiting; return the seconds to wait.

        Most callers want :meth:`acquire`, which waits. A reservation stays taken even if the caller does not
        wait for it.
        """
        tokens = max(0, int(estimated_tokens))
        with self._lock:
            now = self._clock()
            wait = 0.0
            if self._requests is not None:
                wait = self._requests.reserve(1, now)
            if self._tokens is not None and tokens:
                wait = max(wait, self._tokens.reserve(tokens, now))
        return wait

    async def acquire(self, estimated_tokens: int = 0) -> Permit:
        """Wait until one more request and ``estimated_tokens`` fit in the limits; return a permit to settle.

        A cancelled wait gives its reservation back.
        """
        tokens = max(0, int(estimated_tokens))
        wait = self.reserve(tokens)
        if wait > 0:
            try:
                await self._sleep(wait)
            except BaseException:
                self._give_back(1, tokens)
                raise
        return Permit(self, tokens, wait)

    def _give_back(self, requests: int, tokens: int) -> None:
        with self._lock:
            now = self._clock()
            if self._requests is not None:
                self._requests.give_back(requests, now)
            if self._tokens is not None and tokens:
                self._tokens.give_back(tokens, now)

    def _adjust_tokens(self, delta: int) -> None:
        """Give back (positive) or take more (negative) tokens after a call reported its real usage."""
        if not delta:
            return
        with self._lock:
            if self._tokens is None:
                return
            now = self._clock()
            if delta > 0:
                self._tokens.give_back(delta, now)
            else:
                self._tokens.refill(now)
                self._tokens.level += delta  # deeper in debt: later callers wait longer


def _configured(bucket: _Bucket | None, per_minute: float | None, now: float) -> _Bucket | None:
    if per_minute is None:
        return None
    if bucket is None:
        return _Bucket(per_minute, now)
    if bucket.capacity != per_minute:
        bucket.reconfigure(per_minute, now)
    return bucket


def _check_limit(value: float | None, what: str, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or value < 0:
        where = f" for {name}" if name else ""
        raise ConfigError(f"rate limit {what}{where} must be a number >= 0, got {value!r}")
    return float(value) if value > 0 else None


def _env_name(prefix: str, provider: str) -> str:
    return prefix + re.sub(r"[^A-Z0-9]", "_", provider.upper())


def limits_from_env(provider: str) -> tuple[float | None, float | None]:
    """The ``(rpm, tpm)`` set for a provider by ``MAESTRO_RPM_<PROVIDER>`` and ``MAESTRO_TPM_<PROVIDER>``.

    Raises:
        ConfigError: a variable is set to something other than a non-negative number.
    """
    out: list[float | None] = []
    for prefix in (RPM_ENV_PREFIX, TPM_ENV_PREFIX):
        name = _env_name(prefix, provider)
        raw = os.environ.get(name, "").strip()
        if not raw:
            out.append(None)
            continue
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number (per minute), got {raw!r}") from None
        if math.isnan(value) or value < 0:
            raise ConfigError(f"{name} must be a number >= 0, got {raw!r}")
        out.append(value if value > 0 else None)
    return out[0], out[1]


_LIMITERS: dict[tuple[str, str], RateLimiter] = {}
_REGISTRY_LOCK = threading.Lock()


def limiter_for(
    provider: str, base_url: str | None = None, *, rpm: float | None = None, tpm: float | None = None
) -> RateLimiter | None:
    """The limiter shared by all calls to ``provider`` at ``base_url`` in this process, or None when unlimited.

    Explicit ``rpm``/``tpm`` win over the environment (``MAESTRO_RPM_<PROVIDER>``, ``MAESTRO_TPM_<PROVIDER>``).
    The environment is read on every call, so a changed limit applies to the next call; the bucket levels are
    kept.

    Raises:
        ConfigError: a limit is malformed.
    """
    env_rpm, env_tpm = limits_from_env(provider)
    limits = _Limits(rpm=rpm if rpm is not None else env_rpm, tpm=tpm if tpm is not None else env_tpm)
    key = (provider, (base_url or "").rstrip("/"))
    with _REGISTRY_LOCK:
        limiter = _LIMITERS.get(key)
        if not limits.rpm and not limits.tpm:
            return None
        if limiter is None:
            name = f"{provider} at {key[1]}" if key[1] else provider
            limiter = _LIMITERS[key] = RateLimiter(rpm=limits.rpm, tpm=limits.tpm, name=name)
        elif (limiter.rpm, limiter.tpm) != (limits.rpm or None, limits.tpm or None):
            limiter.configure(rpm=limits.rpm, tpm=limits.tpm)
        return limiter


def reset_limiters() -> None:
    """Forget every shared limiter (for tests)."""
    with _REGISTRY_LOCK:
        _LIMITERS.clear()


def estimate_tokens(request: ModelRequest) -> int:
    """A cheap guess of a call's tokens.

    About 4 characters per token of the messages and tool schemas, plus the requested maximum output.
    """
    chars = 0
    for message in request.messages:
        chars += len(message.content or "")
        for call in message.tool_calls:
            chars += len(call.name) + len(json.dumps(call.arguments, default=str))
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description) + len(json.dumps(tool.parameters, default=str))
    prompt = -(-chars // _CHARS_PER_TOKEN) + _TOKENS_PER_MESSAGE * len(request.messages)
    return prompt + (request.max_output_tokens or 0)
