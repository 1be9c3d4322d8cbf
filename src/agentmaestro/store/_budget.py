"""Budget ledgers: reserve the worst case before a model call, settle to the actual cost after.

A reservation is one guarded UPDATE per ledger (``spent + reserved + amount <= limit``), all in one
transaction: if any ledger would go over, nothing is reserved and the call is not made. Settling
happens in the transaction that commits the step, so spend is never counted twice. A worker that
dies between reserving and committing leaves its reservation in place: budgets err on the safe side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, or_, select, update

from agentmaestro.store.dialects import upsert_insert
from agentmaestro.store.schema import budget_ledgers


@dataclass(frozen=True, kw_only=True)
class LedgerSpec:
    """A ledger a call is charged to, with its current limits."""

    ledger_id: str
    """``run:<root run id>`` or ``ws:<workspace>:<YYYY-MM>``."""
    workspace_id: str
    """The workspace."""
    limit_usd: float | None
    """USD limit (None: unlimited)."""
    limit_tokens: int | None
    """Token limit (None: unlimited)."""
    label: str
    """How a violation names this budget."""


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """Why a reservation was refused."""

    ledger: LedgerSpec
    """The budget that would be exceeded."""
    limit: str
    """``budget_usd`` or ``budget_tokens``."""
    limit_value: float
    """The limit."""
    committed: float
    """Spent plus reserved before this call."""
    requested: float
    """The worst case of this call."""


def _ensure(conn: Connection, spec: LedgerSpec, now: float) -> None:
    row = conn.execute(select(budget_ledgers.c.ledger_id).where(budget_ledgers.c.ledger_id == spec.ledger_id)).first()
    if row is None:
        conn.execute(
            upsert_insert(conn, budget_ledgers)
            .values(
                ledger_id=spec.ledger_id,
                workspace_id=spec.workspace_id,
                limit_usd=spec.limit_usd,
                limit_tokens=spec.limit_tokens,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["ledger_id"])
        )
    conn.execute(
        update(budget_ledgers)
        .where(budget_ledgers.c.ledger_id == spec.ledger_id)
        .values(limit_usd=spec.limit_usd, limit_tokens=spec.limit_tokens)
    )


def reserve(conn: Connection, ledgers: Sequence[LedgerSpec], usd: float, tokens: int, now: float) -> Refusal | None:
    """Reserve ``usd`` and ``tokens`` on every ledger, or on none (returns why)."""
    for spec in ledgers:
        _ensure(conn, spec, now)
    for spec in ledgers:
        c = budget_ledgers.c
        fits = and_(
            or_(c.limit_usd.is_(None), c.spent_usd + c.reserved_usd + usd <= c.limit_usd),
            or_(c.limit_tokens.is_(None), c.spent_tokens + c.reserved_tokens + tokens <= c.limit_tokens),
        )
        res = conn.execute(
            update(budget_ledgers)
            .where(c.ledger_id == spec.ledger_id, fits)
            .values(reserved_usd=c.reserved_usd + usd, reserved_tokens=c.reserved_tokens + tokens, updated_at=now)
        )
        if res.rowcount != 1:
            row = conn.execute(select(budget_ledgers).where(c.ledger_id == spec.ledger_id)).one()
            over_usd = row.limit_usd is not None and row.spent_usd + row.reserved_usd + usd > row.limit_usd
            refusal = Refusal(
                ledger=spec,
                limit="budget_usd" if over_usd else "budget_tokens",
                limit_value=float(row.limit_usd if over_usd else row.limit_tokens),
                committed=float(
                    row.spent_usd + row.reserved_usd if over_usd else row.spent_tokens + row.reserved_tokens
                ),
                requested=float(usd if over_usd else tokens),
            )
            raise _Refused(refusal)
    return None


class _Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.limit)
        self.refusal = refusal


def settle(conn: Connection, entries: Sequence[dict[str, Any]], now: float) -> None:
    """Turn reservations into spend: each entry has ledger_id, reserved_usd/tokens, spent_usd/tokens."""
    c = budget_ledgers.c
    for e in entries:
        conn.execute(
            update(budget_ledgers)
            .where(c.ledger_id == e["ledger_id"])
            .values(
                reserved_usd=c.reserved_usd - e["reserved_usd"],
                reserved_tokens=c.reserved_tokens - e["reserved_tokens"],
                spent_usd=c.spent_usd + e["spent_usd"],
                spent_tokens=c.spent_tokens + e["spent_tokens"],
                updated_at=now,
            )
        )


def get_ledger(conn: Connection, ledger_id: str) -> dict[str, Any] | None:
    """One ledger's row."""
    row = conn.execute(select(budget_ledgers).where(budget_ledgers.c.ledger_id == ledger_id)).first()
    return dict(row._mapping) if row is not None else None
