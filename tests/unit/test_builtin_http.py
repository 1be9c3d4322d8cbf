"""http_fetch: an SSRF corpus against a canary on 127.0.0.1 (which must see 0 requests), and ordinary fetches.

All traffic stays on 127.0.0.1: name resolution is patched so that test names resolve to chosen addresses and any
other name fails without a DNS query; public addresses appear only in checks that refuse before connecting, or with
the connection itself stubbed.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from agentmaestro.core.risk import RiskLevel
from agentmaestro.tools import ToolResult
from agentmaestro.tools.builtin import http_fetch
from agentmaestro.tools.builtin.http import ALLOW_ENV, FetchRefusedError, address_problem, check_url, parse_allow_list
from agentmaestro.tools.context import ToolContext

pytestmark = pytest.mark.anyio


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.requests = []  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list[tuple[str, str, str]]:
        return self.httpd.requests  # type: ignore[attr-defined,no-any-return]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> None:
        self.server.requests.append((self.command, self.path, self.headers.get("Host", "")))  # type: ignore[attr-defined]


class CanaryHandler(_Quiet):
    def _any(self) -> None:
        self._record()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"CANARY-REACHED")

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = _any


class AllowedHandler(_Quiet):
    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8", **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._record()
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/ok":
            self._send(200, b"hello from the allowed server")
        elif url.path == "/host":
            self._send(200, f"host={self.headers.get('Host')}".encode())
        elif url.path == "/redirect":
            code = int(query.get("code", ["302"])[0])
            self._send(code, b"", Location=query["to"][0])
        elif url.path.startswith("/chain/"):
            n = int(url.path.rsplit("/", 1)[1])
            if n == 0:
                self._send(200, b"end of chain")
            else:
                self._send(302, b"", Location=f"/chain/{n - 1}")
        elif url.path == "/big":
            self._send(200, b"x" * 3_000_000)
        elif url.path == "/secret":
            self._send(200, b"token: ghp_abcdefghijklmnopqrstuvwxyz0123456789 ok")
        elif url.path == "/binary":
            self._send(200, b"\x89PNG\r\n\x1a\n\x00\x00", ctype="image/png")
        else:
            self._send(404, b"not found")


@pytest.fixture(scope="module")
def canary() -> Iterator[_Server]:
    server = _Server(CanaryHandler)
    yield server
    server.close()
    assert server.requests == [], f"the canary was reached: {server.requests}"


@pytest.fixture(scope="module")
def allowed() -> Iterator[_Server]:
    server = _Server(AllowedHandler)
    yield server
    server.close()


FAKE_DNS: dict[str, list[str]] = {}
RESOLVED: list[str] = []


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch, canary: _Server) -> Iterator[dict[str, list[str]]]:
    """Resolve test names from FAKE_DNS; IP literals as usual; any other name fails (no real DNS query)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            ipaddress.ip_address(name.partition("%")[0])
        except ValueError:
            pass
        else:
            return real(host, port, family, type, proto, flags)
        RESOLVED.append(name)
        if name not in FAKE_DNS:
            raise socket.gaierror(socket.EAI_NONAME, f"test resolver: unknown name {name}")
        out = []
        for addr in FAKE_DNS[name]:
            ip = ipaddress.ip_address(addr)
            if ip.version == 6:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (addr, int(port or 0), 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, int(port or 0))))
        return out

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    FAKE_DNS.clear()
    RESOLVED.clear()
    FAKE_DNS.update(
        {
            "evil.test": ["127.0.0.1"],
            "mixed.test": ["93.184.216.34", "127.0.0.1"],
            "mapped.test": ["::ffff:127.0.0.1"],
            "meta.test": ["169.254.169.254"],
            "v6loop.test": ["::1"],
            "private.test": ["10.1.2.3"],
            "good.test": ["127.0.0.1"],
        }
    )
    yield FAKE_DNS
    assert canary.requests == [], f"the canary was reached: {canary.requests}"


@pytest.fixture
def ctx(tmp_path: Any, allowed: _Server) -> ToolContext:
    # Only the allowed server's exact address and port: the canary shares the address but not the port.
    return ToolContext(
        run_id="run-1", workspace_id="ws", agent="fetcher", workdir=tmp_path, http_allow=(f"127.0.0.1:{allowed.port}",)
    )


async def fetch(ctx: ToolContext, url: str, **kw: Any) -> ToolResult:
    return await http_fetch.invoke({"url": url, **kw}, context=ctx)


