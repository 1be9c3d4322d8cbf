"""Credentials: named secrets per workspace, encrypted at rest, with OAuth tokens and authorization states.

Changes are audited in the same transaction. Secrets are decrypted only for tools at execution time
(:meth:`CredentialRepository.reveal`), never for callers (docs/credentials.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from agentmaestro.store import _audit, _credentials
from agentmaestro.store._credentials import check_name

if TYPE_CHECKING:
    from agentmaestro.store.base import Store

__all__ = ["CredentialRepository", "check_name"]


class CredentialRepository:
    """A workspace's credentials and OAuth states; ``store.credentials``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def put(
        self,
        workspace_id: str,
        *,
        name: str,
        kind: str,
        secret: dict[str, Any],
        provider: str | None = None,
        scopes: Sequence[str] = (),
        expires_at: float | None = None,
        actor: str,
    ) -> tuple[dict[str, Any], bool]:
        """Create or replace a credential, encrypted, and audit it; (public row, created?)."""

        def op(conn: Connection) -> tuple[dict[str, Any], bool]:
            now = time.time()
            row, created = _credentials.put(
                conn,
                workspace_id,
                name=name,
                kind=kind,
                secret=secret,
                provider=provider,
                scopes=list(scopes),
                expires_at=expires_at,
                actor=actor,
                now=now,
            )
            action = "credential.create" if created else "credential.update"
            detail = {"kind": kind, "provider": provider, "hint": row["hint"]}
            entry = _audit.NewEntry(at=now, actor=actor, action=action, target=name, detail=detail)
            _audit.append(conn, workspace_id, [entry], now)
            return row, created

        return await self._store._write(op)

    async def get(self, workspace_id: str, name: str) -> dict[str, Any]:
        """One credential's metadata and masked hint (NotFoundError if absent)."""
        return await self._store._read(_credentials.get, workspace_id, name)

    async def all(self, workspace_id: str) -> list[dict[str, Any]]:
        """The workspace's credentials (metadata and masked hints), by name."""
        return await self._store._read(_credentials.list_all, workspace_id)

    async def delete(self, workspace_id: str, name: str, *, actor: str) -> dict[str, Any]:
        """Delete a credential and audit it; its last metadata (NotFoundError if absent)."""

        def op(conn: Connection) -> dict[str, Any]:
            now = time.time()
            row = _credentials.remove(conn, workspace_id, name)
            detail = {"kind": row["kind"]}
            entry = _audit.NewEntry(at=now, actor=actor, action="credential.delete", target=name, detail=detail)
            _audit.append(conn, workspace_id, [entry], now)
            return row

        return await self._store._write(op)

    async def reveal(self, workspace_id: str, name: str) -> dict[str, Any]:
        """The credential with its secret fields decrypted: for tools at execution time only, never for callers."""
        return await self._store._read(_credentials.reveal, workspace_id, name)

    async def store_tokens(
        self,
        workspace_id: str,
        name: str,
        *,
        secret: dict[str, Any],
        expires_at: float | None,
        expected_version: int,
        actor: str,
    ) -> dict[str, Any]:
        """Replace refreshed OAuth tokens if the credential is still at ``expected_version`` (audited)."""

        def op(conn: Connection) -> dict[str, Any]:
            now = time.time()
            row = _credentials.store_tokens(
                conn,
                workspace_id,
                name,
                secret=secret,
                expires_at=expires_at,
                expected_version=expected_version,
                actor=actor,
                now=now,
            )
            detail = {"hint": row["hint"]}
            entry = _audit.NewEntry(at=now, actor=actor, action="credential.refresh", target=name, detail=detail)
            _audit.append(conn, workspace_id, [entry], now)
            return row

        return await self._store._write(op)

    async def refresh_failed(self, workspace_id: str, name: str, error: str | None) -> None:
        """Record (or clear) why the last token refresh of a credential failed."""
        await self._store._write(_credentials.set_refresh_error, workspace_id, name, error)

    async def rotate(self, workspace_id: str | None, *, actor: str) -> dict[str, int]:
        """Re-encrypt the credentials of one workspace (or all) with the newest key; audited per workspace."""
        from agentmaestro.crypto import keyring

        def op(conn: Connection) -> dict[str, int]:
            now = time.time()
            ring = keyring()
            counts = _credentials.rotate(conn, workspace_id, ring)
            for ws in sorted(set(counts) | ({workspace_id} if workspace_id else set())):
                detail = {"credentials": counts.get(ws, 0), "key_id": ring.key_id}
                entry = _audit.NewEntry(at=now, actor=actor, action="credential.rotate", target=ws, detail=detail)
                _audit.append(conn, ws, [entry], now)
            return counts

        return await self._store._write(op)

    async def create_oauth_state(
        self,
        workspace_id: str,
        *,
        state: str,
        provider: str,
        credential: str,
        verifier: str,
        redirect_url: str,
        scopes: Sequence[str],
        actor: str,
        ttl_s: float,
    ) -> float:
        """Remember a started OAuth authorization (single use, expiring); returns its expiry."""
        return await self._store._write(
            _credentials.create_state,
            workspace_id,
            state=state,
            provider=provider,
            credential=credential,
            verifier=verifier,
            redirect_url=redirect_url,
            scopes=list(scopes),
            actor=actor,
            now=time.time(),
            ttl_s=ttl_s,
        )

    async def consume_oauth_state(self, state: str) -> dict[str, Any]:
        """Take a started authorization by its state, once (ValidationError if unknown, used or expired)."""
        return await self._store._write(_credentials.consume_state, state, time.time())
