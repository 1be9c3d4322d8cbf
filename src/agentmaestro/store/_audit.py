"""The audit log: append-only, hash-chained per workspace, keyed with a key the database never holds.

Every entry carries the hash of the entry before it in its workspace's chain, and its own hash is
an HMAC-SHA256 of the canonical JSON of the entry (``workspace_id``, ``seq``, ``at``, ``actor``,
``action``, ``target``, ``detail``, ``prev_hash``, ``scheme``, ``key_id``) under a key derived
(HKDF) from the keyring, which lives outside the database (``MAESTRO_SECRET_KEYS`` or
``$MAESTRO_HOME/secret.key``). Someone who can write the database but does not hold the keyring
cannot edit, insert or re-chain an entry without :mod:`~agentmaestro.store._audit_verify` seeing it.

Entries written before the chain was keyed (scheme 1) hashed the same fields with plain SHA-256.
They still verify, but only as the prefix of a chain whose next entry is a keyed ``audit.seal`` (its
``prev_hash``, covered by the key, pins the whole legacy prefix): migration 0013 seals every chain
as it upgrades (:func:`seal`). An ordinary keyed entry never vouches for unkeyed ones, so unkeyed
entries written after the upgrade (a chain wiped and replaced) show as forged once anything follows.

Appenders lock the chain's head row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write lock
serialises writers), so two processes can never fork a chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from agentmaestro.crypto import DerivedKey, keyring
from agentmaestro.errors import ConfigError
from agentmaestro.store.dialects import upsert
from agentmaestro.store.records import AuditNote
from agentmaestro.store.schema import audit_heads, audit_log

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first entry of every chain."""

SYSTEM_WORKSPACE = "_system"
"""Chain for events that belong to no workspace (e.g. a failed login with an unknown key)."""

ACTIONS: tuple[str, ...] = (
    "auth.login",
    "auth.failure",
    "key.create",
    "key.revoke",
    "approval.approve",
    "approval.reject",
    "human_request.resolve",
    "run.cancel",
    "workspace.create",
    "gate.update",
    "quotas.update",
    "audit.seal",
)
"""Actions the application records (others are accepted: the list documents, it does not restrict)."""


