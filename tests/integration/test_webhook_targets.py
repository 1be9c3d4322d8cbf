"""Webhook targets are public http(s) addresses unless an operator allows more (no SSRF), on SQLite and PostgreSQL.

Checked when a webhook is created or changed, and again before each delivery against the addresses resolved
then (a name may resolve elsewhere later). Nothing here connects anywhere but 127.0.0.1: refused targets are
refused before any connection, and names are resolved by a fake resolver where a test needs one.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from agentmaestro.errors import ValidationError
from agentmaestro.notify import targets as notify_targets
from agentmaestro.notify import webhooks as wh
from agentmaestro.notify.targets import (
    ALLOW_PRIVATE_ENV,
    ALLOWED_HOSTS_ENV,
    TargetLookupError,
    TargetPolicy,
    TargetRefusedError,
)
from agentmaestro.store.base import Store
from tests.fakes.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.anyio

STRICT = TargetPolicy()
PRIVATE_OK = TargetPolicy(allow_private=True)
PUBLIC_ADDRESS = "93.184.215.14"  # never contacted: only checked
REFUSED = [
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("http://192.168.0.10/hook", "private"),
    ("http://172.16.5.4/hook", "private"),
    ("http://[::1]/hook", "loopback"),
    ("http://[fd00::1]/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://0.0.0.0:9000/hook", "unspecified"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://240.0.0.1/hook", "reserved"),
    ("http://100.64.1.1/hook", "shared"),
    ("http://2130706433/hook", "encoded or abbreviated IP address"),  # 127.0.0.1 as one number
    ("http://0x7f.1/hook", "encoded or abbreviated IP address"),
    ("http://localhost:8000/hook", "local or metadata service"),
    ("http://api.localhost/hook", "local or metadata service"),
    ("http://metadata.google.internal/computeMetadata/v1/", "local or metadata service"),
    ("file:///etc/passwd", "only http and https"),
    ("gopher://example.com/", "only http and https"),
]


class FakeDNS:
    """Answers for host names, changeable during a test (DNS answers change: that is the point)."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[Any]:
        self.lookups.append(host)
        if host not in self.answers:
            raise TargetLookupError(f"cannot resolve host {host!r}: no such name (fake DNS)")
        return [ipaddress.ip_address(a) for a in self.answers[host]]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDNS]:
    fake = FakeDNS()
    monkeypatch.setattr(notify_targets, "_lookup", fake)
    yield fake