# --- the SSRF corpus --------------------------------------------------------------------------------------------------

# {C}: canary port, {A}: allowed port. Every URL must be refused; none may reach the canary.
DIRECT = [
    "http://127.0.0.1:{C}/",
    "http://localhost:{C}/",
    "http://LOCALHOST:{C}/",
    "http://localhost.:{C}/",
    "http://foo.localhost:{C}/",
    "http://2130706433:{C}/",
    "http://0177.0.0.1:{C}/",
    "http://0x7f000001:{C}/",
    "http://0X7F.0.0.1:{C}/",
    "http://127.1:{C}/",
    "http://127.0.1:{C}/",
    "http://0:{C}/",
    "http://0.0.0.0:{C}/",
    "http://017700000001:{C}/",
    "http://127.000.000.001:{C}/",
    "http://[::1]:{C}/",
    "http://[0:0:0:0:0:0:0:1]:{C}/",
    "http://[::ffff:127.0.0.1]:{C}/",
    "http://[::ffff:7f00:1]:{C}/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]:{C}/",
    "http://[::127.0.0.1]:{C}/",
    "http://[::]:{C}/",
    "http://[64:ff9b::7f00:1]:{C}/",
    "http://[2002:7f00:1::]:{C}/",
    "http://[fe80::1%25lo]:{C}/",
    "http://::1:{C}/",
    "http://127.0.0.1:{A}@127.0.0.1:{C}/",
    "http://user:pass@127.0.0.1:{C}/",
    "http://127.0.0.1:{A}\\@127.0.0.1:{C}/",
    "http://127.0.0.1:{C}#@127.0.0.1:{A}/",
    "http://127.0.0.1:{C}?@127.0.0.1:{A}/",
    "http://%31%32%37.0.0.1:{C}/",
    "http://\u2460\u2461\u2466.0.0.1:{C}/",
    "http://127\u30020\u30020\u30021:{C}/",
    "http://127.0.0.1%00.example.com:{C}/",
    " http://127.0.0.1:{C}/",
    "http://127.0.0.1:{C}/ x",
    "http://127.0.0.1\t:{C}/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:{C}/_GET%20/",
    "ftp://127.0.0.1:{C}/",
    "dict://127.0.0.1:{C}/",
    "http:/127.0.0.1:{C}/",
    "//127.0.0.1:{C}/",
    "http://127.0.0.1:{C}:{A}/",
    "http://[::1]:{C}:{A}/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata/computeMetadata/v1/",
    "http://100.100.100.200/latest/meta-data/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.0.1/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://198.18.0.1/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[fc00::1]/",
    "http://[ff02::1]/",
    "http://[fe80::1]/",
    "http://evil.test:{C}/",
    "http://mixed.test:{C}/",
    "http://mapped.test:{C}/",
    "http://meta.test/",
    "http://v6loop.test:{C}/",
    "http://private.test/",
    "http://unknown-name.test:{C}/",
]
REDIRECT_TARGETS = [
    ("302", "http://127.0.0.1:{C}/"),
    ("301", "http://127.0.0.1:{C}/"),
    ("307", "http://127.0.0.1:{C}/"),
    ("308", "http://127.0.0.1:{C}/"),
    ("303", "http://localhost:{C}/"),
    ("302", "http://[::1]:{C}/"),
    ("302", "http://[::ffff:127.0.0.1]:{C}/"),
    ("302", "http://2130706433:{C}/"),
    ("302", "http://0x7f000001:{C}/"),
    ("302", "http://169.254.169.254/latest/meta-data/"),
    ("302", "//127.0.0.1:{C}/"),
    ("302", "file:///etc/passwd"),
    ("302", "http://evil.test:{C}/"),
    ("302", "http://127.0.0.1:{A}@127.0.0.1:{C}/"),
    ("302", "http://0.0.0.0:{C}/"),
]


def _fill(url: str, canary: _Server, allowed: _Server) -> str:
    return url.replace("{C}", str(canary.port)).replace("{A}", str(allowed.port))


def test_the_corpus_is_large_enough() -> None:
    assert len(DIRECT) + len(REDIRECT_TARGETS) + 2 >= 50


@pytest.mark.parametrize("template", DIRECT)
async def test_direct_attempts_are_refused(template: str, ctx: ToolContext, canary: _Server, allowed: _Server) -> None:
    url = _fill(template, canary, allowed)
    result = await fetch(ctx, url)
    assert result.is_error, result.content
    assert "CANARY" not in result.content
    assert canary.requests == []


