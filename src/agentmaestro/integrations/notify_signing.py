"""Deprecated alias of :mod:`agentmaestro.notify.signing`, where this module moved; it will be removed in 0.2."""

from __future__ import annotations

import warnings
from typing import Any

from agentmaestro.notify import signing as _moved

warnings.warn(
    "agentmaestro.integrations.notify_signing moved to agentmaestro.notify.signing; import it from there"
    " (this alias goes away in 0.2)",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    return getattr(_moved, name)
