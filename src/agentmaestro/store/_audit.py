"""The audit log: append-only, hash-chained per workspace.

Every entry carries the hash of the entry before it in its workspace's chain, and its own hash is
the SHA-256 of the canonical JSON of the entry (``workspace_id``, ``seq``, ``at``, ``actor``,
``action``, ``target``, ``detail``, ``prev_hash``). Editing, deleting or reordering any entry breaks
the chain at that point, and :func:`verify` says where. Appenders lock the chain's head row
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write lock serialises writers), so two processes
can never fork a chain; the head also anchors the tail, so dropping the newest entries shows too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

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
)
"""Actions the application records (others are accepted: the list documents, it does not restrict)."""


def canonical_json(value: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 text, no NaN or infinities."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of an entry's canonical JSON; ``detail`` is hashed as a JSON value, not as text."""
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
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


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


def chain_rows(workspace_id: str, last_seq: int, last_hash: str, entries: Iterable[NewEntry]) -> list[dict[str, Any]]:
    """Rows for ``entries`` continuing a chain whose newest entry is (``last_seq``, ``last_hash``).

    Pure: callers insert the rows (one ``executemany``) and move the head to the last one.
    """
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
        }
        digest = entry_hash(entry)
        rows.append({**entry, "detail": detail_text, "hash": digest})
        prev = digest
    return rows


def _lock_head(conn: Connection, workspace_id: str, now: float) -> tuple[int, str]:
    values = {"workspace_id": workspace_id, "seq": 0, "hash": GENESIS_HASH, "updated_at": now}
    if conn.dialect.name == "postgresql":
        conn.execute(pg_insert(audit_heads).values(**values).on_conflict_do_nothing())
    else:
        conn.execute(sqlite_insert(audit_heads).values(**values).on_conflict_do_nothing())
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


# ------------------------------------------------------------------------------ verification


@dataclass(frozen=True, kw_only=True)
class ChainReport:
    """The verdict on one workspace's chain."""

    workspace_id: str
    """The chain's workspace."""
    entries: int
    """Entries read."""
    head_seq: int
    """The newest seq according to the chain's head row (0 if none)."""
    ok: bool
    """Every entry links to the one before it, hashes to its stored hash, and the head matches."""
    broken_seq: int | None = None
    """The first entry where the chain breaks."""
    reason: str | None = None
    """Why it breaks there."""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "workspace_id": self.workspace_id,
            "entries": self.entries,
            "head_seq": self.head_seq,
            "ok": self.ok,
            "broken_seq": self.broken_seq,
            "reason": self.reason,
        }


class _Walker:
    """Checks one chain entry by entry, remembering the first break."""

    def __init__(self, workspace_id: str) -> None:
        self.workspace_id = workspace_id
        self.expected = 1
        self.prev = GENESIS_HASH
        self.count = 0
        self.broken_seq: int | None = None
        self.reason: str | None = None

    def _break(self, seq: int, reason: str) -> None:
        if self.broken_seq is None:
            self.broken_seq, self.reason = seq, reason

    def feed(self, row: Mapping[Any, Any]) -> None:
        self.count += 1
        if self.broken_seq is not None:
            return
        seq = int(row["seq"])
        if seq != self.expected:
            missing = f"{self.expected}" if seq == self.expected + 1 else f"{self.expected}-{seq - 1}"
            self._break(self.expected, f"entry {missing} is missing (deleted or renumbered); next found is {seq}")
            return
        try:
            detail = json.loads(row["detail"])
        except (TypeError, ValueError):
            self._break(seq, f"entry {seq} has a detail that is not JSON (edited)")
            return
        if entry_hash({**row, "detail": detail}) != row["hash"]:
            self._break(seq, f"entry {seq} does not match its hash (edited or moved)")
            return
        if row["prev_hash"] != self.prev:
            self._break(
                seq,
                f"entry {seq} does not link to entry {seq - 1} (entry {seq - 1} was edited, replaced or reordered)"
                if seq > 1
                else "entry 1 does not start the chain",
            )
            return
        self.prev = str(row["hash"])
        self.expected = seq + 1

    def finish(self, head: tuple[int, str] | None) -> ChainReport:
        head_seq, head_hash = head if head is not None else (0, GENESIS_HASH)
        last = self.expected - 1
        if self.broken_seq is None:
            if head is None and self.count:
                self._break(last, "the chain has no head row (deleted)")
            elif head_seq > last:
                self._break(last + 1, f"entries {last + 1}-{head_seq} are missing (the newest entries were deleted)")
            elif head_seq < last:
                self._break(head_seq + 1, f"the head says the chain ends at {head_seq} but entries go on to {last}")
            elif head_hash != self.prev:
                self._break(last, f"entry {last} does not match the chain head (edited)")
        return ChainReport(
            workspace_id=self.workspace_id,
            entries=self.count,
            head_seq=head_seq,
            ok=self.broken_seq is None,
            broken_seq=self.broken_seq,
            reason=self.reason,
        )


def verify(conn: Connection, workspace_id: str | None = None) -> list[ChainReport]:
    """Walk one workspace's chain (or every chain) and report the first broken entry of each."""
    heads_q = select(audit_heads.c.workspace_id, audit_heads.c.seq, audit_heads.c.hash)
    q = select(audit_log).order_by(audit_log.c.workspace_id, audit_log.c.seq)
    if workspace_id is not None:
        heads_q = heads_q.where(audit_heads.c.workspace_id == workspace_id)
        q = q.where(audit_log.c.workspace_id == workspace_id)
    heads = {str(r.workspace_id): (int(r.seq), str(r.hash)) for r in conn.execute(heads_q)}
    reports: list[ChainReport] = []
    walker: _Walker | None = None
    for r in conn.execution_options(yield_per=2000).execute(q):
        row = r._mapping
        if walker is None or walker.workspace_id != row["workspace_id"]:
            if walker is not None:
                reports.append(walker.finish(heads.pop(walker.workspace_id, None)))
            walker = _Walker(str(row["workspace_id"]))
        walker.feed(row)
    if walker is not None:
        reports.append(walker.finish(heads.pop(walker.workspace_id, None)))
    for ws, head in sorted(heads.items()):  # heads whose entries are all gone
        reports.append(_Walker(ws).finish(head))
    if workspace_id is not None and not reports:
        reports.append(ChainReport(workspace_id=workspace_id, entries=0, head_seq=0, ok=True))
    return sorted(reports, key=lambda rep: rep.workspace_id)
