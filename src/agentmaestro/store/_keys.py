"""API keys: created with a random secret shown once, stored as a SHA-256 hash, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import Connection, select, update

from agentmaestro.errors import ConflictError, NotFoundError, ValidationError
from agentmaestro.store.schema import api_keys, workspaces

ROLES = ("viewer", "operator", "admin")
KEY_PREFIX = "am"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def user_hash(email: str) -> str:
    """How a user is identified: SHA-256 (hex) of the email, trimmed and lower-cased. The email is never stored.

    Raises ValidationError for something that is not an email address.
    """
    e = email.strip().lower()
    local, _, domain = e.partition("@")
    if not local or not domain or "." not in domain or any(c.isspace() for c in e) or len(e) > 320:
        raise ValidationError(f"not an email address: {email.strip()[:80]!r}")
    return hashlib.sha256(e.encode("utf-8")).hexdigest()


def _public(row: Any) -> dict[str, Any]:
    m = dict(row._mapping)
    m.pop("secret_hash", None)
    m["prefix"] = f"{KEY_PREFIX}_{m['key_id']}_"
    return m


def create_key(
    conn: Connection,
    workspace_id: str,
    name: str,
    role: str,
    created_by: str | None,
    now: float,
    user_email: str | None = None,
) -> tuple[dict[str, Any], str]:
    """Create a key (owned by the user with ``user_email``, if given); returns (its public row, the full key)."""
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not name or len(name) > 200:
        raise ValidationError("key name must be 1-200 characters")
    if conn.execute(select(workspaces.c.workspace_id).where(workspaces.c.workspace_id == workspace_id)).first() is None:
        raise NotFoundError(f"workspace {workspace_id!r} not found")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    row = {
        "key_id": key_id,
        "workspace_id": workspace_id,
        "name": name,
        "role": role,
        "secret_hash": _hash(secret),
        "user_hash": user_hash(user_email) if user_email else None,
        "created_at": now,
        "created_by": created_by,
    }
    conn.execute(api_keys.insert().values(**row))
    public = {k: v for k, v in row.items() if k != "secret_hash"}
    public.update(prefix=f"{KEY_PREFIX}_{key_id}_", last_used_at=None, revoked_at=None)
    return public, f"{KEY_PREFIX}_{key_id}_{secret}"


def verify_key(conn: Connection, token: str, now: float) -> dict[str, Any] | None:
    """The key's public row if ``token`` is a valid, unrevoked key; else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    row = conn.execute(select(api_keys).where(api_keys.c.key_id == parts[1])).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, _hash(parts[2])):
        return None
    if row.last_used_at is None or now - row.last_used_at > 60:
        conn.execute(update(api_keys).where(api_keys.c.key_id == row.key_id).values(last_used_at=now))
    return _public(row)


def list_keys(conn: Connection, workspace_id: str) -> list[dict[str, Any]]:
    """A workspace's keys (never their secrets), newest first."""
    q = select(api_keys).where(api_keys.c.workspace_id == workspace_id).order_by(api_keys.c.created_at.desc())
    return [_public(r) for r in conn.execute(q)]


def revoke_key(conn: Connection, workspace_id: str, key_id: str, now: float) -> dict[str, Any]:
    """Revoke a key of the workspace (NotFoundError for another workspace's key)."""
    row = conn.execute(
        select(api_keys).where(api_keys.c.key_id == key_id, api_keys.c.workspace_id == workspace_id)
    ).first()
    if row is None:
        raise NotFoundError(f"API key {key_id!r} not found")
    if row.revoked_at is not None:
        raise ConflictError(f"API key {key_id!r} is already revoked")
    conn.execute(update(api_keys).where(api_keys.c.key_id == key_id).values(revoked_at=now))
    out = _public(row)
    out["revoked_at"] = now
    return out


def count_keys(conn: Connection) -> int:
    """Number of unrevoked keys in all workspaces."""
    return len(conn.execute(select(api_keys.c.key_id).where(api_keys.c.revoked_at.is_(None))).all())