@pytest.mark.parametrize(("code", "template"), REDIRECT_TARGETS)
async def test_redirects_to_private_targets_are_refused(
    code: str, template: str, ctx: ToolContext, canary: _Server, allowed: _Server
) -> None:
    target = _fill(template, canary, allowed)
    url = str(httpx.URL(f"http://127.0.0.1:{allowed.port}/redirect", params={"to": target, "code": code}))
    result = await fetch(ctx, url)
    assert result.is_error, result.content
    assert "CANARY" not in result.content
    assert canary.requests == []


async def test_two_hop_redirect_to_the_canary_is_refused(ctx: ToolContext, canary: _Server, allowed: _Server) -> None:
    inner = str(httpx.URL("/redirect", params={"to": f"http://127.0.0.1:{canary.port}/"}))
    url = str(httpx.URL(f"http://127.0.0.1:{allowed.port}/redirect", params={"to": inner}))
    result = await fetch(ctx, url)
    assert result.is_error and "refused" in result.content
    assert canary.requests == []


async def test_too_many_redirects(ctx: ToolContext, allowed: _Server) -> None:
    ok = await fetch(ctx, f"http://127.0.0.1:{allowed.port}/chain/5")
    assert not ok.is_error and ok.content.endswith("end of chain")
    too_many = await fetch(ctx, f"http://127.0.0.1:{allowed.port}/chain/6")
    assert too_many.is_error and "too many redirects" in too_many.content


async def test_refusals_explain_themselves(ctx: ToolContext, canary: _Server) -> None:
    cases = {
        f"http://127.0.0.1:{canary.port}/": "is a loopback address",
        "http://2130706433/": "encoded or abbreviated IP address",
        "http://169.254.169.254/": "cloud metadata address",
        "http://[::ffff:10.0.0.1]/": "IPv4-mapped IPv6 address of 10.0.0.1",
        "http://u@example.com/": "credentials",
        "file:///etc/passwd": "only http and https",
        "http://localhost/": "names a local or metadata service",
        "http://mixed.test/": "'mixed.test' resolves to 127.0.0.1",
    }
    for url, reason in cases.items():
        result = await fetch(ctx, url)
        assert result.is_error and reason in result.content, (url, result.content)


# --- allowed fetches --------------------------------------------------------------------------------------------------


def test_risk_and_flags() -> None:
    assert http_fetch.risk is RiskLevel.ELEVATED and http_fetch.idempotent
    assert set(http_fetch.parameters["properties"]) == {"url", "method", "max_bytes"}


async def test_fetch_from_an_allow_listed_server(ctx: ToolContext, allowed: _Server) -> None:
    result = await fetch(ctx, f"http://127.0.0.1:{allowed.port}/ok")
    assert not result.is_error, result.content
    assert result.content == (
        f"HTTP 200 OK\nurl: http://127.0.0.1:{allowed.port}/ok\ncontent-type: text/plain; charset=utf-8\n\n"
        "hello from the allowed server"
    )


async def test_same_server_redirect_is_followed(ctx: ToolContext, allowed: _Server) -> None:
    result = await fetch(ctx, f"http://127.0.0.1:{allowed.port}/redirect?to=/ok")
    assert not result.is_error and result.content.endswith("hello from the allowed server")