def canonical_json(value: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 text, no NaN or infinities."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


SCHEME_SHA256 = 1
"""Entries written before the chain was keyed: plain SHA-256, which anyone can recompute."""
SCHEME_HMAC = 2
"""Keyed entries: HMAC-SHA256 under a key derived from the keyring."""
CHAIN_PURPOSE = "audit-chain/v2"
"""HKDF purpose of the chain keys (one per keyring key)."""


class UnknownAuditKeyError(ConfigError):
    """An entry names a chain key that the keyring does not hold (removed from it, or forged)."""


def chain_keys() -> tuple[DerivedKey, ...]:
    """The process keyring's chain keys, newest first (the newest keys new entries)."""
    return keyring().derived(CHAIN_PURPOSE)


def entry_hash(entry: Mapping[str, Any], keys: Sequence[DerivedKey] | None = None) -> str:
    """The hash (hex) of an entry's canonical JSON; ``detail`` is hashed as a JSON value, not as text.

    Keyed entries (scheme 2) take the key named by their ``key_id`` from ``keys`` (default: the
    process keyring); :class:`UnknownAuditKeyError` if none matches. Legacy entries: plain SHA-256.
    """
    body = {
        "workspace_id": entry["workspace_id"],
        "seq": entry["seq"],
        "at": entry["at"],
        "actor": entry["actor"],
        "action": entry["action"],
        "target": entry["target"],
        "detail": entry["detail"],
        "prev_hash": entry["prev_hash"],
    }
    scheme = int(entry.get("scheme") or SCHEME_SHA256)
    if scheme == SCHEME_SHA256:
        return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()
    if scheme != SCHEME_HMAC:
        raise UnknownAuditKeyError(f"unknown audit hash scheme {scheme!r}")
    key_id = entry.get("key_id")
    key = next((k for k in (chain_keys() if keys is None else keys) if k.key_id == key_id), None)
    if key is None:
        raise UnknownAuditKeyError(f"audit key {key_id!r} is not in the keyring")
    body["scheme"], body["key_id"] = scheme, key_id
    return hmac.new(key.secret, canonical_json(body).encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, kw_only=True)
class NewEntry:
    """What to record; the chain position and hashes are computed on append."""

    at: float
    """Unix time (seconds)."""
    actor: str
    """Who acted: ``key:<name>``, ``cli:<user>``, ..."""
    action: str
    """What happened, ``noun.verb`` (see :data:`ACTIONS`)."""
    target: str | None = None
    """The id of what it happened to (a run, an approval, a key, ...)."""
    detail: Mapping[str, Any] | None = None
    """Anything else worth keeping (JSON)."""


def chain_rows(
    workspace_id: str, last_seq: int, last_hash: str, entries: Iterable[NewEntry], key: DerivedKey | None = None
) -> list[dict[str, Any]]:
    """Keyed rows for ``entries`` continuing a chain whose newest entry is (``last_seq``, ``last_hash``).

    ``key`` defaults to the newest chain key of the process keyring. Callers insert the rows (one
    ``executemany``) and move the head to the last one.
    """
    key = key or chain_keys()[0]
    rows: list[dict[str, Any]] = []
    seq, prev = last_seq, last_hash
    for e in entries:
        seq += 1
        detail_text = canonical_json(dict(e.detail or {}))
        entry = {
            "workspace_id": workspace_id,
            "seq": seq,
            "at": round(float(e.at), 6),
            "actor": e.actor[:300],
            "action": e.action[:64],
            "target": None if e.target is None else e.target[:300],
            "detail": json.loads(detail_text),
            "prev_hash": prev,
            "scheme": SCHEME_HMAC,
            "key_id": key.key_id,
        }
        digest = entry_hash(entry, (key,))
        rows.append({**entry, "detail": detail_text, "hash": digest})
        prev = digest
    return rows


def _lock_head(conn: Connection, workspace_id: str, now: float) -> tuple[int, str]:
    values = {"workspace_id": workspace_id, "seq": 0, "hash": GENESIS_HASH, "updated_at": now}
    conn.execute(upsert(conn, audit_heads, values, key=["workspace_id"]))
    row = conn.execute(
        select(audit_heads.c.seq, audit_heads.c.hash)
        .where(audit_heads.c.workspace_id == workspace_id)
        .with_for_update()
    ).one()
    return int(row.seq), str(row.hash)


def append(conn: Connection, workspace_id: str, entries: Sequence[NewEntry], now: float) -> list[dict[str, Any]]:
    """Append entries to a workspace's chain inside the caller's transaction; returns them as served."""
    if not entries:
        return []
    last_seq, last_hash = _lock_head(conn, workspace_id, now)
    rows = chain_rows(workspace_id, last_seq, last_hash, entries)
    conn.execute(insert(audit_log), rows)
    conn.execute(
        update(audit_heads)
        .where(audit_heads.c.workspace_id == workspace_id)
        .values(seq=rows[-1]["seq"], hash=rows[-1]["hash"], updated_at=now)
    )
    return [_public(r) for r in rows]


def append_notes(conn: Connection, notes: Iterable[AuditNote | None], now: float) -> None:
    """Inside a write transaction: append ``notes`` to their workspaces' chains (in workspace order: one lock order)."""
    chains: dict[str, list[NewEntry]] = {}
    for n in notes:
        if n is not None:
            entry = NewEntry(at=now, actor=n.actor, action=n.action, target=n.target, detail=n.detail)
            chains.setdefault(n.workspace_id, []).append(entry)
    for workspace_id in sorted(chains):
        append(conn, workspace_id, chains[workspace_id], now)


def _public(row: Mapping[Any, Any]) -> dict[str, Any]:
    out = dict(row)
    detail = out["detail"]
    out["detail"] = json.loads(detail) if isinstance(detail, str) else detail
    return out


def list_entries(
    conn: Connection,
    workspace_id: str,
    *,
    after_seq: int = 0,
    limit: int = 100,
    action: str | None = None,
    newest_first: bool = False,
    before_seq: int | None = None,
) -> list[dict[str, Any]]:
    """A page of a workspace's chain, oldest first (or newest first)."""
    q = select(audit_log).where(audit_log.c.workspace_id == workspace_id, audit_log.c.seq > after_seq)
    if before_seq is not None:
        q = q.where(audit_log.c.seq < before_seq)
    if action is not None:
        q = q.where(audit_log.c.action == action)
    q = q.order_by(audit_log.c.seq.desc() if newest_first else audit_log.c.seq).limit(limit)
    return [_public(r._mapping) for r in conn.execute(q)]


def seal(conn: Connection, actor: str, now: float) -> list[dict[str, Any]]:
    """Append an ``audit.seal`` entry to every chain whose newest entry is not keyed; returns them.

    A keyed entry's ``prev_hash`` is covered by the key, so it pins every legacy entry before it:
    after the seal, rewriting the legacy prefix breaks the chain at the seal. Sealing vouches for
    what it seals: migration 0013 runs it on the chains written before keying; run it by hand only
    for chains known to be such.
    """
    legacy = conn.execute(
        select(audit_log.c.workspace_id, audit_log.c.seq)
        .join(
            audit_heads,
            (audit_heads.c.workspace_id == audit_log.c.workspace_id) & (audit_heads.c.seq == audit_log.c.seq),
        )
        .where(audit_log.c.scheme == SCHEME_SHA256)
        .order_by(audit_log.c.workspace_id)
    ).all()
    out: list[dict[str, Any]] = []
    for row in legacy:
        entry = NewEntry(at=now, actor=actor, action="audit.seal", detail={"sealed_seq": int(row.seq)})
        out.extend(append(conn, str(row.workspace_id), [entry], now))
    return out