@pytest.fixture
def strict_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No operator opt-in: the default policy."""
    monkeypatch.delenv(ALLOW_PRIVATE_ENV, raising=False)
    monkeypatch.delenv(ALLOWED_HOSTS_ENV, raising=False)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = Store.open(db_url)
    await s.workspaces.ensure()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def rx() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def config(targets: TargetPolicy, attempts: int = 3) -> wh.DispatcherConfig:
    retry = wh.RetryPolicy(max_attempts=attempts, initial_backoff_s=0.01, max_backoff_s=0.02)
    return wh.DispatcherConfig(poll_interval_s=0.02, lag_s=2.0, retry=retry, targets=targets)


async def add(store: Store, url: str, targets: TargetPolicy | None = None, **kw: Any) -> dict[str, Any]:
    spec = wh.WebhookSpec(name=kw.pop("name", "hook"), format=kw.pop("format", "json"), events=("run.failed",), url=url)
    row, _ = await wh.create_webhook(store, "default", spec, actor="test", targets=targets)
    return row


async def finished(store: Store, dispatcher: wh.Dispatcher, hook: dict[str, Any], delivery_id: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            await dispatcher.run_once()
            row = await store.webhooks.delivery("default", hook["webhook_id"], delivery_id)
            if row["status"] in ("delivered", "failed"):
                return row
            await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------------ the policy


@pytest.mark.parametrize(("url", "why"), REFUSED)
async def test_default_policy_refuses(url: str, why: str) -> None:
    with pytest.raises(TargetRefusedError, match=why) as refused:
        await STRICT.resolve(url)
    assert refused.value.code == "target_refused" and isinstance(refused.value, ValidationError)
    message = str(refused.value)
    assert ALLOW_PRIVATE_ENV in message or "only http and https" in message or "write a.b.c.d" in message


async def test_public_addresses_pass_and_are_pinned(dns: FakeDNS) -> None:
    dns.answers["hooks.example.com"] = [PUBLIC_ADDRESS]
    pinned = await STRICT.resolve("https://user:pw@hooks.example.com:8443/in?x=1")
    assert pinned.address == ipaddress.ip_address(PUBLIC_ADDRESS) and pinned.host == "hooks.example.com"
    url, headers, extensions = pinned.request_args()
    assert url == f"https://user:pw@{PUBLIC_ADDRESS}:8443/in?x=1"
    assert headers == {"Host": "hooks.example.com:8443"} and extensions == {"sni_hostname": "hooks.example.com"}
    literal = await STRICT.resolve(f"http://{PUBLIC_ADDRESS}/hook")
    assert literal.request_args() == (f"http://{PUBLIC_ADDRESS}/hook", {"Host": PUBLIC_ADDRESS}, {})
    assert dns.lookups == ["hooks.example.com"]  # a literal address is not looked up


async def test_a_name_is_judged_by_every_address_it_resolves_to(dns: FakeDNS) -> None:
    dns.answers["sneaky.example.com"] = [PUBLIC_ADDRESS, "127.0.0.1"]
    with pytest.raises(TargetRefusedError, match=r"'sneaky.example.com' resolves to 127.0.0.1"):
        await STRICT.resolve("http://sneaky.example.com/hook")
    dns.answers["rebind.example.com"] = ["::ffff:10.0.0.7"]
    with pytest.raises(TargetRefusedError, match="private"):
        await STRICT.resolve("http://rebind.example.com/hook")
    # an unresolvable name passes the check at creation (the dispatcher's DNS decides), not at delivery
    await STRICT.check("http://nowhere.example.com/hook")
    with pytest.raises(TargetLookupError, match="cannot resolve"):
        await STRICT.resolve("http://nowhere.example.com/hook")


async def test_allow_private_opens_private_ranges_but_not_metadata_or_odd_addresses() -> None:
    for url in (
        "http://127.0.0.1:9/h",
        "http://10.1.2.3/h",
        "http://[::1]/h",
        "http://[fd00::1]/h",
        "http://localhost/h",
    ):
        await PRIVATE_OK.check(url)
    for url, why in [
        ("http://169.254.169.254/", "cloud metadata"),
        ("http://metadata.google.internal/", "local or metadata service"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("file:///etc/passwd", "only http and https"),
    ]:
        with pytest.raises(TargetRefusedError, match=why):
            await PRIVATE_OK.resolve(url)


async def test_allowed_hosts_entries(dns: FakeDNS) -> None:
    policy = TargetPolicy(allowed_hosts=("10.0.0.0/8", "127.0.0.1:9000", "hooks.internal", "169.254.169.254"))
    await policy.check("http://10.200.1.1/h")
    await policy.check("http://127.0.0.1:9000/h")
    with pytest.raises(TargetRefusedError, match="loopback"):
        await policy.resolve("http://127.0.0.1:9001/h")  # the entry names port 9000 only
    with pytest.raises(TargetRefusedError, match="private"):
        await policy.resolve("http://192.168.1.1/h")
    dns.answers["hooks.internal"] = ["192.168.7.7"]
    assert str((await policy.resolve("http://hooks.internal/h")).address) == "192.168.7.7"
    await policy.check("http://169.254.169.254/")  # named exactly: allowed
    with pytest.raises(TargetRefusedError, match="cloud metadata"):
        await TargetPolicy(allowed_hosts=("169.254.0.0/16",), allow_private=True).resolve("http://169.254.169.254/")


def test_policy_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "1")
    monkeypatch.setenv(ALLOWED_HOSTS_ENV, " 10.0.0.0/8, hooks.internal:8443 ,")
    policy = TargetPolicy.from_env()
    assert policy == TargetPolicy(allow_private=True, allowed_hosts=("10.0.0.0/8", "hooks.internal:8443"))
    assert wh.DispatcherConfig.from_env().targets == policy
    assert policy.describe() == "public addresses + private addresses + allowed hosts 10.0.0.0/8, hooks.internal:8443"
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "0")
    monkeypatch.delenv(ALLOWED_HOSTS_ENV)
    assert TargetPolicy.from_env() == TargetPolicy() == wh.DispatcherConfig().targets


# ------------------------------------------------------------------------------ create and change


@pytest.mark.usefixtures("strict_env")
async def test_create_and_change_refuse_private_targets(store: Store, dns: FakeDNS) -> None:
    for url, why in REFUSED:
        if not url.startswith("http"):
            with pytest.raises(ValidationError, match="http:// or https://"):  # refused before any lookup
                await add(store, url)
            continue
        with pytest.raises(TargetRefusedError, match=why):
            await add(store, url)  # the policy comes from the environment: no opt-in there
    dns.answers["inside.example.com"] = ["127.0.0.1"]
    with pytest.raises(TargetRefusedError, match=r"^url: refused 127.0.0.1: it is a loopback address"):
        await add(store, "http://inside.example.com/hook")
    with pytest.raises(TargetRefusedError, match="api_base: refused 10.0.0.5"):
        spec = wh.WebhookSpec(
            name="tg",
            format="telegram",
            events=("run.failed",),
            bot_token="1:SECRET",
            chat_id="5",
            api_base="http://10.0.0.5",
        )
        await wh.create_webhook(store, "default", spec, actor="test")
    assert await store.webhooks.all("default") == []
    # a public target is accepted; changing it to a private one is refused and changes nothing
    dns.answers["hooks.example.com"] = [PUBLIC_ADDRESS]
    hook = await add(store, "https://hooks.example.com/in")
    with pytest.raises(TargetRefusedError, match="private"):
        await wh.update_webhook(store, "default", hook["webhook_id"], {"url": "http://192.168.1.20/in"}, actor="t")
    assert (await store.webhooks.get("default", hook["webhook_id"]))["url_display"] == ("https://hooks.example.com/in")
    # the operator's opt-in, given explicitly
    assert (await add(store, "http://10.1.2.3/in", targets=PRIVATE_OK, name="lan"))["url_display"] == (
        "http://10.1.2.3/in"
    )


# ------------------------------------------------------------------------------------- delivery


async def test_delivery_is_refused_when_the_policy_no_longer_allows_the_target(
    store: Store, rx: WebhookReceiver
) -> None:
    hook = await add(store, f"{rx.url}/hook", targets=PRIVATE_OK)  # allowed when it was made
    queued = await wh.send_test(store, "default", hook["webhook_id"])
    row = await finished(store, wh.Dispatcher(store, config(STRICT)), hook, queued["delivery_id"])
    assert row["status"] == "failed" and row["attempts"] == 1  # final: not retried
    assert row["last_status_code"] is None
    assert (row["last_error"] or "").startswith("refused: refused 127.0.0.1: it is a loopback address")
    assert rx.requests == []
    # allowed again: a redelivery goes out
    await store.webhooks.redeliver("default", hook["webhook_id"], queued["delivery_id"], now=0.0)
    row = await finished(store, wh.Dispatcher(store, config(PRIVATE_OK)), hook, queued["delivery_id"])
    assert row["status"] == "delivered" and len(rx.wait_for(1)) == 1


async def test_dns_that_changes_after_creation_is_caught_at_delivery(
    store: Store, rx: WebhookReceiver, dns: FakeDNS, caplog: pytest.LogCaptureFixture
) -> None:
    dns.answers["hooks.example.com"] = [PUBLIC_ADDRESS]
    port = rx.url.rsplit(":", 1)[1]
    hook = await add(store, f"http://hooks.example.com:{port}/hook")  # public when it was made
    dns.answers["hooks.example.com"] = ["127.0.0.1"]  # ... and now it points inside
    queued = await wh.send_test(store, "default", hook["webhook_id"])
    row = await finished(store, wh.Dispatcher(store, config(STRICT)), hook, queued["delivery_id"])
    assert row["status"] == "failed" and row["attempts"] == 1
    assert "'hooks.example.com' resolves to 127.0.0.1" in (row["last_error"] or "")
    assert rx.requests == [] and "refused" in caplog.text
    # allowed: the request goes to the checked address, with the name in the Host header
    await store.webhooks.redeliver("default", hook["webhook_id"], queued["delivery_id"], now=0.0)
    row = await finished(store, wh.Dispatcher(store, config(PRIVATE_OK)), hook, queued["delivery_id"])
    assert row["status"] == "delivered"
    [req] = rx.wait_for(1)
    assert req.headers["host"] == f"hooks.example.com:{port}" and req.path == "/hook"


async def test_a_name_that_does_not_resolve_is_retried_then_fails(store: Store, dns: FakeDNS) -> None:
    dns.answers["flaky.example.com"] = [PUBLIC_ADDRESS]
    hook = await add(store, "http://flaky.example.com/hook")
    del dns.answers["flaky.example.com"]  # NXDOMAIN from now on: never connected anywhere
    queued = await wh.send_test(store, "default", hook["webhook_id"])
    row = await finished(store, wh.Dispatcher(store, config(STRICT, attempts=2)), hook, queued["delivery_id"])
    assert row["status"] == "failed" and row["attempts"] == 2
    assert "cannot resolve host 'flaky.example.com'" in (row["last_error"] or "")
    assert "gave up after 2 attempts" in (row["last_error"] or "")


async def test_telegram_refusal_does_not_show_the_bot_token(store: Store, rx: WebhookReceiver) -> None:
    spec = wh.WebhookSpec(
        name="tg", format="telegram", events=("run.failed",), bot_token="42:TOPSECRET", chat_id="7", api_base=rx.url
    )
    hook, _ = await wh.create_webhook(store, "default", spec, actor="test", targets=PRIVATE_OK)
    queued = await wh.send_test(store, "default", hook["webhook_id"])
    row = await finished(store, wh.Dispatcher(store, config(STRICT)), hook, queued["delivery_id"])
    assert row["status"] == "failed" and "loopback" in (row["last_error"] or "")
    assert "TOPSECRET" not in str(row) and rx.requests == []
