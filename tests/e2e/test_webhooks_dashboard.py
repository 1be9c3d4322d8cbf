"""The Webhooks page in a real browser (playwright + Debian's chromium) against a live server, on SQLite and PostgreSQL.

An admin opens it from the navigation, is refused a private target, adds a signed JSON webhook (its secret is
shown once) and one whose target refuses connections, sees an approval notification delivered and a test
notification fail after its attempts in the delivery log, disables and deletes webhooks; a viewer sees the
same lists without any action. The receiver is on 127.0.0.1, allowed explicitly (MAESTRO_WEBHOOK_ALLOWED_HOSTS).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tests.e2e.browser import Pages, expect, go, shot
from tests.e2e.test_dashboard import (
    api,
    make_keys,
    registry,
    wait_status,
)
from tests.fakes.server import LiveServer
from tests.fakes.webhook_receiver import WebhookReceiver

FAST_ENV = {
    "MAESTRO_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",  # the receiver is on loopback: allowed explicitly
    "MAESTRO_WEBHOOK_POLL_S": "0.05",
    "MAESTRO_WEBHOOK_BACKOFF_S": "0.05",
    "MAESTRO_WEBHOOK_MAX_BACKOFF_S": "0.1",
    "MAESTRO_WEBHOOK_MAX_ATTEMPTS": "2",
}


def test_add_watch_deliveries_disable_delete(
    db_url: str, monkeypatch: pytest.MonkeyPatch, pages: Callable[[str], Pages]
) -> None:
    check = expect()
    for k, v in FAST_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MAESTRO_WEBHOOK_ALLOW_PRIVATE", raising=False)
    monkeypatch.delenv("MAESTRO_PUBLIC_URL", raising=False)
    keys = make_keys(db_url)
    with (
        WebhookReceiver() as rx,
        LiveServer(db_url, registry()) as srv,
        api(srv, keys["admin"]) as admin,
        api(srv, keys["operator"]) as operator,
    ):
        ui = pages(srv.url)
        page = ui.open(keys["admin"])
        page.locator("#nav").get_by_role("link", name="Webhooks").click()
        check(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
        check(page.locator("#nav a[data-route=webhooks]")).to_have_attribute("aria-current", "page")
        check(page.get_by_text("No webhooks yet.")).to_be_visible()

        # a private target is refused, with the server's reason
        page.get_by_label("Name").fill("ops channel")
        page.get_by_label("URL").fill("http://10.0.0.1/hook")
        page.get_by_role("button", name="Add webhook").click()
        check(page.get_by_role("alert").first).to_contain_text("refused 10.0.0.1: it is a private address")
        assert admin.get("/v1/webhooks").json() == []

        # a signed JSON webhook to the receiver, for approvals and runs waiting for a person
        page.get_by_label("URL").fill(f"{rx.url}/hook")
        for event in ("run.failed", "run.completed", "budget.reached"):
            page.locator(f'input[name="event"][value="{event}"]').uncheck()
        page.get_by_role("button", name="Add webhook").click()
        secret = page.locator("#new-signing-secret")
        check(secret).to_have_text(re.compile(r"^whsec_"))
        [hook] = admin.get("/v1/webhooks").json()
        assert hook["events"] == ["approval.requested", "human.requested"]
        assert secret.text_content() not in admin.get("/v1/webhooks").text  # shown once, never again
        row = page.locator(f'tr[data-webhook-id="{hook["webhook_id"]}"]')
        check(row).to_contain_text("ops channel")
        check(row).to_contain_text("json")
        check(row).to_contain_text(f"{rx.url}/hook")
        check(row).to_contain_text("approval.requested, human.requested")
        check(row).to_contain_text("enabled")
        page.get_by_role("button", name="I have stored it").click()
        check(secret).to_have_count(0)

        # an approval is notified: the delivery log shows it delivered
        run_id = operator.post("/v1/runs", json={"agent": "janitor", "input": "tidy"}).json()["run_id"]
        wait_status(operator, run_id, {"WAITING_FOR_APPROVAL"})
        [req] = rx.wait_for(1)
        assert req.json()["event"] == "approval.requested" and req.json()["run"]["run_id"] == run_id
        log = page.locator("tbody tr[data-delivery-id]")
        check(page.get_by_role("heading", name="Delivery log: ops channel")).to_be_visible()
        check(log.filter(has_text="approval.requested")).to_have_attribute("data-status", "delivered")
        delivered = log.filter(has_text="approval.requested")
        check(delivered).to_contain_text(run_id[:8])
        check(delivered.locator("td").nth(4)).to_have_text("1")
        check(delivered.locator("td").nth(5)).to_have_text("200")

        # a webhook whose target refuses connections: its test notification fails after 2 attempts
        page.get_by_label("Format").select_option("slack")
        page.get_by_label("Name").fill("dead end")
        page.get_by_label("URL").fill("http://127.0.0.1:9/services/T0/B0/SECRETPATH")
        page.get_by_role("button", name="Add webhook").click()
        dead = page.locator("tbody tr[data-webhook-id]").filter(has_text="dead end")
        check(dead).to_contain_text("http://127.0.0.1:9/…")  # Slack's secret path is never shown
        check(page.locator("#new-signing-secret")).to_have_count(0)  # no signing secret for Slack
        dead.get_by_role("button", name="Send test").click()
        check(page.get_by_role("heading", name="Delivery log: dead end")).to_be_visible()
        failed = log.filter(has_text="webhook.test")
        page.get_by_role("button", name="Refresh").click()
        check(failed).to_have_attribute("data-status", "failed")
        check(failed.locator("td").nth(4)).to_have_text("2")
        check(failed.locator(".delivery-error")).to_contain_text("gave up after 2 attempts")
        assert "SECRETPATH" not in page.content()
        check(failed.get_by_role("button", name="Redeliver")).to_be_visible()
        # back to the first webhook's log
        row.get_by_role("button", name="Deliveries").click()
        check(row.get_by_role("button", name="Deliveries")).to_have_attribute("aria-pressed", "true")
        check(page.get_by_role("heading", name="Delivery log: ops channel")).to_be_visible()
        check(log).to_have_count(1)
        shot(page, "webhooks")

        # disable, then enable again
        row.get_by_role("button", name="Disable").click()
        check(row).to_have_attribute("data-enabled", "false")
        check(row).to_contain_text("disabled")
        check(row.get_by_role("button", name="Send test")).to_be_disabled()
        assert admin.get(f"/v1/webhooks/{hook['webhook_id']}").json()["enabled"] is False
        row.get_by_role("button", name="Enable").click()
        check(row).to_have_attribute("data-enabled", "true")

        # a viewer sees webhooks and deliveries, and no action
        viewer = ui.open(keys["viewer"], "#/webhooks")
        check(viewer.get_by_text("adding and changing them needs an admin key")).to_be_visible()
        check(viewer.locator(f'tr[data-webhook-id="{hook["webhook_id"]}"]')).to_contain_text("ops channel")
        check(viewer.get_by_role("heading", name="Delivery log: ops channel")).to_be_visible()
        check(viewer.locator("tbody tr[data-delivery-id]")).to_have_count(1)
        for name in ("Add webhook", "Disable", "Delete", "Send test", "Redeliver"):
            check(viewer.get_by_role("button", name=name)).to_have_count(0)

        # delete (asks first)
        dead.get_by_role("button", name="Delete").click()
        dead.get_by_role("button", name="Keep").click()
        check(dead).to_have_count(1)
        dead.get_by_role("button", name="Delete").click()
        dead.get_by_role("button", name="Confirm: delete dead end").click()
        check(dead).to_have_count(0)
        assert [w["name"] for w in admin.get("/v1/webhooks").json()] == ["ops channel"]
        audit = admin.get("/v1/audit", params={"action": "webhook.delete"}).json()["entries"]
        assert [e["actor"] for e in audit] == ["key:ui-admin"]
        go(page, "#/runs")
        check(page.locator("#nav a[data-route=webhooks]")).not_to_have_attribute("aria-current", "page")
        # the refused target was one 400 answer, which the browser logs; anything else is a page bug
        refused = [e for e in ui.errors if "status of 400" in e]
        assert len(refused) == 1, ui.errors
        ui.errors.remove(refused[0])
