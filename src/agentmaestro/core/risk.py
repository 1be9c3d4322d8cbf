"""Risk levels of tool calls."""

from __future__ import annotations

from enum import IntEnum


class RiskLevel(IntEnum):
    """How much harm a tool call can do. Ordered: a call's risk can be raised, never lowered."""

    SAFE = 0
    ELEVATED = 1
    DANGEROUS = 2

    @classmethod
    def parse(cls, value: str | int | RiskLevel) -> RiskLevel:
        """Accept ``RiskLevel``, its name in any case, or its integer value."""
        if isinstance(value, RiskLevel):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown risk level {value!r}; expected SAFE, ELEVATED or DANGEROUS") from None
