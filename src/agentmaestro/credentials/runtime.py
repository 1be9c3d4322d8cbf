"""Credentials for tools at execution time: decrypted in the worker, refreshed before expiry, never shown to a model.

The engine puts a :class:`StoreCredentials` on every :class:`~agentmaestro.tools.context.ToolContext`
(``ctx.credentials``). A tool asks for a credential by name; it gets the secret fields of the run's own workspace's
credential (another workspace's is not found), with an OAuth access token refreshed first when it expires within
:data:`REFRESH_MARGIN_S`. Every secret value handed out is registered for redaction
(:func:`agentmaestro.tools.redact.register_secret`), so a tool with ``redact_output=True`` cannot echo it to the model.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentmaestro.errors import ConflictError, MaestroError, NotFoundError, ToolError
from agentmaestro.tools.redact import register_secret

__all__ = ["REFRESH_MARGIN_S", "StoreCredentials", "authorization_header", "refresh_if_needed"]

log = logging.getLogger("agentmaestro.credentials")

REFRESH_MARGIN_S = 120.0
"""An OAuth access token expiring within this many seconds is refreshed before it is used."""

_refresh_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _refresh_lock(workspace_id: str, name: str) -> asyncio.Lock:
    """One refresh at a time per credential in this process (other processes are kept apart by the row version)."""
    locks = _refresh_locks.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault((workspace_id, name), asyncio.Lock())


def authorization_header(credential: Mapping[str, Any], *, scheme: str | None = None) -> str:
    """The ``Authorization`` header value (or bare value with ``scheme=""``) for a credential from ``get``.

    ``api_key`` and ``token``: ``Bearer <value>``; ``basic``: ``Basic base64(user:password)``; ``oauth2``:
    ``<token_type> <access_token>``. ``scheme`` replaces the default scheme (``""``: the bare value).
    """
    kind = credential["kind"]
    secret = credential["secret"]
    if kind == "basic":
        encoded = base64.b64encode(f"{secret['username']}:{secret['password']}".encode()).decode()
        register_secret(encoded)
        value, default = encoded, "Basic"
    elif kind == "oauth2":
        value, default = secret["access_token"], secret.get("token_type") or "Bearer"
    else:
        value, default = secret["value"], "Bearer"
    used = default if scheme is None else scheme
    return f"{used} {value}" if used else value


async def refresh_if_needed(
    store: Any,
    workspace_id: str,
    row: dict[str, Any],
    *,
    actor: str,
    providers: Mapping[str, Any] | None = None,
    margin_s: float = REFRESH_MARGIN_S,
    force: bool = False,
) -> dict[str, Any]:
    """``row`` (from ``credential_reveal``), with fresh tokens when its OAuth access token is about to expire.

    A failed refresh is recorded on the credential (``refresh_error``, visible in ``maestro credentials list``); the
    old token is still used while it is valid, and a ToolError says what to do once it is not.
    """

    def fresh(r: dict[str, Any]) -> bool:
        expires_at = r.get("expires_at")
        return r["kind"] != "oauth2" or expires_at is None or expires_at - time.time() > margin_s

    if not force and fresh(row):
        return row
    async with _refresh_lock(workspace_id, row["name"]):
        latest = dict(await store.credentials.reveal(workspace_id, row["name"]))
        if latest["version"] != row["version"] and fresh(latest):
            return latest  # refreshed by another call while this one waited
        return await _refresh(store, workspace_id, latest, actor=actor, providers=providers, force=force)


async def _refresh(
    store: Any,
    workspace_id: str,
    row: dict[str, Any],
    *,
    actor: str,
    providers: Mapping[str, Any] | None,
    force: bool,
) -> dict[str, Any]:
    from agentmaestro.credentials import oauth

    expires_at = row.get("expires_at")
    name = row["name"]
    expired = expires_at is not None and expires_at <= time.time()
    refresh_token = row["secret"].get("refresh_token")
    try:
        if not refresh_token:
            raise oauth.OAuthError(f"credential {name!r} has no refresh token")
        if not row.get("provider"):
            raise oauth.OAuthError(f"credential {name!r} names no OAuth provider to refresh it with")
        provider = oauth.get_provider(row["provider"], providers)
        tokens = await oauth.refresh_tokens(provider, refresh_token, scopes=row.get("scopes") or ())
    except MaestroError as exc:
        current = await store.credentials.reveal(workspace_id, name)
        if current["version"] != row["version"] and (current["expires_at"] or 0) > time.time():
            return dict(current)  # another worker refreshed it meanwhile (and used up the old refresh token)
        message = f"token refresh failed: {exc}"
        log.warning("credential %r of workspace %r: %s", name, workspace_id, message)
        await store.credentials.refresh_failed(workspace_id, name, message)
        if expired or force:
            hint = f"; re-authorize with `maestro oauth start {row.get('provider') or 'PROVIDER'} --name {name}`"
            raise ToolError(f"credential {name!r}: access token expired and {message}{hint}") from None
        return row
    try:
        await store.credentials.store_tokens(
            workspace_id,
            name,
            secret=tokens.secret(),
            expires_at=tokens.expires_at,
            expected_version=row["version"],
            actor=actor,
        )
    except ConflictError:  # another worker refreshed (or someone replaced) it first: use theirs
        pass
    return dict(await store.credentials.reveal(workspace_id, name))


@dataclass(frozen=True, kw_only=True)
class StoreCredentials:
    """The credentials of one run's workspace, as tools see them (``ctx.credentials``)."""

    store: Any
    workspace_id: str
    run_id: str
    providers: Mapping[str, Any] | None = None
    """OAuth providers for refreshes (default: the configured ones, see ``agentmaestro.credentials.oauth``)."""

    async def get(self, name: str) -> dict[str, Any]:
        """The credential ``name``: ``name``, ``kind``, ``provider``, ``scopes``, ``expires_at`` and ``secret``.

        Raises:
            ToolError: No such credential in this workspace, it cannot be decrypted, or its token expired and could
                not be refreshed.
        """
        try:
            row = await self.store.credentials.reveal(self.workspace_id, name)
            row = await refresh_if_needed(
                self.store, self.workspace_id, row, actor=f"run:{self.run_id}", providers=self.providers
            )
        except NotFoundError:
            raise ToolError(f"credential {name!r} not found in this workspace") from None
        except ToolError:
            raise
        except MaestroError as exc:
            raise ToolError(f"credential {name!r}: {exc}") from None
        secret = dict(row["secret"])
        for value in secret.values():
            register_secret(value)
        return {
            "name": row["name"],
            "kind": row["kind"],
            "provider": row["provider"],
            "scopes": list(row["scopes"] or []),
            "expires_at": row["expires_at"],
            "secret": secret,
        }
