"""The :class:`~agentmaestro.service.plane.Plane` through a server's REST API (``--server URL``).

The API key's workspace and role apply; the server's routes call the same service functions as a
:class:`~agentmaestro.service.plane.local.LocalPlane`, so a change made here is checked and audited the same way.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import anyio

from agentmaestro.core.events import Event
from agentmaestro.core.states import RunStatus
from agentmaestro.errors import ConfigError, LocalOnlyError, MaestroError
from agentmaestro.service.plane import JSON, OnEvent, OnWait, RunKind, choose_kind, event_from_json

if TYPE_CHECKING:
    from agentmaestro.client import AsyncClient

__all__ = ["RemotePlane", "tls_context"]

HumanAction = Literal["retry", "answer", "abandon"]
KeyRole = Literal["viewer", "operator", "admin"]
_PERSON = (RunStatus.WAITING_FOR_APPROVAL, RunStatus.WAITING_FOR_HUMAN)


class RemotePlane:
    """Commands and MCP tools against a server's REST API; the server's workers execute the runs."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.where = client.base_url

    async def close(self) -> None:
        """Close the connections."""
        await self.client.aclose()

    async def start_run(
        self, name: str, task: str, overrides: JSON | None = None, *, kind: RunKind = "agent", here: bool = False
    ) -> JSON:
        """``POST /v1/runs`` or ``POST /v1/workflows/{name}/runs`` (the server's workers run it, wherever)."""
        if kind == "agent" and (name.endswith((".yaml", ".yml")) or Path(name).is_file()):
            raise ConfigError(
                f"{name!r} is a file; with --server, runs use the agents the server knows (maestro agents list)"
            )
        if kind != "agent":
            agents = {a["name"] for a in await self.client.list_agents()}
            workflows = (
                {w["name"] for w in await self.list_workflows()} if name not in agents or kind != "auto" else set()
            )
            if choose_kind(name, kind, agents, workflows) == "workflow":
                if overrides:
                    raise ConfigError("policy limits apply to agent runs; a workflow's limits come from its definition")
                run: JSON = await self.client.request("POST", f"/v1/workflows/{name}/runs", json_body={"input": task})
                return run
        return await self.client.create_run(name, task, policy=overrides or None)

    async def live_workers(self) -> list[JSON] | None:
        """The workers on the server's database (``GET /v1/workers``); None if the server cannot say."""
        try:
            return await self.client.list_workers()
        except MaestroError:  # an older server without the route, or a key that may not ask
            return None

    async def list_runs(
        self,
        *,
        statuses: Sequence[str],
        agent: str | None,
        before: str | None,
        limit: int,
        top_level: bool = False,
        kind: str | None = None,
    ) -> list[JSON]:
        """A page of the server's runs."""
        page = await self.client.list_runs(
            status=statuses or None, agent=agent, top_level=top_level, kind=kind, cursor=before, limit=limit
        )
        runs: list[JSON] = page["runs"]
        return runs

    async def get_run(self, run_id: str) -> JSON:
        """The run with its steps."""
        return await self.client.get_run(run_id)

    async def children(self, run_id: str) -> list[JSON]:
        """Direct sub-runs, oldest first."""
        page = await self.client.list_runs(parent_run_id=run_id, limit=500)
        runs: list[JSON] = page["runs"]
        return list(reversed(runs))

    async def events(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        """The events after ``after`` (every one without ``limit``)."""
        if limit is None:
            return [event_from_json(e) for e in await self.client.all_events(run_id, after=after)]
        page = await self.client.events(run_id, after=after, limit=limit)
        return [event_from_json(e) for e in page["events"]]

    async def follow(self, run_id: str, after: int) -> AsyncIterator[Event]:
        """The run's event stream (SSE) until it stops or waits."""
        async for data in self.client.stream_events(run_id, after=after, follow="waiting"):
            yield event_from_json(data)

    async def drive(self, run_id: str, on_event: OnEvent) -> JSON:
        """Follow the run while the server's workers execute it."""
        async for ev in self.follow(run_id, 0):
            if on_event is not None:
                on_event(ev)
        return await self.client.get_run(run_id)

    async def _settled(self, run: JSON) -> bool:
        status = RunStatus(run["status"])
        if status.terminal or status in _PERSON:
            return True
        if status is RunStatus.WAITING_FOR_CHILDREN:
            page = await self.client.list_runs(parent_run_id=run["run_id"], limit=500)
            return any(RunStatus(ch["status"]) in _PERSON for ch in page["runs"])
        return False

    async def wait_run(self, run_id: str, timeout_s: float, on_wait: OnWait | None = None) -> tuple[JSON, bool]:
        """Check the run after each of its events (the server's event stream) until it settles or time is up."""
        start = time.monotonic()
        deadline = start + timeout_s
        while True:
            run = await self.client.get_run(run_id)
            if await self._settled(run):
                return run, False
            if on_wait is not None:
                await on_wait(run, time.monotonic() - start)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return run, True
            # a workflow's own log is quiet while its nodes run: look again every second
            quiet_s = 1.0 if run["status"] == RunStatus.WAITING_FOR_CHILDREN.value else 5.0
            with anyio.move_on_after(min(remaining, quiet_s)):
                stream = self.client.stream_events(run_id, after=int(run["last_seq"]), follow="always")
                async with contextlib.aclosing(stream):
                    async for _event in stream:
                        break

    async def cancel_run(self, run_id: str, reason: str) -> JSON:
        """Cancel (the server audits it)."""
        return await self.client.cancel_run(run_id, reason=reason)

    async def resume_run(self, run_id: str, overrides: JSON) -> JSON:
        """Resume."""
        return await self.client.resume_run(run_id, policy=overrides or None)

    async def fork_run(self, run_id: str, at_seq: int, overrides: JSON) -> JSON:
        """Fork."""
        return await self.client.fork_run(run_id, at_seq, policy=overrides or None)

    async def snapshot(self, run_id: str) -> JSON:
        """The run as the API shows it."""
        run = await self.client.get_run(run_id)
        run.pop("steps_detail", None)
        run.pop("children", None)  # the API's child-run counts, not the state's awaited children
        return run

    async def list_approvals(
        self, statuses: Sequence[str] | None, *, run_id: str | None = None, before: str | None = None, limit: int = 100
    ) -> list[JSON]:
        """Approvals (every status when None)."""
        every = ["pending", "approved", "rejected", "expired"]
        status = every if statuses is None else statuses
        page = await self.client.list_approvals(status=status, run_id=run_id, cursor=before, limit=limit)
        rows: list[JSON] = page["approvals"]
        return rows

    async def decide_approval(
        self, approval_id: str, *, approve: bool, reason: str, arguments: JSON | None, by: str | None = None
    ) -> JSON:
        """Decide; the server records the API key as the decider."""
        return await self.client.decide_approval(
            approval_id, "approve" if approve else "reject", reason=reason, arguments=arguments
        )

    async def list_human_requests(
        self, statuses: Sequence[str] | None, *, before: str | None, limit: int
    ) -> list[JSON]:
        """Escalations (every status when None)."""
        status = ["pending", "resolved"] if statuses is None else statuses
        page = await self.client.list_human_requests(status=status, cursor=before, limit=limit)
        rows: list[JSON] = page["human_requests"]
        return rows

    async def resolve_human_request(
        self, request_id: str, *, action: str, instructions: str | None, answer: str | None, by: str | None = None
    ) -> JSON:
        """Resolve; the server records the API key."""
        if action not in ("retry", "answer", "abandon"):
            raise ConfigError(f"unknown action {action!r}")
        return await self.client.resolve_human_request(
            request_id, cast(HumanAction, action), instructions=instructions, answer=answer
        )

    async def gate(self) -> JSON:
        """The workspace's gate rules."""
        gate: JSON = (await self.client.get_workspace())["gate"]
        return gate

    async def set_gate(self, gate: JSON) -> JSON:
        """Replace the gate rules (admin key)."""
        out: JSON = (await self.client.update_workspace_settings(gate=gate))["gate"]
        return out

    async def list_agents(self) -> list[JSON]:
        """The server's agents."""
        return await self.client.list_agents()

    async def get_agent(self, name: str) -> JSON:
        """One of the server's agents."""
        return await self.client.get_agent(name)

    async def list_workflows(self) -> list[JSON]:
        """The server's workflows (``GET /v1/workflows``)."""
        rows: list[JSON] = await self.client.request("GET", "/v1/workflows")
        return rows

    async def list_keys(self) -> list[JSON]:
        """Keys of the key's workspace (admin key)."""
        return await self.client.list_keys()

    async def create_key(self, name: str, role: str, user: str | None = None) -> tuple[JSON, str]:
        """Create a key (admin key)."""
        if role not in ("viewer", "operator", "admin"):
            raise ConfigError(f"role must be viewer, operator or admin, not {role!r}")
        row = await self.client.create_key(name, role=cast(KeyRole, role), user=user)
        key = str(row.pop("key"))
        return row, key

    async def revoke_key(self, key_id: str) -> JSON:
        """Revoke a key (admin key)."""
        return await self.client.revoke_key(key_id)

    async def list_workspaces(self) -> list[JSON]:
        """The key's own workspace."""
        ws = await self.client.get_workspace()
        return [{"workspace_id": ws["workspace_id"], "name": ws["name"], "created_at": ws["created_at"]}]

    async def create_workspace(self, workspace_id: str, name: str | None) -> None:
        """Not offered by the API."""
        raise LocalOnlyError("workspaces are created next to the database (maestro workspaces create without --server)")

    async def usage(self, *, since: float | None, until: float | None, group_by: str) -> JSON:
        """``GET /v1/usage``."""
        return await self.client.usage(since=since, until=until, group_by=cast(Any, group_by))

    async def audit_entries(self, *, limit: int, action: str | None) -> list[JSON]:
        """The newest ``limit`` entries (the API pages oldest first, so this reads to the end)."""
        entries: list[JSON] = []
        after = 0
        while True:
            page = await self.client.audit_log(after=after, limit=1000, action=action)
            entries = (entries + page["entries"])[-limit:]
            if not page["entries"]:
                return entries[::-1]
            after = page["next_after"]

    async def verify_audit(self, workspace_id: str | None, checkpoint: JSON | None = None) -> list[JSON]:
        """The key's workspace's chain (admin key), against a checkpoint the server's keyring signed."""
        report = await self.client.verify_audit(checkpoint=checkpoint)
        if workspace_id is not None and workspace_id != report["workspace_id"]:
            raise ConfigError(f"the API key belongs to workspace {report['workspace_id']!r}, not {workspace_id!r}")
        return [report]

    async def audit_checkpoint(self, workspace_id: str | None) -> JSON:
        """The key's workspace's chain head, signed by the server."""
        cp = await self.client.audit_checkpoint()
        if workspace_id is not None and cp.get("scope") != workspace_id:
            raise ConfigError(f"the API key belongs to workspace {cp.get('scope')!r}, not {workspace_id!r}")
        return cp

    async def seal_audit(self) -> list[JSON]:
        """Sealing writes with the keyring next to the database."""
        raise LocalOnlyError("maestro audit seal works on the database (without --server), with the server's keyring")


def tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext | bool:
    """TLS settings for ``--server https://...``: a CA to trust and a client certificate for mutual TLS."""
    if not (ca or cert):
        return True
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, key)
    return context
