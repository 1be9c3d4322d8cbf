"""Integration tools: Slack, Notion and a generic REST tool, each bound to a named credential of the workspace.

The credential is fetched at execution time through ``ctx.credentials`` and sent as a header; it is never an
argument, never in the tool's schema and never in what the model reads back (outputs are redacted).

========================  ====================================================  ==========
tool                      risk                                                  idempotent
========================  ====================================================  ==========
``slack_post_message``    ELEVATED                                              no
``notion_create_page``    ELEVATED                                              no
``rest_call``             GET/HEAD SAFE, POST/PUT/PATCH ELEVATED, DELETE DANGEROUS  no
========================  ====================================================  ==========

Bindings (which credential, which base URL) come from the agent's tool reference, e.g. in agent YAML::

    tools:
      - builtin:slack_post_message                         # credential "slack", https://slack.com/api
      - builtin:slack_post_message?credential=ops-bot
      - builtin:notion_create_page?credential=notion
      - builtin:rest_call?name=github&credential=github&base_url=https://api.github.com&scheme=token

or in Python with :func:`slack_post_message_tool`, :func:`notion_create_page_tool` and :func:`rest_call_tool`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, unquote

import httpx

from agentmaestro.core.risk import RiskLevel
from agentmaestro.credentials.runtime import authorization_header
from agentmaestro.errors import ConfigError, ToolError
from agentmaestro.tools.context import ToolContext
from agentmaestro.tools.registry import Tool

__all__ = [
    "INTEGRATION_TOOLS",
    "NOTION_API",
    "SLACK_API",
    "integration_tool",
    "notion_create_page",
    "notion_create_page_tool",
    "rest_call_tool",
    "slack_post_message",
    "slack_post_message_tool",
]

SLACK_API = "https://slack.com/api"
NOTION_API = "https://api.notion.com"
NOTION_VERSION = "2022-06-28"
TIMEOUT_S = 30.0
OUTPUT_CHARS = 20_000
_HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
USER_AGENT = "AgentMaestro-integrations/0.1"


def _base_url(value: str, what: str) -> str:
    url = httpx.URL(value)
    if url.scheme not in ("http", "https") or not url.host or url.query or url.fragment or url.userinfo:
        raise ConfigError(f"{what}: base_url must be an http(s) URL without query, fragment or user, got {value!r}")
    return str(url).rstrip("/")


async def _auth(
    ctx: ToolContext, credential: str, header: str = "Authorization", scheme: str | None = None
) -> dict[str, str]:
    if ctx.credentials is None:
        raise ToolError("credentials are not available to this run")
    cred = await ctx.credentials.get(credential)
    return {header: authorization_header(cred, scheme=scheme)}


async def _send(method: str, url: str, headers: dict[str, str], **kw: Any) -> httpx.Response:
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False) as client:
            return await client.request(method, url, headers={"User-Agent": USER_AGENT, **headers}, **kw)
    except httpx.HTTPError as exc:
        raise ToolError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------------------ Slack


def slack_post_message_tool(
    *, credential: str = "slack", base_url: str = SLACK_API, name: str = "slack_post_message"
) -> Tool:
    """A ``slack_post_message`` tool posting with the bot token in credential ``credential`` (Slack Web API)."""
    base = _base_url(base_url, name)

    async def slack_post_message(channel: str, text: str, ctx: ToolContext, thread_ts: str | None = None) -> str:
        """Post a message to a Slack channel as the workspace's Slack bot.

        Args:
            channel: Channel id (C0123...) or name (#general).
            text: Message text (Slack mrkdwn).
            ctx: Call context (injected).
            thread_ts: Reply in this thread (the parent message's ts).
        """
        payload: dict[str, Any] = {"channel": channel, "text": text}
        if thread_ts:
            payload["thread_ts"] = thread_ts
        headers = await _auth(ctx, credential)
        headers["Content-Type"] = "application/json; charset=utf-8"
        r = await _send("POST", f"{base}/chat.postMessage", headers, content=json.dumps(payload))
        body = _json(r)
        if r.status_code == 429:
            raise ToolError(f"Slack rate limit; retry after {r.headers.get('retry-after', '?')}s")
        if r.status_code >= 400 or not isinstance(body, dict):
            raise ToolError(f"Slack answered HTTP {r.status_code}: {r.text[:500]}")
        if not body.get("ok"):
            raise ToolError(f"Slack refused chat.postMessage: {body.get('error', 'unknown error')}")
        return json.dumps({"ok": True, "channel": body.get("channel"), "ts": body.get("ts")})

    return Tool(
        slack_post_message,
        name=name,
        risk=RiskLevel.ELEVATED,
        idempotent=False,
        timeout_s=TIMEOUT_S + 5,
        redact_output=True,
    )


# ----------------------------------------------------------------------------------------------------- Notion


def _paragraphs(content: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for para in (p.strip() for p in re.split(r"\n\s*\n", content)):
        for i in range(0, len(para), 2000):  # Notion caps one rich text object at 2,000 characters
            chunk = para[i : i + 2000]
            blocks.append(
                {
                    "object": "block",
                    "type": "paragraph",
                    "paragraph": {"rich_text": [{"type": "text", "text": {"content": chunk}}]},
                }
            )
    return blocks[:100]  # and one request at 100 blocks


def notion_create_page_tool(
    *, credential: str = "notion", base_url: str = NOTION_API, name: str = "notion_create_page"
) -> Tool:
    """A ``notion_create_page`` tool using the integration token in credential ``credential`` (Notion API v1)."""
    base = _base_url(base_url, name)

    async def notion_create_page(
        parent_id: str,
        title: str,
        ctx: ToolContext,
        content: str = "",
        parent_type: Literal["page", "database"] = "page",
    ) -> str:
        """Create a Notion page under a page or in a database, with a title and paragraphs of text.

        Args:
            parent_id: Id of the parent page or database (shared with the integration).
            title: Page title.
            ctx: Call context (injected).
            content: Body text; blank lines separate paragraphs.
            parent_type: Whether parent_id is a page or a database.
        """
        parent = {"page_id": parent_id} if parent_type == "page" else {"database_id": parent_id}
        payload = {
            "parent": parent,
            "properties": {"title": {"title": [{"type": "text", "text": {"content": title[:2000]}}]}},
            "children": _paragraphs(content) if content.strip() else [],
        }
        headers = await _auth(ctx, credential)
        headers.update({"Notion-Version": NOTION_VERSION, "Content-Type": "application/json"})
        r = await _send("POST", f"{base}/v1/pages", headers, content=json.dumps(payload))
        body = _json(r)
        if r.status_code >= 400 or not isinstance(body, dict):
            message = body.get("message") if isinstance(body, dict) else r.text[:500]
            raise ToolError(f"Notion answered HTTP {r.status_code}: {message}")
        return json.dumps({"id": body.get("id"), "url": body.get("url")})

    return Tool(
        notion_create_page,
        name=name,
        risk=RiskLevel.ELEVATED,
        idempotent=False,
        timeout_s=TIMEOUT_S + 5,
        redact_output=True,
    )


# ------------------------------------------------------------------------------------------------------- REST

_METHOD_RISK: Final[dict[str, RiskLevel]] = {
    "GET": RiskLevel.SAFE,
    "HEAD": RiskLevel.SAFE,
    "POST": RiskLevel.ELEVATED,
    "PUT": RiskLevel.ELEVATED,
    "PATCH": RiskLevel.ELEVATED,
    "DELETE": RiskLevel.DANGEROUS,
}


def confined_url(base_url: str, path: str) -> str:
    """``base_url`` + ``path``, refusing anything that could leave the base URL (absolute URLs, ``..``, ``//``)."""
    if len(path) > 2000:
        raise ToolError("path is longer than 2,000 characters")
    if any(ord(c) < 0x21 or c in "\\?#" for c in path) or "://" in path or path.startswith("//"):
        raise ToolError(
            f"path {path[:200]!r} must be a plain path relative to the base URL (put query parameters in 'query')"
        )
    segments = unquote(path).split("/")
    if any(s in ("..", ".") for s in segments) or "//" in path.strip("/"):
        raise ToolError(f"path {path[:200]!r} may not contain '.', '..' or empty segments")
    url = f"{base_url}/{path.lstrip('/')}" if path.strip("/") else base_url
    base, full = httpx.URL(base_url), httpx.URL(url)
    if (full.scheme, full.host, full.port) != (base.scheme, base.host, base.port) or not full.path.startswith(
        base.path
    ):
        raise ToolError(f"path {path[:200]!r} leaves {base_url}")
    return url


def rest_call_tool(
    *,
    credential: str,
    base_url: str,
    name: str = "rest_call",
    header: str = "Authorization",
    scheme: str | None = None,
    description: str | None = None,
) -> Tool:
    """A REST tool bound to one base URL and one credential, sent in ``header`` (``scheme`` prefix; "" for none).

    GET and HEAD are SAFE, POST, PUT and PATCH ELEVATED, DELETE DANGEROUS (see the approval gate).
    """
    base = _base_url(base_url, name)
    if not _HEADER_RE.match(header):
        raise ConfigError(f"{name}: invalid header name {header!r}")

    async def rest_call(
        method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
        endpoint: str,
        ctx: ToolContext,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | list[Any] | None = None,
    ) -> str:
        """Call the bound REST API: method, endpoint path relative to its base URL, optional query and JSON body.

        Args:
            method: HTTP method.
            endpoint: Path below the API's base URL, e.g. "repos/octo/hello/issues".
            ctx: Call context (injected).
            query: Query parameters.
            body: JSON body (POST, PUT, PATCH).
        """
        url = confined_url(base, endpoint)
        headers = await _auth(ctx, credential, header, scheme)
        headers["Accept"] = "application/json, */*;q=0.5"
        kw: dict[str, Any] = {"params": query or None}
        if body is not None:
            kw["json"] = body
        r = await _send(method, url, headers, **kw)
        text = "" if method == "HEAD" else r.text
        if r.status_code >= 400:
            raise ToolError(f"HTTP {r.status_code} from {method} {url}: {text[:2000]}")
        ctype = r.headers.get("content-type", "")
        return f"HTTP {r.status_code}\ncontent-type: {ctype}\n\n{text}"

    def risk_rules(arguments: Mapping[str, Any], _ctx: ToolContext | None) -> tuple[RiskLevel, list[str]]:
        method = str(arguments.get("method", "")).upper()
        level = _METHOD_RISK.get(method, RiskLevel.DANGEROUS)
        return level, [] if level is RiskLevel.SAFE else [f"{method or '?'} on {base}"]

    return Tool(
        rest_call,
        name=name,
        description=description or f"Call the REST API at {base} (authenticated for you).",
        risk=RiskLevel.SAFE,
        idempotent=False,
        timeout_s=TIMEOUT_S + 5,
        max_output_chars=OUTPUT_CHARS,
        risk_rules=risk_rules,
        redact_output=True,
    )


# ------------------------------------------------------------------------------------------------ registration

slack_post_message = slack_post_message_tool()
"""``slack_post_message`` with credential ``slack`` and the public Slack Web API."""
notion_create_page = notion_create_page_tool()
"""``notion_create_page`` with credential ``notion`` and the public Notion API."""

INTEGRATION_TOOLS: Final[dict[str, Tool]] = {t.name: t for t in (slack_post_message, notion_create_page)}
"""Integration tools with their default bindings, by name (``rest_call`` always needs a binding)."""

_FACTORIES: Final[dict[str, tuple[Callable[..., Tool], frozenset[str]]]] = {
    "slack_post_message": (slack_post_message_tool, frozenset({"credential", "base_url", "name"})),
    "notion_create_page": (notion_create_page_tool, frozenset({"credential", "base_url", "name"})),
    "rest_call": (
        rest_call_tool,
        frozenset({"credential", "base_url", "name", "header", "scheme", "description"}),
    ),
}


def integration_tool(ref: str) -> Tool | None:
    """The tool for a reference like ``rest_call?credential=gh&base_url=https://api.github.com``; None if unknown.

    Raises:
        ConfigError: A known tool with unknown or missing binding parameters.
    """
    tool_name, _, query = ref.partition("?")
    if tool_name not in _FACTORIES:
        return None
    factory, allowed = _FACTORIES[tool_name]
    try:
        params = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=True)) if query else {}
    except ValueError:
        raise ConfigError(f"tool reference {ref!r}: malformed parameters (use key=value&key=value)") from None
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"tool reference {ref!r}: unknown parameter(s) {unknown}; known: {sorted(allowed)}")
    if tool_name == "rest_call" and not {"credential", "base_url"} <= set(params):
        raise ConfigError(
            f"tool reference {ref!r}: rest_call needs a binding, e.g. "
            "builtin:rest_call?name=github&credential=github&base_url=https://api.github.com"
        )
    if not query:
        return INTEGRATION_TOOLS[tool_name]
    if "name" not in params and tool_name == "rest_call":
        params["name"] = "rest_call"
    return factory(**params)
