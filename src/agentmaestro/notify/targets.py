"""Where webhooks may post: public http(s) addresses only, unless an operator allows more (no SSRF).

A webhook target is checked twice:

* when a webhook is created or its target changed (:meth:`TargetPolicy.check`): the scheme, the host name,
  and every address the name resolves to right now. A name that does not resolve is accepted there (the
  dispatcher may see another DNS); the check at delivery is the one that counts;
* before every delivery attempt (:meth:`TargetPolicy.resolve`), against the addresses actually resolved
  then, because DNS answers change. The request is then sent to the checked address (pinned: the ``Host``
  header and TLS SNI carry the name), so a second lookup cannot redirect it. Redirects are never followed.

Refused by default: schemes other than ``http``/``https``; the names ``localhost``, ``*.localhost`` and cloud
metadata names; loopback, private (RFC 1918, IPv6 unique-local), link-local, shared (CGNAT), multicast,
unspecified and reserved addresses, cloud metadata addresses (169.254.169.254 and kin), also inside IPv6
(IPv4-mapped, 6to4, Teredo, NAT64). The address checks are those of the ``http_fetch`` tool
(:func:`agentmaestro.tools.builtin.http.address_problem`).

Operators allow more with two settings (the environment of ``maestro serve`` / ``maestro worker``, read
when the process starts, like the other ``MAESTRO_WEBHOOK_*`` settings):

* ``MAESTRO_WEBHOOK_ALLOW_PRIVATE=1``: loopback, private, link-local and shared addresses (and
  ``localhost``) are allowed. Multicast, unspecified, reserved and metadata addresses stay refused.
* ``MAESTRO_WEBHOOK_ALLOWED_HOSTS``: comma-separated host names, IP addresses or CIDRs, each optionally with
  ``:port`` (``[v6]:port`` for IPv6), e.g. ``hooks.internal,10.1.2.0/24,127.0.0.1:9000``. A host-name entry
  allows that name whatever it resolves to; an address or CIDR entry allows the addresses inside it. A cloud
  metadata address is only allowed by an entry naming exactly that address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from agentmaestro.errors import ValidationError
from agentmaestro.tools.builtin.http import (
    BLOCKED_NAMES,
    METADATA_ADDRESSES,
    address_problem,
    is_ip_literal,
    parse_allow_list,
)

__all__ = [
    "ALLOWED_HOSTS_ENV",
    "ALLOW_PRIVATE_ENV",
    "PinnedTarget",
    "TargetLookupError",
    "TargetPolicy",
    "TargetRefusedError",
]

ALLOW_PRIVATE_ENV = "MAESTRO_WEBHOOK_ALLOW_PRIVATE"
ALLOWED_HOSTS_ENV = "MAESTRO_WEBHOOK_ALLOWED_HOSTS"
RESOLVE_TIMEOUT_S = 5.0
_HINT = f"webhook targets must be public; an operator can allow more with {ALLOW_PRIVATE_ENV}=1 or {ALLOWED_HOSTS_ENV}"
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_TRUE = ("1", "true", "yes", "on")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|\d+)$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefusedError(ValidationError):
    """A webhook target that the policy does not allow (a private address, a file:// URL, ...)."""

    code = "target_refused"


class TargetLookupError(Exception):
    """A target host that did not resolve (temporary: a delivery is retried)."""


@dataclass(frozen=True, kw_only=True)
class PinnedTarget:
    """A checked destination: the request goes to ``address``; ``host`` is what the URL named."""

    url: str
    """The URL as given."""
    host: str
    """Host name or IP address of the URL (IPv6 without brackets)."""
    address: IPAddress
    """The checked address the connection is pinned to."""

    @property
    def is_ip_literal(self) -> bool:
        """The URL named an IP address rather than a host name."""
        return is_ip_literal(self.host)

    def request_args(self) -> tuple[str, dict[str, str], dict[str, Any]]:
        """``(url, headers, extensions)`` of a request pinned to :attr:`address`.

        The URL has the address in place of the name, the ``Host`` header names the original host, and the
        TLS server name (SNI, also what the certificate is checked against) is the original host name.
        """
        original = httpx.URL(self.url)
        pinned = original.copy_with(host=str(self.address))
        host = f"[{self.host}]" if ":" in self.host else self.host
        host_header = host if original.port is None else f"{host}:{original.port}"
        extensions: dict[str, Any] = {}
        if original.scheme == "https" and not self.is_ip_literal:
            extensions["sni_hostname"] = self.host
        return str(pinned), {"Host": host_header}, extensions


def _unmap(addr: IPAddress) -> IPAddress:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _problem(addr: IPAddress) -> str | None:
    """Why ``addr`` is not a public destination (its own kind first, then what it embeds), or None."""
    a = _unmap(addr)
    if a in METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        ("unspecified", a.is_unspecified),
        ("loopback", a.is_loopback),
        ("link-local", a.is_link_local),
        ("multicast", a.is_multicast),
        ("reserved", a.is_reserved),
        ("shared (CGNAT)", isinstance(a, ipaddress.IPv4Address) and a in _CGNAT),
        ("site-local", isinstance(a, ipaddress.IPv6Address) and a.is_site_local),
        ("private", a.is_private),
    )
    for name, hit in checks:
        if hit:
            return f"a {name} address"
    return address_problem(addr)