async def test_connection_is_pinned_and_host_header_kept(ctx: ToolContext, allowed: _Server) -> None:
    """A name is resolved once per hop and the checked address is used: rebinding has nothing to swap."""
    calls = {"n": 0}
    FAKE_DNS["rebind.test"] = ["127.0.0.1"]
    real = socket.getaddrinfo

    def once(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.test":
            calls["n"] += 1
            if calls["n"] > 1:
                raise AssertionError("resolved twice: the connection was not pinned")
        return real(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "getaddrinfo", once)
        result = await fetch(ctx, f"http://rebind.test:{allowed.port}/host")
    assert not result.is_error, result.content
    assert result.content.endswith(f"host=rebind.test:{allowed.port}")
    assert calls["n"] == 1


async def test_https_is_pinned_with_sni(ctx: ToolContext, monkeypatch: pytest.MonkeyPatch) -> None:
    FAKE_DNS["tls.test"] = ["93.184.216.34"]
    seen: list[httpx.Request] = []

    async def no_network(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        seen.append(request)
        raise httpx.ConnectError("stubbed: no traffic leaves this test", request=request)

    monkeypatch.setattr(httpx.AsyncClient, "send", no_network)
    result = await fetch(ctx, "https://tls.test/path?q=1")
    assert result.is_error and "ConnectError" in result.content
    (request,) = seen
    assert str(request.url) == "https://93.184.216.34/path?q=1"
    assert request.headers["Host"] == "tls.test"
    assert request.extensions["sni_hostname"] == "tls.test"


async def test_caps_head_binary_and_redaction(ctx: ToolContext, allowed: _Server) -> None:
    base = f"http://127.0.0.1:{allowed.port}"
    big = await fetch(ctx, f"{base}/big", max_bytes=1000)
    assert "[body truncated at 1000 bytes]" in big.content
    assert big.content.endswith("x" * 1000)
    default = await fetch(ctx, f"{base}/big")
    assert len(default.content) <= http_fetch.max_output_chars + 100
    head = await fetch(ctx, f"{base}/ok", method="HEAD")
    assert head.content.endswith("content-length: 29")
    assert (await fetch(ctx, f"{base}/ok", method="POST")).is_error
    binary = await fetch(ctx, f"{base}/binary")
    assert "[binary body of 10 bytes not shown]" in binary.content
    secret = await fetch(ctx, f"{base}/secret")
    assert "ghp_abc" not in secret.content and "token: [REDACTED] ok" in secret.content
    missing = await fetch(ctx, f"{base}/nope")
    assert not missing.is_error and missing.content.startswith("HTTP 404")


async def test_allow_list_from_the_environment(
    tmp_path: Any, allowed: _Server, canary: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = ToolContext(run_id="r", workspace_id="w", agent="a", workdir=tmp_path)
    assert (await fetch(plain, f"http://127.0.0.1:{allowed.port}/ok")).is_error
    monkeypatch.setenv(ALLOW_ENV, f" bogus entry!!, good.test:{allowed.port} ")
    assert (await fetch(plain, f"http://127.0.0.1:{allowed.port}/ok")).is_error  # the name, not the address
    ok = await fetch(plain, f"http://good.test:{allowed.port}/host")
    assert not ok.is_error and ok.content.endswith(f"host=good.test:{allowed.port}")
    assert (await fetch(plain, f"http://good.test:{canary.port}/")).is_error


async def test_metadata_needs_an_exact_entry(tmp_path: Any) -> None:
    broad = ToolContext(run_id="r", workspace_id="w", agent="a", workdir=tmp_path, http_allow=("169.254.0.0/16",))
    with pytest.raises(FetchRefusedError, match="cloud metadata"):
        await check_url("http://169.254.169.254/", broad)
    assert (await check_url("http://169.254.1.1/", broad)).port == 80
    by_name = ToolContext(run_id="r", workspace_id="w", agent="a", workdir=tmp_path, http_allow=("meta.test",))
    with pytest.raises(FetchRefusedError, match="cloud metadata"):
        await check_url("http://meta.test/", by_name)
    exact = ToolContext(run_id="r", workspace_id="w", agent="a", workdir=tmp_path, http_allow=("169.254.169.254:80",))
    target = await check_url("http://169.254.169.254/latest", exact)
    assert target.pinned_url == "http://169.254.169.254:80/latest"


def test_parse_allow_list() -> None:
    rules = parse_allow_list(["example.internal", "10.0.0.0/8", "127.0.0.1:8080", "[::1]:9000", "fd00::/8", "", "a b"])
    assert [(r.host, str(r.net) if r.net else None, r.port) for r in rules] == [
        ("example.internal", None, None),
        (None, "10.0.0.0/8", None),
        (None, "127.0.0.1/32", 8080),
        (None, "::1/128", 9000),
        (None, "fd00::/8", None),
    ]


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("100.64.1.1", "shared"),
        ("0.0.0.0", "unspecified"),
        ("::ffff:192.168.1.1", "IPv4-mapped"),
        ("2002:c0a8:101::", "6to4"),
        ("64:ff9b::a00:1", "IPv4-embedding"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("fe80::1", "link-local"),
        ("ff02::1", "multicast"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_problem(address: str, problem: str | None) -> None:
    found = address_problem(ipaddress.ip_address(address))
    assert (found is None) if problem is None else (found is not None and problem in found), found
