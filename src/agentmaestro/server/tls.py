"""TLS and mutual TLS for ``maestro serve`` (uvicorn's ssl options).

With a server certificate and key the API speaks HTTPS. With a client CA as well, every client
must present a certificate signed by that CA, or the TLS handshake fails before any HTTP is spoken
(mutual TLS); API keys are still required on top.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from agentmaestro.errors import ConfigError


def uvicorn_ssl_options(
    cert: str | Path | None, key: str | Path | None, client_ca: str | Path | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config``: empty when TLS is off.

    Raises:
        ConfigError: a key without a certificate (or the reverse), a client CA without both, a
            missing file, or files that do not load as a certificate chain.
    """
    if cert is None and key is None:
        if client_ca is not None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS runs over TLS)")
        return {}
    if cert is None or key is None:
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    for label, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", client_ca)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{label} file {str(path)!r} does not exist")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            ctx.load_verify_locations(cafile=str(client_ca))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"cannot load the TLS files: {exc}") from None
    options: dict[str, Any] = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    if client_ca is not None:
        options.update(ssl_ca_certs=str(client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options
