"""``http_fetch``: fetch a public URL, refusing server-side request forgery.

Every hop (the first URL and each redirect, at most 5) is checked before any connection is made:

* only ``http``/``https``; no userinfo (``user@host``), backslashes, percent-encoding, whitespace or control
  characters in the authority; international names are converted with IDNA first, so look-alike digits such as
  ``①②⑦.0.0.1`` are seen as the IP address they stand for;
* an IP address must be canonical: decimal (``2130706433``), octal (``0177.0.0.1``), hex (``0x7f000001``) and
  short forms (``127.1``) are refused outright, because resolvers disagree about them;
* names such as ``localhost``, ``*.localhost`` and cloud metadata names are refused without being resolved;
* the host is resolved here and *every* address must be public: loopback, private, link-local, multicast,
  reserved, unspecified, shared (CGNAT) and cloud metadata addresses are refused, also when embedded in IPv6
  (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64);
* the connection goes to the checked address (pinned; the ``Host`` header and TLS SNI carry the name), so DNS
  rebinding between check and connect cannot redirect it.

Operators permit specific private destinations with an allow-list: ``MAESTRO_HTTP_ALLOW`` (comma-separated) and
``ToolContext.http_allow``. An entry is a host name, an IP address or a CIDR, optionally with ``:port``
(``[v6]:port`` for IPv6), e.g. ``wiki.internal``, ``10.0.0.0/8``, ``127.0.0.1:8080``. Cloud metadata addresses are
only allowed by an entry naming exactly that address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Literal

import httpx
from pydantic import Field

from agentmaestro.core.risk import RiskLevel
from agentmaestro.errors import ToolError
from agentmaestro.tools.context import ToolContext
from agentmaestro.tools.registry import tool

__all__ = ["ALLOW_ENV", "FetchRefusedError", "Target", "check_url", "http_fetch", "parse_allow_list"]

logger = logging.getLogger(__name__)

ALLOW_ENV = "MAESTRO_HTTP_ALLOW"
MAX_REDIRECTS = 5
MAX_BYTES = 5_000_000
TOTAL_TIMEOUT_S = 30.0
RESOLVE_TIMEOUT_S = 5.0
OUTPUT_CHARS = 100_000
USER_AGENT = "AgentMaestro-http_fetch/0.1"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "169.254.169.253", "fd00:ec2::254", "100.100.100.200")
)
BLOCKED_NAMES = frozenset(
    {
        "localhost",
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_V4_COMPAT = ipaddress.ip_network("::/96")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_AUTHORITY_OK = re.compile(r"^[A-Za-z0-9.\-_:\[\]]+$")
_LABEL_OK = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_CANONICAL_V4 = re.compile(r"^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|\d+)$")
_BINARY_TYPES = (
    "image/",
    "audio/",
    "video/",
    "font/",
    "application/octet-stream",
    "application/zip",
    "application/pdf",
)


class FetchRefusedError(ToolError):
    """A URL (or a redirect) leads somewhere http_fetch must not go."""


@dataclass(frozen=True)
class _Allow:
    host: str | None
    net: IPNetwork | None
    port: int | None


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` (as in a URL, IPv6 without brackets) is an IP address rather than a host name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, kw_only=True)
class Target:
    """A checked destination: where to connect and how to present the request."""

    scheme: str
    """``http`` or ``https``."""
    host: str
    """Host name (IDNA, lower case) or canonical IP address as written (IPv6 without brackets)."""
    port: int
    """Destination port."""
    target: str
    """Path and query (``/`` when empty), without fragment."""
    address: IPAddress
    """The checked address the connection is pinned to."""

    @property
    def is_ip_literal(self) -> bool:
        """The URL named an IP address rather than a host name."""
        return is_ip_literal(self.host)

    @property
    def host_header(self) -> str:
        """Value of the ``Host`` header."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The URL as the caller named it."""
        return f"{self.scheme}://{self.host_header}{self.target}"

    @property
    def pinned_url(self) -> str:
        """The URL with the checked address in place of the host name."""
        addr = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{self.scheme}://{addr}:{self.port}{self.target}"


# --- allow-list -------------------------------------------------------------------------------------------------------


