"""``maestro webhooks add|list|rm|test|deliveries|redeliver``: outgoing notifications (docs/notifications.md).

Locally the commands work on the database (and ``test`` sends at once from this process); with
``--server`` they go through the REST API (an admin key to change, a viewer key to read) and the
server's dispatcher sends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from agentmaestro.cli._common import _Ctx, _ctx, _print_json, app, out, when
from agentmaestro.errors import ConfigError

T = TypeVar("T")

webhooks_app = typer.Typer(
    help="Outgoing webhooks: notifications to JSON endpoints, Slack and Telegram.", no_args_is_help=True
)
app.add_typer(webhooks_app, name="webhooks")

EVENTS = ("approval.requested", "human.requested", "run.failed", "run.completed", "budget.reached")


def _call(c: _Ctx, local: Callable[[Any], Awaitable[T]], remote: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``local(store)`` on the database, or ``remote(client)`` with ``--server``."""

    async def go() -> T:
        if c.server:
            from agentmaestro.client import AsyncClient
            from agentmaestro.service.plane.remote import tls_context

            if not c.server.startswith(("http://", "https://")):
                raise ConfigError(f"--server must be an http:// or https:// URL, not {c.server!r}")
            async with AsyncClient(c.server, c.api_key, verify=tls_context(*c.tls)) as client:
                return await remote(client)
        store = await asyncio.to_thread(c.open_store)
        try:
            return await local(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _print_delivery(d: dict[str, Any]) -> None:
    code = d["last_status_code"]
    line = f"{d['delivery_id']} {d['event']} {d['status']} attempts={d['attempts']}"
    if code is not None:
        line += f" http={code}"
    if d["last_error"]:
        line += f" error={d['last_error']}"
    out.print(line, markup=False)


@webhooks_app.command("add")
def webhooks_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the webhook is for.")],
    url: Annotated[str | None, typer.Option("--url", help="Endpoint (json and slack formats).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="json (signed), slack (incoming webhook) or telegram.")] = "json",
    events: Annotated[
        list[str] | None,
        typer.Option("--event", help=f"Notify on this (repeatable; default all): {', '.join(EVENTS)}."),
    ] = None,
    bot_token: Annotated[
        str | None,
        typer.Option("--bot-token", envvar="MAESTRO_TELEGRAM_BOT_TOKEN", help="Telegram bot token (stored encrypted)."),
    ] = None,
    chat_id: Annotated[str | None, typer.Option("--chat-id", help="Telegram chat id.")] = None,
    api_base: Annotated[str | None, typer.Option("--api-base", help="Telegram Bot API base URL.")] = None,
    link_ttl: Annotated[
        float, typer.Option("--link-ttl", min=60, help="Seconds approve/reject links stay valid.")
    ] = 86400.0,
    public_url: Annotated[
        str | None,
        typer.Option("--public-url", help="Locally: base of approval links (else MAESTRO_PUBLIC_URL at send time)."),
    ] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it switched off.")] = False,
) -> None:
    """Add a webhook. A json webhook's signing secret is printed once: keep it to verify signatures."""
    c = _ctx(ctx)
    if fmt not in ("json", "slack", "telegram"):
        raise ConfigError(f"--format must be json, slack or telegram, not {fmt!r}")
    chosen = tuple(events or EVENTS)
    telegram = {"bot_token": bot_token, "chat_id": chat_id, "api_base": api_base} if fmt == "telegram" else None

    async def local(store: Any) -> dict[str, Any]:
        from agentmaestro.notify import webhooks as wh
        from agentmaestro.service import webhooks

        spec = wh.WebhookSpec(
            name=name,
            format=fmt,  # type: ignore[arg-type]
            events=chosen,
            url=url,
            bot_token=bot_token,
            chat_id=chat_id,
            api_base=api_base,
            enabled=not disabled,
            link_ttl_s=link_ttl,
        )
        cmd = webhooks.CreateWebhook(spec=spec, link_base_url=public_url)
        row, secret = await webhooks.create_webhook(store, cmd, c.actor())
        return {**row, "signing_secret": secret}

    async def remote(client: Any) -> dict[str, Any]:
        if public_url:
            raise ConfigError("--public-url is for local use; a server uses MAESTRO_PUBLIC_URL or its own URL")
        if telegram is not None and not (bot_token and chat_id):
            raise ConfigError("a telegram webhook needs --bot-token and --chat-id")
        row: dict[str, Any] = await client.create_webhook(
            name,
            events=chosen,
            format=fmt,
            url=url,
            telegram={k: v for k, v in (telegram or {}).items() if v} or None,
            enabled=not disabled,
            link_ttl_s=link_ttl,
        )
        return row

    row = _call(c, local, remote)
    if c.as_json:
        _print_json(row)
        return
    out.print(f"{row['webhook_id']} {row['name']} ({row['format']}) -> {row['url_display']}", markup=False)
    out.print(f"events: {', '.join(row['events'])}{'' if row['enabled'] else ' (disabled)'}", markup=False)
    if row.get("signing_secret"):
        out.print(f"signing secret (shown once): {row['signing_secret']}", markup=False)


@webhooks_app.command("list")
def webhooks_list(ctx: typer.Context) -> None:
    """The workspace's webhooks (never their secrets)."""
    c = _ctx(ctx)
    rows = _call(c, lambda s: s.webhooks.all(c.workspace), lambda cl: cl.list_webhooks())
    if c.as_json:
        _print_json(rows)
        return
    table = Table("id", "name", "format", "target", "events", "enabled")
    for r in rows:
        table.add_row(
            r["webhook_id"], r["name"], r["format"], r["url_display"], ", ".join(r["events"]), str(r["enabled"]).lower()
        )
    out.print(table)


@webhooks_app.command("rm")
def webhooks_rm(ctx: typer.Context, webhook_id: Annotated[str, typer.Argument(help="The webhook.")]) -> None:
    """Delete a webhook and its delivery log."""
    c = _ctx(ctx)

    async def local(store: Any) -> dict[str, Any]:

        from agentmaestro.service import webhooks

        return await webhooks.delete_webhook(store, webhooks.DeleteWebhook(webhook_id=webhook_id), c.actor())

    row = _call(c, local, lambda cl: cl.delete_webhook(webhook_id))
    if c.as_json:
        _print_json(row)
    else:
        out.print(f"deleted {row['webhook_id']} ({row['name']})", markup=False)


@webhooks_app.command("test")
def webhooks_test(
    ctx: typer.Context,
    webhook_id: Annotated[str, typer.Argument(help="The webhook.")],
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Seconds to wait for the outcome.")] = 30.0,
) -> None:
    """Send a test notification and print how it went (exit 1 unless it was delivered)."""
    c = _ctx(ctx)

    async def local(store: Any) -> dict[str, Any]:
        from agentmaestro.notify import webhooks as wh
        from agentmaestro.service import webhooks

        queued = await webhooks.test_webhook(store, webhooks.TestWebhook(webhook_id=webhook_id), c.actor())
        dispatcher = wh.Dispatcher(store)
        deadline = time.monotonic() + timeout
        while True:
            await dispatcher.run_once()
            row: dict[str, Any] = await store.webhooks.delivery(c.workspace, webhook_id, queued["delivery_id"])
            if row["status"] in ("delivered", "failed") or time.monotonic() >= deadline:
                return row
            await asyncio.sleep(min(0.5, max(0.0, row["next_attempt_at"] - time.time())))

    async def remote(client: Any) -> dict[str, Any]:
        queued = await client.test_webhook(webhook_id)
        deadline = time.monotonic() + timeout
        while True:
            row: dict[str, Any] = await client.get_webhook_delivery(webhook_id, queued["delivery_id"])
            if row["status"] in ("delivered", "failed") or time.monotonic() >= deadline:
                return row
            await asyncio.sleep(0.2)

    row = _call(c, local, remote)
    if c.as_json:
        _print_json(row)
    else:
        _print_delivery(row)
    if row["status"] != "delivered":
        raise typer.Exit(1)


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    ctx: typer.Context,
    webhook_id: Annotated[str, typer.Argument(help="The webhook.")],
    status: Annotated[
        list[str] | None, typer.Option("--status", help="Only pending, sending, delivered or failed (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="How many, newest first.")] = 50,
) -> None:
    """A webhook's delivery log: status, attempts, last response code or error."""
    c = _ctx(ctx)
    bad = [s for s in status or [] if s not in ("pending", "sending", "delivered", "failed")]
    if bad:
        raise ConfigError(f"--status must be pending, sending, delivered or failed, not {bad[0]!r}")
    rows = _call(
        c,
        lambda s: s.webhooks.deliveries(c.workspace, webhook_id, status, limit),
        lambda cl: cl.list_webhook_deliveries(webhook_id, status=status, limit=limit),
    )
    if c.as_json:
        _print_json(rows)
        return
    table = Table("id", "event", "run", "status", "attempts", "http", "error", "created")
    for r in rows:
        table.add_row(
            r["delivery_id"],
            r["event"],
            r["run_id"] or "",
            r["status"],
            str(r["attempts"]),
            "" if r["last_status_code"] is None else str(r["last_status_code"]),
            r["last_error"] or "",
            when(r["created_at"]),
        )
    out.print(table)


@webhooks_app.command("redeliver")
def webhooks_redeliver(
    ctx: typer.Context,
    webhook_id: Annotated[str, typer.Argument(help="The webhook.")],
    delivery_id: Annotated[str, typer.Argument(help="A delivered or failed delivery.")],
) -> None:
    """Queue a delivery again, with the same id (the dispatcher of `serve` or `worker` sends it)."""
    c = _ctx(ctx)

    async def local(store: Any) -> dict[str, Any]:
        from agentmaestro.service import webhooks

        cmd = webhooks.Redeliver(webhook_id=webhook_id, delivery_id=delivery_id)
        return await webhooks.redeliver(store, cmd, c.actor())

    row = _call(c, local, lambda cl: cl.redeliver_webhook_delivery(webhook_id, delivery_id))
    if c.as_json:
        _print_json(row)
    else:
        _print_delivery(row)
