"""Who starts runs and takes decisions from this machine, as runs and the audit log record it."""

from __future__ import annotations

import getpass


def local_actor(door: str) -> str:
    """A person using a door on this machine: ``<door>:<login>`` (``cli:alice``, ``sdk:alice``)."""
    try:
        return f"{door}:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"{door}:unknown"