def parse_allow_list(entries: Iterable[str]) -> list[_Allow]:
    """Parse allow-list entries (host, IP, CIDR, each optionally with ``:port``); malformed ones are ignored."""
    out: list[_Allow] = []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        try:
            out.append(_parse_allow(entry))
        except ValueError:
            logger.warning("ignoring malformed http allow-list entry %r", raw)
    return out


def _parse_allow(entry: str) -> _Allow:
    port: int | None = None
    if entry.startswith("["):
        inner, _, rest = entry[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(entry)
            port = _parse_port(rest[1:])
        entry = inner
    elif entry.count(":") == 1:
        entry, port_text = entry.split(":")
        port = _parse_port(port_text)
    if "/" in entry:
        return _Allow(host=None, net=ipaddress.ip_network(entry, strict=False), port=port)
    try:
        addr = ipaddress.ip_address(entry)
    except ValueError:
        name = entry.rstrip(".")
        if not name or not all(_LABEL_OK.match(label) for label in name.split(".")):
            raise
        return _Allow(host=name, net=None, port=port)
    return _Allow(host=None, net=ipaddress.ip_network(addr), port=port)


def _parse_port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port {text!r}")
    return int(text)


def _allowed(rules: list[_Allow], host: str, addr: IPAddress | None, port: int, *, exact: bool = False) -> bool:
    plain = _unmap(addr) if addr is not None else None
    for rule in rules:
        if rule.port is not None and rule.port != port:
            continue
        if rule.host is not None and rule.host == host and not exact:
            return True
        if rule.net is not None and plain is not None and plain.version == rule.net.version and plain in rule.net:
            if not exact or rule.net.num_addresses == 1:
                return True
    return False


def _context_allow_list(ctx: ToolContext | None) -> list[_Allow]:
    entries = [e for e in os.environ.get(ALLOW_ENV, "").split(",") if e.strip()]
    if ctx is not None:
        entries += list(getattr(ctx, "http_allow", ()))
    return parse_allow_list(entries)


# --- checks -----------------------------------------------------------------------------------------------------------


def _unmap(addr: IPAddress) -> IPAddress:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def address_problem(addr: IPAddress) -> str | None:
    """Why ``addr`` is not a public destination, or None when it is."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            return "a scoped IPv6 address"
        embedded: list[tuple[str, ipaddress.IPv4Address]] = []
        if addr.ipv4_mapped is not None:
            embedded.append(("IPv4-mapped", addr.ipv4_mapped))
        if addr.sixtofour is not None:
            embedded.append(("6to4", addr.sixtofour))
        if addr.teredo is not None:
            embedded += [("Teredo", addr.teredo[0]), ("Teredo", addr.teredo[1])]
        if any(addr in net for net in _NAT64) or addr in _V4_COMPAT:
            embedded.append(("IPv4-embedding", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)))
        for kind, v4 in embedded:
            problem = address_problem(v4)
            if problem:
                return f"an {kind} IPv6 address of {v4} ({problem})"
    if addr in METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        ("loopback", addr.is_loopback),
        ("unspecified", addr.is_unspecified),
        ("link-local", addr.is_link_local),
        ("multicast", addr.is_multicast),
        ("private", addr.is_private),
        ("reserved", addr.is_reserved),
        ("site-local", isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local),
        ("shared (CGNAT)", isinstance(addr, ipaddress.IPv4Address) and addr in _SHARED),
    )
    for name, hit in checks:
        if hit:
            return f"a {name} address"
    if not addr.is_global:
        return "not a public address"
    return None


def _split_url(url: str) -> tuple[str, str, str]:
    """Split into (scheme, authority, path+query), refusing anything ambiguous."""
    if not isinstance(url, str) or not url:
        raise FetchRefusedError("the URL is empty")
    if len(url) > 8192:
        raise FetchRefusedError("the URL is too long (at most 8192 characters)")
    if any(ord(c) < 0x21 or c == "\x7f" for c in url):
        raise FetchRefusedError(f"refused {url[:200]!r}: whitespace or control characters in the URL")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        shown = scheme if sep else url.partition(":")[0]
        raise FetchRefusedError(f"refused {url[:200]!r}: only http and https URLs can be fetched (not {shown!r})")
    end = min((i for i in (rest.find(c) for c in "/?#\\") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "\\" in tail.partition("?")[0]:
        raise FetchRefusedError(f"refused {url[:200]!r}: backslashes in the URL")
    target = tail.partition("#")[0]
    if not target.startswith("/"):
        target = "/" + target
    return scheme, authority, target


def _host_and_port(scheme: str, authority: str, url: str) -> tuple[str, int]:
    shown = repr(url[:200])
    if not authority:
        raise FetchRefusedError(f"refused {shown}: no host")
    if "@" in authority:
        raise FetchRefusedError(f"refused {shown}: credentials (user@host) in URLs are not allowed")
    if "%" in authority:
        raise FetchRefusedError(f"refused {shown}: percent-encoded host names are not allowed")
    if not authority.isascii():
        try:
            authority = authority.encode("idna").decode("ascii")  # nameprep (NFKC) per label, IDN -> punycode
        except UnicodeError:
            raise FetchRefusedError(f"refused {shown}: invalid international host name") from None
    if not _AUTHORITY_OK.match(authority):
        raise FetchRefusedError(f"refused {shown}: unexpected characters in the host")
    port_text = ""
    if authority.startswith("["):
        host, bracket, after = authority[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise FetchRefusedError(f"refused {shown}: malformed IPv6 host")
        port_text = after[1:]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise FetchRefusedError(f"refused {shown}: malformed IPv6 address") from None
    else:
        if authority.count(":") > 1 or "[" in authority or "]" in authority:
            raise FetchRefusedError(f"refused {shown}: IPv6 addresses must be in brackets")
        host, _, port_text = authority.partition(":")
        host = host.lower()
        if host.endswith("."):
            host = host[:-1]
        if not host:
            raise FetchRefusedError(f"refused {shown}: no host")
        labels = host.split(".")
        if _NUMERIC_LABEL.match(labels[-1]) and not _CANONICAL_V4.match(host):
            raise FetchRefusedError(
                f"refused {shown}: {host!r} is an encoded or abbreviated IP address; write it as a.b.c.d"
            )
        if not _CANONICAL_V4.match(host) and not all(_LABEL_OK.match(label) for label in labels):
            raise FetchRefusedError(f"refused {shown}: {host!r} is not a valid host name")
    if port_text:
        try:
            port = _parse_port(port_text)
        except ValueError:
            raise FetchRefusedError(f"refused {shown}: invalid port {port_text!r}") from None
    else:
        port = 443 if scheme == "https" else 80
    return host, port


async def _resolve(host: str, port: int) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise FetchRefusedError(f"cannot resolve host {host!r}: {exc}") from None
    addrs: list[IPAddress] = []
    for info in infos:
        raw = str(info[4][0])
        try:
            addr = ipaddress.ip_address(raw.partition("%")[0])
        except ValueError:
            continue
        if "%" in raw:
            raise FetchRefusedError(f"host {host!r} resolves to a scoped IPv6 address")
        if addr not in addrs:
            addrs.append(addr)
    if not addrs:
        raise FetchRefusedError(f"host {host!r} did not resolve to any address")
    return addrs


async def check_url(url: str, ctx: ToolContext | None = None) -> Target:
    """Check ``url`` and resolve it to a pinned destination, or refuse.

    Args:
        url: An absolute http(s) URL.
        ctx: The call's context, for its ``http_allow`` entries (the ``MAESTRO_HTTP_ALLOW`` entries always apply).

    Returns:
        The checked destination, pinned to a resolved address that passed every check.

    Raises:
        FetchRefusedError: The URL is malformed, ambiguous or leads to a non-public address that is not allow-listed.
    """
    scheme, authority, target = _split_url(url)
    host, port = _host_and_port(scheme, authority, url)
    rules = _context_allow_list(ctx)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is None and (host in BLOCKED_NAMES or host.endswith(".localhost")):
        if not _allowed(rules, host, None, port):
            raise FetchRefusedError(f"refused {url[:200]!r}: {host!r} names a local or metadata service")
    addrs = [literal] if literal is not None else await _resolve(host, port)
    for addr in addrs:
        problem = address_problem(addr)
        if problem is None:
            continue
        exact = _unmap(addr) in METADATA_ADDRESSES
        if not _allowed(rules, host, addr, port, exact=exact):
            via = "" if literal is not None else f" ({host!r} resolves to {addr})"
            raise FetchRefusedError(
                f"refused {url[:200]!r}: {addr} is {problem}{via}; it is not on the allow-list ({ALLOW_ENV})"
            )
    return Target(scheme=scheme, host=host, port=port, target=target, address=addrs[0])


# --- the tool ---------------------------------------------------------------------------------------------------------


async def _fetch(url: str, ctx: ToolContext | None, method: str, max_bytes: int) -> str:
    current = url
    async with httpx.AsyncClient(
        trust_env=False, follow_redirects=False, timeout=httpx.Timeout(10.0), verify=True
    ) as client:
        for hop in range(MAX_REDIRECTS + 1):
            target = await check_url(current, ctx)
            extensions = {} if target.is_ip_literal or target.scheme != "https" else {"sni_hostname": target.host}
            request = client.build_request(
                method,
                target.pinned_url,
                headers={"Host": target.host_header, "User-Agent": USER_AGENT, "Accept": "*/*"},
                extensions=extensions,
            )
            if request.url.host != str(target.address):
                raise FetchRefusedError(f"refused {current[:200]!r}: the URL could not be pinned to its address")
            client.cookies.clear()
            response = await client.send(request, stream=True)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    if hop == MAX_REDIRECTS:
                        raise FetchRefusedError(f"too many redirects (more than {MAX_REDIRECTS})")
                    try:
                        current = str(httpx.URL(target.url).join(location.strip()))
                    except httpx.InvalidURL:
                        raise FetchRefusedError(f"redirect to an invalid URL {location[:200]!r}") from None
                    continue
                body, truncated = await _read_body(response, max_bytes)
                return _describe(target.url, response, body, truncated, method)
            finally:
                await response.aclose()
    raise FetchRefusedError(f"too many redirects (more than {MAX_REDIRECTS})")  # pragma: no cover


async def _read_body(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    chunks = bytearray()
    async for chunk in response.aiter_bytes():
        chunks += chunk
        if len(chunks) > max_bytes:
            return bytes(chunks[:max_bytes]), True
    return bytes(chunks), False


def _describe(url: str, response: httpx.Response, body: bytes, truncated: bool, method: str) -> str:
    content_type = response.headers.get("content-type", "")
    lines = [f"HTTP {response.status_code} {response.reason_phrase}".rstrip(), f"url: {url}"]
    if content_type:
        lines.append(f"content-type: {content_type}")
    if method == "HEAD":
        if "content-length" in response.headers:
            lines.append(f"content-length: {response.headers['content-length']}")
        return "\n".join(lines)
    if truncated:
        lines.append(f"[body truncated at {len(body)} bytes]")
    if content_type.lower().startswith(_BINARY_TYPES) or b"\x00" in body[:4096]:
        lines.append(f"\n[binary body of {len(body)} bytes not shown]")
        return "\n".join(lines)
    charset = response.charset_encoding or "utf-8"
    try:
        text = body.decode(charset, errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    return "\n".join(lines) + "\n\n" + text


@tool(
    risk=RiskLevel.ELEVATED,
    idempotent=True,
    timeout_s=TOTAL_TIMEOUT_S + 5,
    max_output_chars=OUTPUT_CHARS,
    redact_output=True,
)
async def http_fetch(
    url: str,
    ctx: ToolContext,
    method: Literal["GET", "HEAD"] = "GET",
    max_bytes: Annotated[int, Field(ge=1, le=MAX_BYTES)] = 1_000_000,
) -> str:
    """Fetch a public http(s) URL and return its status, content type and text body.

    Private, loopback and cloud metadata addresses are refused unless an operator allow-listed them.

    Args:
        url: Absolute http or https URL.
        ctx: Call context (injected).
        method: GET, or HEAD for headers only.
        max_bytes: Body bytes to read at most.
    """
    try:
        async with asyncio.timeout(TOTAL_TIMEOUT_S):
            return await _fetch(url, ctx, method, max_bytes)
    except TimeoutError:
        raise ToolError(f"fetching {url[:200]!r} took longer than {TOTAL_TIMEOUT_S:g}s") from None
    except httpx.HTTPError as exc:
        raise ToolError(f"fetching {url[:200]!r} failed: {type(exc).__name__}: {exc}") from None
