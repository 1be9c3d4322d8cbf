"""What a tool may know about the call it serves. Injected into tools that ask for it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class MemoryAccess(Protocol):
    """What memory tools may do: read and write entries of their own workspace, as their run."""

    async def put(self, scope: str, key: str, value: str) -> dict[str, Any]:
        """Store an entry (scope ``workspace`` or ``agent``)."""
        ...

    async def get(self, scope: str, key: str) -> dict[str, Any]:
        """Read an entry."""
        ...

    async def list(self, scope: str, prefix: str) -> list[dict[str, Any]]:
        """List entries."""
        ...

    async def delete(self, scope: str, key: str) -> bool:
        """Delete an entry."""
        ...


class CredentialAccess(Protocol):
    """What tools may do with the workspace's credentials: read one by name at execution time (never the model)."""

    async def get(self, name: str) -> dict[str, Any]:
        """The credential ``name`` of the run's workspace: ``kind``, ``provider``, ``scopes``, ``secret`` fields."""
        ...


def default_workdir_root() -> Path:
    """Where run work folders live: ``$MAESTRO_HOME/work`` (default ``./.maestro/work``)."""
    return Path(os.environ.get("MAESTRO_HOME", ".maestro")) / "work"


@dataclass(frozen=True, kw_only=True)
class ToolContext:
    """Facts about one tool call, passed to tools with a parameter annotated ``ToolContext``.

    That parameter is not part of the tool's JSON schema: the model never sees or sets it.
    """

    run_id: str
    """The run making the call."""
    workspace_id: str
    """The run's workspace (tenant)."""
    agent: str
    """The agent's name."""
    workdir: Path
    """The run's work folder: file and code tools are confined to it."""
    step: int = 0
    """Step index of the call."""
    call_id: str = ""
    """The model's id for the call."""
    idempotency_key: str = ""
    """The call's idempotency key: derived from the run id and the step, the same every time this step is tried
    (after a crash, a retry), different in a fork. Pass it to services that deduplicate on one (payment APIs)."""
    allow_unsandboxed: bool = False
    """An operator explicitly allowed DANGEROUS code execution without an OS sandbox."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for subprocesses (never secrets from the worker's own environment)."""
    memory: MemoryAccess | None = None
    """Key-value memory of the run's workspace and agent (set by the engine)."""
    credentials: CredentialAccess | None = None
    """Named credentials of the run's workspace, decrypted for tools only (set by the engine; docs/credentials.md)."""
    http_allow: tuple[str, ...] = ()
    """Destinations ``http_fetch`` may reach although they are not public: host names, IPs or CIDRs, each optionally
    with ``:port`` (e.g. ``"127.0.0.1:8080"``, ``"10.0.0.0/8"``); added to the ``MAESTRO_HTTP_ALLOW`` entries."""

    @classmethod
    def for_run(cls, *, run_id: str, workspace_id: str, agent: str, root: Path | None = None) -> ToolContext:
        """A context whose work folder is ``root/<workspace>/<run_id>`` (created)."""
        base = (root or default_workdir_root()) / workspace_id / run_id
        base.mkdir(parents=True, exist_ok=True)
        return cls(run_id=run_id, workspace_id=workspace_id, agent=agent, workdir=base.resolve())
