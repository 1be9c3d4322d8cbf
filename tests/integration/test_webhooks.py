"""Outgoing webhooks on SQLite and PostgreSQL: the outbox, signatures, retries, formats, two dispatchers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentmaestro import Agent, RiskLevel, ScriptedModel, StrictPolicy, tool
from agentmaestro.agents import AgentRegistry
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.errors import ValidationError
from agentmaestro.notify import webhooks as wh
from agentmaestro.notify.signing import (
    LinkTokenError,
    link_revocation,
    link_token,
    read_link_token,
    sign_body,
    verify_signature,
)
from agentmaestro.notify.targets import ALLOW_PRIVATE_ENV, ALLOWED_HOSTS_ENV
from agentmaestro.store.base import Store
from agentmaestro.store.records import NewRun, new_run_id
from tests.fakes.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.anyio

SECRET_ARG = "hunter2-very-secret-password"
LOOPBACK = wh.TargetPolicy(allowed_hosts=("127.0.0.1",))
"""The receiver listens on 127.0.0.1: these tests allow it explicitly (targets are public-only by default)."""
FAST = wh.DispatcherConfig(
    poll_interval_s=0.02,
    lag_s=2.0,
    retry=wh.RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05),
    targets=LOOPBACK,
)


@tool(risk=RiskLevel.DANGEROUS)
def rotate(password: str) -> str:
    """Rotate a password (dangerous)."""
    return "rotated"


@tool(risk=RiskLevel.SAFE, idempotent=True)
def noop(i: int) -> int:
    """Do nothing."""
    return i


def _ops_agent() -> Agent:
    script = [{"tool_calls": [{"name": "rotate", "arguments": {"password": SECRET_ARG}}]}, {"content": "done"}]
    return Agent(name="ops", model=ScriptedModel(script), tools=[rotate])


def _calc_agent() -> Agent:
    return Agent(name="calc", model=ScriptedModel([{"content": "4"}]), tools=[noop])


MODEL_KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2"


def _stuck_agent() -> Agent:
    """Its model call fails once with a key in the error text: the step is escalated to a person."""
    script = [{"error": f"upstream refused key {MODEL_KEY}"}]
    return Agent(name="stuck", model=ScriptedModel(script), max_attempts=1, retry_backoff_s=0.0)


def _hungry_agent() -> Agent:
    turns: list[dict[str, Any]] = [{"tool_calls": [{"name": "noop", "arguments": {"i": i}}]} for i in range(10)]
    script = {"usage": {"input_tokens": 150, "output_tokens": 50}, "turns": [*turns, {"content": "done"}]}
    return Agent(name="hungry", model=ScriptedModel(script), tools=[noop], max_output_tokens=100)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = Store.open(db_url)
    await s.workspaces.ensure()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def rx(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A receiver on 127.0.0.1, which webhooks may reach only because this allows it (MAESTRO_WEBHOOK_ALLOWED_HOSTS)."""
    monkeypatch.setenv(ALLOWED_HOSTS_ENV, "127.0.0.1")
    monkeypatch.delenv(ALLOW_PRIVATE_ENV, raising=False)
    with WebhookReceiver() as receiver:
        yield receiver


async def start(store: Store, agent: Agent, policy: StrictPolicy | None = None) -> str:
    [rec] = await store.runs.create(
        [
            NewRun(
                run_id=new_run_id(),
                workspace_id="default",
                agent_name=agent.name,
                input="go",
                spec=agent.spec(),
                policy=(policy or StrictPolicy()).to_json(),
            )
        ]
    )
    return rec.run_id


async def settle(store: Store, agents: list[Agent], run_ids: list[str]) -> None:
    """Drive runs with a worker (webhooks off: the tests run their own dispatchers) until they stop or wait."""
    worker = Worker(store, AgentRegistry(agents), config=WorkerConfig(poll_interval_s=0.02, webhooks=False))
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(30):
            for run_id in run_ids:
                while not ((s := (await store.runs.get(run_id)).status).terminal or s.waiting):
                    await store.events.wait(run_id, 0.1)
    finally:
        worker.stop()
        await task


