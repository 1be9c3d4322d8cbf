"""/v1/webhooks: outgoing notifications; /v1/approvals/{id}/link: approve or reject from a chat message.

Admins manage webhooks; viewers read them and their delivery log. Secrets (the target URL of a Slack
webhook, the signing secret, a Telegram bot token) are never returned; a ``json`` webhook's signing
secret is in the creation answer only. The approval link routes take no API key: the signed ``token``
in the query string is the credential (see notify/signing.py).
"""

from __future__ import annotations

import html
import time
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyQuery
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from agentmaestro.actor import Actor, Role
from agentmaestro.errors import ConflictError, MaestroError, NotFoundError
from agentmaestro.notify import webhooks as wh
from agentmaestro.notify.signing import LinkClaim, LinkTokenError, link_revocation, read_link_token
from agentmaestro.server.auth import Admin, Viewer, get_store
from agentmaestro.server.errors import APIError, error_body
from agentmaestro.service import approvals, webhooks
from agentmaestro.store.base import Store

router = APIRouter(prefix="/v1", tags=["webhooks and notifications"])
StoreDep = Annotated[Store, Depends(get_store)]
WebhookId = Annotated[str, Path(min_length=1, max_length=64)]
DeliveryId = Annotated[str, Path(min_length=1, max_length=64)]
EventName = Literal["approval.requested", "human.requested", "run.failed", "run.completed", "budget.reached"]
DeliveryStatus = Literal["pending", "sending", "delivered", "failed"]
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
_BodyT = TypeVar("_BodyT", bound=BaseModel)
_URL = r"^https?://[^\x00-\x20\x7f]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TelegramTarget(_Strict):
    """Where a ``telegram`` webhook posts: a bot (its token is a secret) and a chat."""

    bot_token: str = Field(min_length=1, max_length=200, pattern=_PRINTABLE, description="Stored encrypted.")
    chat_id: str = Field(min_length=1, max_length=100, pattern=_PRINTABLE)
    api_base: str | None = Field(
        default=None, max_length=500, pattern=_URL, description="Bot API base URL (default https://api.telegram.org)."
    )


class WebhookCreate(_Strict):
    """A new webhook."""

    name: str = Field(min_length=1, max_length=200, pattern=_PRINTABLE)
    format: Literal["json", "slack", "telegram"] = "json"
    url: str | None = Field(
        default=None, max_length=2000, pattern=_URL, description="Endpoint (json, slack); stored encrypted."
    )
    telegram: TelegramTarget | None = Field(default=None, description="For format telegram.")
    events: list[EventName] = Field(min_length=1, max_length=5)
    enabled: bool = True
    link_ttl_s: float = Field(default=wh.DEFAULT_LINK_TTL_S, ge=60, le=30 * 86400, description="Approval link life.")


class TelegramPatch(_Strict):
    """Change a Telegram target (omitted fields keep their values)."""

    bot_token: str | None = Field(default=None, min_length=1, max_length=200, pattern=_PRINTABLE)
    chat_id: str | None = Field(default=None, min_length=1, max_length=100, pattern=_PRINTABLE)
    api_base: str | None = Field(default=None, max_length=500, pattern=_URL)


class WebhookPatch(_Strict):
    """Change a webhook; omitted fields keep their values."""

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=_PRINTABLE)
    url: str | None = Field(default=None, max_length=2000, pattern=_URL)
    telegram: TelegramPatch | None = None
    events: list[EventName] | None = Field(default=None, min_length=1, max_length=5)
    enabled: bool | None = None
    link_ttl_s: float | None = Field(default=None, ge=60, le=30 * 86400)


class Webhook(BaseModel):
    """A webhook, without its secrets."""

    webhook_id: str
    workspace_id: str
    name: str
    format: Literal["json", "slack", "telegram"]
    url_display: str = Field(description="The target without credentials or query (Slack's path hidden).")
    events: list[str]
    config: dict[str, Any] = Field(description="Telegram: chat_id and api_base.")
    enabled: bool
    link_base_url: str | None = Field(description="Base of approval links unless MAESTRO_PUBLIC_URL is set.")
    link_ttl_s: float
    active_since: float = Field(description="Events from this time on are notified (creation, or last re-enable).")
    created_at: float
    created_by: str | None
    updated_at: float


