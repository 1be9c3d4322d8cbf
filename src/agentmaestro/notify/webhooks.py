"""Outgoing webhooks: per-workspace notifications of approvals, human requests, failures, completions and budgets.

How a notification travels:

1. **Produce.** A :class:`Dispatcher` follows every workspace that has webhooks through its committed run
   events (``APPROVAL_REQUESTED``, ``HUMAN_INPUT_REQUESTED``, ``RUN_COMPLETED``, ``RUN_FAILED``,
   ``POLICY_VIOLATION``) with a cursor
   persisted in ``webhook_cursors``. Each pass rescans a lag window behind the cursor (commits land late
   and clocks differ a little between processes) and enqueues one row per (webhook, notification) in the
   ``webhook_deliveries`` outbox, unique on a dedupe key, so any number of dispatchers in any number of
   processes enqueue each notification exactly once. Runs executed by a separate ``maestro worker`` are
   seen like any other: the dispatcher reads the database, not the process's memory.
2. **Deliver.** Due deliveries are claimed with a guarded UPDATE (``status`` pending -> sending, with a
   claim expiry), so two dispatchers never send one delivery at the same time; a dispatcher that dies
   mid-send loses its claim when it expires and another one sends again (at-least-once: receivers dedupe
   on ``X-Maestro-Delivery``). Network errors, 408, 429 and 5xx are retried with exponential backoff and
   jitter up to ``max_attempts``; other answers fail the delivery at once.
3. **Guard.** Targets must be public http(s) addresses unless the operator allows more
   (:mod:`agentmaestro.notify.targets`): checked when a webhook is created or changed, and again
   before every attempt against the addresses resolved then; the request goes to the checked address. A
   refused delivery fails at once with the reason in the delivery log.

The stored payload carries ids, statuses, the agent, for approvals the tool's name, risk and the gate's
reasons, and for human requests the (shortened, redacted) question; never tool arguments, never the run's
input or context, never secrets. Approval links are signed and added when a delivery is sent, as are the
dashboard links of human requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx

from agentmaestro.crypto import DecryptionError, keyring
from agentmaestro.errors import ValidationError
from agentmaestro.notify.formats import Target, render
from agentmaestro.notify.signing import approval_links, new_signing_secret
from agentmaestro.notify.targets import TargetLookupError, TargetPolicy, TargetRefusedError
from agentmaestro.store.base import Store
from agentmaestro.store.records import AuditNote, new_id, new_worker_id
from agentmaestro.tools.redact import redact

__all__ = [
    "EVENT_TYPES",
    "FORMATS",
    "Dispatcher",
    "DispatcherConfig",
    "RetryPolicy",
    "TargetPolicy",
    "TargetRefusedError",
    "WebhookSpec",
    "create_webhook",
    "dashboard_links",
    "notifications_for",
    "send_test",
    "update_webhook",
]

log = logging.getLogger("agentmaestro.webhooks")
_JITTER = random.Random()
"""Jitter source of retries: private, so the process-wide ``random`` state is never touched."""

EventName = Literal["approval.requested", "human.requested", "run.failed", "run.completed", "budget.reached"]
EVENT_TYPES: tuple[str, ...] = (
    "approval.requested",
    "human.requested",
    "run.failed",
    "run.completed",
    "budget.reached",
)
"""Notifications a webhook can subscribe to."""
TEST_EVENT = "webhook.test"
FORMATS: tuple[str, ...] = ("json", "slack", "telegram")
DEFAULT_TELEGRAM_API = "https://api.telegram.org"
DEFAULT_LINK_TTL_S = 24 * 3600.0
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
PUBLIC_URL_ENV = "MAESTRO_PUBLIC_URL"
_SOURCE_TYPES = ("APPROVAL_REQUESTED", "HUMAN_INPUT_REQUESTED", "RUN_COMPLETED", "RUN_FAILED", "POLICY_VIOLATION")
_WAITING = {"APPROVAL_REQUESTED": "WAITING_FOR_APPROVAL", "HUMAN_INPUT_REQUESTED": "WAITING_FOR_HUMAN"}
_PREVIEW_CHARS = 500


# ----------------------------------------------------------------------------------- settings


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """When a failed delivery is tried again.

    The delay before attempt ``n + 1`` is ``initial * multiplier**(n-1)``, capped at ``max_backoff_s``,
    times a random factor in ``[1 - jitter, 1]``.
    """

    max_attempts: int = 8
    """Attempts before a delivery is marked ``failed``."""
    initial_backoff_s: float = 5.0
    """Delay after the first failed attempt."""
    multiplier: float = 2.0
    """Growth of the delay per attempt."""
    max_backoff_s: float = 3600.0
    """Longest delay (also caps a receiver's ``Retry-After``)."""
    jitter: float = 0.5
    """Fraction of the delay that is random, so retries of many deliveries spread out."""

    def delay(self, attempts: int, retry_after: float | None = None, rand: random.Random | None = None) -> float:
        """Seconds to wait after ``attempts`` failed attempts (at least ``retry_after`` when the receiver asked)."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** max(0, attempts - 1))
        wait = base * (1.0 - self.jitter * (rand or _JITTER).random())
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_backoff_s))
        return wait

    @staticmethod
    def retryable(status_code: int | None) -> bool:
        """Network errors (None), 408, 429 and 5xx are worth another attempt; other answers are final."""
        return status_code is None or status_code in (408, 429) or status_code >= 500


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        log.warning("ignoring %s=%r: not a number", name, raw)
        return default


@dataclass(frozen=True, kw_only=True)
class DispatcherConfig:
    """Settings of the notification dispatcher, with their defaults (``from_env`` reads ``MAESTRO_WEBHOOK_*``)."""

    poll_interval_s: float = 1.0
    """Wait between passes: notifications leave at most this long after their event is committed."""
    batch: int = 50
    """Most deliveries claimed per pass."""
    claim_ttl_s: float = 60.0
    """How long a claim lasts; a dispatcher that died mid-send is replaced after that."""
    timeout_s: float = 10.0
    """HTTP timeout per attempt (must stay well under ``claim_ttl_s``)."""
    lag_s: float = 5.0
    """Window rescanned behind the cursor: upper bound of commit latency plus clock skew between writers."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Retries of failed attempts."""
    public_url: str | None = None
    """Base of approval links (``MAESTRO_PUBLIC_URL``); default: the URL the webhook was created through."""
    targets: TargetPolicy = field(default_factory=TargetPolicy)
    """Where deliveries may go (default: public addresses only; see ``notify_targets``)."""

    @classmethod
    def from_env(cls) -> DispatcherConfig:
        """Defaults, overridden by the environment.

        ``MAESTRO_PUBLIC_URL``, ``MAESTRO_WEBHOOK_MAX_ATTEMPTS``, ``MAESTRO_WEBHOOK_BACKOFF_S`` (first delay),
        ``MAESTRO_WEBHOOK_MAX_BACKOFF_S``, ``MAESTRO_WEBHOOK_POLL_S``, ``MAESTRO_WEBHOOK_ALLOW_PRIVATE``,
        ``MAESTRO_WEBHOOK_ALLOWED_HOSTS``.
        """
        retry = RetryPolicy(
            max_attempts=max(1, int(_env_float("MAESTRO_WEBHOOK_MAX_ATTEMPTS", 8))),
            initial_backoff_s=_env_float("MAESTRO_WEBHOOK_BACKOFF_S", 5.0),
            max_backoff_s=_env_float("MAESTRO_WEBHOOK_MAX_BACKOFF_S", 3600.0),
        )
        return cls(
            poll_interval_s=_env_float("MAESTRO_WEBHOOK_POLL_S", 1.0),
            retry=retry,
            public_url=os.environ.get(PUBLIC_URL_ENV, "").strip() or None,
            targets=TargetPolicy.from_env(),
        )


# --------------------------------------------------------------------------------- management


@dataclass(frozen=True, kw_only=True)
class WebhookSpec:
    """A new webhook, as the API and the CLI take it."""

    name: str
    """What it is for."""
    format: Literal["json", "slack", "telegram"]
    """Generic signed JSON, a Slack incoming webhook, or a Telegram bot message."""
    events: tuple[str, ...]
    """Subscribed notifications (:data:`EVENT_TYPES`)."""
    url: str | None = None
    """The endpoint (``json``, ``slack``)."""
    bot_token: str | None = None
    """Telegram bot token (a secret: stored encrypted, never shown)."""
    chat_id: str | None = None
    """Telegram chat id."""
    api_base: str | None = None
    """Telegram Bot API base URL (default https://api.telegram.org)."""
    enabled: bool = True
    """Whether notifications are produced and sent."""
    link_ttl_s: float = DEFAULT_LINK_TTL_S
    """Lifetime of approve/reject links."""


def _text(value: str, what: str) -> str:
    """``value`` if it is storable text (no NUL, no lone surrogates); ValidationError otherwise."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{what} is not valid text") from None
    if "\x00" in value:
        raise ValidationError(f"{what} must not contain NUL characters")
    return value


def _check_url(url: str, what: str) -> str:
    url = _text(url.strip(), what)
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and len(url) <= 2000
        _ = parts.port  # raises on a malformed port
    except ValueError:
        ok = False
    if not ok:
        raise ValidationError(f"{what} must be an http:// or https:// URL")
    return url


def display_url(fmt: str, url: str) -> str:
    """What may be shown of a target URL: no credentials, no query; Slack's secret path is hidden."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if fmt == "slack":
        return f"{parts.scheme}://{host}/…"
    return f"{parts.scheme}://{host}{parts.path}" + ("?…" if parts.query else "")


def _check_events(events: tuple[str, ...] | list[str]) -> list[str]:
    chosen = list(dict.fromkeys(events))
    bad = [e for e in chosen if e not in EVENT_TYPES]
    if bad or not chosen:
        raise ValidationError(f"events must be some of {', '.join(EVENT_TYPES)}; got {', '.join(bad) or 'none'}")
    return chosen


def _check_ttl(ttl: float) -> float:
    if not 60 <= ttl <= 30 * 86400:
        raise ValidationError("link_ttl_s must be between 60 seconds and 30 days")
    return float(ttl)


def _target_columns(
    fmt: str, url: str | None, bot_token: str | None, chat_id: str | None, api_base: str | None
) -> dict[str, Any]:
    ring = keyring()
    if fmt in ("json", "slack"):
        if not url:
            raise ValidationError(f"a {fmt} webhook needs a url")
        if bot_token or chat_id or api_base:
            raise ValidationError("bot_token, chat_id and api_base are for telegram webhooks")
        url = _check_url(url, "url")
        return {"url_enc": ring.encrypt(url), "url_display": display_url(fmt, url), "config": {}}
    if url:
        raise ValidationError("a telegram webhook takes bot_token and chat_id, not a url")
    if not bot_token or not chat_id:
        raise ValidationError("a telegram webhook needs bot_token and chat_id")
    _text(bot_token, "bot_token")
    _text(chat_id, "chat_id")
    base = _check_url(api_base or DEFAULT_TELEGRAM_API, "api_base").rstrip("/")
    return {
        "url_enc": None,
        "url_display": f"telegram chat {chat_id}",
        "config": {"chat_id": chat_id, "api_base": base},
        "secret_enc": ring.encrypt(bot_token),
    }


async def _check_target(policy: TargetPolicy | None, url: str, what: str) -> None:
    try:
        await (policy or TargetPolicy.from_env()).check(url)
    except TargetRefusedError as exc:
        raise TargetRefusedError(f"{what}: {exc}") from None


async def create_webhook(
    store: Store,
    workspace_id: str,
    spec: WebhookSpec,
    *,
    actor: str,
    link_base_url: str | None = None,
    targets: TargetPolicy | None = None,
) -> tuple[dict[str, Any], str | None]:
    """Create a webhook; its public row and, for ``json``, the signing secret (shown only now).

    ``targets`` is where the webhook may post (default: :meth:`TargetPolicy.from_env`).

    Raises:
        ValidationError: a missing or malformed URL, token or event name.
        TargetRefusedError: the target is not allowed (a private address, ...).
    """
    if spec.format not in FORMATS:
        raise ValidationError(f"format must be one of {', '.join(FORMATS)}")
    name = _text(spec.name.strip(), "name")
    if not name or len(name) > 200:
        raise ValidationError("name must be 1-200 characters")
    cols = _target_columns(spec.format, spec.url, spec.bot_token, spec.chat_id, spec.api_base)
    if spec.format == "telegram":
        await _check_target(targets, cols["config"]["api_base"], "api_base")
    else:
        await _check_target(targets, str(spec.url).strip(), "url")
    signing_secret = None
    if spec.format == "json":
        signing_secret = new_signing_secret()
        cols["secret_enc"] = keyring().encrypt(signing_secret)
    now = time.time()
    row = {
        "webhook_id": new_id("wh"),
        "workspace_id": workspace_id,
        "name": name,
        "format": spec.format,
        "events": _check_events(spec.events),
        "enabled": spec.enabled,
        "link_base_url": _check_url(link_base_url, "public URL").rstrip("/") if link_base_url else None,
        "link_ttl_s": _check_ttl(spec.link_ttl_s),
        "active_since": now,
        "created_at": now,
        "created_by": actor,
        "updated_at": now,
        "secret_enc": None,
        **cols,
    }
    await store.workspaces.ensure(workspace_id)
    detail = {"name": name, "format": spec.format, "events": row["events"], "url": row["url_display"]}
    note = AuditNote(
        workspace_id=workspace_id, actor=actor, action="webhook.create", target=row["webhook_id"], detail=detail
    )
    public = await store.webhooks.create(row, audit=lambda _: note)
    return public, signing_secret


async def update_webhook(
    store: Store,
    workspace_id: str,
    webhook_id: str,
    changes: Mapping[str, Any],
    *,
    actor: str,
    targets: TargetPolicy | None = None,
) -> dict[str, Any]:
    """Change a webhook (audited).

    ``changes`` holds any of ``name``, ``url``, ``events``, ``enabled``, ``link_ttl_s``, and for telegram
    ``bot_token``, ``chat_id``, ``api_base``. A new target is checked against ``targets`` (default: from the
    environment), like at creation.
    """
    current = await store.webhooks.get(workspace_id, webhook_id)
    fmt = current["format"]
    cols: dict[str, Any] = {}
    if "name" in changes:
        name = _text(str(changes["name"]).strip(), "name")
        if not name or len(name) > 200:
            raise ValidationError("name must be 1-200 characters")
        cols["name"] = name
    if "events" in changes:
        cols["events"] = _check_events(list(changes["events"]))
    now = time.time()
    if "enabled" in changes:
        cols["enabled"] = bool(changes["enabled"])
        if cols["enabled"] and not current["enabled"]:
            cols["active_since"] = now  # no notifications for what happened while it was off
        if not cols["enabled"] and current["enabled"]:
            cols["links_valid_from"] = now  # the approval links it carried die now, and stay dead if re-enabled
    if "link_ttl_s" in changes:
        cols["link_ttl_s"] = _check_ttl(float(changes["link_ttl_s"]))
    target_keys = {"url", "bot_token", "chat_id", "api_base"} & set(changes)
    if target_keys:
        if fmt == "telegram":
            if "url" in target_keys:
                raise ValidationError("a telegram webhook takes bot_token and chat_id, not a url")
            chat = _text(str(changes.get("chat_id") or current["config"]["chat_id"]), "chat_id")
            base = changes.get("api_base") or current["config"]["api_base"]
            cols["config"] = {"chat_id": str(chat), "api_base": _check_url(str(base), "api_base").rstrip("/")}
            if "api_base" in target_keys:
                await _check_target(targets, cols["config"]["api_base"], "api_base")
            cols["url_display"] = f"telegram chat {chat}"
            if changes.get("bot_token"):
                cols["secret_enc"] = keyring().encrypt(_text(str(changes["bot_token"]), "bot_token"))
        else:
            if target_keys - {"url"}:
                raise ValidationError("bot_token, chat_id and api_base are for telegram webhooks")
            url = _check_url(str(changes["url"] or ""), "url")
            await _check_target(targets, url, "url")
            cols["url_enc"] = keyring().encrypt(url)
            cols["url_display"] = display_url(fmt, url)
        cols["links_valid_from"] = now  # links sent to the old target are no longer good
    shown = {k: v for k, v in cols.items() if k not in ("url_enc", "secret_enc", "links_valid_from")}
    if "links_valid_from" in cols:
        shown["links_revoked"] = True
    if "secret_enc" in cols:
        shown["bot_token"] = "changed"
    note = AuditNote(workspace_id=workspace_id, actor=actor, action="webhook.update", target=webhook_id, detail=shown)
    return await store.webhooks.update(workspace_id, webhook_id, cols, now=now, audit=lambda _: note)


async def delete_webhook(store: Store, workspace_id: str, webhook_id: str, *, actor: str) -> dict[str, Any]:
    """Delete a webhook and its delivery log. Audited."""
    return await store.webhooks.delete(
        workspace_id,
        webhook_id,
        audit=lambda row: AuditNote(
            workspace_id=workspace_id,
            actor=actor,
            action="webhook.delete",
            target=webhook_id,
            detail={"name": row["name"]},
        ),
    )


async def send_test(store: Store, workspace_id: str, webhook_id: str) -> dict[str, Any]:
    """Enqueue a ``webhook.test`` delivery for the webhook; the dispatcher sends it. Returns the delivery."""
    hook = await store.webhooks.get(workspace_id, webhook_id)
    now = time.time()
    row = _delivery_row(
        hook,
        event=TEST_EVENT,
        dedupe_key=f"test:{secrets.token_hex(8)}",
        run_id=None,
        payload={
            "created_at": now,
            "data": {"message": f"Test notification from AgentMaestro (webhook {hook['name']})"},
        },
        now=now,
    )
    await store.webhooks.enqueue([row])
    return await store.webhooks.delivery(workspace_id, webhook_id, row["delivery_id"])


def _delivery_row(
    hook: Mapping[str, Any], *, event: str, dedupe_key: str, run_id: str | None, payload: dict[str, Any], now: float
) -> dict[str, Any]:
    return {
        "delivery_id": new_id("dlv"),
        "workspace_id": hook["workspace_id"],
        "webhook_id": hook["webhook_id"],
        "event": event,
        "dedupe_key": dedupe_key,
        "run_id": run_id,
        "payload": payload,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


# ------------------------------------------------------------------------------------ producing


def dashboard_links(base_url: str, run_id: str) -> dict[str, str]:
    """Where a person answers a human request: the dashboard's human queue, and the run's page."""
    base = base_url.rstrip("/")
    return {"dashboard": f"{base}/#/queue", "run": f"{base}/#/runs/{quote(run_id, safe='')}"}


def _preview(text: Any) -> str | None:
    if text is None:
        return None
    s = redact(str(text))
    return s if len(s) <= _PREVIEW_CHARS else s[: _PREVIEW_CHARS - 1] + "…"


def notifications_for(row: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The notifications one committed event makes: ``(event name, payload)`` pairs.

    ``row`` is an event with its run's columns (see ``store.webhooks.scan_events``). Payloads hold ids,
    statuses, counters, the agent, (for approvals) the tool's name, risk and reasons and (for human requests)
    the question and the possible answers; never arguments, never the request's details. Question, output and
    error texts are shortened and pass through :func:`agentmaestro.tools.redact.redact`.
    """
    p = row["payload"] or {}
    kind = row["type"]
    finished = kind not in _WAITING
    run: dict[str, Any] = {
        "run_id": row["run_id"],
        "agent": row["agent_name"],
        "parent_run_id": row["parent_run_id"],
        "status": _WAITING.get(kind) or ("COMPLETED" if kind == "RUN_COMPLETED" else "FAILED"),
        "seq": row["seq"],
    }
    if finished:
        run.update(
            steps=row["steps"], tool_calls=row["tool_calls"], tokens=row["tokens"], cost_usd=round(row["cost_usd"], 8)
        )
    base = {"created_at": row["created_at"], "run": run}
    if kind == "APPROVAL_REQUESTED":
        call = p.get("call") or {}
        data = {
            "approval_id": p.get("approval_id"),
            "tool": call.get("name"),
            "risk": p.get("risk"),
            "reasons": [str(r) for r in p.get("reasons") or []],
            "expires_at": p.get("expires_at"),
        }
        return [("approval.requested", {**base, "data": data})]
    if kind == "HUMAN_INPUT_REQUESTED":
        data = {
            "request_id": p.get("request_id"),
            "kind": p.get("kind"),
            "step_kind": p.get("step_kind"),
            "question": _preview(p.get("question")),
            "options": [str(o) for o in p.get("options") or []],
        }
        return [("human.requested", {**base, "data": data})]
    if kind == "RUN_COMPLETED":
        return [("run.completed", {**base, "data": {"output": _preview(p.get("output", row["output"]))}})]
    if kind == "RUN_FAILED":
        return [("run.failed", {**base, "data": {"error": _preview(p.get("error", row["error"]))}})]
    # POLICY_VIOLATION: the run ends FAILED; a budget refusal is also a budget.reached
    reason = _preview(p.get("reason"))
    out = [("run.failed", {**base, "data": {"error": reason, "limit": p.get("limit")}})]
    if p.get("budget") is not None:
        budget = {k: p.get(k) for k in ("budget", "limit", "limit_value", "observed", "requested")}
        out.append(("budget.reached", {**base, "data": {**budget, "reason": reason}}))
    return out


async def produce(store: Store, *, lag_s: float, page: int = 500) -> int:
    """One producer pass over every workspace with webhooks; the number of deliveries enqueued."""
    added = 0
    for workspace_id, oldest, watermark in await store.webhooks.producer_workspaces():
        started = time.time()
        hooks = await store.webhooks.enabled(workspace_id)
        since = (watermark if watermark is not None else oldest) - lag_s
        after: tuple[float, str, int] | None = None
        while hooks:
            rows = await store.webhooks.scan_events(workspace_id, since, _SOURCE_TYPES, page, after)
            new = []
            for r in rows:
                for event, payload in notifications_for(r):
                    key = f"{r['run_id']}:{r['seq']}:{event}"
                    for hook in hooks:
                        if event in hook["events"] and r["created_at"] >= hook["active_since"]:
                            new.append(
                                _delivery_row(
                                    hook, event=event, dedupe_key=key, run_id=r["run_id"], payload=payload, now=started
                                )
                            )
            if new:
                seen = await store.webhooks.existing_keys(
                    {d["webhook_id"] for d in new}, {d["dedupe_key"] for d in new}
                )
                fresh = [d for d in new if (d["webhook_id"], d["dedupe_key"]) not in seen]
                if fresh:
                    added += await store.webhooks.enqueue(fresh)
            if len(rows) < page:
                break
            last = rows[-1]
            after = (last["created_at"], last["run_id"], last["seq"])
        await store.webhooks.advance_cursor(workspace_id, started - lag_s, now=started)
    return added


# ----------------------------------------------------------------------------------- delivering


def _scrub(text: str, secrets_: list[str]) -> str:
    for s in secrets_:
        if s:
            text = text.replace(s, "[REDACTED]")
    return redact(" ".join(text.split()))[:500]


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


_URL_SECRETS = re.compile(r"(/bot)[^/\s]+(/)|(/services/)[^\s\"']+")


class _ScrubTargetSecrets(logging.Filter):
    """Keep Telegram bot tokens and Slack webhook paths out of httpx's request log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _URL_SECRETS.sub(lambda m: f"{m[1] or m[3]}[REDACTED]{m[2] or ''}", str(a))
                if isinstance(a, str | httpx.URL)
                else a
                for a in record.args
            )
        return True


_SCRUB = _ScrubTargetSecrets()
logging.getLogger("httpx").addFilter(_SCRUB)


class Dispatcher:
    """Produces notifications from run events and delivers them; run one per ``maestro serve`` / ``worker``.

    Any number may run against one database: enqueueing is deduplicated and claims are guarded.
    """

    def __init__(
        self,
        store: Store,
        config: DispatcherConfig | None = None,
        *,
        owner: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.config = config or DispatcherConfig.from_env()
        self.owner = owner or f"webhooks:{new_worker_id()}"
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._stop = asyncio.Event()
        self.sent_total = 0

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current pass."""
        self._stop.set()

    async def run(self) -> None:
        """Produce and deliver until :meth:`stop`; errors are logged and the loop goes on."""
        log.info("webhook dispatcher %s: targets allowed: %s", self.owner, self.config.targets.describe())
        try:
            while not self._stop.is_set():
                try:
                    await self._pass()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("webhook dispatcher pass failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.config.poll_interval_s)
        finally:
            await self._close_client()

    async def run_once(self) -> int:
        """One produce + deliver pass (for the CLI and tests); the number of attempts made."""
        try:
            return await self._pass()
        finally:
            await self._close_client()

    def _client(self) -> httpx.AsyncClient:
        """The HTTP client, made at the first delivery.

        Its TLS set-up costs about a tenth of a second of CPU, which a worker whose workspaces have no
        webhooks should not pay when it starts.
        """
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.config.timeout_s, transport=self._transport)
        return self._http

    async def _close_client(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    async def _pass(self) -> int:
        await produce(self.store, lag_s=self.config.lag_s)
        total = 0
        while await self.store.webhooks.has_due():
            claimed = await self.store.webhooks.claim(
                owner=self.owner, limit=self.config.batch, claim_ttl=self.config.claim_ttl_s
            )
            if not claimed:
                return total
            http = self._client()
            await asyncio.gather(*(self._deliver(http, d) for d in claimed))
            total += len(claimed)
            if len(claimed) < self.config.batch:
                break
        return total

    async def _deliver(self, http: httpx.AsyncClient, delivery: dict[str, Any]) -> None:
        now = time.time()
        status_code: int | None = None
        retry_after: float | None = None
        hook = await self.store.webhooks.load(delivery["webhook_id"])
        secrets_: list[str] = []
        try:
            if hook is None:
                raise _Final("the webhook was deleted")
            target = self._target(hook)
            secrets_ = [s for s in (target.secret, target.url) if s]
            links: dict[str, Any] | None = None
            data = delivery["payload"].get("data") or {}
            base = (self.config.public_url or hook["link_base_url"] or DEFAULT_PUBLIC_URL).rstrip("/")
            if delivery["event"] == "human.requested" and delivery["run_id"]:
                links = dashboard_links(base, delivery["run_id"])
            if delivery["event"] == "approval.requested" and data.get("approval_id"):
                links = approval_links(
                    base,
                    data["approval_id"],
                    hook["workspace_id"],
                    channel=hook["webhook_id"],
                    ttl_s=hook["link_ttl_s"],
                )
            req = render(target, delivery, links, now)
            try:
                pinned = await self.config.targets.resolve(req.url)
            except TargetRefusedError as exc:
                raise _Final(f"refused: {exc}") from None
            url, host, extensions = pinned.request_args()
            request = http.build_request(
                "POST", url, content=req.body, headers={**req.headers, **host}, extensions=extensions
            )
            response = await http.send(request)
            status_code = response.status_code
            if 200 <= status_code < 300:
                outcome, error = "delivered", None
            else:
                retry_after = _retry_after(response) if status_code == 429 else None
                outcome = "retry" if RetryPolicy.retryable(status_code) else "failed"
                error = _scrub(f"HTTP {status_code}: {response.text[:300]}", secrets_)
        except _Final as exc:
            outcome, error = "failed", _scrub(str(exc), secrets_)
        except DecryptionError as exc:
            outcome, error = "failed", str(exc)
        except httpx.HTTPError as exc:
            outcome, error = "retry", _scrub(f"{type(exc).__name__}: {exc}", secrets_)
        except TargetLookupError as exc:
            outcome, error = "retry", _scrub(str(exc), secrets_)
        if outcome == "retry" and delivery["attempts"] >= self.config.retry.max_attempts:
            outcome = "failed"
            error = f"{error} (gave up after {delivery['attempts']} attempts)"
        next_at = None
        if outcome == "retry":
            next_at = time.time() + self.config.retry.delay(delivery["attempts"], retry_after)
        status = {"retry": "pending"}.get(outcome, outcome)
        ok = await self._finish(delivery["delivery_id"], status, status_code, error, next_at)
        if ok and status == "delivered":
            self.sent_total += 1
        if status != "delivered":
            level = logging.WARNING if (error or "").startswith("refused:") else logging.INFO
            log.log(level, "webhook delivery %s: %s (%s)", delivery["delivery_id"], status, error)

    async def _finish(
        self, delivery_id: str, status: str, status_code: int | None, error: str | None, next_at: float | None
    ) -> bool:
        return await self.store.webhooks.finish(
            delivery_id, owner=self.owner, status=status, status_code=status_code, error=error, next_attempt_at=next_at
        )

    @staticmethod
    def _target(hook: Mapping[str, Any]) -> Target:
        ring = keyring()
        secret = ring.decrypt(hook["secret_enc"]) if hook["secret_enc"] else None
        url = ring.decrypt(hook["url_enc"]) if hook["url_enc"] else None
        cfg = hook["config"] or {}
        return Target(
            format=hook["format"],
            url=url,
            secret=secret,
            chat_id=cfg.get("chat_id"),
            api_base=cfg.get("api_base") or DEFAULT_TELEGRAM_API,
        )


class _Final(Exception):
    """A delivery that cannot succeed by retrying."""
