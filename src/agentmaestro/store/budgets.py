"""Budgets: reserve a model call's worst case on shared ledgers, settle it, read a ledger."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agentmaestro.store import _budget
from agentmaestro.store.records import Refusal, Reservation

if TYPE_CHECKING:
    from agentmaestro.store.base import Store


class BudgetRepository:
    """Budget ledgers; ``store.budgets``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def reserve(self, reservation: Reservation) -> Refusal | None:
        """Reserve a model call's worst case on every ledger, or on none; returns why it was refused.

        Group-committed with concurrent step commits (no transaction of its own under load). A step
        commit can carry the reservation of the model call that follows it instead (``Commit.reserve``).
        """
        return await self._store._enqueue(reservation)  # type: ignore[no-any-return]

    async def settle(self, entries: Sequence[dict[str, Any]]) -> None:
        """Settle (or give back) reservations outside a step commit, e.g. when a driver stops early."""
        if entries:
            await self._store._write(_budget.settle, entries, time.time())

    async def ledger(self, ledger_id: str) -> dict[str, Any] | None:
        """A budget ledger's row (limits, spent, reserved)."""
        return await self._store._read(_budget.get_ledger, ledger_id)
