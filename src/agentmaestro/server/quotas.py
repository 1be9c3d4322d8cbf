"""The per-key rate limit; per-workspace quotas live in :mod:`agentmaestro.service.quotas` (re-exported here)."""

from __future__ import annotations

import os
import threading
import time

from agentmaestro.errors import ConfigError
from agentmaestro.service.quotas import QuotaExceededError, Quotas, check_run_quota, effective_quotas, quotas_of

__all__ = ["QuotaExceededError", "Quotas", "RateLimiter", "check_run_quota", "effective_quotas", "quotas_of"]

DEFAULT_RATE_LIMIT_PER_MIN = 600
RATE_LIMIT_ENV = "MAESTRO_RATE_LIMIT_PER_MIN"


class RateLimiter:
    """A token bucket per API key, in memory (per process): ``per_minute`` requests, bursts up to that many."""

    def __init__(self, per_minute: int) -> None:
        if per_minute < 1:
            raise ValueError("the rate limit must be at least 1 request per minute")
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, per_minute: int | None = None) -> RateLimiter | None:
        """``per_minute``, else ``MAESTRO_RATE_LIMIT_PER_MIN`` (default 600); 0 disables the limit."""
        if per_minute is None:
            raw = os.environ.get(RATE_LIMIT_ENV, "").strip()
            try:
                per_minute = int(raw) if raw else DEFAULT_RATE_LIMIT_PER_MIN
            except ValueError:
                raise ConfigError(f"{RATE_LIMIT_ENV} must be an integer, got {raw!r}") from None
        return cls(per_minute) if per_minute > 0 else None

    def take(self, key: str, now: float | None = None) -> float | None:
        """Spend one token of ``key``'s bucket; None if allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * self._rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return None
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self._rate
