"""Calculator tools for the openai_calculator example: exact integer and decimal arithmetic."""

from __future__ import annotations

from agentmaestro import RiskLevel, tool
from agentmaestro.errors import ToolError


def _number(value: float) -> int | float:
    """42.0 -> 42, so answers read naturally; other values unchanged."""
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else value


@tool(risk=RiskLevel.SAFE, idempotent=True)
def add(a: float, b: float) -> int | float:
    """Add two numbers."""
    return _number(a + b)


@tool(risk=RiskLevel.SAFE, idempotent=True)
def subtract(a: float, b: float) -> int | float:
    """Subtract b from a."""
    return _number(a - b)


@tool(risk=RiskLevel.SAFE, idempotent=True)
def multiply(a: float, b: float) -> int | float:
    """Multiply two numbers."""
    return _number(a * b)


@tool(risk=RiskLevel.SAFE, idempotent=True)
def divide(a: float, b: float) -> int | float:
    """Divide a by b."""
    if b == 0:
        raise ToolError("cannot divide by zero")
    return _number(a / b)
