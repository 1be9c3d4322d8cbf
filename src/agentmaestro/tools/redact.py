"""Secret redaction for tool output: what a tool returns is data for the model, never a leak of credentials.

:func:`redact` replaces well-known credential shapes (OpenAI/Anthropic ``sk-`` keys, AWS access key ids, GitHub and
Slack tokens, ``Bearer`` tokens, PEM private keys) and the values of the worker's own secret-looking environment
variables (names containing KEY, SECRET, TOKEN, PASSWORD, ...) with ``[REDACTED]``, and every value registered with
:func:`register_secret` (credentials handed to tools at execution time).
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping

__all__ = ["REDACTED", "redact", "register_secret", "secret_env_values"]

REDACTED = "[REDACTED]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys (RSA, EC, OPENSSH, ENCRYPTED, plain PKCS#8), also when the END line was cut off.
    (
        re.compile(
            r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY)-----.*?(?:-----END \1-----|\Z)",
            re.DOTALL,
        ),
        f"-----BEGIN PRIVATE KEY-----{REDACTED}-----END PRIVATE KEY-----",
    ),
    (re.compile(r"(?i)\b(Bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), REDACTED),  # OpenAI (sk-, sk-proj-), Anthropic (sk-ant-)
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"), REDACTED),  # AWS key ids
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"), REDACTED),  # GitHub tokens
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}\b"), REDACTED),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), REDACTED),  # Slack tokens
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), REDACTED),  # Google API keys
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}\b"), REDACTED),  # GitLab tokens
)

_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSW|CREDENTIAL", re.IGNORECASE)
_MIN_SECRET_LEN = 8
"""Shorter values (``1``, ``true``) are too common to redact without mangling ordinary output."""


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-looking environment variables, longest first.

    Args:
        environ: The environment to scan; defaults to the worker's ``os.environ``.

    Returns:
        Distinct values of variables whose name contains KEY, SECRET, TOKEN, PASSWORD (and similar), at least 8
        characters long.
    """
    env = os.environ if environ is None else environ
    values = {v.strip() for k, v in env.items() if _SECRET_NAME.search(k) and len(v.strip()) >= _MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


_registered: OrderedDict[str, None] = OrderedDict()
_registered_lock = threading.Lock()
_MAX_REGISTERED = 2000


def register_secret(value: str) -> None:
    """Redact ``value`` from every later tool output of this process (credentials fetched for a tool call).

    Values shorter than 8 characters are ignored (too common to redact safely); the newest 2,000 are kept.
    """
    value = value.strip() if isinstance(value, str) else ""
    if len(value) < _MIN_SECRET_LEN:
        return
    with _registered_lock:
        _registered[value] = None
        _registered.move_to_end(value)
        while len(_registered) > _MAX_REGISTERED:
            _registered.popitem(last=False)


def _registered_values() -> list[str]:
    with _registered_lock:
        return sorted(_registered, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace secrets in ``text`` with ``[REDACTED]``.

    Args:
        text: Tool output.
        environ: Environment whose secret-looking values are redacted too; defaults to ``os.environ``.

    Returns:
        The text with credential-shaped strings and secret environment values replaced.
    """
    if not text:
        return text
    for value in [*_registered_values(), *secret_env_values(environ)]:
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