async def until_delivered(store: Store, dispatcher: wh.Dispatcher, webhook_id: str, n: int) -> list[dict[str, Any]]:
    """Run dispatcher passes until ``n`` deliveries of the webhook are finished (delivered or failed)."""
    async with asyncio.timeout(30):
        while True:
            await dispatcher.run_once()
            rows = await store.webhooks.deliveries("default", webhook_id, None, 1000)
            done = [r for r in rows if r["status"] in ("delivered", "failed")]
            if len(done) >= n and len(done) == len(rows):
                return rows
            await asyncio.sleep(0.01)


async def add(store: Store, rx: WebhookReceiver, fmt: str = "json", **kw: Any) -> tuple[dict[str, Any], str | None]:
    spec = wh.WebhookSpec(
        name=kw.pop("name", f"{fmt} hook"),
        format=fmt,  # type: ignore[arg-type]
        events=tuple(kw.pop("events", wh.EVENT_TYPES)),
        url=kw.pop("url", f"{rx.url}/hook" if fmt != "telegram" else None),
        **kw,
    )
    return await wh.create_webhook(store, "default", spec, actor="test", link_base_url="http://maestro.test")


# ---------------------------------------------------------------------------------- the tests


async def test_approval_notification_is_signed_and_carries_no_secrets(store: Store, rx: WebhookReceiver) -> None:
    hook, secret = await add(store, rx)
    assert secret and secret.startswith("whsec_")
    agent = _ops_agent()
    run_id = await start(store, agent)
    await settle(store, [agent], [run_id])
    [delivery] = await until_delivered(store, wh.Dispatcher(store, FAST), hook["webhook_id"], 1)
    [req] = rx.wait_for(1)
    # the signature verifies with the webhook's secret, and not with another
    assert verify_signature(secret, req.headers["x-maestro-signature"], req.body)
    assert not verify_signature("whsec_other", req.headers["x-maestro-signature"], req.body)
    assert not verify_signature(secret, req.headers["x-maestro-signature"], req.body + b" ")
    assert req.headers["x-maestro-event"] == "approval.requested"
    assert req.headers["x-maestro-delivery"] == delivery["delivery_id"]
    doc = req.json()
    [approval] = await store.approvals.page()
    assert doc["id"] == delivery["delivery_id"] and doc["event"] == "approval.requested"
    assert doc["run"]["run_id"] == run_id and doc["run"]["agent"] == "ops"
    assert doc["run"]["status"] == "WAITING_FOR_APPROVAL"
    assert doc["data"]["tool"] == "rotate" and doc["data"]["risk"] == "DANGEROUS"
    assert doc["data"]["approval_id"] == approval["approval_id"] and doc["data"]["reasons"]
    # links: absolute, from the webhook's base URL, and valid tokens for this approval
    approve = doc["links"]["approve"]
    assert approve.startswith(f"http://maestro.test/v1/approvals/{approval['approval_id']}/link?token=")
    claim = read_link_token(approve.split("token=")[1], approval_id=approval["approval_id"])
    assert claim.decision == "approve" and claim.workspace_id == "default" and claim.channel == hook["webhook_id"]
    assert claim.expires_at == pytest.approx(time.time() + 86400, abs=60)
    # nothing secret anywhere: not the tool's arguments, not the signing secret, not the target URL's secrets
    for text in (req.body.decode(), json.dumps(delivery), json.dumps(hook)):
        assert SECRET_ARG not in text and secret not in text
    assert delivery["status"] == "delivered" and delivery["attempts"] == 1 and delivery["last_status_code"] == 200
    rows = await store.webhooks.all("default")
    assert "secret_enc" not in rows[0] and "url_enc" not in rows[0]


