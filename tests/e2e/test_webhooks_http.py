"""Webhooks over HTTP: the API and the CLI against a live server; approve from a link, end to end.

The janitor demo agent asks for a DANGEROUS call; the server's dispatcher posts the signed notification
to a receiver on 127.0.0.1; following its approve link (the page, then the button) completes the run.
Expired, forged and reused links are refused. The run is executed by a worker outside the server
(``worker=False``: the API tier's dispatcher reads the database, not the worker's memory).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from agentmaestro.agents import load_agents_dir
from agentmaestro.cli import main
from agentmaestro.cli._common import builtin_agents_dir
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.notify.signing import link_token, verify_signature
from agentmaestro.store.base import Store
from tests.e2e.test_server import auth, make_key, wait_status
from tests.fakes.server import LiveServer
from tests.fakes.webhook_receiver import WebhookReceiver

FAST_ENV = {
    "MAESTRO_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",  # the receiver is on loopback: allowed explicitly
    "MAESTRO_WEBHOOK_POLL_S": "0.05",
    "MAESTRO_WEBHOOK_BACKOFF_S": "0.05",
    "MAESTRO_WEBHOOK_MAX_BACKOFF_S": "0.2",
}


class ExternalWorker:
    """A worker on its own Store and event loop, in a thread: as if it were another process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.worker: Worker | None = None
        self.task: Any = None

    def __enter__(self) -> ExternalWorker:
        self.thread.start()

        async def start() -> None:
            self.store = await asyncio.to_thread(Store.open, self.url)
            self.worker = Worker(
                self.store,
                load_agents_dir(builtin_agents_dir()),
                config=WorkerConfig(poll_interval_s=0.05, webhooks=False),
            )
            self.task = asyncio.ensure_future(self.worker.run())

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(20)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self.worker is not None
            self.worker.stop()
            await self.task
            await self.store.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def live(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LiveServer, str, WebhookReceiver]]:
    for k, v in FAST_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MAESTRO_PUBLIC_URL", raising=False)
    with (
        WebhookReceiver() as rx,
        LiveServer(db_url, load_agents_dir(builtin_agents_dir()), rate_limit_per_min=0, worker=False) as srv,
        ExternalWorker(db_url),
    ):
        yield srv, db_url, rx


