"""API keys: create, verify (and audit logins and failures), list, revoke.

Keys are stored hashed; the full key is shown once, at creation.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from agentmaestro.store import _keys
from agentmaestro.store._keys import KEY_PREFIX, user_hash

if TYPE_CHECKING:
    from agentmaestro.store.base import Store

__all__ = ["KEY_PREFIX", "KeyRepository", "user_hash"]


class KeyRepository:
    """A workspace's API keys; ``store.keys``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def create(
        self, workspace_id: str, *, name: str, role: str, created_by: str | None = None, user_email: str | None = None
    ) -> tuple[dict[str, Any], str]:
        """Create an API key; returns its public row and the full key (shown once, stored hashed).

        With ``user_email`` the key belongs to that user, identified by the SHA-256 of the email.
        """
        return await self._store._write(_keys.create_key, workspace_id, name, role, created_by, time.time(), user_email)

    async def verify(self, token: str) -> dict[str, Any] | None:
        """The key's public row if ``token`` is valid and unrevoked, else None."""
        return await self._store._write(_keys.verify_key, token, time.time())

    async def all(self, workspace_id: str) -> list[dict[str, Any]]:
        """A workspace's keys, without secrets."""
        return await self._store._read(_keys.list_keys, workspace_id)

    async def revoke(self, workspace_id: str, key_id: str) -> dict[str, Any]:
        """Revoke one of the workspace's keys."""
        return await self._store._write(_keys.revoke_key, workspace_id, key_id, time.time())

    async def count(self) -> int:
        """Unrevoked keys in all workspaces."""
        return await self._store._read(_keys.count_keys)

    async def authenticate(self, token: str) -> dict[str, Any] | None:
        """Like :meth:`verify`, and record a login in the audit log at most once per key per minute."""
        from agentmaestro.store import _audit

        def op(conn: Connection) -> dict[str, Any] | None:
            now = time.time()
            row = _keys.verify_key(conn, token, now)
            if row is not None and (row["last_used_at"] is None or now - row["last_used_at"] > 60):
                entry = _audit.NewEntry(
                    at=now,
                    actor=f"user:{row['user_hash']}" if row.get("user_hash") else f"key:{row['name']}",
                    action="auth.login",
                    target=row["key_id"],
                    detail={"role": row["role"]},
                )
                _audit.append(conn, row["workspace_id"], [entry], now)
            return row

        return await self._store._write(op)

    async def record_auth_failure(self, token: str, *, client: str | None, reason: str) -> None:
        """Record a failed authentication in the workspace of the key it named (or the system chain)."""
        from sqlalchemy import select

        from agentmaestro.store import _audit
        from agentmaestro.store.schema import api_keys

        parts = token.split("_", 2)
        key_id = parts[1][:64] if len(parts) == 3 and parts[0] == _keys.KEY_PREFIX else None

        def op(conn: Connection) -> None:
            now = time.time()
            ws = None
            if key_id:
                ws = conn.execute(select(api_keys.c.workspace_id).where(api_keys.c.key_id == key_id)).scalar()
            entry = _audit.NewEntry(
                at=now,
                actor=f"client:{client or 'unknown'}",
                action="auth.failure",
                target=key_id,
                detail={"reason": reason},
            )
            _audit.append(conn, ws or _audit.SYSTEM_WORKSPACE, [entry], now)

        await self._store._write(op)

    async def create_audited(
        self, workspace_id: str, *, name: str, role: str, actor: str, user_email: str | None = None
    ) -> tuple[dict[str, Any], str]:
        """Create an API key (optionally owned by a user) and record it in the audit log, in one transaction."""
        from agentmaestro.store import _audit

        def op(conn: Connection) -> tuple[dict[str, Any], str]:
            now = time.time()
            row, key = _keys.create_key(conn, workspace_id, name, role, actor, now, user_email)
            detail = {"name": name, "role": role, **({"user_hash": row["user_hash"]} if row["user_hash"] else {})}
            entry = _audit.NewEntry(at=now, actor=actor, action="key.create", target=row["key_id"], detail=detail)
            _audit.append(conn, workspace_id, [entry], now)
            return row, key

        return await self._store._write(op)

    async def revoke_audited(self, workspace_id: str, key_id: str, *, actor: str) -> dict[str, Any]:
        """Revoke an API key and record it in the audit log, in one transaction."""
        from agentmaestro.store import _audit

        def op(conn: Connection) -> dict[str, Any]:
            now = time.time()
            row = _keys.revoke_key(conn, workspace_id, key_id, now)
            entry = _audit.NewEntry(
                at=now, actor=actor, action="key.revoke", target=key_id, detail={"name": row["name"]}
            )
            _audit.append(conn, workspace_id, [entry], now)
            return row

        return await self._store._write(op)
