"""A non-idempotent tool for the SIGKILL test: it marks a file when it starts, then takes a while."""

from __future__ import annotations

import os
import time
from pathlib import Path

from agentmaestro.core.risk import RiskLevel
from agentmaestro.tools.registry import tool


@tool(risk=RiskLevel.SAFE, idempotent=False)
def charge_card(amount: int) -> str:
    """Charge a card (not idempotent: must never run twice)."""
    marker = Path(os.environ["CHARGE_MARKER_DIR"]) / f"charge-{os.getpid()}-{time.time_ns()}"
    marker.write_text(str(amount))
    time.sleep(float(os.environ.get("CHARGE_SLEEP_S", "30")))
    return f"charged {amount}"
