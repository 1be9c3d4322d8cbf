"""Named credentials of a workspace, encrypted at rest, and pending OAuth authorizations.

The secret fields of a credential (an API key, a username and password, OAuth tokens) are stored as one Fernet token
of their JSON made with the process keyring (:func:`agentmaestro.crypto.keyring`); the row keeps only a masked hint
(``…abcd``) in clear. :func:`public` is what leaves the store for the API and the CLI: never the secret.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, delete, select, update

from agentmaestro.crypto import Keyring, keyring
from agentmaestro.errors import ConflictError, NotFoundError, ValidationError
from agentmaestro.store.schema import credentials, oauth_states, workspaces

KINDS = ("api_key", "token", "basic", "oauth2")
"""Credential kinds: ``api_key`` and ``token`` hold ``value``; ``basic`` holds ``username`` and ``password``;
``oauth2`` holds ``access_token`` (and optionally ``refresh_token``, ``token_type``)."""

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
"""Credential names: 1-100 letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit."""

_REQUIRED: dict[str, tuple[str, ...]] = {
    "api_key": ("value",),
    "token": ("value",),
    "basic": ("username", "password"),
    "oauth2": ("access_token",),
}
_ALLOWED: dict[str, tuple[str, ...]] = {
    "api_key": ("value",),
    "token": ("value",),
    "basic": ("username", "password"),
    "oauth2": ("access_token", "refresh_token", "token_type"),
}
_HINT_FIELD = {"api_key": "value", "token": "value", "basic": "password", "oauth2": "access_token"}
MAX_SECRET_CHARS = 20_000


def check_name(name: str) -> str:
    """``name`` if it is a valid credential name, else ValidationError."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValidationError(
            f"invalid credential name {name!r}: use 1-100 letters, digits, '_', '.' or '-' (starting with a letter or "
            "digit)"
        )
    return name


def check_secret(kind: str, secret: Mapping[str, Any]) -> dict[str, str]:
    """The secret fields of a ``kind`` credential, validated (required fields present, no unknown ones)."""
    if kind not in KINDS:
        raise ValidationError(f"credential kind must be one of {', '.join(KINDS)}, got {kind!r}")
    unknown = sorted(set(secret) - set(_ALLOWED[kind]))
    if unknown:
        raise ValidationError(f"a {kind} credential has no field(s) {unknown}; it takes {list(_ALLOWED[kind])}")
    out: dict[str, str] = {}
    for field in _ALLOWED[kind]:
        value = secret.get(field)
        if value is None or value == "":
            if field in _REQUIRED[kind]:
                raise ValidationError(f"a {kind} credential needs {field!r}")
            continue
        if not isinstance(value, str):
            raise ValidationError(f"credential field {field!r} must be a string")
        if len(value) > MAX_SECRET_CHARS or "\x00" in value:
            raise ValidationError(f"credential field {field!r} is too long or holds a NUL character")
        out[field] = value
    return out


def hint(kind: str, secret: Mapping[str, str]) -> str:
    """A masked hint of the secret: its last 4 characters when it is long enough to keep most of it hidden."""
    value = secret.get(_HINT_FIELD.get(kind, ""), "")
    return f"…{value[-4:]}" if len(value) >= 12 else "…"


