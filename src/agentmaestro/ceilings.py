"""Server-wide quota maximums: a ceiling over every workspace's quotas that tenants cannot lift.

Operators set them in the environment of every ``maestro serve`` and ``maestro worker`` process:

==================================  =========================================
``MAESTRO_MAX_CONCURRENT_RUNS``     caps ``max_concurrent_runs``
``MAESTRO_MAX_RUNS_PER_HOUR``       caps ``runs_per_hour``
``MAESTRO_MAX_MONTHLY_BUDGET_USD``  caps ``monthly_budget_usd``
==================================  =========================================

A workspace's effective quota is the smaller of its own and the ceiling; a workspace with no quota
of its own (or whose admin cleared them all) gets the ceiling. An admin may lower a quota below the
ceiling, never raise it above: the API refuses such a value. Like Temporal's namespace limits,
the ceiling belongs to whoever runs the server, not to the tenants.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from agentmaestro.errors import ConfigError

__all__ = ["CEILING_ENV", "QuotaCeiling", "quota_ceiling"]

CEILING_ENV: Final[Mapping[str, str]] = {
    "max_concurrent_runs": "MAESTRO_MAX_CONCURRENT_RUNS",
    "runs_per_hour": "MAESTRO_MAX_RUNS_PER_HOUR",
    "monthly_budget_usd": "MAESTRO_MAX_MONTHLY_BUDGET_USD",
}
"""Quota field -> the environment variable that caps it."""


@dataclass(frozen=True, kw_only=True)
class QuotaCeiling:
    """The server's maximum per quota; None: no maximum."""

    max_concurrent_runs: int | None = None
    """Most unfinished runs any workspace may have."""
    runs_per_hour: int | None = None
    """Most runs any workspace may create per rolling hour."""
    monthly_budget_usd: float | None = None
    """Most USD any workspace's steps may cost per calendar month (UTC)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> QuotaCeiling:
        """The ceiling configured by the environment; ConfigError naming the variable on a bad value."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, var in CEILING_ENV.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                value = float(raw) if field == "monthly_budget_usd" else int(raw)
            except ValueError:
                kind = "a number" if field == "monthly_budget_usd" else "a whole number"
                raise ConfigError(f"{var} must be {kind} (or unset), got {raw!r}") from None
            if value < 0 or not math.isfinite(value):
                raise ConfigError(f"{var} must be 0 or more, got {raw!r}")
            values[field] = value
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (null: no maximum)."""
        return {f: getattr(self, f) for f in CEILING_ENV}

    def cap(self, quotas: Mapping[str, Any]) -> dict[str, Any]:
        """The effective quotas: per field the smaller of the workspace's (None: unlimited) and the ceiling."""
        out = dict(quotas)
        for field in CEILING_ENV:
            top, own = getattr(self, field), quotas.get(field)
            out[field] = own if top is None else (top if own is None else min(own, top))
        return out

    def above(self, quotas: Mapping[str, Any]) -> list[str]:
        """Why ``quotas`` would lift the ceiling: one phrase per field set above its maximum."""
        problems = []
        for field, var in CEILING_ENV.items():
            top, own = getattr(self, field), quotas.get(field)
            if top is not None and own is not None and own > top:
                problems.append(f"{field}={own:g} is above the server's maximum {top:g} ({var})")
        return problems


_cached: tuple[tuple[str, ...], QuotaCeiling] | None = None
_lock = threading.Lock()


def quota_ceiling() -> QuotaCeiling:
    """The process's ceiling from the environment, re-read when the variables change."""
    global _cached
    marker = tuple(os.environ.get(v, "") for v in CEILING_ENV.values())
    with _lock:
        if _cached is None or _cached[0] != marker:
            _cached = (marker, QuotaCeiling.from_env())
        return _cached[1]
