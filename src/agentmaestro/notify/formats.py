"""How a notification becomes an HTTP request: generic signed JSON, a Slack incoming webhook, a Telegram message.

Everything here is pure: a :class:`Outgoing` request is built from the notification (the stored payload,
which holds no secrets), the decrypted target (URL, signing secret, bot token) and the approval links.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from agentmaestro._version import __version__
from agentmaestro.notify.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign_body

__all__ = ["Outgoing", "Target", "buttons", "render", "summary"]

USER_AGENT = f"AgentMaestro-Webhooks/{__version__}"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_HUMAN_KINDS = {
    "step_failed": "has a step that keeps failing",
    "uncertain_tool_call": "has a tool call whose outcome is unknown",
    "task_rejected": "has a task that failed its review",
}
"""How the summary names the kinds of human request (others: "asks a person")."""


def buttons(event: str, links: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The (label, URL) buttons a chat message gets for a notification's links."""
    if not links:
        return []
    if event == "approval.requested":
        return [("Approve", str(links["approve"])), ("Reject", str(links["reject"]))]
    if event == "human.requested":
        return [("Answer in the dashboard", str(links["dashboard"])), ("Open the run", str(links["run"]))]
    return []


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where and how to send: the webhook's format with its decrypted URL and secret."""

    format: str
    """``json``, ``slack`` or ``telegram``."""
    url: str | None = None
    """The endpoint (``json`` and ``slack``)."""
    secret: str | None = None
    """The signing secret (``json``) or the bot token (``telegram``)."""
    chat_id: str | None = None
    """Telegram chat."""
    api_base: str = "https://api.telegram.org"
    """Telegram Bot API base URL."""


@dataclass(frozen=True, kw_only=True)
class Outgoing:
    """One HTTP request to make."""

    url: str
    """Where to POST."""
    body: bytes
    """The exact bytes (signed for ``json``)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Request headers."""


def envelope(delivery: dict[str, Any], links: dict[str, Any] | None) -> dict[str, Any]:
    """The generic JSON document of a delivery: ids, event, run and data, and approval links if any."""
    doc = {
        "id": delivery["delivery_id"],
        "event": delivery["event"],
        "webhook_id": delivery["webhook_id"],
        "workspace_id": delivery["workspace_id"],
        **delivery["payload"],
    }
    if links:
        doc["links"] = links
    return doc


def summary(event: str, payload: dict[str, Any]) -> str:
    """A one-line, human description of a notification (plain text)."""
    run = payload.get("run") or {}
    data = payload.get("data") or {}
    who = f"run {run.get('run_id')} (agent {run.get('agent')})"
    if event == "approval.requested":
        reasons = "; ".join(str(r) for r in data.get("reasons") or [])
        text = f"Approval needed: {who} wants to call {data.get('tool')} ({data.get('risk')})"
        return text + (f". {reasons}" if reasons else "")
    if event == "human.requested":
        what = _HUMAN_KINDS.get(str(data.get("kind")), "asks a person")
        options = ", ".join(str(o) for o in data.get("options") or [])
        text = f"A person is needed: {who} {what}: {data.get('question')}"
        return text + (f" (answers: {options})" if options else "")
    if event == "run.completed":
        out = data.get("output")
        return f"Completed: {who}" + (f": {out}" if out else "")
    if event == "run.failed":
        return f"Failed: {who}: {data.get('error')}"
    if event == "budget.reached":
        return f"Budget reached: {who}: {data.get('reason')}"
    return str(data.get("message") or f"{event} from AgentMaestro")


def _json(target: Target, delivery: dict[str, Any], links: dict[str, Any] | None, now: float) -> Outgoing:
    assert target.url is not None and target.secret is not None
    body = json.dumps(envelope(delivery, links), separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: delivery["event"],
        DELIVERY_HEADER: delivery["delivery_id"],
        SIGNATURE_HEADER: sign_body(target.secret, body, int(now)),
    }
    return Outgoing(url=target.url, body=body, headers=headers)


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack(target: Target, delivery: dict[str, Any], links: dict[str, Any] | None) -> Outgoing:
    assert target.url is not None
    text = summary(delivery["event"], delivery["payload"])
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(text)[:2900]}},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": _slack_escape(f"{delivery['event']} · {delivery['delivery_id']}")}],
        },
    ]
    styles = {"Approve": "primary", "Reject": "danger", "Answer in the dashboard": "primary"}
    actions = buttons(delivery["event"], links)
    if actions:
        elements = []
        for label, url in actions:
            element = {"type": "button", "text": {"type": "plain_text", "text": label}, "url": url}
            if label in styles:
                element["style"] = styles[label]
            elements.append(element)
        blocks.append({"type": "actions", "elements": elements})
    body = json.dumps({"text": text[:3000], "blocks": blocks}).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    return Outgoing(url=target.url, body=body, headers=headers)


def _telegram(target: Target, delivery: dict[str, Any], links: dict[str, Any] | None) -> Outgoing:
    assert target.secret is not None and target.chat_id is not None
    text = html.escape(summary(delivery["event"], delivery["payload"]), quote=False)[:3900]
    message: dict[str, Any] = {
        "chat_id": target.chat_id,
        "text": text,
        "parse_mode": "HTML",
        "disable_web_page_preview": True,
    }
    actions = buttons(delivery["event"], links)
    if actions and any(urlsplit(url).hostname in _LOOPBACK for _label, url in actions):
        # Telegram refuses buttons that point at a loopback address: send the links as text instead
        e = html.escape
        shown = " · ".join(f'<a href="{e(url)}">{e(label)}</a>' for label, url in actions)
        message["text"] = f"{text}\n\n{shown}"
    elif actions:
        message["reply_markup"] = {"inline_keyboard": [[{"text": label, "url": url} for label, url in actions]]}
    url = f"{target.api_base.rstrip('/')}/bot{target.secret}/sendMessage"
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    return Outgoing(url=url, body=json.dumps(message).encode(), headers=headers)


def render(target: Target, delivery: dict[str, Any], links: dict[str, Any] | None, now: float) -> Outgoing:
    """The request that delivers ``delivery`` to ``target``.

    ``links``: the approve/reject links of an approval, or the dashboard links of a human request.
    """
    if target.format == "json":
        return _json(target, delivery, links, now)
    if target.format == "slack":
        return _slack(target, delivery, links)
    if target.format == "telegram":
        return _telegram(target, delivery, links)
    raise ValueError(f"unknown webhook format {target.format!r}")
