"""Non-idempotent tools for the SIGKILL tests: one marks a file when it starts, then takes a while; one appends to a
ledger that its reconcile function reads."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

from agentmaestro.core.reconcile import Reconciled
from agentmaestro.core.risk import RiskLevel
from agentmaestro.tools.context import ToolContext
from agentmaestro.tools.registry import tool


@tool(risk=RiskLevel.SAFE, idempotent=False)
def charge_card(amount: int) -> str:
    """Charge a card (not idempotent: must never run twice)."""
    marker = Path(os.environ["CHARGE_MARKER_DIR"]) / f"charge-{os.getpid()}-{time.time_ns()}"
    marker.write_text(str(amount))
    time.sleep(float(os.environ.get("CHARGE_SLEEP_S", "30")))
    return f"charged {amount}"


def _ledger() -> Path:
    return Path(os.environ["LEDGER_FILE"])


def _ledger_reconcile(arguments: dict[str, Any], key: str) -> Reconciled:
    """The ledger is the payment service's own record: a line per idempotency key it has charged."""
    for line in _ledger().read_text().splitlines() if _ledger().exists() else []:
        if line.split(" ")[0] == key:
            return Reconciled.happened(f"charged {line.split(' ')[1]} ({key})", reason="the ledger has the key")
    return Reconciled.did_not_happen("the ledger has no line with this key")


@tool(risk=RiskLevel.SAFE, idempotent=False, reconcile=_ledger_reconcile)
def ledger_charge(amount: int, ctx: ToolContext) -> str:
    """Charge a card: append one line, keyed by the call's idempotency key, to the ledger (not idempotent)."""
    time.sleep(random.uniform(0.0, 0.2))
    with _ledger().open("a") as ledger:
        ledger.write(f"{ctx.idempotency_key} {amount}\n")
    time.sleep(random.uniform(0.2, 0.5))
    return f"charged {amount} ({ctx.idempotency_key})"