class WebhookCreated(Webhook):
    """A new webhook; ``signing_secret`` (json format) is in this answer only."""

    signing_secret: str | None = Field(description="HMAC key of X-Maestro-Signature; store it safely.")


class Delivery(BaseModel):
    """One notification to one webhook, and how its delivery went."""

    delivery_id: str = Field(description="Sent as X-Maestro-Delivery: the same on every retry (dedupe on it).")
    workspace_id: str
    webhook_id: str
    event: str
    dedupe_key: str
    run_id: str | None
    payload: dict[str, Any]
    status: DeliveryStatus
    attempts: int
    next_attempt_at: float
    last_status_code: int | None
    last_error: str | None
    created_at: float
    updated_at: float
    delivered_at: float | None


class LinkInfo(BaseModel):
    """What an approval link decides, and the approval's state."""

    approval_id: str
    decision: Literal["approve", "reject"]
    status: str = Field(description="The approval's status: pending until someone decides.")
    run_id: str
    tool: str
    risk: str
    reasons: list[str]
    link_expires_at: float


# ------------------------------------------------------------------------------------ webhooks

# The bodies of the two admin writes are parsed after the key is checked (FastAPI parses a declared body
# before any dependency, so a request without a key and with a malformed body would answer 4xx, not 401).


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out: dict[str, Any] = walk(schema)
    return out


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    content = {"application/json": {"schema": _inline_schema(model)}}
    return {"requestBody": {"required": True, "content": content}}


async def _parse(request: Request, model: type[_BodyT]) -> _BodyT:
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise APIError(422, "invalid_request", "body: not a JSON document") from None
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


async def _create_body(request: Request, principal: Admin) -> WebhookCreate:
    return await _parse(request, WebhookCreate)


async def _patch_body(request: Request, principal: Admin) -> WebhookPatch:
    return await _parse(request, WebhookPatch)


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookCreated,
    summary="Create a webhook",
    openapi_extra=_body_doc(WebhookCreate),
)
async def create_webhook(
    body: Annotated[WebhookCreate, Depends(_create_body)], request: Request, principal: Admin, store: StoreDep
) -> dict[str, Any]:
    """Create a webhook in the caller's workspace (admin). A json webhook's signing secret is in this answer only."""
    tg = body.telegram
    spec = wh.WebhookSpec(
        name=body.name,
        format=body.format,
        events=tuple(body.events),
        url=body.url,
        bot_token=tg.bot_token if tg else None,
        chat_id=tg.chat_id if tg else None,
        api_base=tg.api_base if tg else None,
        enabled=body.enabled,
        link_ttl_s=body.link_ttl_s,
    )
    cmd = webhooks.CreateWebhook(spec=spec, link_base_url=_base_url(request))
    row, secret = await webhooks.create_webhook(store, cmd, principal.as_actor())
    return {**row, "signing_secret": secret}


@router.get("/webhooks", response_model=list[Webhook], summary="List webhooks")
async def list_webhooks(principal: Viewer, store: StoreDep) -> list[dict[str, Any]]:
    """The workspace's webhooks, oldest first (never their secrets)."""
    return await store.webhooks.all(principal.workspace_id)


@router.get("/webhooks/{webhook_id}", response_model=Webhook, summary="Get a webhook")
async def get_webhook(webhook_id: WebhookId, principal: Viewer, store: StoreDep) -> dict[str, Any]:
    """One webhook of the workspace."""
    return await store.webhooks.get(principal.workspace_id, webhook_id)


@router.patch(
    "/webhooks/{webhook_id}", response_model=Webhook, summary="Change a webhook", openapi_extra=_body_doc(WebhookPatch)
)
async def patch_webhook(
    webhook_id: WebhookId, body: Annotated[WebhookPatch, Depends(_patch_body)], principal: Admin, store: StoreDep
) -> dict[str, Any]:
    """Change a webhook's name, target, events, link lifetime, or enable/disable it (admin; audited)."""
    changes: dict[str, Any] = {k: v for k, v in body.model_dump(exclude_unset=True).items() if k != "telegram"}
    if body.telegram is not None:
        changes.update({k: v for k, v in body.telegram.model_dump(exclude_unset=True).items() if v is not None})
    changes = {k: v for k, v in changes.items() if v is not None}
    cmd = webhooks.ChangeWebhook(webhook_id=webhook_id, changes=changes)
    return await webhooks.change_webhook(store, cmd, principal.as_actor())


