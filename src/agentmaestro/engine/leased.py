"""The base of drivers that make *moves* on a leased run: workflows, objectives, escalations.

Such a run never calls a model itself. Each move folds what happened (child results, answers) and
returns events, child runs to start, step rows and at most one human request; :class:`LeasedDriver`
applies the events to the snapshot through the one reducer, commits everything in one guarded
transaction (rejected if the lease was taken over) and hands the events to the listeners.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from agentmaestro.core.events import Event, RunState, apply_event
from agentmaestro.core.states import EventType, RunStatus
from agentmaestro.engine.driver import EventListener
from agentmaestro.errors import LeaseLostError
from agentmaestro.store.base import Store
from agentmaestro.store.records import Claim, Commit, NewRun, StepRow

log = logging.getLogger("agentmaestro.engine")

Move = tuple[list[dict[str, Any]], list[NewRun], list[StepRow], dict[str, Any] | None]
"""What one move produces: event specs, child runs to create, step rows, a human request row (or None)."""


class LeasedDriver:
    """A run driven by moves while its worker holds the lease: the lease, the commit and the listeners.

    Subclasses implement :meth:`_move` (and optionally :meth:`_setup` and :meth:`_applied`).
    """

    kind = "run"
    """How log messages name the runs of this driver."""

    def __init__(self, *, store: Store, claim: Claim, owner: str, listeners: list[EventListener]) -> None:
        rec = claim.record
        self.store = store
        self.run_id = rec.run_id
        self.workspace_id = rec.workspace_id
        self.parent_run_id = rec.parent_run_id
        self.name = rec.agent_name
        self.spec = rec.spec
        self.task = rec.input
        self.depth = int(rec.spec.get("depth", 0))
        self.owner = owner
        self.epoch = rec.lease_epoch
        self.version = rec.version
        self.state: RunState = rec.state
        self.cancel_requested = rec.cancel_requested
        self.cancel_reason = rec.cancel_reason
        self.listeners = listeners
        self.lost = False
        self.stopping = False
        self._claim_events = list(claim.events)

    def request_cancel(self) -> None:
        """An operator asked to cancel; the next move records it."""
        self.cancel_requested = True

    def lease_lost(self) -> None:
        """The heartbeat found the lease gone: stop without committing anything more."""
        self.lost = True

    async def drive(self) -> None:
        """Make moves until the run leaves RUNNING, the lease is lost, or the worker stops."""
        if self._claim_events:
            await self._emit(self._claim_events)
        await self._setup()
        while self.state.status is RunStatus.RUNNING and not self.lost and not self.stopping:
            await self._commit(*await self._move())

    async def fail_internal(self, exc: BaseException) -> None:
        """Record an engine bug as RUN_FAILED, so a deterministic crash is not retried forever."""
        if self.lost or self.state.status is not RunStatus.RUNNING:
            return
        error = f"internal error: {type(exc).__name__}: {exc}"
        await self._commit([{"type": EventType.RUN_FAILED, "payload": {"error": error}}], [], [], None)

    async def _setup(self) -> None:
        """Hook: runs once before the first move."""
        return None

    async def _move(self) -> Move:
        """The next move (subclasses)."""
        raise NotImplementedError

    async def _cancel_reason(self) -> str:
        return self.cancel_reason or (await self.store.runs.get(self.run_id)).cancel_reason or "cancelled"

    def _applied(self, state: RunState, ev: Event) -> None:
        """Hook: an event was committed."""

    async def _commit(
        self, specs: list[dict[str, Any]], children: list[NewRun], rows: list[StepRow], human: dict[str, Any] | None
    ) -> None:
        now = time.time()
        state = self.state
        events: list[Event] = []
        for spec in specs:
            ev = Event(
                run_id=self.run_id,
                seq=state.last_seq + 1,
                type=spec["type"],
                payload=spec.get("payload", {}),
                created_at=now,
                step=spec.get("step"),
            )
            state = apply_event(state, ev)
            events.append(ev)
        steps = [
            StepRow(**{**s.__dict__, "seq": next(e.seq for e in events if e.step == s.step_index), "created_at": now})
            for s in rows
        ]
        commit = Commit(
            run_id=self.run_id,
            workspace_id=self.workspace_id,
            owner=self.owner,
            epoch=self.epoch,
            version=self.version,
            state=state,
            events=tuple(events),
            steps=tuple(steps),
            release=state.status is not RunStatus.RUNNING,
            finished_at=now if state.status is not None and state.status.terminal else None,
            children=tuple(children),
            parent_run_id=self.parent_run_id,
            human_request=human,
        )
        try:
            result = await self.store.steps.commit(commit)
        except LeaseLostError:
            self.lost = True
            log.warning("%s run %s: commit rejected, lease lost", self.kind, self.run_id)
            return
        self.version = result.version
        self.cancel_requested = self.cancel_requested or result.cancel_requested
        self.state = state
        for ev in events:
            self._applied(state, ev)
        await self._emit(events)

    async def _emit(self, events: list[Event]) -> None:
        for listener in self.listeners:
            try:
                res = listener(self.run_id, self.name, events)
                if res is not None:
                    await res
            except Exception:  # a hook must never break a run
                log.exception("event listener failed for run %s", self.run_id)