def state_hash(state: str) -> str:
    """What is stored of an OAuth ``state``: its SHA-256 (the state itself is a bearer secret until used)."""
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def public(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A credential row as the API shows it: metadata and the masked hint, never the secret."""
    return {
        "workspace_id": row["workspace_id"],
        "name": row["name"],
        "kind": row["kind"],
        "provider": row["provider"],
        "scopes": list(row["scopes"] or []),
        "hint": row["hint"],
        "key_id": row["key_id"],
        "expires_at": row["expires_at"],
        "refresh_error": row["refresh_error"],
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "updated_at": row["updated_at"],
        "updated_by": row["updated_by"],
    }


def _row(conn: Connection, workspace_id: str, name: str, *, lock: bool = False) -> dict[str, Any]:
    q = select(credentials).where(credentials.c.workspace_id == workspace_id, credentials.c.name == name)
    if lock and conn.dialect.name != "sqlite":
        q = q.with_for_update()
    row = conn.execute(q).first()
    if row is None:
        raise NotFoundError(f"credential {name!r} not found")
    return dict(row._mapping)


def put(
    conn: Connection,
    workspace_id: str,
    *,
    name: str,
    kind: str,
    secret: Mapping[str, Any],
    provider: str | None,
    scopes: list[str],
    expires_at: float | None,
    actor: str,
    now: float,
    ring: Keyring | None = None,
) -> tuple[dict[str, Any], bool]:
    """Create or replace a credential; returns (its public row, whether it was created)."""
    check_name(name)
    fields = check_secret(kind, secret)
    if conn.execute(select(workspaces.c.workspace_id).where(workspaces.c.workspace_id == workspace_id)).first() is None:
        raise NotFoundError(f"workspace {workspace_id!r} not found")
    ring = ring or keyring()
    values = {
        "kind": kind,
        "provider": provider,
        "scopes": list(scopes),
        "secret": ring.encrypt(json.dumps(fields)),
        "hint": hint(kind, fields),
        "key_id": ring.key_id,
        "expires_at": expires_at,
        "refresh_error": None,
        "updated_at": now,
        "updated_by": actor,
    }
    try:
        current = _row(conn, workspace_id, name, lock=True)
    except NotFoundError:
        conn.execute(
            credentials.insert().values(
                workspace_id=workspace_id, name=name, version=1, created_at=now, created_by=actor, **values
            )
        )
        return public(_row(conn, workspace_id, name)), True
    conn.execute(
        update(credentials)
        .where(credentials.c.workspace_id == workspace_id, credentials.c.name == name)
        .values(version=current["version"] + 1, **values)
    )
    return public(_row(conn, workspace_id, name)), False


def get(conn: Connection, workspace_id: str, name: str) -> dict[str, Any]:
    """One credential's public row (NotFoundError if absent)."""
    return public(_row(conn, workspace_id, check_name(name)))


def list_all(conn: Connection, workspace_id: str) -> list[dict[str, Any]]:
    """The workspace's credentials by name (public rows)."""
    rows = conn.execute(
        select(credentials).where(credentials.c.workspace_id == workspace_id).order_by(credentials.c.name)
    )
    return [public(dict(r._mapping)) for r in rows]


def reveal(conn: Connection, workspace_id: str, name: str, ring: Keyring | None = None) -> dict[str, Any]:
    """The full row with ``secret`` decrypted to its fields, for tools at execution time (never for the API)."""
    row = _row(conn, workspace_id, check_name(name))
    row["secret"] = json.loads((ring or keyring()).decrypt(row["secret"]))
    return row


def remove(conn: Connection, workspace_id: str, name: str) -> dict[str, Any]:
    """Delete a credential; its public row (NotFoundError if absent)."""
    row = public(_row(conn, workspace_id, check_name(name)))
    conn.execute(delete(credentials).where(credentials.c.workspace_id == workspace_id, credentials.c.name == name))
    return row


def store_tokens(
    conn: Connection,
    workspace_id: str,
    name: str,
    *,
    secret: Mapping[str, Any],
    expires_at: float | None,
    expected_version: int,
    actor: str,
    now: float,
    ring: Keyring | None = None,
) -> dict[str, Any]:
    """Replace an oauth2 credential's tokens after a refresh, if nobody changed it since ``expected_version``.

    Raises:
        ConflictError: Another process refreshed or replaced the credential first (re-read it).
    """
    fields = check_secret("oauth2", secret)
    ring = ring or keyring()
    res = conn.execute(
        update(credentials)
        .where(
            credentials.c.workspace_id == workspace_id,
            credentials.c.name == name,
            credentials.c.version == expected_version,
        )
        .values(
            secret=ring.encrypt(json.dumps(fields)),
            hint=hint("oauth2", fields),
            key_id=ring.key_id,
            expires_at=expires_at,
            refresh_error=None,
            version=expected_version + 1,
            updated_at=now,
            updated_by=actor,
        )
    )
    if not res.rowcount:
        raise ConflictError(f"credential {name!r} changed while its token was being refreshed")
    return public(_row(conn, workspace_id, name))


def set_refresh_error(conn: Connection, workspace_id: str, name: str, error: str | None) -> None:
    """Record (or clear) why the last refresh of an oauth2 credential failed."""
    conn.execute(
        update(credentials)
        .where(credentials.c.workspace_id == workspace_id, credentials.c.name == name)
        .values(refresh_error=error[:2000] if error else None)
    )


def rotate(conn: Connection, workspace_id: str | None, ring: Keyring | None = None) -> dict[str, int]:
    """Re-encrypt every credential (of one workspace, or all) with the newest key; count per workspace."""
    ring = ring or keyring()
    q = select(credentials.c.workspace_id, credentials.c.name, credentials.c.secret)
    if workspace_id is not None:
        q = q.where(credentials.c.workspace_id == workspace_id)
    if conn.dialect.name != "sqlite":
        q = q.with_for_update()
    counts: dict[str, int] = {}
    for ws, name, token in conn.execute(q).all():
        conn.execute(
            update(credentials)
            .where(credentials.c.workspace_id == ws, credentials.c.name == name)
            .values(secret=ring.rotate(token), key_id=ring.key_id)
        )
        counts[ws] = counts.get(ws, 0) + 1
    return counts


# --------------------------------------------------------------------------- OAuth states


def create_state(
    conn: Connection,
    workspace_id: str,
    *,
    state: str,
    provider: str,
    credential: str,
    verifier: str,
    redirect_url: str,
    scopes: list[str],
    actor: str,
    now: float,
    ttl_s: float,
    ring: Keyring | None = None,
) -> float:
    """Remember a started authorization (the verifier encrypted); returns when it expires."""
    check_name(credential)
    conn.execute(delete(oauth_states).where(oauth_states.c.expires_at < now))  # housekeeping
    expires_at = now + ttl_s
    conn.execute(
        oauth_states.insert().values(
            state_hash=state_hash(state),
            workspace_id=workspace_id,
            provider=provider,
            credential=credential,
            verifier=(ring or keyring()).encrypt(verifier),
            redirect_url=redirect_url,
            scopes=list(scopes),
            created_at=now,
            created_by=actor,
            expires_at=expires_at,
        )
    )
    return expires_at


def consume_state(conn: Connection, state: str, now: float, ring: Keyring | None = None) -> dict[str, Any]:
    """Take a started authorization by its ``state``, exactly once; the row with ``verifier`` decrypted.

    Raises:
        ValidationError: Unknown, already used or expired state.
    """
    h = state_hash(state)
    row = conn.execute(select(oauth_states).where(oauth_states.c.state_hash == h)).first()
    if row is None:
        raise ValidationError("unknown or already used OAuth state")
    res = conn.execute(delete(oauth_states).where(oauth_states.c.state_hash == h))
    if not res.rowcount:  # another callback took it between the read and the delete
        raise ValidationError("unknown or already used OAuth state")
    out = dict(row._mapping)
    if out["expires_at"] < now:
        raise ValidationError("the OAuth state has expired; start the authorization again")
    out["verifier"] = (ring or keyring()).decrypt(out["verifier"])
    return out
