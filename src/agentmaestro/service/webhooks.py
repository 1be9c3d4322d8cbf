"""Webhooks: create, change, delete, test, redeliver; each change audited in its transaction.

Validation, target checks and delivery live in :mod:`agentmaestro.notify.webhooks`; these are the
use cases the doors (the API, ``maestro webhooks``) call, for an admin :class:`~agentmaestro.actor.Actor`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentmaestro.actor import Actor, Role
from agentmaestro.notify import webhooks as wh
from agentmaestro.service.access import audit_note, require
from agentmaestro.store.base import Store

__all__ = [
    "ChangeWebhook",
    "CreateWebhook",
    "DeleteWebhook",
    "Redeliver",
    "TestWebhook",
    "change_webhook",
    "create_webhook",
    "delete_webhook",
    "redeliver",
    "test_webhook",
]


@dataclass(frozen=True, kw_only=True)
class CreateWebhook:
    """A new webhook of the actor's workspace."""

    spec: wh.WebhookSpec
    """What to post where."""
    link_base_url: str | None = None
    """The public URL approval links point at (none: no links)."""
    targets: wh.TargetPolicy | None = None
    """Where webhooks may post (default: from the environment)."""


@dataclass(frozen=True, kw_only=True)
class ChangeWebhook:
    """Change a webhook's name, target, events, link lifetime, or enable/disable it."""

    webhook_id: str
    """The webhook."""
    changes: Mapping[str, Any]
    """The fields to change (see :func:`agentmaestro.notify.webhooks.update_webhook`)."""
    targets: wh.TargetPolicy | None = None
    """Where webhooks may post (default: from the environment)."""


@dataclass(frozen=True, kw_only=True)
class DeleteWebhook:
    """Delete a webhook and its delivery log."""

    webhook_id: str
    """The webhook."""


@dataclass(frozen=True, kw_only=True)
class TestWebhook:
    """Queue a ``webhook.test`` delivery."""

    webhook_id: str
    """The webhook."""


@dataclass(frozen=True, kw_only=True)
class Redeliver:
    """Queue a delivered or failed delivery again, with the same id."""

    webhook_id: str
    """The webhook."""
    delivery_id: str
    """The delivery."""


async def create_webhook(store: Store, cmd: CreateWebhook, actor: Actor) -> tuple[dict[str, Any], str | None]:
    """Create it, recorded as ``webhook.create``; its row and, for ``json``, the signing secret (shown only now)."""
    require(actor, Role.admin, "create_webhook")
    return await wh.create_webhook(
        store, actor.workspace_id, cmd.spec, actor=actor.name, link_base_url=cmd.link_base_url, targets=cmd.targets
    )


async def change_webhook(store: Store, cmd: ChangeWebhook, actor: Actor) -> dict[str, Any]:
    """Change it, recorded as ``webhook.update``; its row."""
    require(actor, Role.admin, "change_webhook")
    return await wh.update_webhook(
        store, actor.workspace_id, cmd.webhook_id, cmd.changes, actor=actor.name, targets=cmd.targets
    )


async def delete_webhook(store: Store, cmd: DeleteWebhook, actor: Actor) -> dict[str, Any]:
    """Delete it, recorded as ``webhook.delete``; its last row."""
    require(actor, Role.admin, "delete_webhook")
    return await wh.delete_webhook(store, actor.workspace_id, cmd.webhook_id, actor=actor.name)


async def test_webhook(store: Store, cmd: TestWebhook, actor: Actor) -> dict[str, Any]:
    """Queue a test delivery (the dispatcher sends it); the delivery."""
    require(actor, Role.admin, "test_webhook")
    return await wh.send_test(store, actor.workspace_id, cmd.webhook_id)


async def redeliver(store: Store, cmd: Redeliver, actor: Actor) -> dict[str, Any]:
    """Queue the delivery again, recorded as ``webhook.redeliver``; the delivery (ConflictError while pending)."""
    require(actor, Role.admin, "redeliver")
    note = audit_note(actor, "webhook.redeliver", cmd.delivery_id)
    return await store.webhooks.redeliver(actor.workspace_id, cmd.webhook_id, cmd.delivery_id, audit=lambda _: note)
