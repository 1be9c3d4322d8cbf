"""Deprecated alias of :mod:`agentmaestro.credentials.runtime`, where this module moved; it will be removed in 0.2."""

from __future__ import annotations

import warnings
from typing import Any

from agentmaestro.credentials import runtime as _moved

warnings.warn(
    "agentmaestro.integrations.credentials moved to agentmaestro.credentials.runtime; import it from there"
    " (this alias goes away in 0.2)",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    return getattr(_moved, name)
