"""Run policies: limits checked before every step. Pure, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from agentmaestro.errors import ConfigError

LimitName = Literal[
    "max_steps", "max_tokens", "max_tool_calls", "max_cost_usd", "timeout_s", "budget_usd", "budget_tokens"
]


@dataclass(frozen=True, kw_only=True)
class Usage:
    """What a run has used so far, as the policy sees it."""

    steps: int = 0
    """Completed steps (model calls, tool calls, messages)."""
    tokens: int = 0
    """Input plus output tokens over all model calls."""
    tool_calls: int = 0
    """Completed tool calls."""
    cost_usd: float = 0.0
    """Cost of all model calls in US dollars."""
    elapsed_s: float = 0.0
    """Wall time since the run (or its latest resume) started."""


@dataclass(frozen=True, kw_only=True)
class Violation:
    """A policy limit that the next step would break."""

    limit: LimitName
    """Which limit."""
    limit_value: float
    """The configured limit."""
    observed: float
    """What the run has used."""
    budget: str | None = None
    """For budget limits: which budget (e.g. ``run tree run_...`` or ``workspace default 2026-11``)."""
    requested: float | None = None
    """For budget limits: the worst case of the call that was not made."""

    @property
    def reason(self) -> str:
        """A one-line human explanation."""
        if self.budget is not None:
            unit = "USD" if self.limit == "budget_usd" else "tokens"
            return (
                f"budget {self.budget} ({unit} limit {_fmt(self.limit_value)}) would be exceeded: "
                f"{_fmt(self.observed)} spent or reserved, the next model call could use {_fmt(self.requested or 0)}; "
                "the call was not made"
            )
        return f"policy limit {self.limit}={_fmt(self.limit_value)} reached (used {_fmt(self.observed)})"

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form, as stored in POLICY_VIOLATION events."""
        out: dict[str, Any] = {
            "limit": self.limit,
            "limit_value": self.limit_value,
            "observed": self.observed,
            "reason": self.reason,
        }
        if self.budget is not None:
            out["budget"] = self.budget
            out["requested"] = self.requested
        return out


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


@dataclass(frozen=True, kw_only=True)
class StrictPolicy:
    """Hard limits for one run. ``None`` means unlimited.

    The engine checks the policy before each step; a violation emits POLICY_VIOLATION and ends the
    run FAILED with the reason. Limits apply to what has been used so far: a model call that starts
    under ``max_tokens`` may finish over it, and the next step is then refused.
    """

    max_steps: int | None = 50
    """Most steps (model calls + tool calls) a run may take."""
    max_tokens: int | None = None
    """Most input+output tokens over all model calls."""
    max_tool_calls: int | None = None
    """Most tool calls."""
    max_cost_usd: float | None = None
    """Most model spend in US dollars."""
    timeout_s: float | None = None
    """Most wall time in seconds from the moment a worker first starts the run."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "max_tokens", "max_tool_calls"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"policy {name} must be a non-negative integer or None, got {value!r}")
        for name in ("max_cost_usd", "timeout_s"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"policy {name} must be a non-negative number or None, got {value!r}")

    def check(self, usage: Usage, *, next_step_is_tool: bool = False) -> Violation | None:
        """Return the first limit the next step would break, or None."""
        if self.timeout_s is not None and usage.elapsed_s >= self.timeout_s:
            return Violation(limit="timeout_s", limit_value=self.timeout_s, observed=round(usage.elapsed_s, 3))
        if self.max_steps is not None and usage.steps >= self.max_steps:
            return Violation(limit="max_steps", limit_value=self.max_steps, observed=usage.steps)
        if self.max_tokens is not None and usage.tokens >= self.max_tokens:
            return Violation(limit="max_tokens", limit_value=self.max_tokens, observed=usage.tokens)
        if self.max_cost_usd is not None and usage.cost_usd >= self.max_cost_usd:
            return Violation(limit="max_cost_usd", limit_value=self.max_cost_usd, observed=round(usage.cost_usd, 8))
        if next_step_is_tool and self.max_tool_calls is not None and usage.tool_calls >= self.max_tool_calls:
            return Violation(limit="max_tool_calls", limit_value=self.max_tool_calls, observed=usage.tool_calls)
        return None

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "max_steps": self.max_steps,
            "max_tokens": self.max_tokens,
            "max_tool_calls": self.max_tool_calls,
            "max_cost_usd": self.max_cost_usd,
            "timeout_s": self.timeout_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> StrictPolicy:
        """Build from a mapping; unknown keys are an error."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError(f"policy must be a mapping, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown policy field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def merged(self, overrides: dict[str, Any]) -> StrictPolicy:
        """A copy with some limits replaced."""
        return StrictPolicy.from_json({**self.to_json(), **overrides})
