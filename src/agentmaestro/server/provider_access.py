"""Which model and embedder providers an API caller may name: the operator's allow-list and loopback switch.

A request that names a model (``POST /v1/workflows/generate {"model": ...}``) or an embedder (``POST
/v1/knowledge/collections {"embedder": ...}``) makes the *server* call that provider with the caller's text. The
operator decides which providers callers may name:

==================================  ===================================================================================
``MAESTRO_ALLOWED_PROVIDERS``       comma-separated provider names callers may use (``openai,anthropic,lexical``);
                                    unset or empty: every provider
``MAESTRO_API_LOOPBACK_PROVIDERS``  ``1``: callers may also name a provider whose endpoint is on a loopback, private
                                    or link-local address (an Ollama on this machine, a vLLM in the LAN). Default:
                                    off, so a tenant cannot make the server call ``127.0.0.1:11434``
==================================  ===================================================================================

The checks apply to API callers only: the operator's own CLI and SDK calls, agents and roles defined by the
operator (``role:NAME``, ``MAESTRO_EMBEDDER``) are theirs to choose.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from agentmaestro.errors import ConfigError

__all__ = [
    "ALLOWED_PROVIDERS_ENV",
    "LOOPBACK_PROVIDERS_ENV",
    "ProviderAccess",
    "ProviderNotAllowedError",
    "is_local_endpoint",
]

ALLOWED_PROVIDERS_ENV = "MAESTRO_ALLOWED_PROVIDERS"
"""Comma-separated providers API callers may name; unset or empty: every provider."""
LOOPBACK_PROVIDERS_ENV = "MAESTRO_API_LOOPBACK_PROVIDERS"
"""``1`` lets API callers name providers whose endpoint is on a loopback, private or link-local address."""

_LOCAL_HOSTNAMES = frozenset({"localhost", "host.docker.internal"})


class ProviderNotAllowedError(ConfigError):
    """An API caller named a provider the operator has not opened to API callers."""

    code = "provider_not_allowed"


def _provider(spec: str) -> str:
    return spec.strip().partition(":")[0].strip().lower()


def _local_address(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_private or address.is_link_local or address.is_unspecified


async def is_local_endpoint(url: str) -> bool:
    """Whether ``url``'s host is (or resolves to) a loopback, private, link-local or unspecified address.

    A name that does not resolve counts as not local (the call would fail anyway); one that resolves to any local
    address counts as local.
    """
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if not host:
        return False
    if host in _LOCAL_HOSTNAMES or host.endswith((".localhost", ".local")) or _local_address(host):
        return True
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return any(_local_address(str(info[4][0])) for info in infos)


@dataclass(frozen=True, kw_only=True)
class ProviderAccess:
    """The operator's rules for providers named by API callers (see the module docs)."""

    allowed: frozenset[str] | None = None
    """Providers API callers may name (``openai``, ``ollama``, ``lexical``, ...); None: every provider."""
    loopback: bool = False
    """Whether API callers may name a provider whose endpoint is on a loopback, private or link-local address."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProviderAccess:
        """Read :data:`ALLOWED_PROVIDERS_ENV` and :data:`LOOPBACK_PROVIDERS_ENV` (default: the process environment)."""
        env = os.environ if environ is None else environ
        names = {p.strip().lower() for p in env.get(ALLOWED_PROVIDERS_ENV, "").split(",") if p.strip()}
        return cls(
            allowed=frozenset(names) if names else None,
            loopback=env.get(LOOPBACK_PROVIDERS_ENV, "").strip() == "1",
        )

    async def check_model(self, spec: str) -> None:
        """Refuse a model string an API caller may not name; ``role:NAME`` (the operator's choice) always passes.

        Raises:
            ProviderNotAllowedError: The provider is not allowed, or its endpoint is local and loopback is off.
            ConfigError: The model string is malformed or names an unknown provider.
        """
        if _provider(spec) == "role":
            return
        self._check_listed(spec, "model")
        if not self.loopback:
            from agentmaestro.models.base import resolve_model

            await self._check_endpoint(spec, "model", getattr(resolve_model(spec), "base_url", None))

    async def check_embedder(self, spec: str) -> None:
        """Refuse an embedder string an API caller may not name.

        Raises:
            ProviderNotAllowedError: The provider is not allowed, or its endpoint is local and loopback is off.
            ConfigError: An unknown embedder.
        """
        self._check_listed(spec, "embedder")
        if not self.loopback:
            from agentmaestro.knowledge.embedders import embedder_for

            await self._check_endpoint(spec, "embedder", getattr(embedder_for(spec), "base_url", None))

    def _check_listed(self, spec: str, what: str) -> None:
        provider = _provider(spec)
        if self.allowed is not None and provider not in self.allowed:
            raise ProviderNotAllowedError(
                f"{what} {spec.strip()!r}: provider {provider!r} is not open to API callers on this server "
                f"(allowed: {', '.join(sorted(self.allowed))}; the operator sets {ALLOWED_PROVIDERS_ENV})"
            )

    async def _check_endpoint(self, spec: str, what: str, base_url: object) -> None:
        if isinstance(base_url, str) and await is_local_endpoint(base_url):
            raise ProviderNotAllowedError(
                f"{what} {spec.strip()!r}: provider {_provider(spec)!r} is served on this server's own machine or "
                f"private network, which API callers may not reach (the operator can allow it with "
                f"{LOOPBACK_PROVIDERS_ENV}=1)"
            )