def _is_private(addr: IPAddress) -> bool:
    """Loopback, private, link-local, site-local or shared: what ``MAESTRO_WEBHOOK_ALLOW_PRIVATE`` opens."""
    a = _unmap(addr)
    if a in METADATA_ADDRESSES:
        return False
    if a.is_loopback:  # before "reserved": ::1 is inside the reserved ::/8
        return True
    if a.is_multicast or a.is_unspecified or a.is_reserved:
        return False
    if isinstance(a, ipaddress.IPv6Address) and a.is_site_local:
        return True
    return a.is_private or a.is_link_local or (isinstance(a, ipaddress.IPv4Address) and a in _CGNAT)


@dataclass(frozen=True, kw_only=True)
class TargetPolicy:
    """Which webhook targets are allowed (module docstring). The default allows public addresses only."""

    allow_private: bool = False
    """Also allow loopback, private, link-local and shared addresses (``MAESTRO_WEBHOOK_ALLOW_PRIVATE``)."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names, addresses and CIDRs (optionally ``:port``) allowed anyway (``MAESTRO_WEBHOOK_ALLOWED_HOSTS``)."""

    @classmethod
    def from_env(cls) -> TargetPolicy:
        """The policy that ``MAESTRO_WEBHOOK_ALLOW_PRIVATE`` and ``MAESTRO_WEBHOOK_ALLOWED_HOSTS`` set."""
        raw = os.environ.get(ALLOWED_HOSTS_ENV, "")
        return cls(
            allow_private=os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in _TRUE,
            allowed_hosts=tuple(e.strip() for e in raw.split(",") if e.strip()),
        )

    def describe(self) -> str:
        """What the policy allows, in a few words (logged when a dispatcher starts)."""
        parts = ["public addresses"]
        if self.allow_private:
            parts.append("private addresses")
        if self.allowed_hosts:
            parts.append("allowed hosts " + ", ".join(self.allowed_hosts))
        return " + ".join(parts)

    # ------------------------------------------------------------------------------- checking

    async def check(self, url: str) -> None:
        """Refuse a target that is not allowed (at creation or change; an unresolvable name passes).

        Raises:
            TargetRefusedError: the scheme, the name, or an address it resolves to is not allowed.
        """
        try:
            await self.resolve(url)
        except TargetLookupError:
            return

    async def resolve(self, url: str) -> PinnedTarget:
        """Check ``url`` and resolve it to an allowed address to connect to (at delivery).

        Raises:
            TargetRefusedError: not allowed (final: a delivery is not retried).
            TargetLookupError: the name did not resolve (temporary).
        """
        scheme, host, port = _parts(url)
        if scheme not in ("http", "https"):
            raise TargetRefusedError(f"refused a {scheme or 'relative'}: URL; only http and https targets are allowed")
        rules = parse_allow_list(self.allowed_hosts)
        allowed_name = _name_allowed(rules, host, port)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
            if _NUMERIC_LABEL.match(host.rsplit(".", 1)[-1]):  # 2130706433, 0x7f.1, 127.1: resolvers disagree
                raise TargetRefusedError(
                    f"refused host {host!r}: an encoded or abbreviated IP address; write a.b.c.d"
                ) from None
        if literal is None and (host in BLOCKED_NAMES or host.endswith(".localhost")) and not allowed_name:
            local = host == "localhost" or host.endswith(".localhost")
            if not (local and self.allow_private):
                raise TargetRefusedError(f"refused host {host!r}: it names a local or metadata service; {_HINT}")
        addrs = [literal] if literal is not None else await _lookup(host, port)
        for addr in addrs:
            problem = _problem(addr)
            if problem is None or self._address_allowed(rules, addr, port, allowed_name):
                continue
            via = "" if literal is not None else f" ({host!r} resolves to {addr})"
            raise TargetRefusedError(f"refused {addr}: it is {problem}{via}; {_HINT}")
        return PinnedTarget(url=url, host=host, address=addrs[0])

    def _address_allowed(self, rules: list[Any], addr: IPAddress, port: int, allowed_name: bool) -> bool:
        plain = _unmap(addr)
        if plain in METADATA_ADDRESSES:  # only an entry naming exactly this address
            return any(
                r.net is not None and r.net.num_addresses == 1 and plain in r.net and (r.port is None or r.port == port)
                for r in rules
            )
        if allowed_name:
            return True
        if self.allow_private and _is_private(addr):
            return True
        return any(
            r.net is not None
            and plain.version == r.net.version
            and plain in r.net
            and (r.port is None or r.port == port)
            for r in rules
        )


def _parts(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL; TargetRefusedError when it has no usable host."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".").lower()
        port = parts.port
    except ValueError:
        raise TargetRefusedError("refused a malformed URL") from None
    scheme = parts.scheme.lower()
    if scheme in ("http", "https") and not host:
        raise TargetRefusedError("refused a URL without a host")
    if "%" in host:
        raise TargetRefusedError("refused a URL whose host is percent-encoded or a scoped IPv6 address")
    return scheme, host, port or (443 if scheme == "https" else 80)


def _name_allowed(rules: Iterable[Any], host: str, port: int) -> bool:
    return any(r.host is not None and r.host == host and (r.port is None or r.port == port) for r in rules)


async def _lookup(host: str, port: int) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise TargetLookupError(f"cannot resolve host {host!r}: {exc or type(exc).__name__}") from None
    addrs: list[IPAddress] = []
    for info in infos:
        raw = str(info[4][0])
        if "%" in raw:
            raise TargetRefusedError(f"refused host {host!r}: it resolves to a scoped IPv6 address; {_HINT}")
        try:
            addr = ipaddress.ip_address(raw)
        except ValueError:
            continue
        if addr not in addrs:
            addrs.append(addr)
    if not addrs:
        raise TargetLookupError(f"host {host!r} did not resolve to any address")
    return addrs