async def test_terminal_events_budget_and_subscriptions(store: Store, rx: WebhookReceiver) -> None:
    early = await start(store, _calc_agent())
    await settle(store, [_calc_agent()], [early])  # finished before any webhook existed: never notified
    everything, _ = await add(store, rx, name="all")
    only_budget, _ = await add(store, rx, name="budget", events=["budget.reached"], url=f"{rx.url}/budget")
    calc, hungry = _calc_agent(), _hungry_agent()
    done = await start(store, calc)
    broke = await start(store, hungry, StrictPolicy(max_tokens=1000))
    await settle(store, [calc, hungry], [done, broke])
    dispatcher = wh.Dispatcher(store, FAST)
    rows = await until_delivered(store, dispatcher, everything["webhook_id"], 3)
    events = Counter((r["event"], r["run_id"]) for r in rows)
    assert events == Counter({("run.completed", done): 1, ("run.failed", broke): 1, ("budget.reached", broke): 1})
    budget = next(r for r in rows if r["event"] == "budget.reached")["payload"]
    assert budget["data"]["limit"] == "budget_tokens" and "of run tree" in budget["data"]["budget"]
    assert budget["run"]["status"] == "FAILED" and budget["run"]["tokens"] <= 1000
    completed = next(r for r in rows if r["event"] == "run.completed")["payload"]
    assert completed["data"]["output"] == "4" and completed["run"]["status"] == "COMPLETED"
    [only] = await until_delivered(store, dispatcher, only_budget["webhook_id"], 1)
    assert only["event"] == "budget.reached"
    # more passes enqueue nothing new (the lag window is rescanned, the outbox deduplicates)
    await dispatcher.run_once()
    again = await store.webhooks.deliveries("default", everything["webhook_id"], None, 100)
    assert len(again) == 3
    assert len(rx.wait_for(4)) == 4


async def test_fails_twice_then_succeeds_on_the_third_attempt(store: Store, rx: WebhookReceiver) -> None:
    hook, _ = await add(store, rx)
    rx.fail_next(1, status=503)
    rx.fail_next(1, status=429)
    queued = await wh.send_test(store, "default", hook["webhook_id"])
    assert queued["status"] == "pending" and queued["attempts"] == 0
    [row] = await until_delivered(store, wh.Dispatcher(store, FAST), hook["webhook_id"], 1)
    got = rx.wait_for(3)
    assert [r.status for r in got] == [503, 429, 200]
    assert {r.headers["x-maestro-delivery"] for r in got} == {queued["delivery_id"]}  # one id: receivers dedupe
    assert row["status"] == "delivered" and row["attempts"] == 3 and row["last_status_code"] == 200
    assert got[0].at < got[1].at < got[2].at


async def test_final_errors_and_giving_up(store: Store, rx: WebhookReceiver) -> None:
    hook, _ = await add(store, rx)
    rx.fail_next(1, status=400)  # a 4xx other than 408/429 is final
    bad = await wh.send_test(store, "default", hook["webhook_id"])
    [row] = await until_delivered(store, wh.Dispatcher(store, FAST), hook["webhook_id"], 1)
    assert row["delivery_id"] == bad["delivery_id"] and row["status"] == "failed" and row["attempts"] == 1
    assert row["last_status_code"] == 400 and "HTTP 400" in (row["last_error"] or "")
    # unreachable: retried up to max_attempts, then failed
    dead, _ = await add(store, rx, name="dead", url="http://127.0.0.1:9/hook")
    await wh.send_test(store, "default", dead["webhook_id"])
    [row] = await until_delivered(store, wh.Dispatcher(store, FAST), dead["webhook_id"], 1)
    assert row["status"] == "failed" and row["attempts"] == FAST.retry.max_attempts
    assert row["last_status_code"] is None and "gave up after 4 attempts" in (row["last_error"] or "")
    # redeliver: same id, attempts from zero
    rows = await store.webhooks.redeliver("default", hook["webhook_id"], bad["delivery_id"])
    assert rows["status"] == "pending" and rows["attempts"] == 0
    [row] = await until_delivered(store, wh.Dispatcher(store, FAST), hook["webhook_id"], 1)
    assert row["status"] == "delivered" and row["delivery_id"] == bad["delivery_id"]


