"""Signatures of outgoing webhook deliveries, and the signed approve/reject links sent with approval requests.

A generic (``json``) delivery carries ``X-Maestro-Signature: t=<unix seconds>,v1=<hex>`` where ``hex`` is
HMAC-SHA256 over ``"<t>." + body`` keyed with the webhook's own signing secret (shown once, at creation).
:func:`verify_signature` is what a receiver runs (docs/notifications.md has a standalone copy).

An approval link token names the approval, the decision, the workspace and the webhook that carried it,
and an expiry; it is signed with the process keyring (:func:`agentmaestro.crypto.keyring`), so every
server sharing the keys accepts it and nobody else can make one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from agentmaestro.crypto import keyring
from agentmaestro.errors import MaestroError

__all__ = [
    "LinkClaim",
    "LinkTokenError",
    "approval_links",
    "link_token",
    "new_signing_secret",
    "read_link_token",
    "sign_body",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Maestro-Signature"
EVENT_HEADER = "X-Maestro-Event"
DELIVERY_HEADER = "X-Maestro-Delivery"
SIGNATURE_TOLERANCE_S = 300.0
"""How old a signed timestamp a receiver should accept (replay window)."""
_LINK_PREFIX = "aml1"

Decision = Literal["approve", "reject"]


def new_signing_secret() -> str:
    """A new random signing secret for a ``json`` webhook (``whsec_`` + 43 url-safe characters)."""
    return "whsec_" + secrets.token_urlsafe(32)


def sign_body(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Maestro-Signature`` header value for ``body``: ``t=<timestamp>,v1=<hex HMAC-SHA256>``."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


def verify_signature(
    secret: str, header: str, body: bytes, *, tolerance_s: float = SIGNATURE_TOLERANCE_S, now: float | None = None
) -> bool:
    """Whether ``header`` (an ``X-Maestro-Signature`` value) signs ``body`` with ``secret`` within the tolerance."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        ts = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


# ------------------------------------------------------------------------------- approval links


class LinkTokenError(MaestroError):
    """An approval link token that is malformed, forged, expired or for another approval."""

    code = "invalid_link"

    def __init__(self, message: str, *, code: str = "invalid_link") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, kw_only=True)
class LinkClaim:
    """What a valid approval link token says."""

    approval_id: str
    """The approval the link decides."""
    decision: Decision
    """``approve`` or ``reject``."""
    workspace_id: str
    """The approval's workspace."""
    channel: str
    """The webhook that carried the link (recorded as the actor ``link:<channel>``)."""
    expires_at: float
    """Unix time after which the link is refused."""
    issued_at: float | None = None
    """When the link was made (None in links made before links carried it)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def link_token(
    approval_id: str,
    decision: Decision,
    workspace_id: str,
    *,
    channel: str,
    ttl_s: float,
    now: float | None = None,
) -> str:
    """A signed token for ``GET/POST /v1/approvals/{approval_id}/link?token=...``."""
    issued = time.time() if now is None else now
    body = {
        "a": approval_id,
        "d": decision,
        "w": workspace_id,
        "c": channel,
        "i": round(issued, 3),
        "x": round(issued + ttl_s, 3),
    }
    encoded = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return f"{_LINK_PREFIX}.{encoded}.{keyring().sign(f'{_LINK_PREFIX}.{encoded}')}"


def read_link_token(token: str, *, approval_id: str, now: float | None = None) -> LinkClaim:
    """Check a link token for ``approval_id``: signed by the keyring, not expired, naming that approval.

    Raises:
        LinkTokenError: with code ``invalid_link`` (malformed, forged, another approval) or ``link_expired``.
    """
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _LINK_PREFIX or len(token) > 2000:
        raise LinkTokenError("this approval link is not valid")
    try:
        signed = keyring().verify(f"{parts[0]}.{parts[1]}", parts[2])
    except UnicodeEncodeError:
        signed = False
    if not signed:
        raise LinkTokenError("this approval link is not valid (bad signature)")
    try:
        body = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        claim = LinkClaim(
            approval_id=str(body["a"]),
            decision=body["d"],
            workspace_id=str(body["w"]),
            channel=str(body["c"]),
            expires_at=float(body["x"]),
            issued_at=None if body.get("i") is None else float(body["i"]),
        )
    except (ValueError, KeyError, TypeError):
        raise LinkTokenError("this approval link is not valid") from None
    if claim.decision not in ("approve", "reject"):
        raise LinkTokenError("this approval link is not valid")
    if claim.approval_id != approval_id:
        raise LinkTokenError("this link is for another approval")
    if (time.time() if now is None else now) > claim.expires_at:
        raise LinkTokenError("this approval link has expired; decide in the dashboard or the CLI", code="link_expired")
    return claim


def link_revocation(claim: LinkClaim, hook: Mapping[str, Any] | None) -> str | None:
    """Why a validly signed link is revoked by the state of the webhook that carried it, or None.

    ``hook`` is the webhook's row (None if it was deleted). A link dies with its webhook: when the
    webhook is deleted or disabled, and when its target changed after the link was made
    (``links_valid_from``). Re-enabling a webhook does not bring its earlier links back.
    """
    if hook is None or hook.get("workspace_id") != claim.workspace_id:
        return "the webhook that sent this link was deleted, so the link no longer works"
    if not hook.get("enabled"):
        return "the webhook that sent this link is disabled, so the link no longer works"
    valid_from = hook.get("links_valid_from")
    if valid_from is not None and (claim.issued_at is None or claim.issued_at < float(valid_from)):
        return "the webhook that sent this link was disabled or given a new target since, so the link no longer works"
    return None


def approval_links(
    base_url: str, approval_id: str, workspace_id: str, *, channel: str, ttl_s: float, now: float | None = None
) -> dict[str, str | float]:
    """Absolute approve and reject links for an approval, and when they expire."""
    now = time.time() if now is None else now
    base = base_url.rstrip("/")
    path = f"{base}/v1/approvals/{quote(approval_id, safe='')}/link?token="
    approve = link_token(approval_id, "approve", workspace_id, channel=channel, ttl_s=ttl_s, now=now)
    reject = link_token(approval_id, "reject", workspace_id, channel=channel, ttl_s=ttl_s, now=now)
    return {"approve": path + approve, "reject": path + reject, "expires_at": round(now + ttl_s, 3)}
