from __future__ import annotations

import pytest

from agentmaestro.core.policy import StrictPolicy, Usage
from agentmaestro.errors import ConfigError


def test_limits_are_checked_before_the_next_step() -> None:
    p = StrictPolicy(max_steps=3, max_tokens=100, max_tool_calls=1, max_cost_usd=0.5, timeout_s=10)
    assert p.check(Usage(steps=2, tokens=99, tool_calls=0, cost_usd=0.1, elapsed_s=1)) is None
    v = p.check(Usage(steps=3))
    assert v is not None and v.limit == "max_steps" and "max_steps=3" in v.reason
    assert p.check(Usage(tokens=100)).limit == "max_tokens"  # type: ignore[union-attr]
    assert p.check(Usage(cost_usd=0.5)).limit == "max_cost_usd"  # type: ignore[union-attr]
    assert p.check(Usage(elapsed_s=10.0)).limit == "timeout_s"  # type: ignore[union-attr]
    # tool-call limit applies only when the next step is a tool call
    assert p.check(Usage(tool_calls=1)) is None
    assert p.check(Usage(tool_calls=1), next_step_is_tool=True).limit == "max_tool_calls"  # type: ignore[union-attr]


def test_unlimited() -> None:
    p = StrictPolicy(max_steps=None)
    assert p.check(Usage(steps=10**9, tokens=10**12, tool_calls=10**9, cost_usd=1e9, elapsed_s=1e9)) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_steps": -1},
        {"max_steps": True},
        {"max_steps": 1.5},
        {"max_tokens": "10"},
        {"max_cost_usd": float("nan")},
        {"timeout_s": -0.1},
        {"max_cost_usd": False},
    ],
)
def test_bad_values_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        StrictPolicy(**kwargs)  # type: ignore[arg-type]


def test_json_round_trip_and_unknown_fields() -> None:
    p = StrictPolicy(max_steps=5, max_cost_usd=1.25)
    assert StrictPolicy.from_json(p.to_json()) == p
    assert p.merged({"max_steps": 9}).max_steps == 9
    with pytest.raises(ConfigError, match="unknown policy field"):
        StrictPolicy.from_json({"max_stepz": 3})
