"""Verifying audit chains, and signed checkpoints of their heads.

:func:`verify` walks each workspace's chain and reports the first entry where it breaks: an entry
that does not match its keyed hash, does not link to the one before, is missing, names a key the
keyring does not hold, is unkeyed after keyed entries, or a legacy (unkeyed) prefix that is not
followed directly by a keyed ``audit.seal`` entry naming its last seq. A chain that ends early
with its head moved back, or that is gone altogether, looks whole from the database alone: a
**checkpoint** catches that. :func:`make_checkpoint` signs (workspace, head seq, head hash) of
each chain and the time, with a key derived from the keyring; operators keep it outside the
database, and ``verify(..., checkpoint=...)`` then also requires every chain it names to reach its
head seq with exactly its head hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from agentmaestro.crypto import DerivedKey, keyring
from agentmaestro.errors import ValidationError
from agentmaestro.store._audit import (
    GENESIS_HASH,
    SCHEME_HMAC,
    SCHEME_SHA256,
    UnknownAuditKeyError,
    canonical_json,
    chain_keys,
    entry_hash,
)
from agentmaestro.store.schema import audit_heads, audit_log

CHECKPOINT_FORMAT = "agentmaestro.audit-checkpoint/1"
"""The ``format`` field of a checkpoint."""
CHECKPOINT_PURPOSE = "audit-checkpoint/v1"
"""HKDF purpose of the checkpoint signing keys (distinct from the chain keys)."""


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
    """Every entry checks out, the head matches, and the checkpoint (if any) is reached."""
    broken_seq: int | None = None
    """The first entry where the chain breaks."""
    reason: str | None = None
    """Why it breaks there."""
    legacy_entries: int = 0
    """Entries written before the chain was keyed (plain SHA-256), sealed by a later keyed entry."""
    checkpoint_seq: int | None = None
    """The head seq the checkpoint saw for this chain, when verified against one."""

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "workspace_id": self.workspace_id,
            "entries": self.entries,
            "head_seq": self.head_seq,
            "ok": self.ok,
            "broken_seq": self.broken_seq,
            "reason": self.reason,
            "legacy_entries": self.legacy_entries,
            "checkpoint_seq": self.checkpoint_seq,
        }


@dataclass(frozen=True, kw_only=True)
class _Anchor:
    seq: int
    hash: str
    at: float

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.at))


class _Walker:
    """Checks one chain entry by entry, remembering the first break."""

    def __init__(self, workspace_id: str, keys: Sequence[DerivedKey], anchor: _Anchor | None = None) -> None:
        self.workspace_id = workspace_id
        self.keys = keys
        self.anchor = anchor
        self.expected = 1
        self.prev = GENESIS_HASH
        self.count = 0
        self.legacy = 0
        self.keyed = False
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
        scheme = int(row["scheme"] or SCHEME_SHA256)
        if scheme == SCHEME_SHA256 and self.keyed:
            self._break(seq, f"entry {seq} is not keyed but follows keyed entries (forged or downgraded)")
            return
        try:
            detail = json.loads(row["detail"])
        except (TypeError, ValueError):
            self._break(seq, f"entry {seq} has a detail that is not JSON (edited)")
            return
        try:
            digest = entry_hash({**row, "detail": detail}, self.keys)
        except UnknownAuditKeyError:
            self._break(
                seq,
                f"entry {seq} names audit key {row['key_id']!r}, which is not in the keyring (removed from "
                "MAESTRO_SECRET_KEYS, written by a process with another keyring, or forged)",
            )
            return
        if not hmac.compare_digest(digest, str(row["hash"])):
            self._break(seq, f"entry {seq} does not match its hash (edited, moved or forged)")
            return
        if row["prev_hash"] != self.prev:
            self._break(
                seq,
                f"entry {seq} does not link to entry {seq - 1} (entry {seq - 1} was edited, replaced or reordered)"
                if seq > 1
                else "entry 1 does not start the chain",
            )
            return
        if self.anchor is not None and seq == self.anchor.seq and row["hash"] != self.anchor.hash:
            self._break(seq, f"entry {seq} is not the one the checkpoint of {self.anchor.when} saw (rewritten)")
            return
        if scheme == SCHEME_HMAC and self.legacy and not self.keyed and not _seals(row, detail, seq - 1):
            self._break(
                seq,
                f"entry {seq} follows unkeyed entries 1-{seq - 1} without sealing them (only an audit.seal entry "
                "right after them vouches for them: they were written or replaced after keying)",
            )
            return
        if scheme == SCHEME_HMAC:
            self.keyed = True
        else:
            self.legacy += 1
        self.prev = str(row["hash"])
        self.expected = seq + 1

    def finish(self, head: tuple[int, str] | None) -> ChainReport:
        head_seq, head_hash = head if head is not None else (0, GENESIS_HASH)
        last = self.expected - 1
        anchor = self.anchor
        if self.broken_seq is None and anchor is not None and last < anchor.seq:
            if not self.count and head is None:
                self._break(1, f"the chain is gone: the checkpoint of {anchor.when} saw {anchor.seq} entries")
            else:
                self._break(
                    last + 1,
                    f"entries {last + 1}-{anchor.seq} are missing: the checkpoint of {anchor.when} saw the chain "
                    f"up to {anchor.seq} (truncated)",
                )
        if self.broken_seq is None:
            if head is None and self.count:
                self._break(last, "the chain has no head row (deleted)")
            elif head_seq > last:
                self._break(last + 1, f"entries {last + 1}-{head_seq} are missing (the newest entries were deleted)")
            elif head_seq < last:
                self._break(head_seq + 1, f"the head says the chain ends at {head_seq} but entries go on to {last}")
            elif head_hash != self.prev:
                self._break(last, f"entry {last} does not match the chain head (edited)")
            elif self.legacy and not self.keyed:
                self._break(
                    1,
                    f"entries 1-{self.legacy} are unkeyed and no audit.seal vouches for them (if they were written "
                    "before the upgrade to keyed chains, `maestro audit seal` seals them)",
                )
        return ChainReport(
            workspace_id=self.workspace_id,
            entries=self.count,
            head_seq=head_seq,
            ok=self.broken_seq is None,
            broken_seq=self.broken_seq,
            reason=self.reason,
            legacy_entries=self.legacy,
            checkpoint_seq=None if anchor is None else anchor.seq,
        )


def _seals(row: Mapping[Any, Any], detail: Any, last_legacy: int) -> bool:
    return row["action"] == "audit.seal" and isinstance(detail, dict) and detail.get("sealed_seq") == last_legacy


def verify(
    conn: Connection,
    workspace_id: str | None = None,
    checkpoint: Mapping[str, Any] | None = None,
    keys: Sequence[DerivedKey] | None = None,
) -> list[ChainReport]:
    """Walk one workspace's chain (or every chain) and report the first broken entry of each.

    With a ``checkpoint`` (checked with :func:`check_checkpoint` first), every chain it names must
    also reach the head it recorded, with the same hash; a chain it names that has vanished is
    reported as broken.
    """
    keys = chain_keys() if keys is None else keys
    anchors = _anchors(checkpoint) if checkpoint is not None else {}
    if workspace_id is not None:
        anchors = {ws: a for ws, a in anchors.items() if ws == workspace_id}
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
            ws = str(row["workspace_id"])
            walker = _Walker(ws, keys, anchors.pop(ws, None))
        walker.feed(row)
    if walker is not None:
        reports.append(walker.finish(heads.pop(walker.workspace_id, None)))
    for ws, head in sorted(heads.items()):  # heads whose entries are all gone
        reports.append(_Walker(ws, keys, anchors.pop(ws, None)).finish(head))
    for ws, anchor in sorted(anchors.items()):  # chains the checkpoint saw that are gone entirely
        reports.append(_Walker(ws, keys, anchor).finish(None))
    if workspace_id is not None and not reports:
        reports.append(ChainReport(workspace_id=workspace_id, entries=0, head_seq=0, ok=True))
    return sorted(reports, key=lambda rep: rep.workspace_id)


# ------------------------------------------------------------------------------ checkpoints


def _signing_body(checkpoint: Mapping[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in checkpoint.items() if k != "signature"}).encode("utf-8")


def make_checkpoint(conn: Connection, workspace_id: str | None, now: float) -> dict[str, Any]:
    """A signed statement of each chain's head (or one workspace's): workspace, head seq, head hash, time.

    Raises:
        ValidationError: a chain is broken (a checkpoint vouches only for chains that verify).
    """
    broken = [r for r in verify(conn, workspace_id) if not r.ok]
    if broken:
        b = broken[0]
        raise ValidationError(
            f"audit chain of workspace {b.workspace_id!r} is broken at entry {b.broken_seq}: {b.reason}; "
            "not signing a checkpoint of it"
        )
    q = select(audit_heads.c.workspace_id, audit_heads.c.seq, audit_heads.c.hash).order_by(audit_heads.c.workspace_id)
    if workspace_id is not None:
        q = q.where(audit_heads.c.workspace_id == workspace_id)
    chains = [
        {"workspace_id": str(r.workspace_id), "head_seq": int(r.seq), "head_hash": str(r.hash)} for r in conn.execute(q)
    ]
    key = keyring().derived(CHECKPOINT_PURPOSE)[0]
    out: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "created_at": round(now, 6),
        "scope": workspace_id,
        "chains": chains,
        "key_id": key.key_id,
    }
    out["signature"] = hmac.new(key.secret, _signing_body(out), hashlib.sha256).hexdigest()
    return out


def check_checkpoint(checkpoint: Any) -> dict[str, Any]:
    """Validate a checkpoint's shape and signature; returns it. ValidationError says what is wrong."""
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValidationError(f"not an audit checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    chains = checkpoint.get("chains")
    ok_shape = isinstance(chains, list) and all(
        isinstance(c, dict)
        and isinstance(c.get("workspace_id"), str)
        and isinstance(c.get("head_seq"), int)
        and not isinstance(c.get("head_seq"), bool)
        and isinstance(c.get("head_hash"), str)
        for c in chains
    )
    created_at = checkpoint.get("created_at")
    if not ok_shape or not isinstance(created_at, int | float) or not math.isfinite(created_at):
        raise ValidationError("the checkpoint is malformed (chains of workspace_id, head_seq, head_hash; created_at)")
    signature = checkpoint.get("signature")
    key = next((k for k in keyring().derived(CHECKPOINT_PURPOSE) if k.key_id == checkpoint.get("key_id")), None)
    if key is None or not isinstance(signature, str):
        raise ValidationError(
            f"the checkpoint is signed with key {checkpoint.get('key_id')!r}, which is not in the keyring"
        )
    expected = hmac.new(key.secret, _signing_body(checkpoint), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise ValidationError("the checkpoint's signature does not match (the checkpoint was edited or forged)")
    return checkpoint


def _anchors(checkpoint: Mapping[str, Any]) -> dict[str, _Anchor]:
    at = float(checkpoint["created_at"])
    return {
        str(c["workspace_id"]): _Anchor(seq=int(c["head_seq"]), hash=str(c["head_hash"]), at=at)
        for c in checkpoint["chains"]
        if int(c["head_seq"]) > 0
    }
