"""Tools used by the built-in demo agents."""

from __future__ import annotations

from agentmaestro.core.risk import RiskLevel
from agentmaestro.tools.registry import tool


@tool(risk=RiskLevel.SAFE, idempotent=True)
def add(a: float, b: float) -> float:
    """Add two numbers and return the sum."""
    return a + b


@tool(risk=RiskLevel.SAFE, idempotent=True)
def multiply(a: float, b: float) -> float:
    """Multiply two numbers and return the product."""
    return a * b


@tool(risk=RiskLevel.SAFE, idempotent=True)
def word_count(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())


@tool(risk=RiskLevel.DANGEROUS)
def purge_logs(older_than_days: int) -> str:
    """Delete log files older than the given number of days (demo: deletes nothing, reports a count)."""
    if older_than_days < 1:
        raise ValueError("older_than_days must be at least 1")
    return f"purged 12 log files older than {older_than_days} days"