async def test_slack_and_telegram_formats(store: Store, rx: WebhookReceiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    slack_url = f"{rx.url}/services/T000/B000/XXXXSECRETXXXX"
    slack, slack_secret = await add(store, rx, "slack", url=slack_url, events=["approval.requested"])
    bot = "123456:ABC-telegram-bot-token"
    telegram, _ = await add(
        store, rx, "telegram", bot_token=bot, chat_id="-100123", api_base=rx.url, events=["approval.requested"]
    )
    assert slack_secret is None and slack["url_display"] == f"{rx.url}/…"
    assert telegram["config"] == {"chat_id": "-100123", "api_base": rx.url}
    assert bot not in json.dumps(telegram) and "XXXXSECRETXXXX" not in json.dumps(slack)
    rx.fail_next(1, status=500)  # the first request (either) fails: its error is recorded without the secret URL
    agent = _ops_agent()
    run_id = await start(store, agent)
    await settle(store, [agent], [run_id])
    dispatcher = wh.Dispatcher(store, FAST)
    await until_delivered(store, dispatcher, slack["webhook_id"], 1)
    await until_delivered(store, dispatcher, telegram["webhook_id"], 1)
    got = rx.wait_for(3)
    [slack_req] = [r for r in got if r.path == "/services/T000/B000/XXXXSECRETXXXX" and r.status == 200]
    body = slack_req.json()
    assert "rotate" in body["text"] and "DANGEROUS" in body["text"] and run_id in body["text"]
    [actions] = [b for b in body["blocks"] if b["type"] == "actions"]
    urls = [e["url"] for e in actions["elements"]]
    assert [e["text"]["text"] for e in actions["elements"]] == ["Approve", "Reject"]
    assert all(u.startswith("http://maestro.test/v1/approvals/") for u in urls)
    [tg_req] = [r for r in got if r.path == f"/bot{bot}/sendMessage" and r.status == 200]
    msg = tg_req.json()
    assert msg["chat_id"] == "-100123" and msg["parse_mode"] == "HTML" and "rotate" in msg["text"]
    buttons = msg["reply_markup"]["inline_keyboard"][0]
    assert [b["text"] for b in buttons] == ["Approve", "Reject"] and "token=" in buttons[1]["url"]
    for r in got:
        assert SECRET_ARG not in r.body.decode()
    for hook in (slack, telegram):
        for row in await store.webhooks.deliveries("default", hook["webhook_id"], None, 10):
            text = json.dumps(row)
            assert bot not in text and "XXXXSECRETXXXX" not in text and SECRET_ARG not in text
    assert "sendMessage" in caplog.text  # httpx logged the requests, without the secrets
    assert bot not in caplog.text and "XXXXSECRETXXXX" not in caplog.text


async def test_two_dispatchers_send_each_delivery_once(db_url: str, store: Store, rx: WebhookReceiver) -> None:
    hook, _ = await add(store, rx)
    agents = [_calc_agent() for _ in range(1)]
    runs = [await start(store, agents[0]) for _ in range(6)]
    await settle(store, agents, runs)
    for _ in range(10):
        await wh.send_test(store, "default", hook["webhook_id"])
    other = Store.open(db_url)  # a second process's store on the same database
    try:
        a = wh.Dispatcher(store, FAST, owner="dispatcher-a")
        b = wh.Dispatcher(other, FAST, owner="dispatcher-b")
        tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
        try:
            got = await asyncio.to_thread(rx.wait_for, 16)
        finally:
            a.stop()
            b.stop()
            await asyncio.gather(*tasks)
    finally:
        await other.close()
    ids = Counter(r.headers["x-maestro-delivery"] for r in rx.requests)
    assert len(ids) == 16 and set(ids.values()) == {1}, ids
    rows = await store.webhooks.deliveries("default", hook["webhook_id"], None, 100)
    assert len(rows) == 16 and {r["status"] for r in rows} == {"delivered"}
    assert Counter(r["event"] for r in rows) == Counter({"run.completed": 6, "webhook.test": 10})
    assert len(got) == 16 and a.sent_total + b.sent_total == 16


async def test_disabled_and_deleted_webhooks(store: Store, rx: WebhookReceiver) -> None:
    hook, _ = await add(store, rx)
    await wh.update_webhook(store, "default", hook["webhook_id"], {"enabled": False}, actor="test")
    calc = _calc_agent()
    run_id = await start(store, calc)
    await settle(store, [calc], [run_id])
    dispatcher = wh.Dispatcher(store, FAST)
    await dispatcher.run_once()
    assert await store.webhooks.deliveries("default", hook["webhook_id"], None, 10) == []
    row = await wh.update_webhook(
        store, "default", hook["webhook_id"], {"enabled": True, "url": f"{rx.url}/new?x=1"}, actor="test"
    )
    assert row["enabled"] and row["url_display"] == f"{rx.url}/new?…"
    await wh.send_test(store, "default", hook["webhook_id"])
    await until_delivered(store, dispatcher, hook["webhook_id"], 1)
    assert [r.path for r in rx.requests] == ["/new?x=1"]
    await wh.delete_webhook(store, "default", hook["webhook_id"], actor="test")
    audit = [e["action"] for e in await store.audit.page("default")]
    assert audit == ["webhook.create", "webhook.update", "webhook.update", "webhook.delete"]


async def test_bad_webhook_input(store: Store, rx: WebhookReceiver) -> None:
    with pytest.raises(ValidationError, match="needs a url"):
        await add(store, rx, url=None)
    with pytest.raises(ValidationError, match="http:// or https://"):
        await add(store, rx, url="ftp://example.com/x")
    with pytest.raises(ValidationError, match="events must be"):
        await add(store, rx, events=["run.exploded"])
    with pytest.raises(ValidationError, match="bot_token and chat_id"):
        await add(store, rx, "telegram", chat_id="1")
    assert await store.webhooks.all("default") == []


def test_link_tokens_refuse_forged_expired_and_other_approvals() -> None:
    token = link_token("apr_1", "approve", "default", channel="wh_1", ttl_s=60, now=1000.0)
    assert read_link_token(token, approval_id="apr_1", now=1030.0).decision == "approve"
    with pytest.raises(LinkTokenError) as expired:
        read_link_token(token, approval_id="apr_1", now=1061.0)
    assert expired.value.code == "link_expired"
    with pytest.raises(LinkTokenError, match="another approval"):
        read_link_token(token, approval_id="apr_2", now=1030.0)
    prefix, body, sig = token.split(".")
    forged_body = body[:-2] + ("AA" if body[-2:] != "AA" else "BB")
    for forged in (f"{prefix}.{forged_body}.{sig}", f"{prefix}.{body}.{sig[:-1]}x", "garbage", ""):
        with pytest.raises(LinkTokenError, match="not valid"):
            read_link_token(forged, approval_id="apr_1", now=1030.0)


def test_a_link_lives_only_while_its_webhook_does() -> None:
    token = link_token("apr_1", "approve", "default", channel="wh_1", ttl_s=600, now=1000.0)
    claim = read_link_token(token, approval_id="apr_1", now=1030.0)
    assert claim.issued_at == 1000.0
    hook = {"webhook_id": "wh_1", "workspace_id": "default", "enabled": True, "links_valid_from": None}
    assert link_revocation(claim, hook) is None
    assert link_revocation(claim, {**hook, "links_valid_from": 999.0}) is None  # revoked before it was made
    assert "deleted" in (link_revocation(claim, None) or "")
    assert "deleted" in (link_revocation(claim, {**hook, "workspace_id": "other"}) or "")
    assert "disabled" in (link_revocation(claim, {**hook, "enabled": False}) or "")
    assert "new target" in (link_revocation(claim, {**hook, "links_valid_from": 1000.5}) or "")
    # a link from before links said when they were made dies at the first revocation
    legacy = dataclasses.replace(claim, issued_at=None)
    assert link_revocation(legacy, hook) is None
    assert link_revocation(legacy, {**hook, "links_valid_from": 1.0}) is not None


def test_signature_format_and_replay_window() -> None:
    header = sign_body("whsec_x", b'{"a":1}', timestamp=1_700_000_000)
    ts, v1 = header.split(",")
    assert ts == "t=1700000000" and v1.startswith("v1=") and len(v1) == 3 + 64
    assert verify_signature("whsec_x", header, b'{"a":1}', now=1_700_000_100)
    assert not verify_signature("whsec_x", header, b'{"a":1}', now=1_700_000_000 + 301)
    assert not verify_signature("whsec_x", "t=x,v1=y", b"")


def test_retry_policy_backoff_with_jitter() -> None:
    policy = wh.RetryPolicy(initial_backoff_s=1.0, multiplier=2.0, max_backoff_s=10.0, jitter=0.5)
    import random

    rnd = random.Random(7)
    delays = [policy.delay(n, rand=rnd) for n in range(1, 7)]
    bounds = [(0.5, 1), (1, 2), (2, 4), (4, 8), (5, 10), (5, 10)]
    assert all(lo <= d <= hi for d, (lo, hi) in zip(delays, bounds, strict=True)), delays
    assert policy.delay(1, retry_after=7.0) >= 7.0 and policy.delay(1, retry_after=99.0) <= 10.0
    assert [policy.retryable(c) for c in (None, 408, 429, 500, 503, 400, 404, 301)] == [True] * 5 + [False] * 3


async def test_a_worker_runs_the_dispatcher(store: Store, rx: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAESTRO_WEBHOOK_POLL_S", "0.02")
    hook, secret = await add(store, rx, events=["run.completed"])
    calc = _calc_agent()
    run_id = await start(store, calc)
    worker = Worker(store, AgentRegistry([calc]), config=WorkerConfig(poll_interval_s=0.02))  # webhooks on: the default
    task = asyncio.create_task(worker.run())
    try:
        [req] = await asyncio.to_thread(rx.wait_for, 1)
    finally:
        worker.stop()
        await task
    assert secret and verify_signature(secret, req.headers["x-maestro-signature"], req.body)
    assert req.json()["run"]["run_id"] == run_id and req.json()["webhook_id"] == hook["webhook_id"]


async def test_producer_pages_through_many_events(store: Store, rx: WebhookReceiver) -> None:
    hook, _ = await add(store, rx, events=["run.completed"])
    calc = _calc_agent()
    runs = [await start(store, calc) for _ in range(7)]
    await settle(store, [calc], runs)
    assert await wh.produce(store, lag_s=2.0, page=2) == 7
    assert await wh.produce(store, lag_s=2.0, page=2) == 0  # the rescanned window enqueues nothing twice
    rows = await store.webhooks.deliveries("default", hook["webhook_id"], None, 100)
    assert sorted(r["run_id"] for r in rows) == sorted(runs)


async def test_a_dead_dispatchers_claim_is_taken_over(store: Store, rx: WebhookReceiver) -> None:
    hook, _ = await add(store, rx)
    # a live claim is not taken over
    live = await wh.send_test(store, "default", hook["webhook_id"])
    [held] = await store.webhooks.claim(owner="alive", limit=10, claim_ttl=60.0)
    assert held["delivery_id"] == live["delivery_id"]
    # dispatcher "dead" claims a delivery and never finishes it; its claim has already expired
    queued = await wh.send_test(store, "default", hook["webhook_id"])
    [claimed] = await store.webhooks.claim(owner="dead", limit=10, claim_ttl=-1.0)
    assert claimed["delivery_id"] == queued["delivery_id"] and claimed["status"] == "sending"
    b = wh.Dispatcher(store, FAST, owner="b")
    async with asyncio.timeout(20):
        while (await store.webhooks.delivery("default", hook["webhook_id"], queued["delivery_id"]))[
            "status"
        ] != "delivered":
            await b.run_once()
    rows = await store.webhooks.deliveries("default", hook["webhook_id"], None, 10)
    by_id = {r["delivery_id"]: r for r in rows}
    assert by_id[queued["delivery_id"]]["status"] == "delivered" and by_id[queued["delivery_id"]]["attempts"] == 2
    assert by_id[live["delivery_id"]]["status"] == "sending"
    # the dead dispatcher's late answer is not recorded: its claim is gone
    late = await store.webhooks.finish(
        queued["delivery_id"], owner="dead", status="failed", status_code=500, error="late", next_attempt_at=None
    )
    assert late is False
    assert [r.headers["x-maestro-delivery"] for r in rx.requests] == [queued["delivery_id"]]


def test_telegram_links_to_a_loopback_server_go_in_the_text() -> None:
    from agentmaestro.notify.formats import Target, render

    delivery = {
        "delivery_id": "dlv_1",
        "event": "approval.requested",
        "webhook_id": "wh_1",
        "workspace_id": "default",
        "payload": {"run": {"run_id": "run_1", "agent": "ops"}, "data": {"tool": "<rm>", "risk": "DANGEROUS"}},
    }
    links = {"approve": "http://127.0.0.1:8000/v1/approvals/a/link?token=x&y", "reject": "http://127.0.0.1:8000/r"}
    msg = json.loads(render(Target(format="telegram", secret="1:x", chat_id="5"), delivery, links, 0).body)
    assert "reply_markup" not in msg and "&lt;rm&gt;" in msg["text"]
    assert '<a href="http://127.0.0.1:8000/v1/approvals/a/link?token=x&amp;y">Approve</a>' in msg["text"]


async def test_waiting_for_a_person_is_notified_in_every_format(store: Store, rx: WebhookReceiver) -> None:
    hook, secret = await add(store, rx, events=["human.requested"])
    only_runs, _ = await add(store, rx, name="runs only", events=["run.failed", "run.completed"], url=f"{rx.url}/runs")
    slack, _ = await add(store, rx, "slack", url=f"{rx.url}/services/T0/B0/SLACKSECRET", events=["human.requested"])
    bot = "777:telegram-bot-token"
    telegram, _ = await add(
        store, rx, "telegram", bot_token=bot, chat_id="-42", api_base=rx.url, events=["human.requested"]
    )
    agent = _stuck_agent()
    run_id = await start(store, agent)
    await settle(store, [agent], [run_id])
    assert (await store.runs.get(run_id)).status.value == "WAITING_FOR_HUMAN"
    [request] = await store.escalations.page()
    dispatcher = wh.Dispatcher(store, FAST)
    [delivery] = await until_delivered(store, dispatcher, hook["webhook_id"], 1)
    for other in (slack, telegram):
        await until_delivered(store, dispatcher, other["webhook_id"], 1)
    got = rx.wait_for(3)
    # the generic JSON: signed; the run, the request and the question; links to the dashboard
    [req] = [r for r in got if r.path == "/hook"]
    assert secret and verify_signature(secret, req.headers["x-maestro-signature"], req.body)
    doc = req.json()
    assert doc["event"] == req.headers["x-maestro-event"] == delivery["event"] == "human.requested"
    assert doc["run"] == {
        "run_id": run_id,
        "agent": "stuck",
        "parent_run_id": None,
        "status": "WAITING_FOR_HUMAN",
        "seq": doc["run"]["seq"],
    }
    data = doc["data"]
    assert data["request_id"] == request["request_id"] and data["kind"] == "step_failed"
    assert data["step_kind"] == "MODEL_CALL" and data["options"] == ["retry", "answer", "abandon"]
    assert data["question"].startswith("The model call failed 1 times in a row: ")
    assert "upstream refused key [REDACTED]" in data["question"]
    assert doc["links"] == {"dashboard": "http://maestro.test/#/queue", "run": f"http://maestro.test/#/runs/{run_id}"}
    # readable chat messages with buttons to the dashboard
    [slack_req] = [r for r in got if r.path == "/services/T0/B0/SLACKSECRET"]
    body = slack_req.json()
    assert body["text"].startswith(f"A person is needed: run {run_id} (agent stuck) has a step that keeps failing: ")
    assert "(answers: retry, answer, abandon)" in body["text"]
    [actions] = [b for b in body["blocks"] if b["type"] == "actions"]
    assert [(e["text"]["text"], e["url"]) for e in actions["elements"]] == [
        ("Answer in the dashboard", "http://maestro.test/#/queue"),
        ("Open the run", f"http://maestro.test/#/runs/{run_id}"),
    ]
    [tg_req] = [r for r in got if r.path == f"/bot{bot}/sendMessage"]
    msg = tg_req.json()
    assert msg["text"].startswith("A person is needed: run ") and msg["chat_id"] == "-42"
    assert [b["text"] for b in msg["reply_markup"]["inline_keyboard"][0]] == ["Answer in the dashboard", "Open the run"]
    # no secrets, no run input, nothing for a webhook that did not subscribe
    for r in got:
        assert MODEL_KEY not in r.body.decode() and '"input"' not in r.body.decode()
    assert MODEL_KEY not in json.dumps(delivery) and "detail" not in delivery["payload"]["data"]
    assert await store.webhooks.deliveries("default", only_runs["webhook_id"], None, 10) == []


def test_human_request_links_to_a_loopback_dashboard_go_in_the_telegram_text() -> None:
    from agentmaestro.notify.formats import Target, render

    delivery = {
        "delivery_id": "dlv_1",
        "event": "human.requested",
        "webhook_id": "wh_1",
        "workspace_id": "default",
        "payload": {
            "run": {"run_id": "run_1", "agent": "ops"},
            "data": {"kind": "uncertain_tool_call", "question": "Did <it> run?", "options": ["retry"]},
        },
    }
    links = wh.dashboard_links("http://127.0.0.1:8000/", "run_1")
    msg = json.loads(render(Target(format="telegram", secret="1:x", chat_id="5"), delivery, links, 0).body)
    assert "reply_markup" not in msg
    assert msg["text"].startswith("A person is needed: run run_1 (agent ops) has a tool call whose outcome is unknown")
    assert "Did &lt;it&gt; run?" in msg["text"]
    assert '<a href="http://127.0.0.1:8000/#/queue">Answer in the dashboard</a>' in msg["text"]