def test_approve_from_a_link_end_to_end(live: tuple[LiveServer, str, WebhookReceiver]) -> None:
    srv, url, rx = live
    admin, operator, viewer = (make_key(url, "default", r) for r in ("admin", "operator", "viewer"))
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        body = {"name": "ops channel", "url": f"{rx.url}/hook", "events": ["approval.requested", "run.completed"]}
        r = c.post("/v1/webhooks", json=body, headers=auth(admin))
        assert r.status_code == 201, r.text
        hook = r.json()
        secret = hook["signing_secret"]
        assert hook["link_base_url"] == srv.url and hook["url_display"] == f"{rx.url}/hook"
        # secrets are never shown again
        assert "signing_secret" not in c.get(f"/v1/webhooks/{hook['webhook_id']}", headers=auth(viewer)).json()
        assert secret not in c.get("/v1/webhooks", headers=auth(viewer)).text
        # roles: viewers read, only admins manage
        assert c.post("/v1/webhooks", json=body, headers=auth(operator)).status_code == 403
        assert c.post(f"/v1/webhooks/{hook['webhook_id']}/test", headers=auth(viewer)).status_code == 403

        run_id = c.post("/v1/runs", json={"agent": "janitor", "input": "tidy"}, headers=auth(operator)).json()["run_id"]
        wait_status(c, run_id, operator, {"WAITING_FOR_APPROVAL"})
        [req] = rx.wait_for(1)
        assert verify_signature(secret, req.headers["x-maestro-signature"], req.body)
        doc = req.json()
        assert doc["event"] == "approval.requested" and doc["run"]["agent"] == "janitor"
        assert doc["data"]["tool"] == "purge_logs" and doc["data"]["risk"] == "DANGEROUS"
        approval_id = doc["data"]["approval_id"]
        approve = doc["links"]["approve"]
        assert approve.startswith(f"{srv.url}/v1/approvals/{approval_id}/link?token=")
        token = parse_qs(urlsplit(approve).query)["token"][0]
        reject_token = parse_qs(urlsplit(doc["links"]["reject"]).query)["token"][0]

        # a browser opens the link: a confirmation page (escaped), nothing decided yet
        page = c.get(approve, headers={"Accept": "text/html"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "purge_logs" in page.text and '<form method="post"' in page.text and "Approve" in page.text
        assert page.headers["cache-control"] == "no-store"
        assert c.get(f"/v1/approvals/{approval_id}", headers=auth(viewer)).json()["status"] == "pending"
        # forged and expired tokens are refused
        forged = token[:-3] + ("abc" if not token.endswith("abc") else "xyz")
        r = c.post(f"/v1/approvals/{approval_id}/link", params={"token": forged})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
        expired = link_token(approval_id, "approve", "default", channel=hook["webhook_id"], ttl_s=-1)
        r = c.post(f"/v1/approvals/{approval_id}/link", params={"token": expired})
        assert r.status_code == 403 and r.json()["error"]["code"] == "link_expired"
        r = c.post(f"/v1/approvals/{approval_id}/link", params={"token": expired}, headers={"Accept": "text/html"})
        assert r.status_code == 403 and "expired" in r.text and r.headers["content-type"].startswith("text/html")
        assert c.post(f"/v1/approvals/{approval_id}/link").status_code == 401
        # the button: approve; the run completes
        done = c.post(approve, headers={"Accept": "text/html"})
        assert done.status_code == 200 and "Approved" in done.text, done.text
        final = wait_status(c, run_id, operator, {"COMPLETED", "FAILED"})
        assert final["status"] == "COMPLETED"
        # single use: the same link, or the reject link, cannot decide again
        again = c.post(approve)
        assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
        assert c.post(f"/v1/approvals/{approval_id}/link", params={"token": reject_token}).status_code == 409
        assert c.get(approve).status_code == 409
        approval = c.get(f"/v1/approvals/{approval_id}", headers=auth(viewer)).json()
        assert approval["status"] == "approved" and approval["decided_by"] == "link:ops channel"
        audit = c.get("/v1/audit", params={"action": "approval.approve"}, headers=auth(admin)).json()["entries"]
        assert [e["actor"] for e in audit] == ["link:ops channel"]
        assert audit[0]["detail"]["webhook_id"] == hook["webhook_id"]

        completed = [r for r in rx.wait_for(2) if r.json()["event"] == "run.completed"]
        assert completed and completed[0].json()["run"]["run_id"] == run_id
        deadline = time.monotonic() + 20  # the receiver may have answered before the outcome was recorded
        while True:
            deliveries = c.get(f"/v1/webhooks/{hook['webhook_id']}/deliveries", headers=auth(viewer)).json()
            if all(d["status"] == "delivered" for d in deliveries) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert sorted(d["event"] for d in deliveries) == ["approval.requested", "run.completed"]
        assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in deliveries)
        assert token not in json.dumps(deliveries)  # links are signed at send time, never stored


def test_disabling_deleting_or_retargeting_a_webhook_revokes_its_links(
    live: tuple[LiveServer, str, WebhookReceiver],
) -> None:
    """Red-team finding (issue 14, item 5): a link delivered by a webhook still approved after the webhook was
    disabled or deleted. A link dies with its webhook, stays dead when the webhook is re-enabled, and dies
    when its approval is decided another way."""
    srv, url, rx = live
    admin, operator = (make_key(url, "default", r) for r in ("admin", "operator"))
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        hooks = []
        for name in ("ops", "doomed", "moved"):
            body = {"name": name, "url": f"{rx.url}/{name}", "events": ["approval.requested"]}
            hooks.append(c.post("/v1/webhooks", json=body, headers=auth(admin)).json())
        ops, doomed, moved = (h["webhook_id"] for h in hooks)
        run_id = c.post("/v1/runs", json={"agent": "janitor", "input": "tidy"}, headers=auth(operator)).json()["run_id"]
        wait_status(c, run_id, operator, {"WAITING_FOR_APPROVAL"})
        sent = {r.path: r.json() for r in rx.wait_for(3)}
        approve = sent["/ops"]["links"]["approve"]
        approval_id = sent["/ops"]["data"]["approval_id"]

        def use(link: str) -> httpx.Response:
            return c.post(link)

        def link_of(path: str) -> str:
            return str(sent[path]["links"]["approve"])

        # disabled: refused at once (JSON and the browser page), nothing decided
        assert c.patch(f"/v1/webhooks/{ops}", json={"enabled": False}, headers=auth(admin)).status_code == 200
        r = use(approve)
        assert r.status_code == 403 and r.json()["error"]["code"] == "link_revoked", r.text
        assert c.get(approve).status_code == 403
        page = c.get(approve, headers={"Accept": "text/html"})
        assert page.status_code == 403 and "disabled" in page.text and "<form" not in page.text
        # re-enabled: the old link stays dead; a link made after the re-enable works
        assert c.patch(f"/v1/webhooks/{ops}", json={"enabled": True}, headers=auth(admin)).status_code == 200
        assert use(approve).json()["error"]["code"] == "link_revoked"
        fresh = link_token(approval_id, "approve", "default", channel=ops, ttl_s=600)
        assert c.get(f"/v1/approvals/{approval_id}/link", params={"token": fresh}).status_code == 200
        # deleted: refused
        assert c.delete(f"/v1/webhooks/{doomed}", headers=auth(admin)).status_code == 200
        r = use(link_of("/doomed"))
        assert r.status_code == 403 and "deleted" in r.json()["error"]["message"]
        # given a new target: links sent to the old one are refused
        r = c.patch(f"/v1/webhooks/{moved}", json={"url": f"{rx.url}/elsewhere"}, headers=auth(admin))
        assert r.status_code == 200, r.text
        assert use(link_of("/moved")).json()["error"]["code"] == "link_revoked"
        assert c.get(f"/v1/approvals/{approval_id}", headers=auth(operator)).json()["status"] == "pending"
        audit = c.get("/v1/audit", params={"action": "webhook.update"}, headers=auth(admin)).json()["entries"]
        assert [e["detail"].get("links_revoked") for e in audit] == [True, None, True]
        # decided another way (the API): a still-valid link cannot decide again
        r = c.post(f"/v1/approvals/{approval_id}", json={"decision": "reject", "reason": "no"}, headers=auth(operator))
        assert r.status_code == 200, r.text
        r = c.post(f"/v1/approvals/{approval_id}/link", params={"token": fresh})
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
        final = wait_status(c, run_id, operator, {"COMPLETED", "FAILED"})
        assert final["status"] == "COMPLETED"
        decided = c.get(f"/v1/approvals/{approval_id}", headers=auth(operator)).json()
        assert decided["status"] == "rejected" and not decided["decided_by"].startswith("link:")


def test_api_errors_test_event_and_redeliver(live: tuple[LiveServer, str, WebhookReceiver]) -> None:
    srv, url, rx = live
    admin = make_key(url, "default", "admin")
    with httpx.Client(base_url=srv.url, timeout=10, headers=auth(admin)) as c:
        bad = c.post("/v1/webhooks", json={"name": "x", "format": "slack", "events": ["run.failed"]})
        assert bad.status_code == 400 and "needs a url" in bad.json()["error"]["message"]
        bad = c.post("/v1/webhooks", json={"name": "x", "url": f"{rx.url}/h", "events": ["run.exploded"]})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
        assert c.get("/v1/webhooks/wh_nope").status_code == 404
        tg = {"bot_token": "42:SECRET-bot", "chat_id": "7", "api_base": rx.url}
        hook = c.post(
            "/v1/webhooks", json={"name": "tg", "format": "telegram", "telegram": tg, "events": ["run.failed"]}
        )
        assert hook.status_code == 201 and "SECRET-bot" not in hook.text and hook.json()["signing_secret"] is None
        hook_id = hook.json()["webhook_id"]
        rx.fail_next(2, status=502)
        queued = c.post(f"/v1/webhooks/{hook_id}/test")
        assert queued.status_code == 202 and queued.json()["status"] == "pending"
        delivery_id = queued.json()["delivery_id"]
        got = rx.wait_for(3)
        assert [r.path for r in got] == ["/bot42:SECRET-bot/sendMessage"] * 3
        assert json.loads(got[-1].body)["chat_id"] == "7"
        deadline = time.monotonic() + 20
        while (row := c.get(f"/v1/webhooks/{hook_id}/deliveries/{delivery_id}").json())["status"] != "delivered":
            assert time.monotonic() < deadline, row
            time.sleep(0.02)
        assert row["status"] == "delivered" and row["attempts"] == 3, row
        assert c.post(f"/v1/webhooks/{hook_id}/deliveries/{delivery_id}/redeliver").json()["status"] == "pending"
        rx.wait_for(4)
        patched = c.patch(f"/v1/webhooks/{hook_id}", json={"enabled": False, "telegram": {"chat_id": "8"}})
        assert (
            patched.status_code == 200 and patched.json()["config"]["chat_id"] == "8" and not patched.json()["enabled"]
        )
        assert c.patch(f"/v1/webhooks/{hook_id}", json={"url": "http://x.test/"}).status_code == 400
        every = ["approval.requested", "human.requested", "run.failed", "run.completed", "budget.reached"]
        assert c.patch(f"/v1/webhooks/{hook_id}", json={"events": every}).json()["events"] == every
        assert c.patch(f"/v1/webhooks/{hook_id}", json={"events": ["human.waiting"]}).status_code == 422
        assert c.delete(f"/v1/webhooks/{hook_id}").status_code == 200
        assert c.get(f"/v1/webhooks/{hook_id}/deliveries").status_code == 404


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def test_cli_locally_and_through_the_server(
    live: tuple[LiveServer, str, WebhookReceiver], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, url, rx = live
    admin = make_key(url, "default", "admin")
    monkeypatch.setenv("MAESTRO_DATABASE_URL", url)
    monkeypatch.delenv("MAESTRO_SERVER", raising=False)

    def maestro(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        got = capsys.readouterr()
        return Result(code, got.out, got.err)

    remote = ["--server", srv.url, "--api-key", admin]
    for where in ([], remote):
        added = maestro(
            *where, "--json", "webhooks", "add", "cli hook", "--url", f"{rx.url}/cli", "--event", "run.failed"
        )
        assert added.returncode == 0, added.stderr
        row = json.loads(added.stdout)
        assert row["signing_secret"].startswith("whsec_") and row["events"] == ["run.failed"]
        every = maestro(*where, "--json", "webhooks", "add", "all", "--url", f"{rx.url}/all")
        assert json.loads(every.stdout)["events"][:2] == ["approval.requested", "human.requested"], every.stderr
        assert maestro(*where, "webhooks", "rm", json.loads(every.stdout)["webhook_id"]).returncode == 0
        listed = maestro(*where, "webhooks", "list")
        assert row["webhook_id"] in listed.stdout and row["signing_secret"] not in listed.stdout
        tested = maestro(*where, "webhooks", "test", row["webhook_id"])
        assert tested.returncode == 0 and "delivered" in tested.stdout, (tested.stdout, tested.stderr)
        log = maestro(*where, "--json", "webhooks", "deliveries", row["webhook_id"])
        [d] = json.loads(log.stdout)
        assert d["event"] == "webhook.test" and d["status"] == "delivered"
        gone = maestro(*where, "webhooks", "rm", row["webhook_id"])
        assert gone.returncode == 0 and "deleted" in gone.stdout
        missing = maestro(*where, "webhooks", "rm", row["webhook_id"])
        assert (
            missing.returncode == 1 and missing.stderr.startswith("error: ") and len(missing.stderr.splitlines()) == 1
        )
        bad = maestro(*where, "webhooks", "add", "x", "--url", "ftp://nope")
        assert bad.returncode != 0 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    assert len(rx.wait_for(2, path="/cli")) == 2


def test_private_targets_are_refused_by_the_api_the_cli_and_the_dispatcher(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No opt-in: the API answers 400 target_refused, the CLI one error line; a webhook whose name resolved to a
    public address when it was made, and to loopback since, gets a refused delivery in its log (never sent)."""
    from agentmaestro.notify import targets as notify_targets

    for k, v in FAST_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MAESTRO_WEBHOOK_ALLOWED_HOSTS")
    monkeypatch.delenv("MAESTRO_WEBHOOK_ALLOW_PRIVATE", raising=False)
    answers = {"hooks.example.com": "93.184.215.14"}  # never contacted: only checked

    async def fake_lookup(host: str, port: int) -> list[Any]:
        import ipaddress

        if host not in answers:
            raise notify_targets.TargetLookupError(f"cannot resolve host {host!r}")
        return [ipaddress.ip_address(answers[host])]

    monkeypatch.setattr(notify_targets, "_lookup", fake_lookup)
    with (
        WebhookReceiver() as rx,
        LiveServer(db_url, load_agents_dir(builtin_agents_dir()), rate_limit_per_min=0, worker=False) as srv,
    ):
        admin = make_key(db_url, "default", "admin")
        port = rx.url.rsplit(":", 1)[1]
        with httpx.Client(base_url=srv.url, timeout=10, headers=auth(admin)) as c:
            for target in (
                f"{rx.url}/hook",
                "http://10.0.0.1/hook",
                "http://[::1]:8080/hook",
                "http://169.254.169.254/latest/meta-data/",
                f"http://localhost:{port}/hook",
            ):
                r = c.post("/v1/webhooks", json={"name": "x", "url": target, "events": ["run.failed"]})
                assert r.status_code == 400, (target, r.text)
                error = r.json()["error"]
                assert error["code"] == "target_refused" and error["message"].startswith("url: refused"), error
                assert "MAESTRO_WEBHOOK_ALLOW_PRIVATE" in error["message"]
            r = c.post("/v1/webhooks", json={"name": "x", "url": "file:///etc/passwd", "events": ["run.failed"]})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
            tg = {"bot_token": "42:SECRET-bot", "chat_id": "7", "api_base": rx.url}
            body = {"name": "tg", "format": "telegram", "telegram": tg, "events": ["run.failed"]}
            r = c.post("/v1/webhooks", json=body)
            assert r.status_code == 400 and r.json()["error"]["message"].startswith("api_base: refused 127.0.0.1")
            assert "SECRET-bot" not in r.text
            assert c.get("/v1/webhooks").json() == []

            made = c.post(
                "/v1/webhooks",
                json={"name": "ok", "url": f"http://hooks.example.com:{port}/hook", "events": ["run.failed"]},
            )
            assert made.status_code == 201, made.text
            hook_id = made.json()["webhook_id"]
            r = c.patch(f"/v1/webhooks/{hook_id}", json={"url": "http://192.168.1.9/hook"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "target_refused"
            answers["hooks.example.com"] = "127.0.0.1"  # the name now points inside
            queued = c.post(f"/v1/webhooks/{hook_id}/test").json()
            deadline = time.monotonic() + 20
            while (row := c.get(f"/v1/webhooks/{hook_id}/deliveries/{queued['delivery_id']}").json())["status"] in (
                "pending",
                "sending",
            ):
                assert time.monotonic() < deadline, row
                time.sleep(0.02)
            assert row["status"] == "failed" and row["attempts"] == 1 and row["last_status_code"] is None
            assert row["last_error"].startswith("refused: refused 127.0.0.1: it is a loopback address")
            assert rx.requests == []

        monkeypatch.setenv("MAESTRO_DATABASE_URL", db_url)
        monkeypatch.delenv("MAESTRO_SERVER", raising=False)
        for where in ([], ["--server", srv.url, "--api-key", admin]):
            capsys.readouterr()
            with pytest.raises(SystemExit) as exited:
                main([*where, "webhooks", "add", "lan", "--url", "http://10.1.2.3/hook"])
            err = capsys.readouterr().err
            assert exited.value.code != 0 and err.startswith("error: ") and len(err.splitlines()) == 1, err
            assert "refused 10.1.2.3: it is a private address" in err and "Traceback" not in err
