"""Budget ledgers: reserve the worst case before a model call, settle to the actual cost after.

Both ride in the group-committed step transactions (``store.steps.commit``): a step commit that the
decision table says a model call follows carries that call's reservation (:class:`Reservation`),
and the commit of the call's step settles it. A reservation is one guarded UPDATE per ledger
(``spent + reserved + amount <= limit``); if any ledger would go over, the ledgers already reserved
by it are given back in the same transaction, so a call reserves on every ledger or on none. Runs
sharing a ledger (sub-runs, parallel workflow nodes, several worker processes) stay within it: on
PostgreSQL and MySQL the guarded UPDATE re-checks the row after waiting for a concurrent writer's lock, and a
transaction locks all the ledgers it touches in ledger-id order first (no deadlock between two
batches); SQLite has one writer at a time. A worker that dies between reserving and settling leaves
its reservation in place: budgets err on the safe side.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping, Sequence
from typing import Any

from sqlalchemy import Connection, and_, bindparam, or_, select, update

from agentmaestro.store.dialects import DriverStatement, upsert
from agentmaestro.store.records import LedgerSpec, Refusal, Reservation
from agentmaestro.store.schema import budget_ledgers

__all__ = ["LedgerSpec", "Refusal", "Reservation", "get_ledger", "lock", "reserve_all", "settle"]

KnownLedgers = MutableMapping[str, tuple[float | None, int | None]]
"""Ledger id -> the limits this process last wrote to it (so it is not written again per call)."""

_c = budget_ledgers.c
_RESERVE = DriverStatement(
    update(budget_ledgers)
    .where(
        _c.ledger_id == bindparam("l_id"),
        or_(_c.limit_usd.is_(None), _c.spent_usd + _c.reserved_usd + bindparam("l_usd") <= _c.limit_usd),
        or_(_c.limit_tokens.is_(None), _c.spent_tokens + _c.reserved_tokens + bindparam("l_tokens") <= _c.limit_tokens),
    )
    .values(
        reserved_usd=_c.reserved_usd + bindparam("l_usd"),
        reserved_tokens=_c.reserved_tokens + bindparam("l_tokens"),
        updated_at=bindparam("l_now"),
    )
)
_MOVE = DriverStatement(
    update(budget_ledgers)
    .where(_c.ledger_id == bindparam("l_id"))
    .values(
        reserved_usd=_c.reserved_usd - bindparam("l_res_usd"),
        reserved_tokens=_c.reserved_tokens - bindparam("l_res_tokens"),
        spent_usd=_c.spent_usd + bindparam("l_spent_usd"),
        spent_tokens=_c.spent_tokens + bindparam("l_spent_tokens"),
        updated_at=bindparam("l_now"),
    )
)


def _upsert(conn: Connection) -> Any:
    """Create a ledger, or write the limits of an existing one."""
    values: dict[str, Any] = {
        "ledger_id": bindparam("l_id"),
        "workspace_id": bindparam("l_ws"),
        "limit_usd": bindparam("l_limit_usd"),
        "limit_tokens": bindparam("l_limit_tokens"),
        "updated_at": bindparam("l_now"),
    }
    return upsert(
        conn,
        budget_ledgers,
        values,
        key=["ledger_id"],
        update=lambda new: {"limit_usd": new.limit_usd, "limit_tokens": new.limit_tokens},
    )


_ENSURE = DriverStatement(_upsert)


def _ensure(conn: Connection, spec: LedgerSpec, now: float, known: KnownLedgers | None, added: KnownLedgers) -> None:
    """Create the ledger if missing and write the limits the reserving run holds (once per process)."""
    limits = (spec.limit_usd, spec.limit_tokens)
    if known is not None and known.get(spec.ledger_id) == limits:
        return
    params = {
        "l_id": spec.ledger_id,
        "l_ws": spec.workspace_id,
        "l_limit_usd": spec.limit_usd,
        "l_limit_tokens": spec.limit_tokens,
        "l_now": now,
    }
    _ENSURE.execute(conn, params)
    added[spec.ledger_id] = limits


def lock(conn: Connection, ledger_ids: Iterable[str]) -> None:
    """PostgreSQL, MySQL: lock the ledgers a transaction is about to change, in id order (no deadlocks)."""
    ids = sorted(set(ledger_ids))
    if ids and conn.dialect.name != "sqlite":  # (SQLite has one writer at a time)
        conn.execute(select(_c.ledger_id).where(_c.ledger_id.in_(ids)).order_by(_c.ledger_id).with_for_update())


def _refusal(conn: Connection, spec: LedgerSpec, usd: float, tokens: int) -> Refusal:
    row = conn.execute(select(budget_ledgers).where(_c.ledger_id == spec.ledger_id)).one()
    over_usd = row.limit_usd is not None and row.spent_usd + row.reserved_usd + usd > row.limit_usd
    return Refusal(
        ledger=spec,
        limit="budget_usd" if over_usd else "budget_tokens",
        limit_value=float(row.limit_usd if over_usd else row.limit_tokens),
        committed=float(row.spent_usd + row.reserved_usd if over_usd else row.spent_tokens + row.reserved_tokens),
        requested=float(usd if over_usd else tokens),
    )


def reserve_all(
    conn: Connection, reservations: Sequence[Reservation], now: float, known: KnownLedgers | None = None
) -> tuple[list[Refusal | None], KnownLedgers]:
    """Apply reservations in order; each reserves on all its ledgers or on none.

    Returns one entry per reservation (None: reserved; else why it was refused) and the ledgers whose
    limits this transaction wrote (to merge into ``known`` once it has committed).
    """
    added: KnownLedgers = {}
    for r in reservations:
        for spec in r.ledgers:
            _ensure(conn, spec, now, known, added)
    out: list[Refusal | None] = []
    for r in reservations:
        done: list[LedgerSpec] = []
        refusal: Refusal | None = None
        for spec in r.ledgers:
            params = {"l_id": spec.ledger_id, "l_usd": r.usd, "l_tokens": r.tokens, "l_now": now}
            if _RESERVE.execute(conn, params) == 1:
                done.append(spec)
                continue
            refusal = _refusal(conn, spec, r.usd, r.tokens)
            break
        if refusal is not None:  # give back what this call reserved on the ledgers before
            settle(conn, [r.release_entry(spec.ledger_id) for spec in done], now)
        out.append(refusal)
    return out, added


def settle(conn: Connection, entries: Sequence[dict[str, Any]], now: float) -> None:
    """Turn reservations into spend: each entry has ledger_id, reserved_usd/tokens, spent_usd/tokens."""
    if entries:
        rows = [
            {
                "l_id": e["ledger_id"],
                "l_res_usd": e["reserved_usd"],
                "l_res_tokens": e["reserved_tokens"],
                "l_spent_usd": e.get("spent_usd", 0.0),
                "l_spent_tokens": e.get("spent_tokens", 0),
                "l_now": now,
            }
            for e in entries
        ]
        _MOVE.executemany(conn, rows)


def get_ledger(conn: Connection, ledger_id: str) -> dict[str, Any] | None:
    """One ledger's row."""
    row = conn.execute(select(budget_ledgers).where(and_(_c.ledger_id == ledger_id))).first()
    return dict(row._mapping) if row is not None else None
