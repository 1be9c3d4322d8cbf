"""The audit log: a hash-chained, append-only record of security-relevant actions, per workspace.

Besides :class:`AuditRepository` (``store.audit``), this module names the chain's format (entry hash,
schemes, genesis) for verifiers and tests; docs/server.md describes it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agentmaestro.store import _audit, _audit_verify
from agentmaestro.store._audit import (
    ACTIONS,
    CHAIN_PURPOSE,
    GENESIS_HASH,
    SCHEME_HMAC,
    SCHEME_SHA256,
    SYSTEM_WORKSPACE,
    NewEntry,
    canonical_json,
    chain_keys,
    chain_rows,
    entry_hash,
)
from agentmaestro.store._audit_verify import ChainReport

if TYPE_CHECKING:
    from agentmaestro.store.base import Store

__all__ = [
    "ACTIONS",
    "CHAIN_PURPOSE",
    "GENESIS_HASH",
    "SCHEME_HMAC",
    "SCHEME_SHA256",
    "SYSTEM_WORKSPACE",
    "AuditRepository",
    "ChainReport",
    "NewEntry",
    "canonical_json",
    "chain_keys",
    "chain_rows",
    "entry_hash",
]


class AuditRepository:
    """Append to, page through, verify, checkpoint and seal the audit chains; ``store.audit``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def append(
        self,
        workspace_id: str,
        *,
        actor: str,
        action: str,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one entry to the workspace's hash-chained audit log; returns it."""
        now = time.time()
        entry = _audit.NewEntry(at=now, actor=actor, action=action, target=target, detail=detail)
        [row] = await self._store._write(_audit.append, workspace_id, [entry], now)
        return row

    async def page(
        self,
        workspace_id: str,
        *,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int = 100,
        action: str | None = None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """A page of the workspace's audit log (oldest first unless ``newest_first``)."""
        return await self._store._read(
            _audit.list_entries,
            workspace_id,
            after_seq=after_seq,
            before_seq=before_seq,
            limit=limit,
            action=action,
            newest_first=newest_first,
        )

    async def verify(self, workspace_id: str | None = None, *, checkpoint: dict[str, Any] | None = None) -> list[Any]:
        """Walk the audit chain of one workspace (or all); a ``ChainReport`` per chain.

        With a signed ``checkpoint`` (ValidationError if it is not one), each chain it names must
        also reach the head it recorded: truncation below it and a vanished chain are reported.
        """
        if checkpoint is not None:
            _audit_verify.check_checkpoint(checkpoint)
        return await self._store._read(_audit_verify.verify, workspace_id, checkpoint)

    async def checkpoint(self, workspace_id: str | None = None) -> dict[str, Any]:
        """A signed checkpoint of every chain's head (or one workspace's); ValidationError if one is broken."""
        return await self._store._read(_audit_verify.make_checkpoint, workspace_id, time.time())

    async def seal(self, actor: str) -> list[dict[str, Any]]:
        """Append a keyed ``audit.seal`` entry to every chain whose newest entry predates keying."""
        return await self._store._write(_audit.seal, actor, time.time())
