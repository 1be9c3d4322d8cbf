"""Deterministic tools the example workflows' scripted agents call (so that routing and review really decide)."""

from __future__ import annotations

import json

from agentmaestro import RiskLevel, tool


@tool(risk=RiskLevel.SAFE, idempotent=True)
def classify_ticket(text: str) -> str:
    """Classify a support ticket as billing or technical; returns JSON {"category": ...}."""
    words = text.lower()
    billing = any(w in words for w in ("invoice", "refund", "charge", "bill", "price"))
    return json.dumps({"category": "billing" if billing else "technical"})


@tool(risk=RiskLevel.SAFE, idempotent=True)
def check_draft(draft: str) -> str:
    """Review a draft: accepted once it contains a concrete example; returns JSON {"accepted", "feedback"}."""
    if "example" in draft.lower():
        return json.dumps({"accepted": True, "feedback": "Good: concrete and clear."})
    return json.dumps({"accepted": False, "feedback": "add a concrete example"})