@router.delete("/webhooks/{webhook_id}", response_model=Webhook, summary="Delete a webhook")
async def delete_webhook(webhook_id: WebhookId, principal: Admin, store: StoreDep) -> dict[str, Any]:
    """Delete a webhook and its delivery log (admin; audited)."""
    return await webhooks.delete_webhook(store, webhooks.DeleteWebhook(webhook_id=webhook_id), principal.as_actor())


@router.post("/webhooks/{webhook_id}/test", status_code=202, response_model=Delivery, summary="Send a test event")
async def test_webhook(webhook_id: WebhookId, principal: Admin, store: StoreDep) -> dict[str, Any]:
    """Queue a ``webhook.test`` delivery; follow it with ``GET .../deliveries/{delivery_id}``."""
    return await webhooks.test_webhook(store, webhooks.TestWebhook(webhook_id=webhook_id), principal.as_actor())


@router.get("/webhooks/{webhook_id}/deliveries", response_model=list[Delivery], summary="List deliveries")
async def list_deliveries(
    webhook_id: WebhookId,
    principal: Viewer,
    store: StoreDep,
    status: Annotated[list[DeliveryStatus] | None, Query(description="Only these statuses.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """The webhook's delivery log, newest first: status, attempts, last response code or error."""
    return await store.webhooks.deliveries(principal.workspace_id, webhook_id, status, limit)


@router.get("/webhooks/{webhook_id}/deliveries/{delivery_id}", response_model=Delivery, summary="Get a delivery")
async def get_delivery(
    webhook_id: WebhookId, delivery_id: DeliveryId, principal: Viewer, store: StoreDep
) -> dict[str, Any]:
    """One delivery of the webhook."""
    return await store.webhooks.delivery(principal.workspace_id, webhook_id, delivery_id)


@router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", response_model=Delivery, summary="Redeliver")
async def redeliver(
    webhook_id: WebhookId, delivery_id: DeliveryId, principal: Admin, store: StoreDep
) -> dict[str, Any]:
    """Queue a delivered or failed delivery again, with the same id (409 while it is pending or being sent)."""
    cmd = webhooks.Redeliver(webhook_id=webhook_id, delivery_id=delivery_id)
    return await webhooks.redeliver(store, cmd, principal.as_actor())


# ------------------------------------------------------------------------------ approval links

_link_token = APIKeyQuery(
    name="token",
    auto_error=False,
    scheme_name="ApprovalLinkToken",
    description="The signed token of an approve or reject link sent by a webhook.",
)
_LINK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "JSON, or a page for browsers."}
}


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{title} · AgentMaestro</title>
<style>body{{font:16px system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#222}}
dt{{font-weight:600;margin-top:.5rem}}button{{font-size:1rem;padding:.5rem 1.2rem;border:0;border-radius:4px;
color:#fff;background:{color};cursor:pointer}}.muted{{color:#666}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int, color: str = "#555") -> HTMLResponse:
    headers = {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    }
    content = _PAGE.format(title=html.escape(title), body=body, color=color)
    return HTMLResponse(content, status_code=status, headers=headers)


def _fail(request: Request, status: int, code: str, message: str) -> Response:
    if _wants_html(request):
        return _page("This link cannot be used", f"<p>{html.escape(message)}</p>", status)
    return JSONResponse(error_body(code, message), status_code=status)


async def _check(
    request: Request, approval_id: str, token: str | None, store: Store
) -> tuple[LinkClaim, dict[str, Any]]:
    if not token:
        raise APIError(401, "unauthenticated", "missing link token (?token=...)")
    try:
        claim = read_link_token(token, approval_id=approval_id)
    except LinkTokenError as exc:
        if exc.code == "link_expired" or "another approval" in str(exc):
            raise APIError(403, exc.code, str(exc)) from None
        raise APIError(401, "unauthenticated", str(exc)) from None  # not made by this server
    approval = await store.approvals.get(approval_id, workspace_id=claim.workspace_id)
    revoked = link_revocation(claim, await store.webhooks.load(claim.channel))
    if revoked is not None:
        raise APIError(403, "link_revoked", revoked)
    return claim, approval


def _info(claim: LinkClaim, approval: dict[str, Any]) -> dict[str, Any]:
    return {
        "approval_id": approval["approval_id"],
        "decision": claim.decision,
        "status": approval["status"],
        "run_id": approval["run_id"],
        "tool": approval["tool"],
        "risk": approval["risk"],
        "reasons": [str(r) for r in approval["reasons"] or []],
        "link_expires_at": claim.expires_at,
    }


async def _guarded(request: Request, fn: Any) -> Response:
    try:
        out: Response = await fn()
        return out
    except APIError as exc:
        return _fail(request, exc.status, exc.code, exc.message)
    except NotFoundError as exc:
        return _fail(request, 404, "not_found", str(exc))
    except ConflictError as exc:
        return _fail(request, 409, "conflict", str(exc))
    except MaestroError as exc:
        return _fail(request, 400, exc.code, str(exc))


@router.get(
    "/approvals/{approval_id}/link", response_model=LinkInfo, responses=_LINK_RESPONSES, summary="Open an approval link"
)
async def open_link(
    approval_id: Annotated[str, Path(min_length=1, max_length=64)],
    request: Request,
    store: StoreDep,
    token: Annotated[str | None, Depends(_link_token)] = None,
) -> Response:
    """What the link decides; browsers get a confirmation page with a button that POSTs the decision."""

    async def go() -> Response:
        claim, approval = await _check(request, approval_id, token, store)
        info = _info(claim, approval)
        if approval["status"] != "pending":
            raise ConflictError(f"approval {approval_id} was already decided: {approval['status']}")
        if not _wants_html(request):
            return JSONResponse(info)
        verb = "Approve" if claim.decision == "approve" else "Reject"
        e = html.escape
        expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(claim.expires_at))
        body = (
            f"<p>Agent run <code>{e(info['run_id'])}</code> wants to call <b>{e(info['tool'])}</b> "
            f"(risk {e(info['risk'])}).</p><dl><dt>Why it was held</dt><dd>{e('; '.join(info['reasons']) or '-')}</dd>"
            f"<dt>Approval</dt><dd><code>{e(approval_id)}</code></dd></dl>"
            f'<form method="post" action="?token={e(token or "")}"><button type="submit">{verb}</button></form>'
            f'<p class="muted">This link works once and expires {e(expires)}.</p>'
        )
        return _page(f"{verb} this tool call?", body, 200, "#1a7f37" if claim.decision == "approve" else "#cf222e")

    return await _guarded(request, go)


@router.post(
    "/approvals/{approval_id}/link", response_model=LinkInfo, responses=_LINK_RESPONSES, summary="Use an approval link"
)
async def use_link(
    approval_id: Annotated[str, Path(min_length=1, max_length=64)],
    request: Request,
    store: StoreDep,
    token: Annotated[str | None, Depends(_link_token)] = None,
) -> Response:
    """Approve or reject as the link says; once (a second use, an expired or a forged token is refused)."""

    async def go() -> Response:
        claim, approval = await _check(request, approval_id, token, store)
        hook = await store.webhooks.load(claim.channel)
        actor = f"link:{hook['name'] if hook else claim.channel}"[:200]
        approve = claim.decision == "approve"
        reason = f"{'approved' if approve else 'rejected'} with a link sent by webhook {claim.channel}"
        cmd = approvals.DecideApproval(
            approval_id=approval_id, approve=approve, reason=reason, via={"via": "link", "webhook_id": claim.channel}
        )
        row = await approvals.decide_approval(
            store, cmd, Actor(name=actor, workspace_id=claim.workspace_id, role=Role.operator)
        )
        info = _info(claim, row)
        if not _wants_html(request):
            return JSONResponse(info)
        done = "Approved" if approve else "Rejected"
        body = f"<p>{done}. Run <code>{html.escape(row['run_id'])}</code> continues.</p>"
        return _page(done, body, 200, "#1a7f37")

    return await _guarded(request, go)
